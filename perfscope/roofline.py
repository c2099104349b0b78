"""Place every op on the roofline of a device: time = max(compute, memory), or link time.

Compute ceilings: tensor unit of the op's dtype for GEMMs and attention, vector unit for the
rest; weight-only dequantization runs on the vector unit on top. Memory: HBM bandwidth. Comm
ops: perfscope.collectives (the links the op's group crosses, NCCL's algorithm and protocol
choice). ``ceiling="empirical"`` swaps in achieved rates (measured on the part, or derived by
the rule in perfscope.specs.ceilings) and the fixed per-kernel and per-collective costs; each
point says which link it used and where its ceiling came from (spec | measured | derived).
"""

from __future__ import annotations

from operator import attrgetter
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
# the fields place() reads, by name, in one C-level call: as fast as op[1], op[3]... and
# faster than eleven attribute lookups (benchmarks/bench_analyze.py)
_FIELDS = attrgetter("kind", "count", "unit", "dtype", "flops", "weight_bytes", "act_in_bytes",
                     "act_out_bytes", "kv_read_bytes", "kv_write_bytes", "dequant_flops")


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
    peaks: dict[tuple[str, str], tuple[float, str]] = {}
    vec: dict[str, float] = {}
    out: list[RooflinePoint] = []
    append = out.append
    fk: dict[str, float] = {}
    bk: dict[str, float] = {}
    tk: dict[str, float] = {}
    tb = {"compute": 0.0, "memory": 0.0, "comm": 0.0}
    total = act = overhead = 0.0
    for op in graph.ops:
        kind, n, unit, dtype, flops, w_b, in_b, out_b, kvr_b, kvw_b, dq = _FIELDS(op)
        if unit == "link":
            c = comm_cost(op, topo, ceiling)
            append(_new(RooflinePoint, (op, 0.0, 0.0, 0.0, c.bus_bytes_s, 0.0, c.time_s, c.time_s,
                                        "comm", c.source, 0.0, c.link, c.algorithm,
                                        c.overhead_s)))
            t = c.time_s * n
            total += t
            overhead += c.overhead_s * n
            fk[kind] = fk.get(kind, 0.0)
            bk[kind] = bk.get(kind, 0.0)
            tk[kind] = tk.get(kind, 0.0) + t
            tb["comm"] += t
            continue
        key = (unit, dtype)
        pk = peaks.get(key)
        if pk is None:
            pk = peaks[key] = hw.tensor_flops(dtype, ceiling) if unit == "tensor" else \
                (hw.vector_flops(dtype), "spec")
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
            v = vec.get(dtype)
            if v is None:
                v = vec[dtype] = hw.vector_flops(dtype)
            extra += dq / v
        inten = flops / b if b else 0.0
        att = inten * bw
        if att > peak:
            att = peak
        if t_c >= t_m:
            time = t_c + extra
            append(_new(RooflinePoint, (op, inten, att, peak, bw, t_c, t_m, time, "compute",
                                        pk[1], b, None, None, fixed)))
            tb["compute"] += time * n
        else:
            time = t_m + extra
            append(_new(RooflinePoint, (op, inten, att, peak, bw, t_c, t_m, time, "memory",
                                        bw_src, b, None, None, fixed)))
            tb["memory"] += time * n
        t = time * n
        total += t
        overhead += fixed * n
        fk[kind] = fk.get(kind, 0.0) + flops * n
        bk[kind] = bk.get(kind, 0.0) + b * n
        tk[kind] = tk.get(kind, 0.0) + t
    return tuple(out), Sums(total, fk, bk, tk, tb, act, overhead)
