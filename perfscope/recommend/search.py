"""recommend(): search layouts x quantization x KV dtype x concurrency, vectorised.

Per structural configuration (layout x weight scheme, a few dozen) the step model is fitted
from a handful of ``analyze()`` probes (``perfscope.serving.stepmodel``); the KV dtype and the
concurrency grid are then numpy dimensions of one ``serve()`` call, so thousands of candidates
cost one evaluation. Candidates whose KV cache does not fit are discarded (KV in pages of the
engine's block size); those that miss the TTFT or TPOT target are kept apart; the rest are
ranked by tokens/s per GPU, and their Pareto front against tokens/s per user is returned.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from perfscope.errors import InputError, PerfscopeError
from perfscope.recommend.space import (
    DEFAULT_WEIGHT_DTYPES,
    Structural,
    concurrency_grid,
    kv_bits,
    kv_dtypes,
    layouts,
    schemes,
)
from perfscope.recommend.types import Candidate, RecommendRequest, RecommendResult
from perfscope.serving.calibrated import calibrate
from perfscope.serving.engines import Benchmark, EngineParams, get_engine, load_engines
from perfscope.serving.fitting import WeightsDoNotFit, layout_scenario
from perfscope.serving.predict import step_model
from perfscope.serving.simulate import Served, efficiency, serve
from perfscope.serving.stepmodel import IDEAL, Efficiency, StepModel
from perfscope.specs.scenario import Scenario

TOP_N = 20


@dataclass
class Evaluated:
    """One structural configuration with one KV dtype, over the concurrency grid."""

    st: Structural
    kv: str
    sm: StepModel
    served: Served
    dp: int  # replicas on the GPUs given

    @property
    def tokens_per_s_per_gpu(self) -> np.ndarray:
        return self.served.output_tokens_per_s / self.sm.gpus

    @property
    def feasible(self) -> np.ndarray:
        """The KV cache of every request in flight fits (no waiting for a slot)."""
        s = self.served
        return s.fits & (s.concurrency <= s.max_running)


@dataclass
class Search:
    """Everything the search computed (explanations and answers read it)."""

    req: RecommendRequest
    eng: EngineParams
    eff: Efficiency
    bench: Benchmark
    evals: list[Evaluated]
    grid: np.ndarray
    dropped: dict[str, int]
    too_big: list[tuple[Structural, float, float]]  # (config, weights/GPU, usable/GPU)
    fit_s: float = 0.0  # time spent fitting step models (analyze probes)
    eval_s: float = 0.0  # time spent evaluating the candidate grids

    def meets(self, e: Evaluated) -> np.ndarray:
        s, r = e.served, self.req
        ok = e.feasible.copy()
        if r.ttft_s is not None:
            ok &= s.ttft_s <= r.ttft_s
        if r.tpot_s is not None:
            ok &= s.tpot_s <= r.tpot_s
        return ok

    def serve_one(self, sm: StepModel, bits: Any, concurrency: Any) -> Served:
        """``bits``: KV-cache bits, a number or a (K, 1) array of several dtypes."""
        return serve(sm, self.eng, concurrency, self.req.isl, self.req.osl, bench=self.bench,
                     kv_bits=bits, eff=self.eff)


def validate(req: RecommendRequest) -> None:
    if req.gpus < 1:
        raise InputError(f"--gpus {req.gpus}: must be >= 1")
    if req.max_gpus is not None and req.max_gpus < 1:
        raise InputError(f"--max-gpus {req.max_gpus}: must be >= 1")
    if req.isl < 1 or req.osl < 2:
        raise InputError("--isl must be >= 1 and --osl >= 2 (TPOT is defined over the output "
                         "tokens after the first)")
    if req.isl + req.osl > req.model.max_position:
        raise InputError(f"--isl {req.isl} + --osl {req.osl} exceeds the "
                         f"{req.model.max_position}-token context of {req.model.name}")
    for flag, v in (("--ttft", req.ttft_s), ("--tpot", req.tpot_s)):
        if v is not None and not v > 0:
            raise InputError(f"{flag} {v}: must be a positive number of seconds")
    if req.ceiling not in ("spec", "empirical"):
        raise InputError(f"--ceiling {req.ceiling!r}: use spec or empirical")
    if req.max_concurrency < 1:
        raise InputError("--max-concurrency must be >= 1")


def run_search(req: RecommendRequest) -> Search:
    """Fit and evaluate every allowed configuration (see module doc)."""
    validate(req)
    tab = load_engines()
    eng = get_engine(req.engine, tab)
    eff = efficiency(eng, req.ceiling)
    if req.calibration is not None:  # measured step times replace the engine's kernel fit
        eff = IDEAL
        eng = replace(eng, step_overhead_s=0.0)
    dropped: dict[str, int] = defaultdict(int)
    max_g = min(req.max_gpus or req.gpus, req.gpus)
    grid = np.array(concurrency_grid(req.max_concurrency), dtype=float)
    search = Search(req, eng, eff, tab.benchmark, [], grid, dropped, [])
    usable = eng.memory_fraction * req.hw.memory_bytes
    lay = list(layouts(req.model, req.gpus, max_g, req.hw.gpus_per_node, dropped))
    for sch in schemes(req, dropped):
        kvs = kv_dtypes(req, sch, dropped)
        if not kvs:
            continue
        for tp, pp, ep, adp in lay:
            st = Structural(tp, pp, ep, adp, sch)
            sc = layout_scenario(Scenario(), tp=tp, pp=pp, ep=ep, attn_dp=adp,
                                 ceiling=req.ceiling, **sch.scenario_kwargs())
            t0 = time.perf_counter()
            try:
                # hopeless layouts stop after the fit's first probe
                sm = step_model(req.model, req.hw, sc, usable)
            except WeightsDoNotFit as e:
                dropped["the weights alone fill the GPU"] += 1
                search.too_big.append((st, e.weights_bytes, usable))
                continue
            except PerfscopeError as e:
                dropped[str(e).split(";")[0]] += 1
                continue
            finally:
                search.fit_s += time.perf_counter() - t0
            if req.calibration is not None:
                sm = calibrate(sm, req.calibration)[0]
            # every KV dtype in one evaluation: (kv, concurrency) grid
            t0 = time.perf_counter()
            bits = np.array([[kv_bits(kv)] for kv in kvs], dtype=float)
            served = search.serve_one(sm, bits, grid)
            search.eval_s += time.perf_counter() - t0
            for j, kv in enumerate(kvs):
                one = Served(*(np.asarray(f)[j] for f in served))
                search.evals.append(Evaluated(st, kv, sm, one, req.gpus // st.gpus))
    return search


def candidates(search: Search, e: Evaluated, idx: np.ndarray) -> list[Candidate]:
    s, st = e.served, e.st
    meets = search.meets(e)
    tps = e.tokens_per_s_per_gpu
    return [Candidate(st.tp, st.pp, st.ep, st.attn_dp, e.dp, st.scheme.name,
                      e.sm.weight_dtype, e.sm.act_dtype, e.kv, int(s.concurrency[i]),
                      float(s.ttft_s[i]), float(s.tpot_s[i]), float(s.e2e_s[i]), float(tps[i]),
                      float(1.0 / s.tpot_s[i]), float(s.memory_per_gpu_bytes[i]),
                      int(s.max_running[i]), bool(meets[i]))
            for i in idx]


def pareto_front(points: np.ndarray) -> np.ndarray:
    """Indices of the points (n, 2) no other point beats in both coordinates (maximising)."""
    if len(points) == 0:
        return np.zeros(0, dtype=int)
    order = np.lexsort((-points[:, 1], -points[:, 0]))  # x desc, then y desc
    best_y = -np.inf
    keep = []
    for i in order:
        if points[i, 1] > best_y:
            keep.append(i)
            best_y = points[i, 1]
    return np.array(keep, dtype=int)


def recommend(req: RecommendRequest) -> RecommendResult:
    """Search, rank, explain. Never raises for a request nothing satisfies: the result's
    ``status`` (no_fit | no_target) and ``message`` say what is closest and why."""
    from perfscope.recommend.answers import answers, quantization_table
    from perfscope.recommend.explain import explain, explain_failure

    t0 = time.perf_counter()
    search = run_search(req)
    n_cand = sum(len(e.served.concurrency) for e in search.evals)
    # per (structural, kv): the highest-throughput concurrency that meets the targets
    best: list[Candidate] = []
    front_pts: list[np.ndarray] = []
    front_ref: list[tuple[int, int]] = []
    cloud: list[tuple[float, float]] = []
    any_meets = any(search.meets(e).any() for e in search.evals)
    for k, e in enumerate(search.evals):
        ok = search.meets(e) if any_meets else e.feasible
        feas = np.flatnonzero(e.feasible)
        tps_gpu, tps_user = e.tokens_per_s_per_gpu, 1.0 / e.served.tpot_s
        cloud += [(float(tps_user[i]), float(tps_gpu[i])) for i in feas]
        idx = np.flatnonzero(ok)
        if len(idx) == 0:
            continue
        i_best = idx[np.argmax(tps_gpu[idx])]
        best += candidates(search, e, np.array([i_best]))
        front_pts.append(np.stack([tps_user[idx], tps_gpu[idx]], axis=1))
        front_ref += [(k, int(i)) for i in idx]
    ranked = _prefer_native(sorted(best, key=lambda c: (-c.tokens_per_s_per_gpu,
                                                      -c.tokens_per_s_per_user)), req)
    pareto: list[Candidate] = []
    if front_pts:
        pts = np.concatenate(front_pts)
        for j in pareto_front(pts):
            k, i = front_ref[j]
            pareto += candidates(search, search.evals[k], np.array([i]))
        pareto = _thin(sorted(pareto, key=lambda c: c.tokens_per_s_per_user))
    t_eval = search.eval_s
    if not search.evals or not any(e.feasible.any() for e in search.evals):
        status = "no_fit"
    elif not any_meets:
        status = "no_target"
    else:
        status = "ok"
    top = ranked[0] if ranked and status == "ok" else None
    if status == "ok":
        assert top is not None
        recs = explain(search, top)
        message = (f"{top.layout} {top.scheme} weights, KV {top.kv_dtype}, "
                   f"{top.concurrency} requests per replica: "
                   f"{top.tokens_per_s_per_gpu:,.0f} tokens/s/GPU at "
                   f"{top.tokens_per_s_per_user:,.1f} tokens/s/user")
    else:
        message, recs = explain_failure(search, status, ranked)
    searched = {"structural_configs": len({(e.st, e.kv) for e in search.evals}),
                "candidates": n_cand, "feasible": len(cloud),
                "meeting_targets": int(sum(int(search.meets(e).sum()) for e in search.evals)),
                "discarded": dict(search.dropped), "fit_s": search.fit_s, "eval_s": t_eval,
                "candidates_per_s": n_cand / t_eval if t_eval > 0 else None,
                "total_s": time.perf_counter() - t0}
    # where nothing meets the targets, the closest configuration stands in for the top one
    ref = top if top is not None else (ranked[0] if ranked else None)
    ans = answers(search, ref) if status != "no_fit" else {}
    quant = quantization_table(search, ref, any_meets)
    return RecommendResult(req, search.eng.name, status, message, top, tuple(ranked[:TOP_N]),
                           tuple(pareto), tuple(cloud), tuple(recs), ans, tuple(quant),
                           searched, _uncertainty(search))


TIE = 0.005  # throughputs this close are a tie: the scale layouts' bytes, not the scheme


def _prefer_native(ranked: list[Candidate], req: RecommendRequest) -> list[Candidate]:
    """Among rows of one layout and KV dtype whose throughputs tie (within TIE), the
    checkpoint's own weight format first, then the simpler scheme (the order of
    DEFAULT_WEIGHT_DTYPES): DeepSeek-V3's fp8 checkpoint rather than an int8 re-quantization
    that only saves block-scale bytes."""
    native = req.model.quant.weight if req.model.quant is not None else None
    order = {n: i for i, n in enumerate(DEFAULT_WEIGHT_DTYPES)}

    def pref(c: Candidate) -> tuple[int, int]:
        base = c.scheme.split("-")[0]  # int8-wo: int8 weights
        return (0 if base == native else 1, order.get(base, len(order)))

    out = list(ranked)
    swapped = True
    while swapped:  # adjacent swaps until none is left (ties are rare: a pass or two)
        swapped = False
        for j in range(1, len(out)):
            a, b = out[j - 1], out[j]
            same = (a.layout, a.dp, a.kv_dtype) == (b.layout, b.dp, b.kv_dtype)
            tie = b.tokens_per_s_per_gpu >= (1 - TIE) * a.tokens_per_s_per_gpu
            if same and tie and pref(b) < pref(a):
                out[j - 1], out[j], swapped = b, a, True
    return out


def _thin(front: list[Candidate], rel: float = 0.01) -> list[Candidate]:
    """Keep Pareto points at least ``rel`` apart in tokens/s per user (and both ends): every
    concurrency is searched, so the raw front has a point per request along it."""
    if len(front) <= 2:
        return front
    out = [front[0]]
    for c in front[1:-1]:
        if c.tokens_per_s_per_user >= out[-1].tokens_per_s_per_user * (1 + rel):
            out.append(c)
    out.append(front[-1])
    return out


def _uncertainty(search: Search) -> dict[str, Any]:
    err = dict(search.eng.error)
    req = search.req
    out: dict[str, Any] = {
        "engine": search.eng.name,
        "tpot_mape": err.get("cv_tpot_mape", err.get("tpot_mape")),
        "ttft_mape": err.get("cv_ttft_mape", err.get("ttft_mape")),
        "ceiling": req.ceiling,
        "basis": "the engine calibration's error (perfscope/serving/engines.toml)"}
    if req.calibration is not None:
        out["calibration"] = {"applied": True, "file": req.calibration_file,
                              "hardware": req.calibration.hardware}
    return out
