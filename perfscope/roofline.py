"""Place every op on the roofline of a device: time = max(compute, memory), or link time.

Compute ceilings: tensor unit of the op's dtype for GEMMs and attention, vector unit for the
rest; weight-only dequantization runs on the vector unit on top. Memory: HBM bandwidth. Comm
ops: a ring over the device's GPU-to-GPU link, alpha-beta model (steps x latency + bus bytes /
bandwidth). ``ceiling="empirical"`` swaps in measured GEMM, HBM and bus bandwidths where the
spec has them; each point says which ceiling it used.
"""

from __future__ import annotations

from typing import NamedTuple

from perfscope.analytic.ops import Op, OpGraph
from perfscope.analytic.parallel import link_bytes, link_steps
from perfscope.errors import InputError
from perfscope.specs.hardware import HardwareSpec


class RooflinePoint(NamedTuple):
    op: Op
    intensity: float  # FLOP per HBM byte
    attainable_flops_per_s: float  # min(peak, intensity x bandwidth)
    peak_flops_per_s: float
    bandwidth_bytes_s: float
    compute_time_s: float  # per instance
    memory_time_s: float
    time_s: float  # per instance; x op.count for the step
    bound: str  # compute | memory | comm
    ceiling: str  # spec | empirical
    bytes: float = 0.0  # HBM bytes of one instance (op.bytes)

    @property
    def total_time_s(self) -> float:
        return self.time_s * self.op.count


_new = tuple.__new__

# Fixed cost per kernel under empirical ceilings when the device spec has no measured value:
# launch gap inside a CUDA graph plus the ramp-up and tail of a memory-bound kernel. Fitted
# once to gpt-fast's Llama-2-7B bf16 batch-1 decode on A100-80GB (LLM-001: 104.9 tokens/s
# against 7.6 ms of weight streaming at the empirical bandwidth over 291 kernels), then
# validated on the other 23 published cases (benchmarks/validate_decode_batch1.py).
DEFAULT_KERNEL_OVERHEAD_S = 6.5e-6


def kernel_overhead(hw: HardwareSpec, ceiling: str) -> float:
    if ceiling != "empirical":
        return 0.0  # the spec roofline is the ideal: no fixed costs
    if hw.empirical and hw.empirical.kernel_overhead_s is not None:
        return hw.empirical.kernel_overhead_s
    return DEFAULT_KERNEL_OVERHEAD_S


def roofline(graph: OpGraph, hw: HardwareSpec, ceiling: str = "spec") -> tuple[RooflinePoint, ...]:
    """One point per op. Per instance: time = max(compute, memory) + dequantization + the
    fixed kernel overhead (empirical ceilings only); comm ops: the link's alpha-beta time."""
    bw, bw_src = hw.memory_bandwidth(ceiling)
    fixed = kernel_overhead(hw, ceiling)
    peaks: dict[tuple[str, str], tuple[float, str]] = {}
    vec: dict[str, float] = {}
    out: list[RooflinePoint] = []
    append = out.append
    for op in graph.ops:
        # tuple indexing: 4 flops, 5-9 the bytes, 10 dtype, 11 unit, 13 dequant (see Op)
        unit = op[11]
        if unit == "link":
            append(_comm_point(op, hw, ceiling))
            continue
        key = (unit, op[10])
        pk = peaks.get(key)
        if pk is None:
            pk = peaks[key] = hw.tensor_flops(op[10], ceiling) if unit == "tensor" else \
                (hw.vector_flops(op[10]), "spec")
        peak = pk[0]
        b = op[5] + op[6] + op[7] + op[8] + op[9]
        flops = op[4]
        t_c = flops / peak
        t_m = b / bw
        extra = fixed
        if op[13]:
            # weight-only dequantization on the vector unit: published small-batch kernels do
            # not hide it behind the weight stream (gpt-fast int8/int4, LLM-002/003)
            v = vec.get(op.dtype)
            if v is None:
                v = vec[op.dtype] = hw.vector_flops(op.dtype)
            extra += op.dequant_flops / v
        inten = flops / b if b else 0.0
        att = inten * bw
        if att > peak:
            att = peak
        if t_c >= t_m:
            append(_new(RooflinePoint, (op, inten, att, peak, bw, t_c, t_m, t_c + extra,
                                        "compute", pk[1], b)))
        else:
            append(_new(RooflinePoint, (op, inten, att, peak, bw, t_c, t_m, t_m + extra,
                                        "memory", bw_src, b)))
    return tuple(out)


def _comm_point(op: Op, hw: HardwareSpec, ceiling: str) -> RooflinePoint:
    link = hw.gpu_link
    if link is None:
        raise InputError(f"{hw.display_name} has no GPU-to-GPU or host link in its spec, so "
                         "TP/PP communication cannot be timed; add [links] to the spec")
    bus = link_bytes(op)
    if ceiling == "empirical" and link.empirical_busbw_bytes_s:
        bw, src = link.empirical_busbw_bytes_s, "empirical"
    else:
        bw, src = link.bandwidth_bytes_s, "spec"
    t = link.base_latency_s + link_steps(op) * link.latency_s + bus / bw
    return RooflinePoint(op, 0.0, 0.0, 0.0, bw, 0.0, bus / bw, t, "comm", src)
