"""The search space: parallel layouts and quantization schemes a model can run on a device.

A structural configuration is (TP, PP, EP, attention-DP, weight scheme); the KV-cache dtype and
the concurrency are evaluated on top of it as grid dimensions (numpy). Configurations the model
or the device rules out are dropped with the reason, so an empty search can say why.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import NamedTuple

from perfscope.errors import PerfscopeError
from perfscope.recommend.types import RecommendRequest, Scheme
from perfscope.specs.hardware import HardwareSpec
from perfscope.specs.model import ModelSpec
from perfscope.specs.precision import resolve_precision
from perfscope.specs.scenario import Scenario
from perfscope.units import DTYPE_BITS, WEIGHT_DTYPES

# The schemes serving engines run, named by what the user allows (``--weight-dtypes``):
# fp8 and int8 carry 8-bit tensor math (W8A8: fp8 needs Hopper or newer); int8-wo and int4
# are weight-only (16-bit math, weights dequantized in the kernel); fp4 is NVFP4 (Blackwell).
SCHEMES: dict[str, tuple[Scheme, ...]] = {
    "bf16": (Scheme("bf16", "bf16", None, "W16A16"),),
    "fp16": (Scheme("fp16", "fp16", None, "W16A16"),),
    "fp8": (Scheme("fp8", "fp8", None, "W8A8-fp8"),),
    "int8": (Scheme("int8", "int8", "int8", "W8A8-int8"),
             Scheme("int8-wo", "int8", None, "W8A16-int8")),
    "int4": (Scheme("int4", "int4", None, "W4A16-int4"),),
    "fp4": (Scheme("fp4", "fp4", None, "W4A4-nvfp4"),),
}
DEFAULT_WEIGHT_DTYPES = ("bf16", "fp8", "int8", "int4", "fp4")
DEFAULT_KV_DTYPES = ("bf16", "fp8")
POWERS = (1, 2, 4, 8, 16, 32, 64)


class Structural(NamedTuple):
    tp: int
    pp: int
    ep: int
    attn_dp: int
    scheme: Scheme

    @property
    def gpus(self) -> int:
        return self.tp * self.pp * self.attn_dp


def has_attn_dp() -> bool:
    return "attn_dp" in {f.name for f in dataclasses.fields(Scenario)}


def _sixteen(hw: HardwareSpec, names: tuple[str, ...]) -> tuple[str, ...]:
    """The defaults with bf16 read as the device's 16-bit format (fp16 where it has no bf16
    at speed: V100)."""
    return names if hw.has_dtype("bf16") else tuple("fp16" if n == "bf16" else n
                                                     for n in names)


def schemes(req: RecommendRequest, dropped: dict[str, int]) -> list[Scheme]:
    """The schemes allowed and runnable on the device (the rest counted in ``dropped``)."""
    names = req.weight_dtypes or _sixteen(req.hw, DEFAULT_WEIGHT_DTYPES)
    out = []
    for name in names:
        for sch in SCHEMES.get(name, ()):
            if sch.weight_dtype not in WEIGHT_DTYPES:
                if req.weight_dtypes:  # asked for, but the core has no such dtype yet
                    dropped[f"{sch.label}: this perfscope has no {sch.weight_dtype} dtype"] += 1
                continue
            why = precision_problem(req.hw, sch, model=req.model)
            if why:
                dropped[why] += 1
                continue
            label = scheme_label(req.hw, sch, req.model)
            if sch.weight_dtype == "fp8" and not req.hw.has_dtype("fp8"):
                # the core runs fp8 weight-only here (dequantized to 16-bit math): say so
                dropped[f"{sch.label}: {req.hw.display_name} has no fp8 tensor cores (fp8 "
                        f"math needs Hopper or newer); fp8 runs weight-only ({label})"] += 1
            out.append(dataclasses.replace(sch, label=label))
    return out


def scheme_label(hw: HardwareSpec, sch: Scheme, model: ModelSpec | None = None) -> str:
    """``W<weight bits>A<math bits>-<format>`` as the device runs the scheme: NVFP4 on Hopper
    and fp8 on Ampere are weight-only (16-bit math)."""
    prec = resolve_precision(Scenario(weight_dtype=sch.weight_dtype, act_dtype=sch.act_dtype),
                             hw, model)
    w = prec.weight.dtype
    fmt = {"fp4": "nvfp4"}.get(w, w)
    return f"W{DTYPE_BITS[w]}A{DTYPE_BITS[prec.compute]}-{fmt}"


def precision_problem(hw: HardwareSpec, sch: Scheme, kv: str | None = None, *,
                      model: ModelSpec | None = None) -> str | None:
    """Why ``hw`` cannot run ``sch`` (and KV dtype ``kv``) for ``model``, or None."""
    try:
        resolve_precision(Scenario(weight_dtype=sch.weight_dtype, act_dtype=sch.act_dtype,
                                   kv_dtype=kv), hw, model)
    except PerfscopeError as e:
        if kv is not None:
            return str(e).split(";")[0]
        return f"{sch.label}: {e}"
    return None


def kv_dtypes(req: RecommendRequest, sch: Scheme, dropped: dict[str, int]) -> list[str]:
    out = []
    for kv in req.kv_dtypes or _sixteen(req.hw, DEFAULT_KV_DTYPES):
        why = precision_problem(req.hw, sch, kv, model=req.model)
        if why:
            dropped[why] += 1
        else:
            out.append(kv)
    return out


def layouts(model: ModelSpec, gpus: int, max_gpus: int, node: int,
            dropped: dict[str, int]) -> Iterator[tuple[int, int, int, int]]:
    """(tp, pp, ep, attn_dp) whose GPUs per replica divide the GPUs given.

    Tensor parallelism stays inside a node. Pipeline parallelism is searched at 2 stages
    inside a node (it never shortens a step, so deeper pipelines only matter where a model
    must span nodes: there every depth that keeps TP inside a node is tried)."""
    adps = (1, 2, 4, 8) if (model.moe is not None and has_attn_dp()) else (1,)
    for tp in POWERS:
        for pp in POWERS:
            for adp in adps:
                g = tp * pp * adp
                if g > max_gpus or gpus % g:
                    continue
                if pp > 2 and (g <= node or tp * adp > node):
                    continue
                if tp > node:  # tensor parallelism stays on the node's GPU link
                    dropped[f"TP{tp}: beyond the {node} GPUs of a node"] += 1
                    continue
                why = _layout_problem(model, tp, pp)
                if why:
                    dropped[why] += 1
                    continue
                for ep in _eps(model, tp, adp):
                    yield tp, pp, ep, adp


def _eps(model: ModelSpec, tp: int, adp: int) -> list[int]:
    if model.moe is None:
        return [1]
    span = tp * adp  # GPUs of a stage the experts spread over
    out = []
    for ep in (1, span) if span > 1 else (1,):
        if model.moe.n_experts % ep:
            continue
        if adp == 1 and tp % ep:
            continue
        if (tp * adp // ep) and model.moe.expert_intermediate % (tp * adp // ep):
            continue
        if adp > 1 and ep == 1:
            continue  # data-parallel attention goes with expert-parallel MoE
        out.append(ep)
    return out


def _layout_problem(model: ModelSpec, tp: int, pp: int) -> str | None:
    if model.n_heads % tp:
        return f"TP{tp}: does not divide the {model.n_heads} attention heads"
    if model.n_kv_heads % tp and tp % model.n_kv_heads:
        return f"TP{tp}: and the {model.n_kv_heads} KV heads do not divide one another"
    if model.moe is None and model.intermediate % tp:
        return f"TP{tp}: does not divide the MLP width {model.intermediate}"
    if pp > model.n_layers:
        return f"PP{pp}: more stages than the {model.n_layers} layers"
    return None


def kv_bits(dtype: str) -> int:
    return DTYPE_BITS[dtype]


def concurrency_grid(limit: int) -> list[int]:
    """Every concurrency from 1 to ``limit`` (the largest batch under a target is exact)."""
    return list(range(1, limit + 1))
