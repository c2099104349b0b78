"""Place every op on the roofline of a device: time = max(compute, memory), or link time.

Compute ceilings: tensor unit of the op's dtype for GEMMs and attention, vector unit for the
rest; weight-only dequantization runs on the vector unit on top. Memory: HBM bandwidth. Comm
ops: perfscope.collectives (the links the op's group crosses, NCCL's algorithm and protocol
choice). ``ceiling="empirical"`` swaps in achieved rates (measured on the part, or derived by
the rule in perfscope.specs.ceilings) and the fixed per-kernel and per-collective costs; each
point says which link it used and where its ceiling came from (spec | measured | derived).
"""

from __future__ import annotations

from typing import NamedTuple

from perfscope.analytic.ops import Op, OpGraph
from perfscope.collectives import comm_cost
from perfscope.specs.hardware import HardwareSpec


class RooflinePoint(NamedTuple):
    op: Op
    intensity: float  # FLOP per HBM byte
    attainable_flops_per_s: float  # min(peak, intensity x bandwidth)
    peak_flops_per_s: float
    bandwidth_bytes_s: float  # HBM bandwidth; comm ops: the bus rate of their bottleneck link
    compute_time_s: float  # per instance
    memory_time_s: float  # comm ops: the link time
    time_s: float  # per instance; x op.count for the step
    bound: str  # compute | memory | comm
    ceiling: str  # where the binding ceiling came from: spec | measured | derived
    bytes: float = 0.0  # HBM bytes of one instance (op.bytes)
    link: str | None = None  # comm ops: the bottleneck link the group crosses
    algorithm: str | None = None  # comm ops: NCCL algorithm/protocol ("ring/LL")
    overhead_s: float = 0.0  # fixed cost included in time_s (kernel or collective call)

    @property
    def total_time_s(self) -> float:
        return self.time_s * self.op.count


_new = tuple.__new__
# place() unpacks each Op whole, as a tuple: one opcode, faster than fetching its fields by
# name (benchmarks/bench_analyze.py); this fails loudly if Op's fields change
assert Op._fields == ("name", "kind", "layer", "count", "flops", "weight_bytes", "act_in_bytes",
                      "act_out_bytes", "kv_read_bytes", "kv_write_bytes", "dtype", "unit",
                      "shape", "dequant_flops", "comm", "comm_bytes", "ranks", "impl")


class Sums(NamedTuple):
    """What one pass over the points also adds up (all x op.count)."""

    time_s: float
    flops_by_kind: dict[str, float]
    bytes_by_kind: dict[str, float]
    time_by_kind: dict[str, float]
    time_by_bound: dict[str, float]
    act_peak_bytes: float  # largest inputs + outputs of one compute op
    overhead_s: float = 0.0  # fixed per-kernel and per-collective costs in time_s


def roofline(graph: OpGraph, hw: HardwareSpec, ceiling: str = "spec") -> tuple[RooflinePoint, ...]:
    """One point per op. Per instance: time = max(compute, memory) + dequantization + the
    fixed kernel overhead (empirical ceilings only); comm ops: perfscope.collectives."""
    return place(graph, hw, ceiling)[0]


def place(graph: OpGraph, hw: HardwareSpec,
          ceiling: str = "spec") -> tuple[tuple[RooflinePoint, ...], Sums]:
    """``roofline`` plus the step's sums, in the same single pass over the ops."""
    bw, bw_src = hw.memory_bandwidth(ceiling)
    fixed = hw.kernel_overhead(ceiling)[0]
    topo = hw.topology
    tensor_peaks: dict[str, tuple[float, str]] = {}
    vector_peaks: dict[str, tuple[float, str]] = {}  # also the dequantization's rate
    out: list[RooflinePoint] = []
    append = out.append
    by_kind: dict[str, list[float]] = {}  # kind -> [flops, bytes, time], all x count
    t_compute = t_memory = t_comm = 0.0
    total = act = overhead = 0.0
    for op in graph.ops:
        (_, kind, _, n, flops, w_b, in_b, out_b, kvr_b, kvw_b, dtype, unit, _, dq, _, _, _,
         _) = op
        acc = by_kind.get(kind)
        if acc is None:
            acc = by_kind[kind] = [0.0, 0.0, 0.0]
        if unit == "link":
            c = comm_cost(op, topo, ceiling)
            append(_new(RooflinePoint, (op, 0.0, 0.0, 0.0, c.bus_bytes_s, 0.0, c.time_s, c.time_s,
                                        "comm", c.source, 0.0, c.link, c.algorithm,
                                        c.overhead_s)))
            t = c.time_s * n
            overhead += c.overhead_s * n
            acc[2] += t
            t_comm += t
            total += t
            continue
        if unit == "tensor":
            pk = tensor_peaks.get(dtype)
            if pk is None:
                pk = tensor_peaks[dtype] = hw.tensor_flops(dtype, ceiling)
        else:
            pk = vector_peaks.get(dtype)
            if pk is None:
                pk = vector_peaks[dtype] = (hw.vector_flops(dtype), "spec")
        peak = pk[0]
        io = in_b + out_b
        if io > act:
            act = io
        b = w_b + io + kvr_b + kvw_b
        t_c = flops / peak
        t_m = b / bw
        extra = fixed
        if dq:
            # weight-only dequantization on the vector unit: published small-batch kernels do
            # not hide it behind the weight stream (gpt-fast int8/int4, LLM-002/003)
            v = vector_peaks.get(dtype)
            if v is None:
                v = vector_peaks[dtype] = (hw.vector_flops(dtype), "spec")
            extra += dq / v[0]
        inten = flops / b if b else 0.0
        att = inten * bw
        if att > peak:
            att = peak
        if t_c >= t_m:
            time = t_c + extra
            append(_new(RooflinePoint, (op, inten, att, peak, bw, t_c, t_m, time, "compute",
                                        pk[1], b, None, None, fixed)))
            t = time * n
            t_compute += t
        else:
            time = t_m + extra
            append(_new(RooflinePoint, (op, inten, att, peak, bw, t_c, t_m, time, "memory",
                                        bw_src, b, None, None, fixed)))
            t = time * n
            t_memory += t
        total += t
        overhead += fixed * n
        acc[0] += flops * n
        acc[1] += b * n
        acc[2] += t
    fk = {k: a[0] for k, a in by_kind.items()}
    bk = {k: a[1] for k, a in by_kind.items()}
    tk = {k: a[2] for k, a in by_kind.items()}
    tb = {"compute": t_compute, "memory": t_memory, "comm": t_comm}
    return tuple(out), Sums(total, fk, bk, tk, tb, act, overhead)
