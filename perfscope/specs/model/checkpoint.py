"""A checkpoint's ``quantization_config`` -> CheckpointQuant: how its linear weights are stored.

Read formats (the field names are those the quantizers write into config.json):

- ``fp8`` (DeepSeek-V3, Qwen3-*-FP8; transformers' FineGrainedFP8Config): e4m3 weights, one
  fp32 scale per ``weight_block_size`` block (else per tensor), activations quantized
  dynamically per token -> W8A8.
- ``fbgemm_fp8`` (Meta's Llama-3.1-405B-FP8): per-channel fp8 weights, dynamic per-token
  activations -> W8A8.
- ``compressed-tensors`` (llm-compressor): the first config group's ``weights`` and
  ``input_activations`` (float 8: fp8, float 4 in groups of 16: NVFP4, int 4 / int 8 with their
  strategy and group size; no input_activations: weight-only), and ``kv_cache_scheme``.
- ``awq`` / ``gptq``: int4 (gptq: or int8) weight-only, ``group_size`` (-1: per channel),
  asymmetric zero points (AWQ ``zero_point``; GPTQ stores qzeros always).
- ``modelopt`` (NVIDIA ModelOpt): ``quant_algo`` FP8 (per-tensor, W8A8) or NVFP4 (W4A4),
  ``kv_cache_quant_algo`` FP8.

Anything else (bitsandbytes, mxfp4, hqq, ...) is recorded with an empty ``weight``: the analysis
then asks for an explicit weight dtype instead of assuming one. Lists of modules left
unquantized (``ignore``, ``modules_to_not_convert``) are not read: perfscope keeps embeddings,
LM head and router at 16 bits in every format, which is what those lists hold in practice.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from perfscope.errors import SpecError
from perfscope.specs.model.types import CheckpointQuant


def checkpoint_quant(q: Any, file: str) -> CheckpointQuant | None:
    """The checkpoint format of a ``quantization_config`` value (None: not quantized)."""
    if q is None:
        return None
    if not isinstance(q, Mapping):
        raise SpecError(file, "quantization_config", "expected a JSON object", None)
    method = str(q.get("quant_method", "")).lower()
    if method == "fp8":
        return _fp8(q)
    if method == "fbgemm_fp8":
        return CheckpointQuant("fbgemm_fp8", "fp8", "fp8", per_channel=True,
                               summary="fbgemm_fp8: fp8 e4m3 weights with per-channel scales, "
                                       "dynamic per-token activations")
    if method == "compressed-tensors":
        return _compressed_tensors(q, file)
    if method in ("awq", "gptq"):
        return _int_weight_only(q, method, file)
    if method == "modelopt":
        return _modelopt(q, file)
    return CheckpointQuant(method or "unknown", "", None,
                           summary=f"quant_method {method or '(none)'!r}")


def _fp8(q: Mapping) -> CheckpointQuant:
    fmt = q.get("fmt", "e4m3")
    block = q.get("weight_block_size")
    act = "fp8" if q.get("activation_scheme", "dynamic") in ("dynamic", "static") else None
    layout = f"{block[0]}x{block[1]} blocks" if block else "per-tensor scales"
    scheme = f"{q.get('activation_scheme', 'dynamic')} activations" if act else "weight-only"
    return CheckpointQuant("fp8", "fp8", act, block=tuple(block) if block else None,
                           summary=f"fp8 {fmt}, {layout}, {scheme}")


def _ct_dtype(spec: Mapping | None, where: str, file: str) -> tuple[str | None, int | None]:
    """(perfscope dtype, group size) of a compressed-tensors quantization args block."""
    if not spec:
        return None, None
    bits, kind = spec.get("num_bits"), spec.get("type", "int")
    formats: dict[tuple[Any, Any], str] = {(8, "float"): "fp8", (4, "float"): "fp4",
                                           (8, "int"): "int8", (4, "int"): "int4"}
    dtype = formats.get((bits, kind))
    if dtype is None:
        raise SpecError(file, where, f"{bits}-bit {kind} is not a format perfscope models",
                        "use fp8, int8, int4 or NVFP4 (4-bit float in groups of 16)")
    group = spec.get("group_size") if spec.get("strategy") in ("group", "tensor_group") else None
    return dtype, group


def _compressed_tensors(q: Mapping, file: str) -> CheckpointQuant:
    groups = q.get("config_groups") or {}
    if not isinstance(groups, Mapping) or not groups:
        raise SpecError(file, "quantization_config.config_groups", "missing or empty",
                        "use the checkpoint's full config.json")
    name, g = next(iter(groups.items()))
    where = f"quantization_config.config_groups.{name}"
    w, group = _ct_dtype(g.get("weights"), f"{where}.weights", file)
    if w is None:
        raise SpecError(file, f"{where}.weights", "missing", None)
    a, _ = _ct_dtype(g.get("input_activations"), f"{where}.input_activations", file)
    ws = g["weights"]
    block = ws.get("block_structure") if ws.get("strategy") == "block" else None
    kv, _ = _ct_dtype(q.get("kv_cache_scheme"), "quantization_config.kv_cache_scheme", file)
    label = "NVFP4" if w == "fp4" else w
    layout = f"{block[0]}x{block[1]} blocks" if block else \
        f"groups of {group}" if group else f"per-{ws.get('strategy', 'channel')} scales"
    acts = f"{a} activations" if a else "weight-only"
    return CheckpointQuant("compressed-tensors", w, a, group_size=group,
                           block=tuple(block) if block else None,
                           zero_point=not ws.get("symmetric", True),
                           per_channel=ws.get("strategy") == "channel", kv=kv,
                           summary=f"compressed-tensors {label}, {layout}, {acts}"
                                   + (f", {kv} KV cache" if kv else ""))


def _int_weight_only(q: Mapping, method: str, file: str) -> CheckpointQuant:
    bits = q.get("bits", q.get("w_bit"))
    if bits not in (4, 8):
        raise SpecError(file, "quantization_config.bits", f"{bits}-bit {method} is not "
                        "modelled", "perfscope models 4- and 8-bit integer weights")
    group = q.get("group_size", q.get("q_group_size", 128))
    group = None if group in (None, -1) else int(group)
    # AWQ: asymmetric unless zero_point is false; GPTQ: qzeros are stored even when sym
    zero = bool(q.get("zero_point", True)) if method == "awq" else True
    layout = f"groups of {group}" if group else "per-channel scales"
    return CheckpointQuant(method, f"int{bits}", None, group_size=group, zero_point=zero,
                           per_channel=group is None,
                           summary=f"{method} int{bits}, {layout}, weight-only")


def _modelopt(q: Mapping, file: str) -> CheckpointQuant:
    algo = str(q.get("quant_algo", "")).upper()
    kv = "fp8" if str(q.get("kv_cache_quant_algo", "")).upper() == "FP8" else None
    tail = ", fp8 KV cache" if kv else ""
    if algo == "FP8":
        return CheckpointQuant("modelopt", "fp8", "fp8", kv=kv,
                               summary=f"modelopt FP8, per-tensor scales, W8A8{tail}")
    if algo == "NVFP4":
        return CheckpointQuant("modelopt", "fp4", "fp4", group_size=16, kv=kv,
                               summary=f"modelopt NVFP4, groups of 16, W4A4{tail}")
    return CheckpointQuant("modelopt", "", None, kv=kv, summary=f"modelopt {algo or '?'}")
