"""Residual report of the serving calibration: where and why the predictions miss.

    python benchmarks/calibrate_serving.py --check --residuals        # the shipped fit
    python benchmarks/calibrate_serving.py --quick --residuals 20     # after a quick re-fit

Signed errors (predicted / measured - 1) of TPOT and TTFT per row, grouped by engine x model,
concurrency band, prompt and output lengths, layout, and what dominates the prediction (the
TTFT's request overhead, its own prefill, the queue of other prompts, the wait for a KV slot;
the decode step's weight reads, KV reads, fixed kernel costs, collectives, host step time, or
other prompts' prefills interleaved into the decode window). Then the worst rows, each with
the model's breakdown of its prediction: the prefill chunk's compute / memory / comm / fixed
parts and the decode step's parts (perfscope.serving.stepmodel.StepModel.breakdown).

A group whose mean signed error is far from zero while its members agree is a structural miss
(a term the model lacks or mis-sizes); a group whose errors scatter both ways is noise or a
parameter the data cannot pin down.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np

from perfscope.serving.engines import Benchmark, EngineParams
from perfscope.serving.simulate import Served, _decode_batch, efficiency


def _bands(c: float) -> str:
    return "c<=8" if c <= 8 else "c 9-32" if c <= 32 else "c>32"


def _len_band(isl: int, osl: int) -> str:
    i = "isl<=1k" if isl <= 1024 else "isl<=2k" if isl <= 2048 else \
        "isl<=4k" if isl <= 4096 else "isl>4k"
    o = "osl<=128" if osl <= 128 else "osl<=1k" if osl <= 1024 else "osl>1k"
    return f"{i} {o}"


def row_details(g: Any, eng: EngineParams, bench: Benchmark) -> list[dict[str, Any]]:
    """Per row of group ``g`` (calibrate_serving.Group): measured and predicted TTFT/TPOT and
    the parts of the prediction (each row under its own server's settings)."""
    out = []
    for ix, e, s in g.served(eng, bench)[2]:
        out += _details(g, ix, e, s)
    return out


def _details(g: Any, ix: np.ndarray, eng: EngineParams, s: Served) -> list[dict[str, Any]]:
    sm = g.sm
    eff = efficiency(eng, "empirical")
    isl, osl = g.isl[ix], g.osl[ix]
    ctx = isl + (osl - 2) / 2
    dec = sm.breakdown(sm.decode, sm.decode_features(_decode_batch(s.running,
                                                                     sm.scenario.pp), ctx),
                       eff, g.kv_bits)
    chunk = np.minimum(isl, eng.max_num_tokens) if eng.chunked_prefill else isl
    fill = sm.breakdown(sm.fill, sm.fill_features(1, chunk, 0), eff, g.kv_bits)
    out = []
    for i, j in enumerate(ix):
        r = g.rows[j]
        d = float(s.decode_step_s[i])
        parts_d = {k: float(v[i]) for k, v in dec.items()}
        parts_d["step_overhead"] = eng.step_overhead_s
        weights = sum(v for k, v in parts_d.items()
                      if k.endswith(".memory") and not k.startswith("attention"))
        dec_dom = {"weights": weights, "kv": parts_d["attention.memory"],
                   "compute": sum(v for k, v in parts_d.items() if k.endswith(".compute")),
                   "fixed": parts_d["fixed"] + parts_d["dequant"], "comm": parts_d["comm"],
                   "host": eng.step_overhead_s,
                   "interleaved prefill": float(s.tpot_s[i]) - d}
        own = float(s.prefill_s[i])
        queue_kv = float(s.queue_s[i])
        ttft = float(s.ttft_s[i])
        tt_dom = {"overhead": eng.ttft_overhead_s, "own prefill": own,
                  "queue": max(ttft - eng.ttft_overhead_s - own - queue_kv, 0.0),
                  "kv slot": queue_kv}
        out.append({
            "row": r, "ttft": ttft, "tpot": float(s.tpot_s[i]), "m_ttft": r.ttft_s,
            "m_tpot": r.tpot_s, "d": d, "own": own, "burst": float(s.ttft_burst_s[i]),
            "steady": float(s.ttft_steady_s[i]), "queue_kv": queue_kv,
            "running": float(s.running[i]), "rho": float(s.prefill_load[i]),
            "dec": parts_d, "fill": {k: float(v[i]) for k, v in fill.items()},
            "chunk": float(np.broadcast_to(chunk, isl.shape)[i]),
            "ttft_dom": max(tt_dom, key=tt_dom.__getitem__),
            "tpot_dom": max(dec_dom, key=dec_dom.__getitem__)})
    return out


def _stats(xs: list[dict[str, Any]]) -> str:
    tp = np.array([x["tpot"] / x["m_tpot"] - 1 for x in xs])
    tt = np.array([x["ttft"] / x["m_ttft"] - 1 for x in xs])
    return (f"{len(xs):4d} {tp.mean() * 100:+7.1f}% {np.abs(tp).mean() * 100:6.1f}% "
            f"{tt.mean() * 100:+7.1f}% {np.abs(tt).mean() * 100:6.1f}%")


def report(folds: list[tuple[list[Any], dict[str, EngineParams], Benchmark]],
           worst: int = 12, engine_rows: bool = False, title: str = "in sample") -> None:
    """Print the residual report (module doc) for the neutral fit (or each row's engine).
    ``folds``: (groups, the fit that predicts them, its benchmark model): one fold for the
    in-sample fit, one per held-out model or system."""
    rows: list[dict[str, Any]] = []
    for groups, fitted, bench in folds:
        for g in groups:
            rows += row_details(g, fitted[g.engine if engine_rows else "neutral"], bench)
    who = "each row's engine" if engine_rows else "the neutral engine"
    print(f"\nResiduals {title}, {who} ({folds[0][2].describe()}): signed mean and mean "
          "absolute error of predicted / measured - 1")
    cuts = {
        "engine x model": lambda x: f"{x['row'].engine} {x['row'].model}",
        "concurrency": lambda x: _bands(x["row"].c),
        "isl/osl": lambda x: _len_band(x["row"].isl, x["row"].osl),
        "engine x isl/osl": lambda x: f"{x['row'].engine[:6]} {x['row'].isl}/{x['row'].osl}"
        if x["row"].model != "qwen3-235b-a22b-fp8" else
        f"{x['row'].engine[:6]} {_len_band(x['row'].isl, x['row'].osl)}",
        "layout": lambda x: f"{x['row'].model[:8]} tp{x['row'].tp} ep{x['row'].ep} "
                            f"adp{x['row'].attn_dp} {x['row'].weight}",
        "TTFT dominated by": lambda x: x["ttft_dom"],
        "decode dominated by": lambda x: x["tpot_dom"],
    }
    for title, key in cuts.items():
        by: dict[str, list] = defaultdict(list)
        for x in rows:
            by[key(x)].append(x)
        print(f"\n{title:34s} {'n':>4s} {'TPOT':>8s} {'|TPOT|':>7s} {'TTFT':>8s} {'|TTFT|':>7s}")
        for k in sorted(by):
            print(f"  {k[:32]:32s} {_stats(by[k])}")
    for what in ("tpot", "ttft"):
        order = sorted(rows, key=lambda x: -abs(math.log(x[what] / x[f"m_{what}"])))
        print(f"\nworst {worst} rows by {what.upper()} (times in ms)")
        for x in order[:worst]:
            _print_row(x)


def _ms(v: float) -> str:
    return f"{v * 1e3:.1f}"


def _print_row(x: dict[str, Any]) -> None:
    r = x["row"]
    print(f"- {r.engine} {r.model} {r.hw} tp{r.tp} ep{r.ep} adp{r.attn_dp} {r.weight} "
          f"c{r.c} {r.isl}/{r.osl}: TPOT {_ms(x['tpot'])} vs {_ms(x['m_tpot'])} "
          f"({x['tpot'] / x['m_tpot'] - 1:+.0%}), TTFT {_ms(x['ttft'])} vs "
          f"{_ms(x['m_ttft'])} ({x['ttft'] / x['m_ttft'] - 1:+.0%})")
    dec = {k: v for k, v in x["dec"].items() if v > 1e-6}
    print(f"    decode step {_ms(x['d'])} at {x['running']:.0f} running: "
          + ", ".join(f"{k} {_ms(v)}" for k, v in dec.items())
          + f"; interleaved prefill +{_ms(x['tpot'] - x['d'])}/token")
    fill = {k: v for k, v in x["fill"].items() if v > 1e-6}
    print(f"    prefill chunk of {x['chunk']:.0f} tokens alone: "
          + ", ".join(f"{k} {_ms(v)}" for k, v in fill.items()))
    print(f"    TTFT: own prefill with riders {_ms(x['own'])}, burst {_ms(x['burst'])}, "
          f"steady {_ms(x['steady'])}, KV-slot queue {_ms(x['queue_kv'])}, prefill load "
          f"{x['rho']:.2f}; dominated by {x['ttft_dom']}")
