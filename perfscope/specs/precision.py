"""Precision: what a scenario's dtypes mean on a device, and where each one came from.

Weights come from the caller (``weight_dtype``), else the checkpoint's ``quantization_config``,
else the device's 16-bit dtype. What runs is then decided the way serving engines decide it:

- fp8 (and fp4) weights run W8A8 (W4A4) where the device has that tensor math, with dynamic
  per-token activation scales; where it lacks it they run weight-only, dequantized inside the
  GEMM (vLLM's ``Fp8LinearMethod``: "Your GPU does not have native support for FP8
  computation ... Weight-only FP8 compression will be used leveraging the Marlin kernel", and
  its NVFP4 Marlin fallback below Blackwell). Marlin needs an NVIDIA GPU of Ampere or later.
- int8/int4 weights run weight-only unless ``act_dtype`` asks for W8A8.
- An 8-bit KV cache is a storage format: on a device without fp8 math (and for int8 always)
  attention reads it at 1 byte and dequantizes it to 16 bits on the fly, at a cost.
- Only tensor math a device lacks is refused (``act_dtype fp8`` on an A100).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, NamedTuple

from perfscope.errors import UnsupportedDtypeError
from perfscope.specs.model.types import CheckpointQuant, ModelSpec
from perfscope.specs.scenario import FLAGS, Scenario, field_error
from perfscope.units import (
    DTYPE_BITS,
    NVFP4_GROUP,
    QUANTIZED,
    SCALE_BITS,
    QuantFormat,
    default_format,
    quant_format,
)

if TYPE_CHECKING:
    from perfscope.specs.hardware import HardwareSpec

SOURCES = ("weight_dtype", "checkpoint", "device default")


@dataclass(frozen=True, slots=True)
class Precision:
    """Dtypes of a scenario resolved against a device (and the model's checkpoint)."""

    weight: QuantFormat  # linear-layer weights as stored
    act: str  # GEMM input activations (fp8 / int8 / fp4 under W8A8 / W4A4, else 16-bit)
    kv: str
    compute: str  # tensor-core dtype of the GEMMs
    scheme: str = ""  # what runs: "bf16", "W8A8 fp8", "W8A16 fp8 weight-only", ...
    weight_source: str = "device default"  # one of SOURCES
    checkpoint: str = ""  # the checkpoint's quantization_config, summarised
    kv_dequant: bool = False  # 8-bit KV dequantized to 16 bits when attention reads it
    notes: tuple[str, ...] = ()  # defaults that applied and why

    def to_json(self) -> dict[str, Any]:
        return {"weights": str(self.weight), "activations": self.act, "kv_cache": self.kv,
                "compute": self.compute, "scheme": self.scheme,
                "weight_source": self.weight_source, "checkpoint": self.checkpoint or None,
                "kv_dequantized": self.kv_dequant, "notes": list(self.notes)}


def checkpoint_format(q: CheckpointQuant) -> QuantFormat:
    """How a checkpoint stores its linear weights, scales included."""
    if q.weight == "fp4":
        return default_format("fp4")
    if q.block:  # DeepSeek-V3: fp32 weight_scale_inv per 128 x 128 block
        return quant_format(q.weight, None, q.block, 32)
    if q.group_size:  # AWQ / GPTQ: fp16 scales, 4-bit zero points when asymmetric
        return quant_format(q.weight, q.group_size, None, SCALE_BITS,
                            DTYPE_BITS[q.weight] if q.zero_point else 0)
    if q.weight == "fp8" and not q.per_channel:  # one fp32 scale per tensor
        return quant_format("fp8", None, None, SCALE_BITS, 0, 32)
    return quant_format(q.weight)  # one 16-bit scale per output channel


def _marlin(hw: _Device) -> bool:
    """A dequantizing weight-only GEMM (vLLM's Marlin): NVIDIA, Ampere (bf16) or later."""
    return hw.vendor.lower() == "nvidia" and hw.has_dtype("bf16")


def _unsupported(field: str, d: str, why: str) -> UnsupportedDtypeError:
    return UnsupportedDtypeError(f"{field} {d}: {why} ({FLAGS[field]})")


def resolve_precision(s: Scenario, hw: HardwareSpec, model: ModelSpec | None = None) -> Precision:
    """What runs for scenario ``s`` on ``hw`` with ``model``'s checkpoint (see the module)."""
    # pure in these fields: cached on them, the device by what resolution reads of it
    return _resolve(s.weight_dtype, s.act_dtype, s.kv_dtype, s.group_size,
                    model.quant if model is not None else None, _Device.of(hw))


class _Device(NamedTuple):
    """What precision resolution needs of a device, hashable."""

    display_name: str
    vendor: str
    dtypes: frozenset[str]

    @staticmethod
    @lru_cache(maxsize=64)
    def of(hw: HardwareSpec) -> _Device:
        """Pure in ``hw`` (hashable, its hash computed once): cached, so that the frozenset
        and its hash are not rebuilt on every analysis."""
        return _Device(hw.display_name, hw.vendor, frozenset(hw.dtypes()))

    def has_dtype(self, d: str) -> bool:
        return d in self.dtypes


@lru_cache(maxsize=512)
def _resolve(weight_dtype: str | None, act_dtype: str | None, kv_dtype: str | None,
             group_size: int | None, ck: CheckpointQuant | None, hw: _Device) -> Precision:
    has = hw.has_dtype
    name = hw.display_name
    # bf16 where the device has it, else fp16 (V100), else fp32 (a CPU measured by perfscope)
    base = next((d for d in ("bf16", "fp16") if has(d)), "fp32")
    notes: list[str] = []

    # ---- weights ----
    if weight_dtype:
        w, source = weight_dtype, "weight_dtype"
        if ck and ck.weight == w and group_size is None:
            fmt = checkpoint_format(ck)  # the flag names the checkpoint's own format
        else:
            fmt = _flag_format(w, group_size)
    elif ck is not None:
        if not ck.weight:
            raise field_error("weight_dtype", None, f"the checkpoint's quantization_config "
                              f"({ck.summary}) is not modelled; pass the weight dtype to "
                              "analyse it as")
        w, source = ck.weight, "checkpoint"
        fmt = checkpoint_format(ck)
        if group_size is not None:
            fmt = _flag_format(w, group_size)
    else:
        w, source = base, "device default"
        fmt = _flag_format(w, group_size)

    # ---- activations (and so what the GEMMs compute in) ----
    if act_dtype:
        a = act_dtype
    elif w in ("fp8", "fp4", "int8") and source == "checkpoint" and ck is not None:
        a = ck.act if ck.act else base
        if a == w and not has(a) and a != "int8":
            a = _weight_only(w, base, hw, notes)
    elif w in ("fp8", "fp4"):
        a = w if has(w) else _weight_only(w, base, hw, notes)
    elif w == "fp32":
        a = "fp32"
    elif w in ("int8", "int4"):
        a = base  # weight-only by default; act_dtype int8 gives W8A8
    else:
        a = w
    if w in ("bf16", "fp16") and not has(w):
        alt = "fp16" if w == "bf16" else "bf16"
        raise _unsupported("weight_dtype", w, f"{name} has no {w} support at speed; use {alt}")
    if a in QUANTIZED and w != a:
        raise field_error("act_dtype", a, f"needs weight_dtype {a} (W{DTYPE_BITS[a]}A"
                          f"{DTYPE_BITS[a]}), not {w}" if w != "int4" else
                          "weight_dtype int4 runs weight-only with bf16/fp16 activations; "
                          "leave act_dtype unset or use weight_dtype int8")
    if a != "fp32" and not has(a):
        why = {"fp8": f"{name} has no fp8 tensor math; fp8 weights run weight-only with "
                      "act_dtype bf16 (W8A16)",
               "fp4": f"{name} has no fp4 tensor math; fp4 weights run weight-only with "
                      "act_dtype bf16 (W4A16)",
               "int8": f"{name} has no int8 tensor math; use weight-only int8"}.get(
            a, f"{name} has no {a} support at speed; use {base}")
        raise _unsupported("act_dtype", a, why)
    if w in ("fp8", "fp4") and a != w and not _marlin(hw):
        raise _unsupported("weight_dtype", w, f"{name} has neither {w} tensor math nor a "
                           f"weight-only {w} GEMM (vLLM's Marlin needs an NVIDIA GPU of "
                           "Ampere or later)")

    # ---- KV cache ----
    if kv_dtype:
        kv = kv_dtype
    elif ck is not None and ck.kv and source == "checkpoint":
        kv = ck.kv
    elif a in ("fp32", "tf32"):
        kv = "fp32"
    else:
        kv = a if a in ("bf16", "fp16") else base
    if kv in ("bf16", "fp16") and not has(kv):
        raise _unsupported("kv_dtype", kv, f"{name} has no {kv} support at speed; use {base}")
    kv_dequant = kv == "int8" or (kv == "fp8" and not has("fp8"))
    if kv == "fp8" and not has("fp8"):
        if not _marlin(hw):
            raise _unsupported("kv_dtype", kv, f"{name} has no fp8 support; an fp8 KV cache "
                               "needs fp8 math or an NVIDIA GPU of Ampere or later")
        notes.append(f"fp8 KV cache on {name}: stored at 1 byte, dequantized to 16 bits as "
                     "attention reads it (no fp8 math)")

    return Precision(fmt, a, kv, a, scheme=_scheme(fmt, a), weight_source=source,
                     checkpoint=ck.summary if ck else "", kv_dequant=kv_dequant,
                     notes=tuple(notes))


def _flag_format(w: str, group: int | None) -> QuantFormat:
    if group is not None and w not in ("int4", "int8", "fp4"):
        raise field_error("group_size", group, f"applies to int4/int8 weights, not {w}")
    if w == "fp4" and group not in (None, NVFP4_GROUP):
        raise field_error("group_size", group, "fp4 is NVFP4: one scale per 16 elements, "
                          "fixed; leave group_size unset")
    return default_format(w, group)


def _weight_only(w: str, base: str, hw: _Device, notes: list[str]) -> str:
    notes.append(f"no {w} tensor math on {hw.display_name}: {w} weights run weight-only "
                 f"(W{DTYPE_BITS[w]}A16), dequantized in the GEMM (vLLM's Marlin fallback)")
    return base


def _scheme(fmt: QuantFormat, act: str) -> str:
    w = fmt.dtype
    if not fmt.quantized:
        return w if act == w else f"{w} weights, {act} activations"
    wb, ab = DTYPE_BITS[w], DTYPE_BITS[act]
    label = "NVFP4" if w == "fp4" else w
    if act == w:
        extra = " (dynamic per-token activation scales)" if w in ("fp8", "int8") else \
            " (activations quantized to NVFP4)" if w == "fp4" else ""
        return f"W{wb}A{ab} {label}{extra}"
    return f"W{wb}A{ab} {label} weight-only (dequantized in the GEMM)"
