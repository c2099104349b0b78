"""Place every op on the roofline of a device: time = max(compute, memory), or link time.

Compute ceilings: tensor unit of the op's dtype for GEMMs and attention, vector unit for the
rest; weight-only dequantization runs on the vector unit on top. Memory: HBM bandwidth. Comm
ops: a ring over the device's GPU-to-GPU link, alpha-beta model (steps x latency + bus bytes /
bandwidth). ``ceiling="empirical"`` swaps in measured GEMM, HBM and bus bandwidths where the
spec has them; each point says which ceiling it used.
"""

from __future__ import annotations

from dataclasses import dataclass

from perfscope.analytic.ops import Op, OpGraph
from perfscope.analytic.parallel import link_bytes, link_steps
from perfscope.errors import InputError
from perfscope.specs.hardware import HardwareSpec


@dataclass(frozen=True, slots=True)
class RooflinePoint:
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

    @property
    def total_time_s(self) -> float:
        return self.time_s * self.op.count


def roofline(graph: OpGraph, hw: HardwareSpec, ceiling: str = "spec") -> tuple[RooflinePoint, ...]:
    bw, bw_src = hw.memory_bandwidth(ceiling)
    peaks: dict[tuple[str, str], tuple[float, str]] = {}
    out = []
    for op in graph.ops:
        if op.unit == "link":
            out.append(_comm_point(op, hw, ceiling))
            continue
        key = (op.unit, op.dtype)
        pk = peaks.get(key)
        if pk is None:
            pk = hw.tensor_flops(op.dtype, ceiling) if op.unit == "tensor" else \
                (hw.vector_flops(op.dtype), "spec")
            peaks[key] = pk
        peak, src = pk
        b = op.bytes
        t_c = op.flops / peak
        if op.dequant_flops:
            t_c += op.dequant_flops / hw.vector_flops(op.dtype)
        t_m = b / bw
        inten = op.flops / b if b else 0.0
        if t_c >= t_m:
            bound, used = "compute", src
        else:
            bound, used = "memory", bw_src
        out.append(RooflinePoint(op, inten, min(peak, inten * bw), peak, bw, t_c, t_m,
                                 max(t_c, t_m), bound, used))
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
    t = link_steps(op) * link.latency_s + bus / bw
    return RooflinePoint(op, 0.0, 0.0, 0.0, bw, 0.0, bus / bw, t, "comm", src)
