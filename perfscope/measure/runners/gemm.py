"""GEMM runner: ``F.linear`` (with its bias), batched over expert groups, int8 through
``torch._int_mm`` (W8A8), fp8 through ``torch._scaled_mm`` (see ``perfscope.measure.gemm``).

A weight-only quantized GEMM (int4/int8 weights dequantized inside the kernel, activations in
16 bits) has no portable torch kernel; timing a 16-bit GEMM in its place would read two to four
times the weight bytes the op moves, so it is skipped with that reason.
"""

from __future__ import annotations

from perfscope.analytic.ops import Op
from perfscope.measure.gemm import Gemm
from perfscope.measure.runners.common import Runner, need, no_kernel, shape


def check_not_weight_only(op: Op) -> None:
    """Skip a weight-only quantized GEMM (the analytic op, before any dtype conversion)."""
    if op.kind == "gemm" and op.dequant_flops > 0:
        sh = shape(op, "n", "k")
        bits = 8 * op.weight_bytes / (sh.get("groups", 1) * sh["n"] * sh["k"])
        raise no_kernel(op, f"weight-only quantized GEMM ({bits:.2f} bits per weight, "
                            "dequantized in the kernel): torch has no portable kernel for it")


def gemm_runner(op: Op, device: str) -> Runner:
    impl = need(op, "op")
    if impl["op"] != "matmul":
        raise no_kernel(op, f"GEMM op {impl['op']!r} has no runner")
    sh = shape(op, "m", "n", "k")
    check_not_weight_only(op)
    g = Gemm(op.dtype, sh["m"], sh["n"], sh["k"], sh.get("groups", 1),
             bias=bool(impl.get("bias")), pad_int8=device.startswith("cuda"))
    fn = g.fn(device)  # raises Skip for the combinations torch lacks
    g._lead()  # raises Skip for grouped fp8/int8, before anything is allocated
    if g.dtype == "fp8":
        desc = "torch._scaled_mm (e4m3, bf16 out)"
    elif g.dtype == "int8":
        desc = "torch._int_mm (int8, int32 out)" + \
            (f", M padded {g.m}->{g.m_run}" if g.m_run != g.m else "")
    elif g.groups > 1:
        desc = f"torch.bmm over {g.groups} expert groups" + (" + bias" if g.bias else "")
    else:
        desc = "F.linear(x, W" + (", b)" if g.bias else ")")
    extra = {"padded_m": g.m_run} if g.m_run != g.m else {}
    return Runner(desc, fn, lambda s: g.x(device, seed=100 + s),
                  lambda s: g.w(device, seed=1 + 10 * s), g.checker(), extra)
