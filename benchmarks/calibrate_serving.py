"""Fit the serving engines' parameters to measured serving benchmarks; print the fit's error.

    python benchmarks/calibrate_serving.py            # fit, compare, print, write engines.toml
    python benchmarks/calibrate_serving.py --check    # print the error of the shipped fit only
    python benchmarks/calibrate_serving.py --quick    # fewer iterations, no held-out folds

Data: ../shared/reference/serving-calibration.json (384 rows: TensorRT-LLM, vLLM, SGLang on
Llama-3.1-70B / B200, DeepSeek-V3 and Qwen3-235B-A22B-FP8 / H200), the only serving
measurements fitted to (other measurements of this kind are kept back to judge predictions).

What each row means (worked out from the rows): ``batch_size`` is the benchmark concurrency
(one row, an attention-DP 64 layout, gives it per attention-DP rank: the concurrency in its id
is used, and printed); ``tp_size`` the attention tensor-parallel degree;
``attention_dp_size`` the data-parallel attention groups, empty where the layout implies it:
GPUs = moe_tp_size x moe_ep_size = tp_size x attention-DP, so an empty value means
(moe_tp x moe_ep) / tp; ``moe_ep_size`` the expert-parallel degree and ``moe_tp_size`` the
tensor split of each expert; ``gemm_quant_mode`` the weight/GEMM format (fp8, fp8_block: W8A8
fp8; nvfp4: fp4). Tokens reach their experts under attention DP by all-to-all (TensorRT-LLM,
SGLang's DeepEP) or all-gather + reduce-scatter (vLLM 0.12's default all2all backend). A row
whose layout the analytic core refuses is skipped with the core's reason.

Fitted (perfscope/serving/engines.py documents each, with its bounds): compute and bandwidth
efficiency against the empirical ceilings, the same two for MoE expert kernels on top, fixed
cost per kernel and per in-node all-reduce (the engine's own kernel), shared by all engines
(the neutral fit: held out this generalised better than per-engine kernels,
--per-engine-kernels compares); per engine the host time per scheduler step and per request
before the first token; plus one benchmark model shared by all engines
(perfscope/serving/simulate.py), compared side by side:

- ``closed_loop/client``: each of the c clients sends R requests, the next when the previous
  ends; the first wave arrives at once (R fitted);
- ``closed_loop/10``: the same with R = 10, a documented convention (InferenceMAX issues
  ten prompts per unit of concurrency), nothing fitted;
- ``closed_loop/run``: the same with a fixed number N of requests per run, R = N / c;
- ``cluster``: the empirical law of the first fit, prompts in clusters of s x c^e (s, e fitted).

The calibration rows follow InferenceMAX's client (1024/1024, 1024/8192, 8192/1024 tokens,
concurrency 4-64, ``--num-prompts 10 x concurrency``, ``--random-range-ratio 0.8``:
github:InferenceMAX README, "Benchmark Client Configuration").

The loss is the mean squared log error of TPOT plus half that of TTFT, minimised by
Levenberg-Marquardt on logit-transformed (bounded) parameters with a weak pull towards the
middle of each range (engines: towards the neutral fit) so a parameter the data cannot see
stays unremarkable. Held out: leave one model out and leave one system out (every engine and
the neutral fit refitted without it, the benchmark model too, then its rows predicted). The
benchmark model with the lower mean held-out TTFT error is kept.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import re
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

# the checkout this script lives in (and its sibling serving_residuals.py), not whichever
# perfscope the interpreter has installed
sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]

from serving_residuals import report as residual_report  # noqa: E402

from perfscope.errors import PerfscopeError  # noqa: E402
from perfscope.serving.engines import (  # noqa: E402
    BOUNDS,
    FITTED,
    Benchmark,
    EngineParams,
    EngineTable,
    engines_file,
    load_engines,
    to_toml,
)
from perfscope.serving.fitting import fit_step_model  # noqa: E402
from perfscope.serving.simulate import Served, efficiency, serve  # noqa: E402
from perfscope.serving.stepmodel import StepModel  # noqa: E402
from perfscope.specs.loading import load_hw  # noqa: E402
from perfscope.specs.model import load_model  # noqa: E402
from perfscope.specs.scenario import Scenario  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA = next((p for p in (ROOT.parent / "shared/reference/serving-calibration.json",
                         ROOT.parent.parent / "shared/reference/serving-calibration.json",
                         Path("/work/shared/reference/serving-calibration.json"))
             if p.is_file()), ROOT.parent / "shared/reference/serving-calibration.json")

HW = {"b200_sxm": "b200", "h200_sxm": "h200-sxm", "h100_sxm": "h100-sxm"}
MODELS = {"meta-llama/Llama-3.1-70B": "llama-3.1-70b", "deepseek-ai/DeepSeek-V3": "deepseek-v3",
          "Qwen/Qwen3-235B-A22B-FP8": "qwen3-235b-a22b-fp8"}
WEIGHTS = {"fp8": "fp8", "fp8_block": "fp8", "nvfp4": "fp4", "bfloat16": "bf16",
           "float16": "fp16", "int8": "int8", "int4_wo": "int4"}
# KV-cache format: the rows do not record it. An fp8 cache for all three engines' fp8 recipes
# (TensorRT-LLM's ModelOpt checkpoints carry one; vLLM and SGLang take --kv-cache-dtype fp8):
# with a 16-bit cache vLLM's Llama rows at c = 64 would queue for KV space, which their TTFT
# shows they do not; --kv engine=bf16 tries otherwise.
KV = {"trtllm": "fp8", "vllm": "fp8", "sglang": "fp8"}
MOE_COMM = {"trtllm": "all_to_all", "vllm": "allgather_reducescatter", "sglang": "all_to_all"}
ENGINES = ("trtllm", "vllm", "sglang")
TTFT_WEIGHT = 0.5  # of the squared log TTFT error beside TPOT's
ROBUST_SCALE = 0.0  # soft-L1 scale of the log errors (0: least squares); see robust()
PRIOR_WEIGHT = 0.01  # pull of an engine's parameters towards the neutral fit, per logit^2
# Where each parameter is expected before the data speaks (the prior's centre), and why:
# engine GEMMs and attention reach most of the measured GEMM and copy ceilings on large
# shapes; grouped expert GEMMs run far below (few tokens per expert); a kernel inside a CUDA
# graph costs a couple of microseconds; an in-node custom all-reduce under 10 us; a scheduler
# step about a millisecond of host time not hidden; a request some tens of milliseconds of
# HTTP, tokenization and detokenization.
START = {"flops_efficiency": 0.8, "bandwidth_efficiency": 0.85, "moe_flops_efficiency": 0.5,
         "moe_bandwidth_efficiency": 0.7, "kernel_overhead_s": 2e-6,
         "collective_latency_s": 8e-6, "step_overhead_s": 1e-3, "ttft_overhead_s": 0.03}
# the engine's own parameters when the kernels are shared (--shared-kernels)
# what each engine fits on its own rows beside the shared kernels: its host overheads, and the
# bandwidth its grouped expert (MoE) GEMM kernels reach, which differs between the engines'
# MoE kernels (2026-11-30, closed loop, engine fits: TPOT 12.7% -> 11.3% in sample, 24.3% ->
# 19.9% leaving one model out, 22.5% -> 19.2% one system out; TTFT 24.2% -> 24.1%, 74.6% ->
# 76.7%, 75.9% -> 78.1%; SGLang 0.82 of the shared rate, vLLM 0.43, TensorRT-LLM 0.57). Since
# vLLM's rows are priced streaming every expert (EngineParams.moe_streams_all_experts) the
# three agree far better: SGLang 0.88, TensorRT-LLM 0.80, vLLM 0.78 (README, the shipped fit)
OWN = ("step_overhead_s", "ttft_overhead_s", "moe_bandwidth_efficiency")
VARIANTS = ("closed_loop/client", "closed_loop/10", "closed_loop/run", "cluster")
ITERS = 25  # Levenberg-Marquardt iterations per fit
# engines share the neutral fit's kernel parameters and fit only their own overheads: held out,
# this generalises better than per-engine kernels (leave-one-model-out TPOT 25.7% against
# 39.4%, TTFT 71% against 79%, 2026-11-30; --per-engine-kernels compares)
SHARED = True


@dataclasses.dataclass
class Row:
    id: str
    engine: str
    model: str
    hw: str
    tp: int
    pp: int
    ep: int
    attn_dp: int
    weight: str
    kv: str
    c: int
    isl: int
    osl: int
    ttft_s: float
    tpot_s: float

    @property
    def key(self) -> tuple:
        return (self.engine, self.model, self.hw, self.tp, self.pp, self.ep, self.attn_dp,
                self.weight, self.kv)

    @property
    def server(self) -> tuple[tuple[str, float], ...]:
        """The scheduler settings this row's server ran with where they differ from the
        engine's defaults (``run_config``), as sorted (field, value) pairs."""
        return tuple(sorted(run_config(self).items())) if RUN_CONFIGS else ()


# How the benchmark runs behind the InferenceMAX rows configured their servers where it differs
# from the engines' defaults (EngineParams fields; github:InferenceMAX benchmarks/*.sh, the
# scripts the rows' ids and grid follow). Fitting those rows under the defaults would make the
# kernel parameters absorb scheduler settings a user's server does not have.
# - TensorRT-LLM, Llama-3.1-70B on B200 (70b_fp4_b200_trt_slurm.sh): max_num_tokens 16384; for
#   1k/1k below TP 8, batch_wait_timeout_iters 20 and batch_wait_max_tokens_ratio 0.9 ("will
#   improve the performance"). The fp8 rows carry the same 1k/1k floor (TTFT 1k/1k minus
#   1k/8k: 279, 184, 134 ms at TP 1, 2, 4, about 20 decode steps each; none at TP 8), so the
#   same settings are taken for them.
# - TensorRT-LLM, DeepSeek on H200 (dsr1_fp8_h200_trt_slurm.sh): max_num_tokens
#   ceil((c + isl + 127) / 64) x 64 (one prompt per context step beside the decodes),
#   free_gpu_memory_fraction 0.75.
# - SGLang, DeepSeek on H200 (dsr1_fp8_h200_slurm.sh): chunked-prefill-size and
#   max-prefill-tokens 32768, mem-fraction-static 0.82, max-running-requests 512 (1k/1k) or
#   256.
# - vLLM, Llama-3.1-70B on B200 (70b_fp4_b200_slurm.sh): max-num-batched-tokens 8192 (the
#   default), max-num-seqs 512.
# The Qwen3 rows are aiconfigurator's own sweeps: no configuration beyond the defaults is known.
RUN_CONFIGS = True


def run_config(r: Row) -> dict[str, float]:
    """EngineParams fields that differ from the engine's defaults on row ``r``'s server."""
    if r.engine == "trtllm" and r.model == "llama-3.1-70b":
        cfg: dict[str, float] = {"max_num_tokens": 16384}
        if r.isl == 1024 and r.osl == 1024 and r.tp < 8:
            cfg |= {"batch_wait_iters": 20, "batch_wait_tokens_ratio": 0.9}
        return cfg
    if r.engine == "trtllm" and r.model == "deepseek-v3":
        return {"max_num_tokens": (r.c + r.isl + 64 + 63) // 64 * 64, "memory_fraction": 0.75}
    if r.engine == "sglang" and r.model == "deepseek-v3":
        return {"max_num_tokens": 32768, "memory_fraction": 0.82,
                "max_num_seqs": 512 if (r.isl, r.osl) == (1024, 1024) else 256}
    if r.engine == "vllm" and r.model == "llama-3.1-70b":
        return {"max_num_seqs": 512}
    return {}


# ---- reading the rows --------------------------------------------------------------------

def read_rows(path: Path) -> tuple[list[Row], list[str]]:
    """All rows as the core would run them, and notes on what was read unusually."""
    raw = json.loads(path.read_text())["rows"]
    rows, notes = [], []
    for r in raw:
        tp, pp = int(r["tp_size"]), int(r["pp_size"])
        mtp, mep = int(r["moe_tp_size"]), int(r["moe_ep_size"])
        dp = int(r["attention_dp_size"]) if r["attention_dp_size"] else mtp * mep // tp
        moe = "Llama" not in r["model_path"]
        c = int(r["batch_size"])
        m = re.search(r"_c(\d+)_", r["id"])
        if m and int(m.group(1)) != c:
            notes.append(f"{r['id']}: batch_size {c} is per attention-DP rank; concurrency "
                         f"{m.group(1)} from the id")
            c = int(m.group(1))
        rows.append(Row(r["id"], r["backend"], MODELS[r["model_path"]], HW[r["system"]], tp,
                        pp, mep if moe else 1, dp, WEIGHTS[r["gemm_quant_mode"]],
                        KV[r["backend"]], c, int(r["isl"]), int(r["osl"]),
                        float(r["silicon_ttft_ms"]) / 1e3, float(r["silicon_tpot_ms"]) / 1e3))
    return rows, notes


class Group:
    """Rows sharing one structural configuration: one step model, vector evaluation."""

    def __init__(self, sm: StepModel, rows: list[Row]):
        self.sm, self.rows = sm, rows
        self.engine, self.model, self.hw = rows[0].engine, rows[0].model, rows[0].hw
        self.c = np.array([r.c for r in rows], float)
        self.isl = np.array([r.isl for r in rows], float)
        self.osl = np.array([r.osl for r in rows], float)
        self.kv_bits = {"fp8": 8, "bf16": 16}[rows[0].kv]
        self.ttft = np.array([r.ttft_s for r in rows])
        self.tpot = np.array([r.tpot_s for r in rows])
        by: dict[tuple, list[int]] = defaultdict(list)
        for i, r in enumerate(rows):
            by[r.server].append(i)
        self.servers = {k: np.array(v) for k, v in by.items()}
        # how the rows' engine runs its MoE kernels (documented in engines.toml, not fitted):
        # a behaviour of the server that ran them, whichever parameters price the rows
        self.streams_all_experts = load_engines().engines[self.engine].moe_streams_all_experts

    def predict(self, eng: EngineParams, bench: Benchmark) -> tuple[np.ndarray, np.ndarray]:
        """Every row's TTFT and TPOT under ``eng``, each with its own server settings."""
        return self.served(eng, bench)[:2]

    def served(self, eng: EngineParams, bench: Benchmark
               ) -> tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, EngineParams, Served]]]:
        """(TTFT, TPOT, [(row indices, the engine as that row's server ran, serve() of them)])."""
        ttft, tpot = np.empty(len(self.rows)), np.empty(len(self.rows))
        parts = []
        for cfg, ix in self.servers.items():
            e = dataclasses.replace(eng, **{k: type(getattr(eng, k))(v) for k, v in cfg},
                                    moe_streams_all_experts=self.streams_all_experts)
            s = serve(self.sm, e, self.c[ix], self.isl[ix], self.osl[ix], bench=bench,
                      kv_bits=self.kv_bits, eff=efficiency(e, "empirical"))
            ttft[ix], tpot[ix] = s.ttft_s, s.tpot_s
            parts.append((ix, e, s))
        return ttft, tpot, parts


def groups_of(rows: list[Row]) -> tuple[list[Group], dict[str, int]]:
    by: dict[tuple, list[Row]] = defaultdict(list)
    for r in rows:
        by[r.key].append(r)
    out, skipped = [], defaultdict(int)
    for rs in by.values():
        r0 = rs[0]
        try:
            sc = Scenario(tp=r0.tp, pp=r0.pp, ep=r0.ep, attn_dp=r0.attn_dp,
                          moe_comm=MOE_COMM[r0.engine], weight_dtype=r0.weight,
                          kv_dtype=r0.kv, ceiling="empirical")
            sm = fit_step_model(load_model(r0.model), load_hw(r0.hw), sc)
        except PerfscopeError as e:
            why = str(e).split(";")[0]
            skipped[f"{r0.model} tp {r0.tp} attn-dp {r0.attn_dp} ep {r0.ep} "
                    f"({r0.tp * r0.attn_dp * r0.pp} GPUs): the core refuses it: {why}"] += len(rs)
            continue
        out.append(Group(sm, rs))
    return out, dict(skipped)


# ---- parameters <-> unbounded coordinates --------------------------------------------------

def _to_x(values: dict[str, float], names: Sequence[str]) -> np.ndarray:
    out = []
    for k in names:
        lo, hi = BOUNDS[k]
        u = min(max((values[k] - lo) / (hi - lo), 1e-4), 1 - 1e-4)
        out.append(math.log(u / (1 - u)))
    return np.array(out)


def _from_x(x: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    return {k: BOUNDS[k][0] + (BOUNDS[k][1] - BOUNDS[k][0]) / (1 + math.exp(-v))
            for k, v in zip(names, x, strict=True)}


def bench_of(variant: str, x: np.ndarray) -> Benchmark:
    if variant == "cluster":
        return Benchmark("cluster", None, None, math.exp(x[0]), 1 / (1 + math.exp(-x[1])))
    if variant == "closed_loop/run":
        return Benchmark("closed_loop", None, math.exp(x[0]))
    return Benchmark("closed_loop", 1 + math.exp(x[0]))


def bench_x(b: Benchmark) -> np.ndarray:
    if b.kind == "cluster":
        e = min(max(b.cluster_exponent, 1e-3), 0.999)
        return np.array([math.log(b.cluster_scale), math.log(e / (1 - e))])
    if b.total_requests is not None:
        return np.array([math.log(b.total_requests)])
    return np.array([math.log(max(b.requests_per_client or 1.0, 1.0001) - 1)])


# benchmark conventions taken as documented, nothing fitted: InferenceMAX's serving runs issue
# ten prompts per unit of concurrency (--num-prompts = 10 x concurrency)
FIXED = {"closed_loop/10": Benchmark("closed_loop", 10.0)}
BENCH0 = {"closed_loop/10": FIXED["closed_loop/10"],
          "closed_loop/client": Benchmark("closed_loop", 10.0),
          "closed_loop/run": Benchmark("closed_loop", None, 500.0),
          "cluster": Benchmark("cluster", None, None, 1.0, 0.5)}


# ---- the fit -------------------------------------------------------------------------------

def robust(r: np.ndarray) -> np.ndarray:
    """Soft-L1 on log errors: ``r`` for |r| well under ROBUST_SCALE, ``sqrt(2 s |r|)`` beyond,
    so that a few rows the model cannot explain (a benchmark setting nobody recorded) pull the
    shared parameters like a mean absolute error, not a squared one."""
    if not ROBUST_SCALE:
        return r
    s2 = ROBUST_SCALE ** 2
    return np.sign(r) * np.sqrt(2 * s2 * (np.sqrt(1 + r * r / s2) - 1))


def residuals(groups: list[Group], eng: EngineParams, bench: Benchmark) -> np.ndarray:
    out = []
    for g in groups:
        ttft, tpot = g.predict(eng, bench)
        out += [robust(np.log(tpot / g.tpot)),
                math.sqrt(TTFT_WEIGHT) * robust(np.log(ttft / g.ttft))]
    return np.concatenate(out)


def levenberg_marquardt(f: Callable[[np.ndarray], np.ndarray], x0: np.ndarray,
                        iters: int = ITERS, h: float = 1e-4) -> np.ndarray:
    """Minimise sum(f(x)^2): Gauss-Newton steps damped by lambda, forward-difference
    Jacobian (no scipy for a calibration script)."""
    x = np.array(x0, dtype=float)
    r = f(x)
    cost, lam = float(r @ r), 1e-2
    for _ in range(iters):
        J = np.empty((len(r), len(x)))
        for j in range(len(x)):
            xj = x.copy()
            xj[j] += h
            J[:, j] = (f(xj) - r) / h
        g, A = J.T @ r, J.T @ J
        improved = False
        for _ in range(8):
            step = np.linalg.solve(A + lam * np.diag(np.diag(A) + 1e-9), -g)
            xn = x + step
            rn = f(xn)
            cn = float(rn @ rn)
            if cn < cost:
                x, r, lam, improved = xn, rn, max(lam / 3, 1e-7), True
                done = cost - cn < 1e-7 * cost
                cost = cn
                break
            lam *= 4
        if not improved or done:
            break
    return x


def fit_engine(groups: list[Group], base: EngineParams, bench: Benchmark,
               prior: dict[str, float] | None = None,
               names: Sequence[str] | None = None) -> EngineParams:
    """Fit ``base``'s parameters (``names``, default all) to ``groups``, pulled towards
    ``prior`` (the neutral fit, for an engine: it deviates from the shared kernels only where
    its rows say so) or, without one, towards START (the physical expectation)."""
    moe = any(g.sm.model.moe for g in groups)
    names = [k for k in (FITTED if names is None else names)
             if moe or not k.startswith("moe_")]  # no MoE rows: nothing to fit them to
    x0 = _to_x({**START, **(prior or {})}, names)
    centre = x0
    n = sum(len(g.rows) for g in groups)
    w = math.sqrt(PRIOR_WEIGHT * n / len(names))

    def f(x: np.ndarray) -> np.ndarray:
        eng = base.with_fitted(_from_x(x, names))
        return np.concatenate([residuals(groups, eng, bench), w * (x - centre)])

    return base.with_fitted(_from_x(levenberg_marquardt(f, x0), names))


def fit_bench(groups: list[Group], fitted: dict[str, EngineParams], variant: str,
              bench: Benchmark) -> Benchmark:
    """The benchmark model's parameters, all engines together, engines held fixed."""
    if variant in FIXED:
        return FIXED[variant]
    def f(x: np.ndarray) -> np.ndarray:
        b = bench_of(variant, x)
        return np.concatenate([residuals([g], fitted[g.engine], b) for g in groups])

    return bench_of(variant, levenberg_marquardt(f, bench_x(bench)))


def fit_all(groups: list[Group], variant: str, bases: dict[str, EngineParams],
            neutral0: EngineParams, shared: bool | None = None
            ) -> tuple[dict[str, EngineParams], Benchmark]:
    """Neutral on every row, then the benchmark model, neutral again, each engine near it
    (``shared``: engines keep the neutral kernels and fit only their own overheads)."""
    shared = SHARED if shared is None else shared
    bench = BENCH0[variant]
    # start from the physical expectation, not the shipped fit: a fold without MoE rows does
    # not fit the moe_* parameters, and the shipped values were fitted on the rows it holds
    # out
    neutral = fit_engine(groups, neutral0.with_fitted(START), bench)
    bench = fit_bench(groups, {e: neutral for e in ENGINES}, variant, bench)
    neutral = fit_engine(groups, neutral, bench, _values(neutral))
    fitted = {"neutral": neutral}
    for e in ENGINES:
        mine = [g for g in groups if g.engine == e]
        start = _as_engine(neutral, bases[e])
        fitted[e] = fit_engine(mine, start, bench, _values(neutral),
                               OWN if shared else None) if mine else start
    return fitted, bench


def _as_engine(neutral: EngineParams, base: EngineParams) -> EngineParams:
    """An engine with no rows to fit on: its scheduler defaults, the neutral fit's values."""
    return dataclasses.replace(base, **_values(neutral))


def _values(e: EngineParams) -> dict[str, float]:
    return {k: getattr(e, k) for k in FITTED if getattr(e, k) is not None}


# ---- errors ----------------------------------------------------------------------------------

Pred = dict[str, np.ndarray]  # per row of a set of groups: ttft, tpot (pred and measured)


def predictions(groups: list[Group], fitted: dict[str, EngineParams], bench: Benchmark,
                engine_rows: bool = True) -> Pred:
    """Each row predicted by its own engine's fit (``engine_rows``) or by the neutral one."""
    cols: dict[str, list] = defaultdict(list)
    for g in groups:
        ttft, tpot = g.predict(fitted[g.engine if engine_rows else "neutral"], bench)
        cols["ttft"].append(ttft)
        cols["tpot"].append(tpot)
        cols["m_ttft"].append(g.ttft)
        cols["m_tpot"].append(g.tpot)
        cols["engine"].append([g.engine] * len(g.rows))
        cols["model"].append([g.model] * len(g.rows))
        cols["hw"].append([g.hw] * len(g.rows))
        cols["id"].append([r.id for r in g.rows])
    return {k: np.concatenate(v) for k, v in cols.items()}


def merge(parts: list[Pred]) -> Pred:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}


def mape(pred: np.ndarray, meas: np.ndarray) -> float:
    return float(np.mean(np.abs(pred / meas - 1))) if len(meas) else float("nan")


def held_out_fits(groups: list[Group], variant: str, bases: dict[str, EngineParams],
                  neutral0: EngineParams, by: str
                  ) -> list[tuple[list[Group], dict[str, EngineParams], Benchmark]]:
    """Leave each model (``by="model"``) or system (``"hw"``) out of every fit: per value, its
    groups and the fit made without them."""
    out = []
    for value in sorted({getattr(g, by) for g in groups}):
        train = [g for g in groups if getattr(g, by) != value]
        test = [g for g in groups if getattr(g, by) == value]
        fitted, bench = fit_all(train, variant, bases, neutral0)
        out.append((test, fitted, bench))
        print(f"  {variant}: {by} {value} held out (R or law: {bench.describe()})",
              file=sys.stderr)
    return out


def held_out(groups: list[Group], variant: str, bases: dict[str, EngineParams],
             neutral0: EngineParams, by: str,
             folds: list[tuple[list[Group], dict[str, EngineParams], Benchmark]] | None = None
             ) -> tuple[Pred, Pred]:
    """Each held-out model's or system's rows predicted by the fit made without them, with
    the engines' fits (first) and the neutral fit (second)."""
    folds = folds if folds is not None else held_out_fits(groups, variant, bases, neutral0, by)
    eng_parts = [predictions(test, fitted, bench) for test, fitted, bench in folds]
    neu_parts = [predictions(test, fitted, bench, engine_rows=False)
                 for test, fitted, bench in folds]
    return merge(eng_parts), merge(neu_parts)


def summary(p: Pred, mask: np.ndarray | None = None) -> tuple[int, float, float]:
    m = np.ones(len(p["tpot"]), bool) if mask is None else mask
    return (int(m.sum()), mape(p["tpot"][m], p["m_tpot"][m]),
            mape(p["ttft"][m], p["m_ttft"][m]))


def pct(v: float) -> str:
    return "     -" if not math.isfinite(v) else f"{v * 100:5.1f}%"


# ---- main ----------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--check", action="store_true", help="only print the shipped fit's error")
    ap.add_argument("--out", type=Path, default=engines_file())
    ap.add_argument("--kv", default="", help="KV format per engine, e.g. vllm=fp8,sglang=bf16")
    ap.add_argument("--quick", action="store_true", help="no held-out folds (exploring)")
    ap.add_argument("--engine-defaults", action="store_true",
                    help="fit every row under its engine's defaults, ignoring the benchmark "
                         "runs' documented server settings (run_config)")
    ap.add_argument("--per-engine-kernels", action="store_true",
                    help="fit every parameter per engine (default: engines share the kernel "
                         "parameters and fit only their step and request overheads)")
    ap.add_argument("--include-doubtful", action="store_true",
                    help="keep rows whose layout label is in doubt (see doubtful())")
    ap.add_argument("--residuals", type=int, nargs="?", const=12, default=None,
                    metavar="N", help="print the residual report of the neutral fit "
                    "(benchmarks/serving_residuals.py) with the N worst rows (default 12)")
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help=f"benchmark models to compare (of {', '.join(VARIANTS)})")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    global SHARED, RUN_CONFIGS
    SHARED = not args.per_engine_kernels
    RUN_CONFIGS = not args.engine_defaults
    for item in filter(None, args.kv.split(",")):
        name, dt = item.split("=")
        KV[name] = dt
    rows, notes = read_rows(args.data)
    n_all = len(rows)
    if not args.include_doubtful:
        rows, odd = doubtful(rows)
        if odd:
            print(f"  set aside {len(odd):3d}: layouts over more than one node whose TPOT is "
                  "within 5% of the one-node rows of the same workload (layout label in "
                  f"doubt: {', '.join(sorted({r.id.rsplit('_', 1)[-1] for r in odd}))}; "
                  "--include-doubtful keeps them)")
    groups, skipped = groups_of(rows)
    used = sum(len(g.rows) for g in groups)
    print(f"{used} of {n_all} rows used from {args.data.name}")
    for why, n in skipped.items():
        print(f"  skipped {n:3d}: {why}")
    for note in notes:
        print(f"  note: {note}")
    table = load_engines(str(args.out)) if args.out.is_file() else load_engines()
    neutral0 = table.engines["neutral"]
    bases = {e: _scheduler_defaults(e, table) for e in ENGINES}
    if args.check:
        fitted = {e: table.engines[e] for e in (*ENGINES, "neutral")}
        _report(groups, fitted, table.benchmark, None, None)
        if args.residuals is not None:
            residual_report([(groups, fitted, table.benchmark)], args.residuals)
        return 0
    variants = [v for v in args.variants.split(",") if v]
    results: dict[str, tuple] = {}
    folds: dict[str, list] = {}
    for v in variants:
        fitted, bench = fit_all(groups, v, bases, neutral0)
        print(f"{v}: fitted ({bench.describe()}), {time.perf_counter() - t0:.0f} s",
              file=sys.stderr)
        lomo = loso = None
        if not args.quick:
            folds[v] = held_out_fits(groups, v, bases, neutral0, "model")
            lomo = held_out(groups, v, bases, neutral0, "model", folds[v])
            loso = held_out(groups, v, bases, neutral0, "hw")
        results[v] = (fitted, bench, lomo, loso)
    best = _compare(groups, results)
    fitted, bench, lomo, loso = results[best]
    errors = _report(groups, fitted, bench, lomo, loso)
    if args.residuals is not None:
        residual_report([(groups, fitted, bench)], args.residuals)
        if best in folds:
            residual_report(folds[best], args.residuals, title="leaving one model out")
    batch1_check(fitted, bench, table)
    comparison = {}
    for v, (f, b, lo, ls) in results.items():
        key = v.replace("/", "_")
        comparison[f"{key}_fit_ttft_mape"] = summary(predictions(groups, f, b))[2]
        if lo is not None and ls is not None:
            comparison[f"{key}_lomo_ttft_mape"] = summary(lo[0])[2]
            comparison[f"{key}_loso_ttft_mape"] = summary(ls[0])[2]
    choice = _choice_text(best, results, groups)
    new = EngineTable(
        {name: dataclasses.replace(eng, error=errors.get(name, {}))
         for name, eng in fitted.items()},
        bench, datetime.date.today().isoformat(),
        f"{args.data.name}: {used} of {n_all} rows (ai-dynamo/aiconfigurator "
        "silicon_sample.csv, aggregated serving)",
        "Levenberg-Marquardt on log errors (TPOT + 0.5 TTFT), bounded parameters pulled "
        "towards physical expectations; "
        + ("engines share the neutral fit's kernel parameters and fit their own step and "
           "request overheads and MoE bandwidth" if SHARED else
           "engines held near the neutral fit")
        + "; held out: leave one model out (cv_*, lomo_*) and leave one system out (loso_*)",
        str(args.out), used, choice, comparison)
    from perfscope.io import write_atomic

    write_atomic(args.out, to_toml(new))
    print(f"wrote {args.out} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return 0


def _compare(groups: list[Group],
             results: dict[str, tuple]) -> str:
    """The TTFT models side by side; returns the one with the lowest mean held-out TTFT
    error (leave one model out and leave one system out, averaged)."""
    print("\nTTFT models side by side (engine fits; mean absolute percentage error)")
    hdr = (f"{'benchmark model':20s} {'parameters':36s} {'TPOT':>6s} {'TTFT':>6s} "
           f"{'LOMO TPOT':>9s} {'LOMO TTFT':>9s} {'LOSO TPOT':>9s} {'LOSO TTFT':>9s}")
    print(hdr)
    print("-" * len(hdr))
    score = {}
    for v, (fitted, bench, lomo, loso) in results.items():
        _, tp, tt = summary(predictions(groups, fitted, bench))
        lo = summary(lomo[0]) if lomo else (0, math.nan, math.nan)
        ls = summary(loso[0]) if loso else (0, math.nan, math.nan)
        score[v] = (lo[2] + ls[2]) / 2 if lomo and loso else tt
        print(f"{v:20s} {bench.describe()[:36]:36s} {pct(tp)} {pct(tt)} {pct(lo[1]):>9s} "
              f"{pct(lo[2]):>9s} {pct(ls[1]):>9s} {pct(ls[2]):>9s}")
    best = min(score, key=score.__getitem__)
    print(f"kept: {best} (lowest held-out TTFT error, mean of LOMO and LOSO: "
          f"{score[best] * 100:.1f}%)")
    for v in results:
        if v == best or not results[v][2]:
            continue
        # paired per held-out row: is the difference more than the rows' scatter?
        d = []
        for k in (2, 3):
            a, b = results[best][k][0], results[v][k][0]
            ea = np.abs(a["ttft"] / a["m_ttft"] - 1)
            eb = np.abs(b["ttft"] / b["m_ttft"] - 1)
            order_a, order_b = np.argsort(a["id"]), np.argsort(b["id"])
            d.append(eb[order_b] - ea[order_a])
        diff = np.concatenate(d)
        print(f"  vs {v}: held-out TTFT error lower on {np.mean(diff > 0):.0%} of the "
              f"{len(diff)} held-out predictions, by {diff.mean() * 100:.1f} +- "
              f"{diff.std(ddof=1) / math.sqrt(len(diff)) * 100:.1f} points (mean +- s.e.)")
    return best


def _choice_text(best: str, results: dict[str, tuple], groups: list[Group]) -> str:
    """Why ``best`` is kept, with every model's fit and held-out TTFT error (engines.toml)."""
    parts = []
    for v, (fitted, bench, lomo, loso) in results.items():
        fit = summary(predictions(groups, fitted, bench))[2]
        if lomo and loso:
            parts.append(f"{v} {fit * 100:.1f}% fit, {summary(lomo[0])[2] * 100:.1f}% / "
                         f"{summary(loso[0])[2] * 100:.1f}% held out")
    if not parts:
        return best
    return (f"{best}: the lowest held-out TTFT error (mean absolute % error in sample, then "
            "leaving one model / one system out): " + "; ".join(parts) + ". The issue's "
            "rule keeps the model that generalises better; the closed loop (simulate.py) "
            "needs no free function of the concurrency and fits better in sample, the "
            "difference held out is a few points with three models behind it")


def _report(groups: list[Group], fitted: dict[str, EngineParams], bench: Benchmark,
            lomo: tuple[Pred, Pred] | None, loso: tuple[Pred, Pred] | None
            ) -> dict[str, dict[str, float]]:
    """Per engine, per model, per system: fit and held-out errors. Returns the error table
    written to engines.toml."""
    print(f"\nbenchmark model: {bench.describe()}")
    print("fit: in sample; LOMO: leave one model out; LOSO: leave one system out (each "
          "refitted without it, then predicted)")
    hdr = (f"{'engine':8s} {'rows':22s} {'n':>4s} {'TPOT':>6s} {'TTFT':>6s} {'LOMO TPOT':>9s} "
           f"{'LOMO TTFT':>9s} {'LOSO TPOT':>9s} {'LOSO TTFT':>9s}")
    print(hdr)
    print("-" * len(hdr))
    out: dict[str, dict[str, float]] = {}
    for e in (*ENGINES, "neutral"):
        neutral = e == "neutral"
        p = predictions(groups, fitted, bench, engine_rows=not neutral)
        lo = (lomo[1] if neutral else lomo[0]) if lomo else None
        ls = (loso[1] if neutral else loso[0]) if loso else None
        cuts = [("all", None)] + [(f"model {m}", ("model", m)) for m in sorted(set(p["model"]))] \
            + [(f"system {h}", ("hw", h)) for h in sorted(set(p["hw"]))]
        for label, cut in cuts:
            def mask(d: Pred, cut: tuple | None = cut, e: str = e) -> np.ndarray:
                m = np.ones(len(d["engine"]), bool) if e == "neutral" else d["engine"] == e
                return m if cut is None else m & (d[cut[0]] == cut[1])

            n, tp, tt = summary(p, mask(p))
            if n == 0:
                continue
            lo_s = summary(lo, mask(lo)) if lo else (0, math.nan, math.nan)
            ls_s = summary(ls, mask(ls)) if ls else (0, math.nan, math.nan)
            print(f"{e:8s} {label[:22]:22s} {n:4d} {pct(tp)} {pct(tt)} {pct(lo_s[1]):>9s} "
                  f"{pct(lo_s[2]):>9s} {pct(ls_s[1]):>9s} {pct(ls_s[2]):>9s}")
            if cut is None:
                err = {"tpot_mape": tp, "ttft_mape": tt, "rows": float(n)}
                if lo:
                    err |= {"cv_tpot_mape": lo_s[1], "cv_ttft_mape": lo_s[2],
                            "lomo_tpot_mape": lo_s[1], "lomo_ttft_mape": lo_s[2]}
                if ls:
                    err |= {"loso_tpot_mape": ls_s[1], "loso_ttft_mape": ls_s[2]}
                out[e] = {k: v for k, v in err.items() if math.isfinite(v)}
        eng = fitted[e]
        print("         fitted: " + ", ".join(f"{k}={getattr(eng, k):.3g}" for k in FITTED
                                             if getattr(eng, k) is not None))
    return out


def doubtful(rows: list[Row]) -> tuple[list[Row], list[Row]]:
    """Rows whose layout spans nodes yet whose TPOT is within 5% of a one-node row of the same
    engine, model, system and workload: a layout 8x wider does not decode at the same speed at
    every concurrency, so the layout label is in doubt (the DeepSeek-V3 "TP64" and "attention
    DP 64" rows match the 8-GPU TP8 rows). Returns (kept, doubtful)."""
    node = {r.hw: load_hw(r.hw).gpus_per_node for r in rows}
    small = {}
    for r in rows:
        if r.tp * r.attn_dp * r.pp <= node[r.hw]:
            small[(r.engine, r.model, r.hw, r.isl, r.osl, r.c)] = r
    keep, out = [], []
    for r in rows:
        twin = small.get((r.engine, r.model, r.hw, r.isl, r.osl, r.c))
        wide = r.tp * r.attn_dp * r.pp > node[r.hw]
        (out if wide and twin and abs(r.tpot_s / twin.tpot_s - 1) < 0.05 else keep).append(r)
    return keep, out


def _scheduler_defaults(engine: str, table: EngineTable) -> EngineParams:
    """Each engine's documented scheduler defaults (engines.toml), to refit."""
    return table.engines[engine]


def batch1_check(fitted: dict[str, EngineParams], bench: Benchmark,
                 table: EngineTable) -> None:
    """An independent check, not fitted: single-request decode tokens/s against gpt-fast's
    published A100 figures (published-figures.json, 3-llm-decode-batch1; a 5-token prompt,
    200 tokens out). gpt-fast is none of these engines; the ratio shows whether each
    engine's fixed costs and efficiencies stay physical on a device and precision the
    serving rows never saw."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from validate_decode_batch1 import parse

    from perfscope.serving.predict import Layout, Workload, predict

    ref = DATA.parent / "published-figures.json"
    if not ref.is_file():
        return
    cases = [c for c in (parse(r) for r in json.loads(ref.read_text())
                         if r["category"] == "3-llm-decode-batch1") if c]
    hw = load_hw("a100-sxm-80gb")
    tab = dataclasses.replace(table, engines=fitted, benchmark=bench)
    print("\nbatch-1 decode vs gpt-fast on A100 (not fitted): predicted / measured tokens/s")
    for e in (*ENGINES, "neutral"):
        ratios = []
        for c in cases:
            try:
                p = predict(load_model(c["model"]), hw, Layout(tp=c["tp"]),
                            Workload(5, 200, 1), engine=e, weight_dtype=c["weight_dtype"],
                            group_size=c["group"], table=tab)
            except PerfscopeError:
                continue
            if p.fits:
                ratios.append(p.tokens_per_s_per_user / c["measured"])
        r = np.array(ratios)
        print(f"{e:8s} {len(r):3d} cases: median ratio {np.median(r):.2f}, mean |error| "
              f"{np.mean(np.abs(r - 1)):.1%}")


if __name__ == "__main__":
    sys.exit(main())
