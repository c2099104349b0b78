"""What every op runner is made of, and the pieces several share (per-token quantization).

A Runner is the computation the model performs for one analytic op, chosen by the op's
``impl`` attributes (never by its name): ``fn(inputs, params)`` is the call that is timed,
``inputs(seed)`` and ``params(seed)`` make fresh random data, and ``verify(args, out)`` checks
a timed output against a float64 reference that follows the reference implementation's code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from perfscope.analytic.ops import Op
from perfscope.errors import MeasureError
from perfscope.measure.checks import check_close, check_equal
from perfscope.measure.skips import Skip


@dataclass(frozen=True)
class Runner:
    """One op, runnable. ``impl`` says in words what runs (it lands on the measured point)."""

    impl: str
    fn: Callable[[Any, Any], Any]  # fn(inputs, params) -> output: the timed call
    inputs: Callable[[int], Any]  # inputs(seed): the activations of one call
    params: Callable[[int], Any]  # params(seed): weights, tables, cos/sin ({} if none)
    verify: Callable[[tuple[Any, ...], Any], float]  # (inputs, params), out -> max error
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. padded_m


def need(op: Op, *keys: str) -> dict[str, Any]:
    """The op's impl attributes; Skip when one of ``keys`` is missing."""
    impl = dict(op.impl or {})
    missing = [k for k in keys if k not in impl]
    if missing:
        raise Skip(f"op {op.name}: the analytic op does not say {', '.join(missing)} "
                   "(Op.impl), so its computation is unknown")
    return impl


def shape(op: Op, *keys: str) -> dict[str, int]:
    sh = dict(op.shape or {})
    missing = [k for k in keys if k not in sh]
    if missing:
        raise MeasureError(f"op {op.name}: shape {sh} lacks {', '.join(missing)}")
    return sh


def compare(got: Any, ref: Any, dtype: str, what: str) -> float:
    """Float tensors within the dtype's tolerance, integer tensors exactly, tuples per item."""
    if isinstance(ref, tuple):
        if not isinstance(got, tuple) or len(got) != len(ref):
            raise MeasureError(f"{what}: expected {len(ref)} outputs")
        return max(compare(g, r, dtype, f"{what} (output {i})")
                   for i, (g, r) in enumerate(zip(got, ref, strict=True)))
    if not ref.dtype.is_floating_point:
        return check_equal(got, ref, what)
    return check_close(got, ref, dtype, what)


def verifier(reference: Callable[[Any, Any], Any], dtype: str,
             what: str) -> Callable[[tuple[Any, ...], Any], float]:
    """verify(args, out) comparing ``out`` with ``reference(*args)``."""
    def verify(args: tuple[Any, ...], out: Any) -> float:
        return compare(out, reference(*args), dtype, what)

    return verify


# ---- dynamic per-token quantization of a GEMM's input (W8A8) -------------------------------
#
# int8: vLLM's scaled_int8_quant (symmetric): scale = max|x| / 127, q = round(x / scale).
# fp8:  vLLM's scaled_fp8_quant, dynamic per token: scale = max|x| / 448 (e4m3's largest
#       value), q = e4m3(x / scale).
# The target is ``impl["quant_dtype"]`` (``ops.annotate`` sets it from the GEMMs the op
# feeds; int8 when absent). NVFP4 (fp4) inputs take e2m1 values with an fp8 scale per 16
# elements: torch has no kernel for that, so such an op is skipped.

FP8_MAX = 448.0  # largest finite float8_e4m3fn
QMAX = {"int8": 127.0, "fp8": FP8_MAX}


def quant_dtype(op: Op) -> str:
    """The dtype an op quantizes its output to; Skip when torch cannot run that."""
    target = str((op.impl or {}).get("quant_dtype") or "int8")
    if target not in QMAX:
        raise no_kernel(op, f"per-token {target} quantization of the GEMM input has no torch "
                            "kernel (NVFP4: e2m1 values with an fp8 scale per 16 elements)")
    return target


def quant_per_token(x: Any, target: str = "int8") -> tuple[Any, Any]:
    """(quantized values, float32 scale per row), ``target`` int8 or fp8 (e4m3)."""
    import torch

    scale = x.abs().amax(dim=-1, keepdim=True).float().clamp_min(1e-10) / QMAX[target]
    if target == "fp8":
        return (x.float() / scale).clamp_(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn), scale
    q = torch.round(x.float() / scale).clamp_(-128, 127).to(torch.int8)
    return q, scale


def check_quant(q: Any, scale: Any, x64: Any, what: str, target: str = "int8") -> float:
    """A per-token quantization of float64 ``x64`` to ``target``: the scale is
    max|x| / QMAX and every value dequantizes to within half a step: int8 steps are the
    scale; e4m3 steps are 2^-3 of the value (3 mantissa bits), 2^-9 scales below 2^-6
    (subnormals). Rounding of x to the run dtype adds a little (bf16: ~0.5 int8 step)."""
    import torch

    ref_scale = x64.abs().amax(dim=-1, keepdim=True).clamp_min(1e-10) / QMAX[target]
    s = scale.to(torch.float64)
    want = torch.int8 if target == "int8" else torch.float8_e4m3fn
    if q.dtype != want or s.shape != ref_scale.shape:
        raise MeasureError(f"{what}: {target} values with one scale per token expected")
    serr = float(((s - ref_scale).abs() / ref_scale).max())
    off = (q.to(torch.float64) * s - x64).abs()
    if target == "int8":
        step_err, limit = float((off / s).max()), 0.5 + 0.6
    else:
        step = torch.maximum(x64.abs() * 2.0**-3, s * 2.0**-9)
        step_err, limit = float((off / step).max()), 0.5 + 0.1
    if serr > 1e-2 or step_err > limit:
        raise MeasureError(f"{what}: wrong per-token {target} quantization (scale error "
                           f"{serr:.3g}, {step_err:.3g} steps off)")
    return serr


def quant_note(impl: dict[str, Any]) -> str:
    if not impl.get("quant_out"):
        return ""
    return f"; then per-token {impl.get('quant_dtype') or 'int8'} quant"


def no_kernel(op: Op, why: str) -> Skip:
    return Skip(f"op {op.name}: {why}")
