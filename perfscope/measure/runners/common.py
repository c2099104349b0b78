"""What every op runner is made of, and the pieces several share (per-token int8 quant).

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


# ---- W8A8 dynamic per-token quantization (vLLM's scaled_int8_quant, symmetric) --------------

def quant_per_token(x: Any) -> tuple[Any, Any]:
    """(int8 values, float32 scale per row): scale = max|x| / 127, q = round(x / scale)."""
    import torch

    scale = x.abs().amax(dim=-1, keepdim=True).float().clamp_min(1e-10) / 127.0
    q = torch.round(x.float() / scale).clamp_(-128, 127).to(torch.int8)
    return q, scale


def check_quant(q: Any, scale: Any, x64: Any, what: str) -> float:
    """A per-token int8 quantization of float64 ``x64``: the scale is max|x| / 127 and every
    value dequantizes to within half a step (plus rounding of x to the run dtype)."""
    import torch

    ref_scale = x64.abs().amax(dim=-1, keepdim=True).clamp_min(1e-10) / 127.0
    s = scale.to(torch.float64)
    if q.dtype != torch.int8 or s.shape != ref_scale.shape:
        raise MeasureError(f"{what}: int8 values with one scale per token expected")
    serr = float(((s - ref_scale).abs() / ref_scale).max())
    step_err = float(((q.to(torch.float64) * s - x64).abs() / s).max())
    if serr > 1e-2 or step_err > 0.5 + 0.6:  # bf16 inputs move x by up to ~0.5 step
        raise MeasureError(f"{what}: wrong per-token int8 quantization (scale error {serr:.3g},"
                           f" {step_err:.3g} steps off)")
    return serr


def quant_note(impl: dict[str, Any]) -> str:
    return "; then per-token int8 quant" if impl.get("quant_out") else ""


def no_kernel(op: Op, why: str) -> Skip:
    return Skip(f"op {op.name}: {why}")
