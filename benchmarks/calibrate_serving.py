"""Fit the serving engines' parameters to measured serving benchmarks; print the fit's error.

    python benchmarks/calibrate_serving.py            # fit, print, write engines.toml
    python benchmarks/calibrate_serving.py --check    # print the error of the shipped fit only

Data: ../shared/reference/serving-calibration.json (384 rows: TensorRT-LLM, vLLM, SGLang on
Llama-3.1-70B / B200, DeepSeek-V3 and Qwen3-235B-A22B-FP8 / H200), the only serving
measurements fitted to (other measurements of this kind are kept back to judge predictions).

What each row means (worked out from the rows): ``batch_size`` is the benchmark concurrency;
``tp_size`` the attention tensor-parallel degree; ``attention_dp_size`` the data-parallel
attention groups, empty where the layout implies it: GPUs = moe_tp_size x moe_ep_size =
tp_size x attention-DP, so an empty value means (moe_tp x moe_ep) / tp; ``moe_ep_size`` the
expert-parallel degree and ``moe_tp_size`` the tensor split of each expert;
``gemm_quant_mode`` the weight/GEMM format (fp8, fp8_block: W8A8 fp8; nvfp4: fp4).

Fitted per engine (perfscope/serving/engines.py documents each, with its bounds): compute and
bandwidth efficiency against the empirical ceilings, the same two for MoE expert kernels on top,
fixed cost per kernel, per small all-reduce, per step, and per request before the first
token; plus one benchmark law shared by all engines (prompts arrive in clusters of
``scale x c ^ exponent``, simulate.py). The loss is
the mean squared log error of TPOT plus half that of TTFT, minimised by Nelder-Mead on
logit-transformed parameters, with a weak pull towards the middle of each range so a parameter
the data cannot see stays unremarkable. Cross-validation: leave-one-model-out within each
engine (fit on the other model, predict this one), so an engine-model overfit shows.

Rows the analytic core cannot express yet are skipped with the reason printed: NVFP4 (no fp4
dtype), data-parallel attention (no Scenario.attn_dp), and multi-node layouts (no interconnect
topology). Once those land (issue 6) re-run this script: it picks them up by itself.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from perfscope.errors import PerfscopeError
from perfscope.serving.engines import (
    BOUNDS,
    FITTED,
    EngineParams,
    EngineTable,
    engines_file,
    load_engines,
    to_toml,
)
from perfscope.serving.fitting import fit_step_model, layout_scenario
from perfscope.serving.simulate import efficiency, serve
from perfscope.serving.stepmodel import StepModel
from perfscope.specs.loading import load_hw
from perfscope.specs.model import ModelSpec, load_model
from perfscope.specs.scenario import Scenario
from perfscope.units import WEIGHT_DTYPES

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent.parent / "shared" / "reference" / "serving-calibration.json"
for cand in (ROOT.parent / "shared" / "reference" / "serving-calibration.json",
             Path("/work/shared/reference/serving-calibration.json")):
    if cand.is_file():
        DATA = cand
        break

HW = {"b200_sxm": "b200", "h200_sxm": "h200-sxm", "h100_sxm": "h100-sxm"}
MODELS = {"meta-llama/Llama-3.1-70B": "llama-3.1-70b", "deepseek-ai/DeepSeek-V3": "deepseek-v3",
          "Qwen/Qwen3-235B-A22B-FP8": "qwen3-235b-a22b-fp8"}
WEIGHTS = {"fp8": "fp8", "fp8_block": "fp8", "nvfp4": "fp4", "bfloat16": "bf16",
           "float16": "fp16", "int8": "int8", "int4_wo": "int4"}
# KV-cache format: the rows do not record it. An fp8 cache for all three engines' fp8 recipes
# (TensorRT-LLM's ModelOpt checkpoints carry one; vLLM and SGLang take --kv-cache-dtype fp8):
# with a 16-bit cache vLLM's Llama rows at c = 64 would queue for KV space, which their TTFT
# shows they do not (fit error 90% -> 21% for those rows); --kv engine=bf16 tries otherwise.
KV: dict[str, Callable[[bool], str]] = {
    "trtllm": lambda moe: "fp8", "vllm": lambda moe: "fp8", "sglang": lambda moe: "fp8"}
# engine scheduler defaults of the neutral engine apply when fitting all engines together
ENGINES = ("trtllm", "vllm", "sglang")

# Qwen3-235B-A22B-FP8's architecture (hub config.json, Qwen/Qwen3-235B-A22B-FP8), used only
# until the built-in model of that name lands (issue 6 adds it to workloads/models/).
QWEN3_235B = {
    "model_type": "qwen3_moe", "architectures": ["Qwen3MoeForCausalLM"], "head_dim": 128,
    "hidden_act": "silu", "hidden_size": 4096, "intermediate_size": 12288,
    "max_position_embeddings": 40960, "moe_intermediate_size": 1536, "num_attention_heads": 64,
    "num_experts": 128, "num_experts_per_tok": 8, "num_hidden_layers": 94,
    "num_key_value_heads": 4, "vocab_size": 151936, "tie_word_embeddings": False,
    "decoder_sparse_step": 1, "mlp_only_layers": [], "norm_topk_prob": True,
    "attention_bias": False, "rms_norm_eps": 1e-6, "rope_theta": 1e6,
}


Law = tuple[float, float]  # benchmark arrival law: (cluster scale, cluster exponent)


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
        return (self.model, self.hw, self.tp, self.pp, self.ep, self.attn_dp, self.weight)


# ---- reading the rows --------------------------------------------------------------------

def _model(name: str, tmp: Path) -> ModelSpec:
    try:
        return load_model(name)
    except PerfscopeError:
        if name != "qwen3-235b-a22b-fp8":
            raise
        p = tmp / f"{name}.json"
        p.write_text(json.dumps(QWEN3_235B))
        return load_model(str(p))


def read_rows(path: Path, include_multinode: bool) -> tuple[list[Row], dict[str, int]]:
    raw = json.loads(path.read_text())["rows"]
    rows: list[Row] = []
    skipped: dict[str, int] = defaultdict(int)
    has_attn_dp = "attn_dp" in {f.name for f in dataclasses.fields(Scenario)}
    for r in raw:
        tp, pp = int(r["tp_size"]), int(r["pp_size"])
        mtp, mep = int(r["moe_tp_size"]), int(r["moe_ep_size"])
        dp = int(r["attention_dp_size"]) if r["attention_dp_size"] else mtp * mep // tp
        moe = "Llama" not in r["model_path"]
        if mtp * mep != tp * dp:
            skipped["layout columns disagree (moe_tp x moe_ep != tp x attention_dp)"] += 1
            continue
        weight = WEIGHTS[r["gemm_quant_mode"]]
        if weight not in WEIGHT_DTYPES:
            skipped[f"{weight} weights: the core has no {weight} dtype yet (issue 6)"] += 1
            continue
        if dp > 1 and not has_attn_dp:
            skipped["data-parallel attention: Scenario has no attn_dp yet (issue 6)"] += 1
            continue
        gpus = tp * dp * pp
        if gpus > 8 and not include_multinode:
            skipped[f"{gpus} GPUs span nodes: the core has no interconnect topology yet "
                    "(issue 6; --include-multinode fits them anyway)"] += 1
            continue
        rows.append(Row(r["id"], r["backend"], MODELS[r["model_path"]], HW[r["system"]], tp, pp,
                        mep if moe else 1, dp, weight, KV[r["backend"]](moe),
                        int(r["batch_size"]), int(r["isl"]), int(r["osl"]),
                        float(r["silicon_ttft_ms"]) / 1e3, float(r["silicon_tpot_ms"]) / 1e3))
    return rows, dict(skipped)


class Group:
    """Rows sharing one structural configuration: one step model, vector evaluation."""

    def __init__(self, sm: StepModel, rows: list[Row]):
        self.sm, self.rows = sm, rows
        self.c = np.array([r.c for r in rows], float)
        self.isl = np.array([r.isl for r in rows], float)
        self.osl = np.array([r.osl for r in rows], float)
        self.kv_bits = {"fp8": 8, "bf16": 16}[rows[0].kv]
        self.ttft = np.array([r.ttft_s for r in rows])
        self.tpot = np.array([r.tpot_s for r in rows])

    def predict(self, eng: EngineParams, law: Law) -> tuple[np.ndarray, np.ndarray]:
        s = serve(self.sm, eng, self.c, self.isl, self.osl, cluster_scale=law[0],
                  cluster_exponent=law[1],
                  kv_bits=self.kv_bits, eff=efficiency(eng, "empirical"))
        return s.ttft_s, s.tpot_s


def groups_of(rows: list[Row], tmp: Path) -> list[Group]:
    by: dict[tuple, list[Row]] = defaultdict(list)
    for r in rows:
        by[(r.engine, *r.key, r.kv)].append(r)
    out = []
    for rs in by.values():
        r0 = rs[0]
        sc = layout_scenario(Scenario(), tp=r0.tp, pp=r0.pp, ep=r0.ep, attn_dp=r0.attn_dp,
                             weight_dtype=r0.weight, kv_dtype=r0.kv, ceiling="empirical")
        sm = fit_step_model(_model(r0.model, tmp), load_hw(r0.hw), sc)
        out.append(Group(sm, rs))
    return out


# ---- the fit -------------------------------------------------------------------------------

def _to_x(values: dict[str, float], names: Sequence[str]) -> np.ndarray:
    out = []
    for k in names:
        lo, hi = BOUNDS[k]
        u = (values[k] - lo) / (hi - lo)
        u = min(max(u, 1e-4), 1 - 1e-4)
        out.append(math.log(u / (1 - u)))
    return np.array(out)


def _from_x(x: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    return {k: BOUNDS[k][0] + (BOUNDS[k][1] - BOUNDS[k][0]) / (1 + math.exp(-v))
            for k, v in zip(names, x, strict=True)}


def loss_of(groups: list[Group], eng: EngineParams, law: Law) -> float:
    se = []
    for g in groups:
        ttft, tpot = g.predict(eng, law)
        se.append(np.log(tpot / g.tpot) ** 2 + 0.5 * np.log(ttft / g.ttft) ** 2)
    return float(np.mean(np.concatenate(se)))


def nelder_mead(f: Callable[[np.ndarray], float], x0: np.ndarray, iters: int = 600,
                step: float = 0.8) -> np.ndarray:
    """Plain Nelder-Mead (no scipy dependency for a calibration script)."""
    n = len(x0)
    simplex = [x0] + [x0 + step * np.eye(n)[i] for i in range(n)]
    vals = [f(x) for x in simplex]
    for _ in range(iters):
        order = np.argsort(vals)
        simplex = [simplex[i] for i in order]
        vals = [vals[i] for i in order]
        if abs(vals[-1] - vals[0]) < 1e-7 * (abs(vals[0]) + 1e-12):
            break
        centroid = np.mean(simplex[:-1], axis=0)
        xr = centroid + (centroid - simplex[-1])
        fr = f(xr)
        if fr < vals[0]:
            xe = centroid + 2 * (centroid - simplex[-1])
            fe = f(xe)
            simplex[-1], vals[-1] = (xe, fe) if fe < fr else (xr, fr)
        elif fr < vals[-2]:
            simplex[-1], vals[-1] = xr, fr
        else:
            xc = centroid + 0.5 * (simplex[-1] - centroid)
            fc = f(xc)
            if fc < vals[-1]:
                simplex[-1], vals[-1] = xc, fc
            else:
                simplex = [simplex[0]] + [simplex[0] + 0.5 * (s - simplex[0])
                                          for s in simplex[1:]]
                vals = [vals[0]] + [f(s) for s in simplex[1:]]
    return simplex[int(np.argmin(vals))]


def fit_engine(groups: list[Group], base: EngineParams, law: Law,
               prior: dict[str, float] | None = None) -> EngineParams:
    """Fit ``base``'s parameters to ``groups``. ``prior``: values to stay near (the neutral
    fit, for an engine: an engine deviates from the shared kernels only where its rows say
    so); without one, a weak pull to the middle of each parameter's range."""
    moe = any(g.sm.model.moe for g in groups)
    names = [k for k in FITTED if moe or not k.startswith("moe_")]
    x0 = _to_x(prior or START, names)
    centre = x0 if prior else np.zeros(len(names))
    weight = PRIOR_WEIGHT if prior else 1e-3

    def f(x: np.ndarray) -> float:
        eng = base.with_fitted(_from_x(x, names))
        return loss_of(groups, eng, law) + weight * float(np.mean((x - centre) ** 2))

    x = nelder_mead(f, x0, iters=ITERS[0])
    x = nelder_mead(f, x, iters=ITERS[1], step=0.3)  # restart: Nelder-Mead stalls otherwise
    return base.with_fitted(_from_x(x, names))


def fit_law(by_engine: dict[str, list[Group]], fitted: dict[str, EngineParams],
            law: Law) -> Law:
    """The arrival law, all engines together, engines held fixed."""

    def f(x: np.ndarray) -> float:
        lw = (math.exp(x[0]), 1 / (1 + math.exp(-x[1])))
        return sum(loss_of(gs, fitted[e], lw) * len(gs) for e, gs in by_engine.items() if gs)

    x0 = np.array([math.log(law[0]), math.log(law[1] / (1 - min(law[1], 0.999)))])
    x = nelder_mead(f, x0, iters=200, step=0.5)
    return (math.exp(x[0]), 1 / (1 + math.exp(-x[1])))


def mape(pred: np.ndarray, meas: np.ndarray) -> float:
    return float(np.mean(np.abs(pred / meas - 1)) * 100)


def errors(groups: list[Group], eng: EngineParams, law: Law) -> tuple[np.ndarray, ...]:
    pt, pp_, mt, mp = [], [], [], []
    for g in groups:
        ttft, tpot = g.predict(eng, law)
        pt.append(ttft)
        pp_.append(tpot)
        mt.append(g.ttft)
        mp.append(g.tpot)
    return tuple(np.concatenate(a) for a in (pt, pp_, mt, mp))


# ---- main ----------------------------------------------------------------------------------

START = {"flops_efficiency": 0.7, "bandwidth_efficiency": 0.85,
         "moe_flops_efficiency": 0.5, "moe_bandwidth_efficiency": 0.7, "kernel_overhead_s": 2e-6,
         "collective_latency_s": 10e-6, "step_overhead_s": 0.5e-3, "ttft_overhead_s": 0.02}
LAW0: Law = (1.0, 0.5)
ITERS = (400, 150)
# pull of an engine's parameters towards the neutral fit, per squared logit unit (the loss is
# a mean squared log error, ~0.01-0.05 at a good fit)
PRIOR_WEIGHT = 0.01


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--check", action="store_true", help="only print the shipped fit's error")
    ap.add_argument("--include-multinode", action="store_true")
    ap.add_argument("--out", type=Path, default=engines_file())
    ap.add_argument("--kv", default="", help="KV format per engine, e.g. vllm=fp8,sglang=bf16 "
                    "(default: each engine's recipe, see KV)")
    ap.add_argument("--quick", action="store_true", help="fewer iterations, no CV (exploring)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    for item in filter(None, args.kv.split(",")):
        eng_name, dt = item.split("=")
        KV[eng_name] = lambda moe, dt=dt: dt
    if args.quick:
        global ITERS
        ITERS = (250, 100)
    rows, skipped = read_rows(args.data, args.include_multinode)
    print(f"{len(rows)} rows used from {args.data.name}; skipped:", file=sys.stderr)
    for why, n in skipped.items():
        print(f"  {n:4d}  {why}", file=sys.stderr)
    table = load_engines(str(args.out)) if args.out.is_file() else load_engines()
    with tempfile.TemporaryDirectory() as tmp:
        groups = groups_of(rows, Path(tmp))
    by_engine = {e: [g for g in groups if g.rows[0].engine == e] for e in ENGINES}
    bases = {e: _scheduler_defaults(e, table.engines["neutral"]) for e in ENGINES}
    if args.check:
        fitted = {e: table.engines.get(e, bases[e]) for e in ENGINES}
        fitted["neutral"] = table.engines["neutral"]
        law = (table.cluster_scale, table.cluster_exponent)
    else:
        # neutral (every row) first; each engine then stays near it where its rows are silent;
        # then the arrival law at fixed engines; twice round
        law = LAW0
        for rnd in range(2):
            neutral = fit_engine(groups, table.engines["neutral"], law)
            prior = _values(neutral)
            fitted = {e: fit_engine(by_engine[e], bases[e], law, prior) for e in ENGINES}
            law = fit_law(by_engine, fitted, law)
            print(f"round {rnd + 1}: arrival law scale {law[0]:.3g} exponent {law[1]:.3g}",
                  file=sys.stderr)
        neutral = fit_engine(groups, table.engines["neutral"], law)
        fitted = {e: fit_engine(by_engine[e], bases[e], law, _values(neutral))
                  for e in ENGINES}
        fitted["neutral"] = neutral
    cv = None if (args.check or args.quick) else \
        cross_validate(groups, by_engine, bases, table.engines["neutral"], law)
    report = _report(fitted, by_engine, groups, law, cv)
    batch1_check(fitted, law)
    if not args.check:
        new = EngineTable(
            {name: dataclasses.replace(eng, error=report.get(name, {}))
             for name, eng in {"neutral": fitted["neutral"],
                               **{e: fitted[e] for e in ENGINES}}.items()},
            law[0], law[1], datetime.date.today().isoformat(),
            f"{args.data.name}: {len(rows)} of 384 rows (ai-dynamo/aiconfigurator "
            "silicon_sample.csv, aggregated serving)",
            "Nelder-Mead on log errors (TPOT + 0.5 TTFT); engines held near the neutral "
            "fit; leave-one-model-out CV",
            str(args.out))
        from perfscope.io import write_atomic

        write_atomic(args.out, to_toml(new))
        print(f"wrote {args.out}", file=sys.stderr)
    print(f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return 0


def _scheduler_defaults(engine: str, neutral: EngineParams) -> EngineParams:
    """Each engine's documented scheduler defaults (engines.py), fitted values from neutral."""
    table = load_engines()
    if engine in table.engines:
        return table.engines[engine]
    d = {"trtllm": dict(display_name="TensorRT-LLM (PyTorch backend, trtllm-serve)",
                        max_num_tokens=8192, chunked_prefill=False, mixed_batches=True,
                        max_num_seqs=2048, kv_block_tokens=32, memory_fraction=0.9,
                        memory_policy="free", kv_admission="full"),
         "vllm": dict(display_name="vLLM (V1 engine, vllm serve)", max_num_tokens=8192,
                      chunked_prefill=True, mixed_batches=True, max_num_seqs=1024,
                      kv_block_tokens=16, memory_fraction=0.9, memory_policy="total",
                      kv_admission="current"),
         "sglang": dict(display_name="SGLang (sglang.launch_server)", max_num_tokens=8192,
                        chunked_prefill=True, mixed_batches=False, max_num_seqs=4096,
                        kv_block_tokens=1, memory_fraction=0.88, memory_policy="total",
                        kv_admission="current")}[engine]
    return dataclasses.replace(neutral, name=engine, notes="", error={}, **d)


def batch1_check(fitted: dict[str, EngineParams], law: Law) -> None:
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
    table = load_engines()
    hw = load_hw("a100-sxm-80gb")
    tab = dataclasses.replace(table, engines=fitted, cluster_scale=law[0],
                              cluster_exponent=law[1])
    print("\nbatch-1 decode vs gpt-fast on A100 (not fitted): predicted / measured tokens/s")
    for e in (*ENGINES, "neutral"):
        ratios = []
        for c in cases:
            m = load_model(c["model"])
            try:
                p = predict(m, hw, Layout(tp=c["tp"]), Workload(5, 200, 1), engine=e,
                            weight_dtype=c["weight_dtype"], group_size=c["group"], table=tab)
            except PerfscopeError:
                continue
            if p.fits:
                ratios.append(p.tokens_per_s_per_user / c["measured"])
        r = np.array(ratios)
        print(f"{e:8s} {len(r):3d} cases: median ratio {np.median(r):.2f}, mean |error| "
              f"{np.mean(np.abs(r - 1)):.1%}")


def _values(e: EngineParams) -> dict[str, float]:
    return {k: getattr(e, k) for k in FITTED if getattr(e, k) is not None}


def cross_validate(groups: list[Group], by_engine: dict[str, list[Group]],
                   bases: dict[str, EngineParams], neutral0: EngineParams,
                   law: Law) -> dict[tuple[str, str], tuple[np.ndarray, ...]]:
    """Leave one model out of everything (neutral and engines), refit, predict its rows.
    Returns {(engine, model): (pred ttft, pred tpot, meas ttft, meas tpot)}."""
    out: dict[tuple[str, str], tuple[np.ndarray, ...]] = {}
    models = sorted({g.rows[0].model for g in groups})
    for m in models:
        rest = [g for g in groups if g.rows[0].model != m]
        held = [g for g in groups if g.rows[0].model == m]
        neutral = fit_engine(rest, neutral0, law)
        out[("neutral", m)] = errors(held, neutral, law)
        for e in ENGINES:
            mine = [g for g in held if g.rows[0].engine == e]
            if not mine:
                continue
            train = [g for g in by_engine[e] if g.rows[0].model != m]
            eng = fit_engine(train, bases[e], law, _values(neutral)) if train else \
                dataclasses.replace(neutral, **{k: getattr(bases[e], k) for k in
                                                ("name", "max_num_tokens", "chunked_prefill",
                                                 "mixed_batches", "max_num_seqs",
                                                 "kv_block_tokens", "memory_fraction",
                                                 "memory_policy", "kv_admission")})
            out[(e, m)] = errors(mine, eng, law)
        print(f"cross-validation: {m} held out", file=sys.stderr)
    return out


def _report(fitted: dict[str, EngineParams], by_engine: dict[str, list[Group]],
            groups: list[Group], law: Law,
            cv: dict[tuple[str, str], tuple[np.ndarray, ...]] | None
            ) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    print(f"\narrival law: prompts arrive in clusters of {law[0]:.3g} x c^{law[1]:.3g}")
    print("CV: leave-one-model-out (the model's rows left out of every fit, then predicted)")
    hdr = (f"{'engine':8s} {'model':20s} {'rows':>4s} {'TPOT MAPE':>9s} {'TTFT MAPE':>9s} "
           f"{'CV TPOT':>8s} {'CV TTFT':>8s}")
    print(hdr)
    print("-" * len(hdr))
    for e in (*ENGINES, "neutral"):
        gs = groups if e == "neutral" else by_engine[e]
        if not gs:
            continue
        eng = fitted[e]
        pt, pp_, mt, mp = errors(gs, eng, law)
        err = {"tpot_mape": mape(pp_, mp) / 100, "ttft_mape": mape(pt, mt) / 100,
               "rows": float(len(mp))}
        cvs: list[tuple[np.ndarray, ...]] = []
        for m in sorted({g.rows[0].model for g in gs}):
            mg = [g for g in gs if g.rows[0].model == m]
            a, b, c_, d = errors(mg, eng, law)
            cell = ("", "")
            if cv is not None and (e, m) in cv:
                ha, hb, hc, hd = cv[(e, m)]
                cvs.append(cv[(e, m)])
                cell = (f"{mape(hb, hd):7.1f}%", f"{mape(ha, hc):7.1f}%")
            print(f"{e:8s} {m:20s} {len(d):4d} {mape(b, d):8.1f}% {mape(a, c_):8.1f}% "
                  f"{cell[0]:>8s} {cell[1]:>8s}")
        if cvs:
            ha, hb, hc, hd = (np.concatenate([x[k] for x in cvs]) for k in range(4))
            err["cv_tpot_mape"] = mape(hb, hd) / 100
            err["cv_ttft_mape"] = mape(ha, hc) / 100
        cell = (f"{err['cv_tpot_mape'] * 100:7.1f}%", f"{err['cv_ttft_mape'] * 100:7.1f}%") \
            if "cv_tpot_mape" in err else ("", "")
        print(f"{e:8s} {'all':20s} {len(mp):4d} {err['tpot_mape'] * 100:8.1f}% "
              f"{err['ttft_mape'] * 100:8.1f}% {cell[0]:>8s} {cell[1]:>8s}")
        print("         fitted: " + ", ".join(f"{k}={getattr(eng, k):.3g}" for k in FITTED
                                             if getattr(eng, k) is not None))
        out[e] = err
    return out


if __name__ == "__main__":
    sys.exit(main())
