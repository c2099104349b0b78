"""analyze(): model + hardware + scenario -> op graph, roofline points, totals, memory."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from perfscope.analytic.common import Ctx
from perfscope.analytic.expert_load import busiest_rank
from perfscope.analytic.memory import MemoryReport, memory
from perfscope.analytic.ops import OpGraph
from perfscope.analytic.transformer import build_graph
from perfscope.errors import InputError
from perfscope.roofline import RooflinePoint, Sums, place
from perfscope.specs.hardware import HardwareSpec
from perfscope.specs.model import ModelSpec
from perfscope.specs.precision import Precision, resolve_precision
from perfscope.specs.scenario import Scenario, field_error
from perfscope.units import fmt_bytes, fmt_time

SCHEMA = "perfscope.analysis/1"


class Totals(NamedTuple):
    """Per GPU (busiest pipeline stage) FLOPs and bytes; ``time_s`` is the step's wall time
    for the whole group (PP: the sum over stages plus transfers)."""

    flops: float
    bytes: float
    time_s: float
    bound: str
    flops_by_kind: Mapping[str, float]
    bytes_by_kind: Mapping[str, float]
    time_by_kind: Mapping[str, float]
    mfu: float  # achieved / dense tensor peak of the compute dtype, at the predicted time
    mbu: float  # HBM bytes / (time x spec bandwidth)
    tokens_per_s: float  # new tokens of the whole batch per second of this step


class Analysis(NamedTuple):
    """The result of ``analyze``. Immutable (a NamedTuple, like Op and RooflinePoint: these
    records are built on every call and a frozen dataclass costs several microseconds)."""

    model: ModelSpec
    hw: HardwareSpec
    scenario: Scenario
    precision: Precision
    graph: OpGraph
    points: tuple[RooflinePoint, ...]
    totals: Totals
    memory: MemoryReport

    def __repr__(self) -> str:
        s, t, mem = self.scenario, self.totals, self.memory
        lengths = f"prompt {s.seq_len}" if s.phase == "prefill" else \
            f"context {s.context_len}" if s.phase == "decode" else \
            f"chunk {s.seq_len} at {s.context_len}"
        layout = "".join(f" {k} {v}" for k, v in (("tp", s.tp), ("pp", s.pp), ("ep", s.ep),
                                                   ("attn_dp", s.attn_dp)) if v > 1)
        fit = "fits" if mem.fits else "does NOT fit"
        return (f"Analysis({self.model.name} on {self.hw.display_name}, {s.phase} batch "
                f"{s.batch} {lengths}{layout}, {self.precision.weight}: "
                f"{fmt_time(t.time_s)} {t.bound}-bound, {fit} "
                f"({fmt_bytes(mem.total_bytes)} of {fmt_bytes(mem.usable_bytes)} per GPU))")

    def to_json(self) -> dict[str, Any]:
        return to_json(self)

    def to_frame(self):
        """One row per op (pandas), columns carry units."""
        import pandas as pd

        return pd.DataFrame([_op_row(p) for p in self.points])


def analyze(model: ModelSpec, hw: HardwareSpec, scenario: Scenario) -> Analysis:
    """Analyse one step of ``model`` on ``hw``. Pure: same inputs, same result."""
    s = scenario
    if s.mla_absorb is not None and model.mla is None:
        raise field_error("mla_absorb", s.mla_absorb, f"applies to MLA models (deepseek_v3), "
                          f"not {model.name}; leave it None (auto)")
    if s.tokens_after > model.max_position:
        what = f"seq_len {s.seq_len}" if s.phase == "prefill" else \
            f"context_len {s.context_len} + {s.new_tokens} new"
        raise InputError(f"{what}: {s.tokens_after} tokens exceed the {model.max_position}-"
                         f"token context of {model.name} (max_position_embeddings); shorten "
                         "them (--seq-len, --context-len)")
    prec = resolve_precision(s, hw, model)
    graph, ctx = build_graph(model, s, prec)
    points, sums = place(graph, hw, s.ceiling)
    mem = memory(ctx, sums.act_peak_bytes, hw.memory_bytes, s.memory_reserve)
    totals = _totals(ctx, graph, points, sums, hw)
    return Analysis(model, hw, s, prec, graph, points, totals, mem)


def _totals(c: Ctx, graph: OpGraph, points: tuple[RooflinePoint, ...], sums: Sums,
            hw: HardwareSpec) -> Totals:
    fk, bk, tk, tb, time = (sums.flops_by_kind, sums.bytes_by_kind, sums.time_by_kind,
                            sums.time_by_bound, sums.time_s)
    if c.shard.pp > 1:  # per GPU: the busiest stage
        fk, bk = _busiest_stage(c, graph, points)
    flops, nbytes = sum(fk.values()), sum(bk.values())
    peak = hw.tensor_flops(c.precision.compute)[0]
    bw = hw.memory_bandwidth_bytes_s
    # positional (mfu, mbu, tokens_per_s last): a NamedTuple built from keywords is slower
    return Totals(flops, nbytes, time, max(tb, key=tb.__getitem__), fk, bk, tk,
                  flops / (time * peak) if time else 0.0,
                  nbytes / (time * bw) if time else 0.0,
                  c.all_tokens / time if time else 0.0)


def _busiest_stage(c: Ctx, graph: OpGraph, points) -> tuple[dict[str, float], dict[str, float]]:
    """FLOPs and bytes by kind of the stage with the longest time."""
    stages = c.shard.stages
    best_flops: dict[str, float] = {}
    best_bytes: dict[str, float] = {}
    best_time = -1.0
    n_head = next(i for i, ls in enumerate(graph.op_layers) if ls is not None)
    for si, stage in enumerate(stages):
        f: dict[str, float] = {}
        b: dict[str, float] = {}
        t = 0.0
        for i, (p, ls) in enumerate(zip(points, graph.op_layers, strict=True)):
            op = p.op
            if op.name == "pp.send":
                continue
            if ls is None:
                n = 1 if (si == 0 and i < n_head) or (si == len(stages) - 1 and i > n_head) \
                    else 0
            else:
                n = sum(1 for j in ls if j in stage)
            f[op.kind] = f.get(op.kind, 0.0) + op.flops * n
            b[op.kind] = b.get(op.kind, 0.0) + op.bytes * n
            t += p.time_s * n
        if t > best_time:
            best_flops, best_bytes, best_time = f, b, t
    return best_flops, best_bytes


# ---- the public JSON contract ----------------------------------------------------------

def _op_row(p: RooflinePoint) -> dict[str, Any]:
    op = p.op
    return {
        "name": op.name, "kind": op.kind, "layer": op.layer, "count": op.count,
        "flops": op.flops, "bytes_read": op.bytes_read, "bytes_written": op.bytes_written,
        "intensity": p.intensity, "attainable_flops_per_s": p.attainable_flops_per_s,
        "time_s": p.time_s, "bound": p.bound,
        # beyond the contract: totals over `count`, what moves, where the ceiling came from
        "total_flops": op.flops * op.count, "total_time_s": p.time_s * op.count,
        "weight_bytes": op.weight_bytes, "act_in_bytes": op.act_in_bytes,
        "act_out_bytes": op.act_out_bytes, "kv_read_bytes": op.kv_read_bytes,
        "kv_write_bytes": op.kv_write_bytes, "link_bytes": op.comm_bytes,
        "dequant_flops": op.dequant_flops, "dtype": op.dtype, "unit": op.unit,
        "ceiling": p.ceiling, "shape": dict(op.shape or {}),
        # comm ops: the bottleneck link of the op's group and NCCL's algorithm/protocol
        "link": p.link, "algorithm": p.algorithm, "overhead_s": p.overhead_s,
    }


def _expert_load(a: Analysis) -> dict[str, Any] | None:
    """Per EP rank, the mean and the busiest rank's experts touched and assignments."""
    e, s = a.model.moe, a.scenario
    if e is None:
        return None
    load = busiest_rank(e.n_experts, e.top_k, s.ep, s.batch * s.new_tokens)
    return {"ranks": s.ep, "experts_per_rank": e.n_experts // s.ep,
            "experts_touched_mean": load.experts_mean,
            "experts_touched_busiest": load.experts_max,
            "assignments_mean": load.assignments_mean,
            "assignments_busiest": load.assignments_max}


def to_json(a: Analysis) -> dict[str, Any]:
    s, m, t, mem = a.scenario, a.model, a.totals, a.memory
    return {
        "schema": SCHEMA,
        "model": {"name": m.name, "params": m.params, "active_params": m.active_params,
                  "model_type": m.model_type, "layers": m.n_layers,
                  # a multimodal wrapper: its language model (text_config) is what is analysed
                  "language_model_of": m.text_of},
        "hardware": _hardware_json(a),
        "scenario": {"phase": s.phase, "batch": s.batch, "seq_len": s.seq_len,
                     "context_len": s.cached_before if s.phase != "prefill" else 0,
                     "tp": s.tp, "pp": s.pp, "ep": s.ep,
                     "attn_dp": s.attn_dp, "moe_comm": s.moe_comm,
                     "weight_dtype": str(a.precision.weight), "act_dtype": a.precision.act,
                     "kv_dtype": a.precision.kv, "scheme": a.precision.scheme,
                     "weight_source": a.precision.weight_source, "attention": s.attention,
                     "fused_norm": s.fused_norm, "ceiling": s.ceiling,
                     "kv_tokens_per_seq": s.tokens_after},
        # what runs (W8A8 fp8, W8A16 fp8 weight-only, ...) and where each dtype came from
        "precision": a.precision.to_json(),
        "expert_parallel": _expert_load(a),
        "totals": {"flops": t.flops, "bytes": t.bytes, "time_s": t.time_s, "bound": t.bound,
                   "flops_by_kind": dict(t.flops_by_kind), "bytes_by_kind": dict(t.bytes_by_kind),
                   "time_by_kind": dict(t.time_by_kind), "mfu": t.mfu, "mbu": t.mbu,
                   "tokens_per_s": t.tokens_per_s, **_overheads(a)},
        "memory": {"weights_bytes": mem.weights_bytes, "kv_cache_bytes": mem.kv_cache_bytes,
                   "activation_peak_bytes": mem.activation_peak_bytes,
                   "total_bytes": mem.total_bytes, "capacity_bytes": mem.capacity_bytes,
                   "reserve_fraction": mem.reserve_fraction, "usable_bytes": mem.usable_bytes,
                   "fits": mem.fits, "max_batch": mem.max_batch},
        "ops": [_op_row(p) for p in a.points],
    }


def _hardware_json(a: Analysis) -> dict[str, Any]:
    from perfscope.specs.ceilings import describe

    hw, s = a.hw, a.scenario
    dts = list(dict.fromkeys(d for d in (a.precision.compute, a.precision.act) if
                             hw.has_dtype(d)))
    return {"name": hw.name, "display_name": hw.display_name,
            "memory_bytes": hw.memory_bytes, "memory_nominal_bytes": hw.memory_nominal_bytes,
            "memory_capacity_source": "driver" if hw.memory_driver_source else "nominal",
            "memory_bandwidth_bytes_s": hw.memory_bandwidth(s.ceiling)[0],
            "peak_flops_per_s": hw.tensor_flops(a.precision.compute, s.ceiling)[0],
            "gpu_link": hw.gpu_link.name if hw.gpu_link else None,
            "topology": hw.topology.describe(),
            "ceilings": describe(hw, s.ceiling, dts)}


def _overheads(a: Analysis) -> dict[str, float]:
    """The fixed per-kernel cost inside totals.time_s, summed over the step (zero on the spec
    roofline)."""
    return {"kernel_overhead_s": sum((p.overhead_s * p.op.count for p in a.points
                                      if p.bound != "comm"), 0.0)}
