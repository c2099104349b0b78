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


class Sums(NamedTuple):
    """What one pass over the points also adds up (all x op.count)."""

    time_s: float
    flops_by_kind: dict[str, float]
    bytes_by_kind: dict[str, float]
    time_by_kind: dict[str, float]
    time_by_bound: dict[str, float]
    act_peak_bytes: float  # largest inputs + outputs of one compute op


def roofline(graph: OpGraph, hw: HardwareSpec, ceiling: str = "spec") -> tuple[RooflinePoint, ...]:
    """One point per op. Per instance: time = max(compute, memory) + dequantization + the
    fixed kernel overhead (empirical ceilings only); comm ops: the link's alpha-beta time."""
    return place(graph, hw, ceiling)[0]


def place(graph: OpGraph, hw: HardwareSpec,
          ceiling: str = "spec") -> tuple[tuple[RooflinePoint, ...], Sums]:
    """``roofline`` plus the step's sums, in the same single pass over the ops."""
    bw, bw_src = hw.memory_bandwidth(ceiling)
    fixed = kernel_overhead(hw, ceiling)
    peaks: dict[tuple[str, str], tuple[float, str]] = {}
    vec: dict[str, float] = {}
    out: list[RooflinePoint] = []
    append = out.append
    fk: dict[str, float] = {}
    bk: dict[str, float] = {}
    tk: dict[str, float] = {}
    tb = {"compute": 0.0, "memory": 0.0, "comm": 0.0}
    total = act = 0.0
    for op in graph.ops:
        # tuple indexing: 1 kind, 3 count, 4 flops, 5-9 bytes, 10 dtype, 11 unit, 13 dequant
        kind, n, unit = op[1], op[3], op[11]
        if unit == "link":
            p = _comm_point(op, hw, ceiling)
            append(p)
            t = p[7] * n
            total += t
            fk[kind] = fk.get(kind, 0.0)
            bk[kind] = bk.get(kind, 0.0)
            tk[kind] = tk.get(kind, 0.0) + t
            tb["comm"] += t
            continue
        key = (unit, op[10])
        pk = peaks.get(key)
        if pk is None:
            pk = peaks[key] = hw.tensor_flops(op[10], ceiling) if unit == "tensor" else \
                (hw.vector_flops(op[10]), "spec")
        peak = pk[0]
        io = op[6] + op[7]
        if io > act:
            act = io
        b = op[5] + io + op[8] + op[9]
        flops = op[4]
        t_c = flops / peak
        t_m = b / bw
        extra = fixed
        if op[13]:
            # weight-only dequantization on the vector unit: published small-batch kernels do
            # not hide it behind the weight stream (gpt-fast int8/int4, LLM-002/003)
            v = vec.get(op[10])
            if v is None:
                v = vec[op[10]] = hw.vector_flops(op[10])
            extra += op[13] / v
        inten = flops / b if b else 0.0
        att = inten * bw
        if att > peak:
            att = peak
        if t_c >= t_m:
            time = t_c + extra
            append(_new(RooflinePoint, (op, inten, att, peak, bw, t_c, t_m, time, "compute",
                                        pk[1], b)))
            tb["compute"] += time * n
        else:
            time = t_m + extra
            append(_new(RooflinePoint, (op, inten, att, peak, bw, t_c, t_m, time, "memory",
                                        bw_src, b)))
            tb["memory"] += time * n
        t = time * n
        total += t
        fk[kind] = fk.get(kind, 0.0) + flops * n
        bk[kind] = bk.get(kind, 0.0) + b * n
        tk[kind] = tk.get(kind, 0.0) + t
    return tuple(out), Sums(total, fk, bk, tk, tb, act)


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
