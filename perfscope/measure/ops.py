"""Op microbenchmarks: time each distinct op shape of an analytic graph, joined to it by name.

Each analytic Op becomes an OpCase (``opcases``: the shape and dtype run, with its counts) and
a Runner (``runners``: the computation the model performs, chosen by ``Op.impl``). The timed
calls' outputs are checked against float64 references; the measured point carries achieved
FLOP/s and bytes/s (from the analytic counts), the predicted time of the same shape on the
chosen hardware (perfscope.roofline), and the percentage of the roof (predicted / measured
time: equal to achieved / attainable FLOP/s whichever roof bounds the op). A point faster than
its roof is flagged (``above_roof``) rather than read as more than 100% of it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from perfscope.analytic.ops import Op
from perfscope.measure.dtypes import matmul_precision
from perfscope.measure.opcases import (
    DECODE_BATCHES,
    DECODE_BATCHES_QUICK,
    TARGET_CALL_S,
    TARGET_CALL_S_QUICK,
    WEIGHT_CAP_QUICK,
    OpCase,
    annotate,
    plan_cases,
)
from perfscope.measure.runners import build_runner
from perfscope.measure.runners.gemm import check_not_weight_only
from perfscope.measure.runners.pointwise import EMBED_TABLE_CAP
from perfscope.measure.skips import reason_or_raise
from perfscope.measure.timing import VERIFY_SETS, benchmark, is_cuda
from perfscope.measure.types import MeasuredPoint

EMBED_TABLE_CAP_QUICK = 64 * 2**20
# quick mode checks the outputs of two input sets per op (the first, whose weights every set
# shares, and the last, a rotated one); full mode up to timing.VERIFY_SETS
VERIFY_SETS_QUICK = 2


def predicted_time(op: Op, hw: Any, ceiling: str) -> tuple[float, str]:
    """Roofline time of one instance of ``op`` on ``hw`` and its bound (perfscope.roofline)."""
    from perfscope.analytic.ops import OpGraph
    from perfscope.roofline import roofline

    p = roofline(OpGraph((op,)), hw, ceiling)[0]
    return p.time_s, p.bound


def time_case(case: OpCase, device: str, *, budget_s: float, warmup_s: float = 0.02,
              hw: Any = None, ceiling: str = "empirical", flush_l2: bool = True,
              embed_cap: int = EMBED_TABLE_CAP, verify_sets: int = VERIFY_SETS) -> MeasuredPoint:
    """Time one case and check its timed outputs; the point carries the prediction and the
    percentage of roof when ``hw`` is given. Raises Skip without a faithful kernel."""
    op = case.op
    check_not_weight_only(case.full)  # its dtype conversion would hide the dequantization
    runner = build_runner(op, device, embed_cap=embed_cap)
    errs: list[float] = []

    def verify(args: tuple[Any, ...], out: Any) -> float:
        errs.append(runner.verify(args, out))
        return errs[-1]

    with matmul_precision(op.dtype):  # fp32 GEMMs at fp32, tf32 only when asked
        stats = benchmark(runner.fn, device=device, warmup_s=warmup_s, budget_s=budget_s,
                          setup=lambda i: runner.inputs(10 * i + 1),
                          params=lambda i: runner.params(10 * i + 2), set_bytes=op.bytes,
                          flush_l2=flush_l2, cuda_graph=None, verify=verify,
                          verify_sets=verify_sets)
    extra: dict[str, Any] = {"phase": case.phase, "impl": runner.impl,
                             "check_max_rel_err": max(errs), "scale": case.scale,
                             "analytic_dtype": case.full.dtype,
                             "full_shape": dict(case.full.shape or {}), "count": op.count,
                             "checked_sets": len(errs),
                             "op_impl": dict(op.impl or {}), **runner.extra}
    if case.scale_note:
        extra["scale_note"] = case.scale_note
    if case.dtype_note:
        extra["dtype_note"] = case.dtype_note
    if case.sweep_batch is not None:
        extra["sweep_batch"] = case.sweep_batch
    pred = None
    if hw is not None:
        pred, bound = predicted_time(op, hw, ceiling)
        pct = 100.0 * pred / stats.median_s if stats.median_s > 0 else None
        extra.update({"bound": bound, "pct_of_roof": pct, "above_roof": bool(pct and pct > 100),
                      "hardware": hw.name, "ceiling": ceiling})
        if case.scale != 1.0 or case.dtype_note:
            extra["predicted_full_time_s"] = predicted_time(case.full, hw, ceiling)[0]
    return MeasuredPoint(op.name, op.kind, dict(op.shape or {}), op.dtype, stats, op.flops,
                         op.bytes, device, predicted_time_s=pred, extra=extra)


# ---- a model's ops end to end -------------------------------------------------------------

@dataclass
class OpsRun:
    points: list[MeasuredPoint] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


def scenarios_for(phases: Iterable[str], *, batch: int, seq_len: int, context_len: int,
                  dtypes: Mapping[str, str | None], attention: str = "flash") -> dict[str, Any]:
    from perfscope.specs.scenario import Scenario

    out = {}
    for ph in phases:
        ctx = 0 if ph == "prefill" else context_len
        out[ph] = Scenario(phase=ph, batch=batch, seq_len=seq_len, context_len=ctx,
                           weight_dtype=dtypes.get("weight_dtype"),
                           act_dtype=dtypes.get("act_dtype"),
                           kv_dtype=dtypes.get("kv_dtype"), attention=attention).validate()
    return out


def roof_note(points: list[MeasuredPoint], *, measured_roof: bool, hw_name: str,
              ceiling: str) -> str:
    """What to say when points ran faster than their roof ("" when none did)."""
    above = [p for p in points if p.extra.get("above_roof")]
    if not above:
        return ""
    n = f"{len(above)} of {len(points)} points"
    if measured_roof:
        return (f"{n} ran faster than this machine's measured roof: the roof was measured "
                "low (another process was likely using the machine while the ceilings ran). "
                "Remeasure it on an idle machine with `perfscope bench ceilings --full --save "
                "local`, then rerun with --hw local.")
    return (f"{n} ran faster than the {ceiling} roof of {hw_name}: their analytic bytes "
            "overstate the traffic here (reuse in cache), or the roof is low.")


def bench_model_ops(model: str, hw: Any, *, device: str, phases: Iterable[str], batch: int,
                    seq_len: int, context_len: int, quick: bool,
                    rates: tuple[float, float], ceiling: str = "empirical",
                    dtypes: Mapping[str, str | None] | None = None,
                    only: Iterable[str] | None = None, sweep: bool = True,
                    measured_roof: bool = False, attention: str = "flash",
                    progress: Callable[[str, int, int], None] | None = None) -> OpsRun:
    """Analyse ``model`` on ``hw`` for each phase, then time every distinct op shape.

    ``rates`` (FLOP/s, bytes/s) of the local device size the CPU scale-down. ``hw`` gives the
    analytic graph and the predicted times (use the local measured spec to compare like with
    like; ``measured_roof`` says it is one). Ops without a faithful kernel, dtypes the device
    lacks and shapes that do not fit in memory are lines in ``skipped``; any other failure
    raises.
    """
    from perfscope.api import analyze, load_model

    run = OpsRun()
    m = load_model(model)
    dts: dict[str, str | None] = dict(dtypes or {})
    if not any(dts.values()) and not (hw.has_dtype("bf16") or hw.has_dtype("fp16")):
        dts = {"weight_dtype": "fp32", "act_dtype": None, "kv_dtype": None}
        run.meta["dtype_note"] = f"{hw.display_name} has no bf16/fp16: analysed in fp32"
    scen = scenarios_for(phases, batch=batch, seq_len=seq_len, context_len=context_len,
                         dtypes={k: v for k, v in dts.items() if k in
                                 ("weight_dtype", "act_dtype", "kv_dtype")},
                         attention=attention)
    graphs: dict[str, tuple[Op, ...]] = {}
    for ph, s in scen.items():
        graphs[ph] = annotate(analyze(m, hw, s).graph.ops)
    names = {op.name for ops in graphs.values() for op in ops}
    if only:
        want = set(only)
        for bad in sorted(want - names):
            run.skipped.append(f"op {bad!r}: unknown op for {m.name}; its ops are "
                               f"{', '.join(sorted(names))}")
        graphs = {ph: tuple(o for o in ops if o.name in want) for ph, ops in graphs.items()}
    cases = plan_cases(graphs, device=device, quick=quick, flops_per_s=rates[0],
                       bytes_per_s=rates[1], sweep=sweep, skipped=run.skipped)
    budget = 0.08 if quick else 0.5
    cap = EMBED_TABLE_CAP_QUICK if quick else EMBED_TABLE_CAP
    checks = VERIFY_SETS_QUICK if quick else VERIFY_SETS
    for i, c in enumerate(cases):
        if progress:
            progress(c.label, i, len(cases))
        what = f"op {c.label} {dict(c.op.shape or {})}"
        try:
            run.points.append(time_case(c, device, budget_s=budget, hw=hw, ceiling=ceiling,
                                        embed_cap=cap, verify_sets=checks))
        except Exception as e:  # a skip is a line; anything else stops the run
            run.skipped.append(f"{what}: {reason_or_raise(what, e)}; skipped")
    if progress:
        progress("done", len(cases), len(cases))
    run.meta.update({
        "model": m.name, "hardware": hw.name, "ceiling": ceiling,
        "roof": "measured on this machine" if measured_roof else f"{hw.name} {ceiling}",
        "scenarios": [{"phase": s.phase, "batch": s.batch, "seq_len": s.seq_len,
                       "context_len": s.context_len, "weight_dtype": s.weight_dtype,
                       "act_dtype": s.act_dtype, "kv_dtype": s.kv_dtype,
                       "attention": s.attention}
                      for s in scen.values()],
        "scaling": ("none (GPU: full shapes)" if is_cuda(device) else
                    "CPU: shapes scaled so one call is estimated under "
                    f"{(TARGET_CALL_S_QUICK if quick else TARGET_CALL_S) * 1e3:.0f} ms at the "
                    "local ceilings; GEMM rows, attention batch then KV-head groups, or tokens "
                    "scaled; widths kept" +
                    (f", except GEMM weights cut to {WEIGHT_CAP_QUICK // 2**20} MiB (expert "
                     "groups, then output columns)" if quick else "") +
                    "; each point's extra.scale and extra.scale_note state it"),
        "decode_sweep_batches": list(DECODE_BATCHES_QUICK if quick else DECODE_BATCHES),
    })
    note = roof_note(run.points, measured_roof=measured_roof, hw_name=hw.name, ceiling=ceiling)
    if note:
        run.meta["roof_note"] = note
    return run
