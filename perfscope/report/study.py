"""The data behind ``perfscope profile``: one model and configuration on one or more devices,
at an operating batch and across a batch sweep, with spec and empirical ceilings, where decode
turns compute-bound and where the KV cache stops fitting. Pure computation over analyze().
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, NamedTuple

from perfscope.report.summary import ServingSummary, serving_summary

DEFAULT_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
SEARCH_MAX = 1 << 16  # largest batch the crossover search looks at


class BatchPoint(NamedTuple):
    batch: int
    spec: ServingSummary
    empirical: ServingSummary


class HwStudy(NamedTuple):
    hw: Any
    spec: ServingSummary  # at the operating batch, spec ceilings (upper-bound speed)
    empirical: ServingSummary  # the same at empirical ceilings (expected)
    sweep: tuple[BatchPoint, ...]
    gemm_compute_batch: int | None  # smallest batch whose decode GEMMs are compute-bound
    step_compute_batch: int | None  # smallest batch whose whole decode step is
    kv_limit_batch: int  # largest batch whose KV cache still fits at the last token
    contexts: tuple[tuple[int, Any], ...]  # (cached tokens, MemoryReport) at the batch
    context_limit: int | None  # longest context that fits at the operating batch


class Study(NamedTuple):
    model: Any
    base: Any  # Scenario: dtypes, parallelism, implementation
    batch: int
    isl: int
    osl: int
    hws: tuple[HwStudy, ...]
    engine: str | None = None  # serving engine of the predictions (None: neutral)
    ttft_target_s: float | None = None  # latency targets for the recommendations
    tpot_target_s: float | None = None

    @property
    def batches(self) -> tuple[int, ...]:
        return tuple(p.batch for p in self.hws[0].sweep) if self.hws else ()


def gemm_compute_bound(a: Any) -> bool:
    """Most of the step's GEMM time is compute-bound."""
    comp = sum(p.total_time_s for p in a.points if p.op.kind == "gemm" and p.bound == "compute")
    tot = sum(p.total_time_s for p in a.points if p.op.kind == "gemm")
    return tot > 0 and comp >= 0.5 * tot


def first_batch(pred: Callable[[int], bool], hi: int = SEARCH_MAX) -> int | None:
    """Smallest batch in [1, hi] where ``pred`` holds (it is monotone in batch), or None."""
    if pred(1):
        return 1
    if not pred(hi):
        return None
    lo = 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if pred(mid):
            hi = mid
        else:
            lo = mid
    return hi


def study_hw(model: Any, hw: Any, base: Any, *, batch: int, isl: int, osl: int,
             batches: Sequence[int], engine: str | None = None) -> HwStudy:
    from perfscope.analysis import analyze

    def summary(b: int, ceiling: str) -> ServingSummary:
        return serving_summary(model, hw, base, batch=b, isl=isl, osl=osl, ceiling=ceiling,
                               engine=engine)

    spec, emp = summary(batch, "spec"), summary(batch, "empirical")
    sweep = []
    for b in sorted(set(batches)):
        if b == batch:
            sweep.append(BatchPoint(b, spec, emp))
            continue
        sweep.append(BatchPoint(b, summary(b, "spec"), summary(b, "empirical")))
    dec = spec.decode.scenario

    def decode_at(b: int) -> Any:
        return analyze(model, hw, replace(dec, batch=b))

    gemm_b = first_batch(lambda b: gemm_compute_bound(decode_at(b)))
    step_b = first_batch(lambda b: decode_at(b).totals.bound == "compute")
    contexts = []
    top = model.max_position
    c = 256
    while c < top:
        contexts.append(c)
        c *= 2
    contexts.append(top - 1)
    fin = spec.final.scenario
    mems = tuple((c, analyze(model, hw, replace(fin, context_len=c)).memory) for c in contexts)
    return HwStudy(hw, spec, emp, tuple(sweep), gemm_b, step_b,
                   spec.final.memory.max_batch, mems, _context_limit(model, hw, fin))


def _context_limit(model: Any, hw: Any, fin: Any) -> int | None:
    """Longest cached context per sequence that fits at the batch (None: even the shortest
    does not; the model's own limit when everything fits)."""
    from perfscope.analysis import analyze

    def fits(c: int) -> bool:
        return analyze(model, hw, replace(fin, context_len=c)).memory.fits

    top = model.max_position - 1
    if fits(top):
        return top
    if not fits(1):
        return None
    lo, hi = 1, top
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo


def build_study(model: Any, hws: Sequence[Any], base: Any, *, batch: int, isl: int,
                osl: int, batches: Sequence[int] = DEFAULT_BATCHES, engine: str | None = None,
                ttft_target_s: float | None = None,
                tpot_target_s: float | None = None) -> Study:
    """Analyse ``model`` on each of ``hws`` (see the module docstring); the serving figures
    are ``perfscope predict``'s for ``engine`` (neutral when None)."""
    sweep = sorted(set(batches) | {batch})
    return Study(model, base, batch, isl, osl,
                 tuple(study_hw(model, hw, base, batch=batch, isl=isl, osl=osl, batches=sweep,
                                engine=engine)
                       for hw in hws), engine, ttft_target_s, tpot_target_s)


def bottleneck(s: ServingSummary) -> dict[str, Any]:
    """What dominates the decode step: the bound, the largest op, and what its bytes are
    (weights, KV cache or activations), as numbers for a one-line headline."""
    a = s.decode
    t = a.totals.time_s or 1.0
    top = max(a.points, key=lambda p: p.total_time_s)
    moved = {"weights": 0.0, "KV cache": 0.0, "activations": 0.0}
    for p in a.points:
        op = p.op
        moved["weights"] += op.weight_bytes * op.count
        moved["KV cache"] += (op.kv_read_bytes + op.kv_write_bytes) * op.count
        moved["activations"] += (op.act_in_bytes + op.act_out_bytes) * op.count
    total_bytes = sum(moved.values()) or 1.0
    comm = a.totals.time_by_kind.get("comm", 0.0)
    return {"bound": a.totals.bound, "top_op": top.op.name, "top_share": top.total_time_s / t,
            "bytes_share": {k: v / total_bytes for k, v in moved.items()},
            "comm_share": comm / t,
            "bound_share": sum(p.total_time_s for p in a.points
                               if p.bound == a.totals.bound) / t}


def gain_to(s: ServingSummary, sweep: Sequence[BatchPoint], limit: int) -> BatchPoint | None:
    """The sweep point with the most tokens/s per GPU that still fits (the batching headroom)."""
    ok = [p for p in sweep if p.batch <= limit and p.spec.final.memory.fits]
    if not ok:
        return None
    return max(ok, key=lambda p: p.spec.tokens_per_s_per_gpu)


def log2_batches(limit: int) -> tuple[int, ...]:
    return tuple(2 ** i for i in range(int(math.log2(max(1, limit))) + 1))
