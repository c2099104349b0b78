"""predict(): one serving configuration under load -> TTFT, TPOT, throughput, memory.

    from perfscope.serving import Layout, Workload, predict
    p = predict(load_model("llama-3.1-70b"), load_hw("h100-sxm"), Layout(tp=4),
                Workload(isl=1024, osl=1024, concurrency=32), engine="vllm",
                weight_dtype="fp8")
    p.ttft_s, p.tpot_s, p.tokens_per_s_per_gpu, p.to_json()   # perfscope.predict/1
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from perfscope.errors import InputError
from perfscope.serving.engines import (
    Benchmark,
    EngineParams,
    EngineTable,
    get_engine,
    load_engines,
)
from perfscope.serving.fitting import WeightsDoNotFit, fit_step_model, layout_scenario
from perfscope.serving.simulate import Overloaded, Served, efficiency, serve, serve_rate
from perfscope.serving.stepmodel import IDEAL, Efficiency, StepModel, roofs
from perfscope.specs.hardware import HardwareSpec
from perfscope.specs.model import ModelSpec
from perfscope.specs.scenario import Scenario

if TYPE_CHECKING:
    from perfscope.calibration import Calibration

SCHEMA = "perfscope.predict/1"
# the models and devices the shipped calibration saw (uncertainty says when a prediction
# extrapolates beyond them)
# the calibration rows' models; qwen3-235b-a22b is the same model as its FP8 checkpoint (the
# rows ran the FP8 one; the format is the scenario's, not the model's)
CALIBRATED_MODELS = ("llama-3.1-70b", "deepseek-v3", "qwen3-235b-a22b-fp8", "qwen3-235b-a22b")
CALIBRATED_HW = ("b200", "h200-sxm")


@dataclass(frozen=True)
class Layout:
    """How one model replica spreads over GPUs, and how many replicas serve the traffic.

    GPUs per replica = tp x pp x attn_dp; ``dp`` replicas split the concurrency evenly."""

    tp: int = 1
    pp: int = 1
    ep: int = 1
    dp: int = 1
    attn_dp: int = 1
    moe_comm: str | None = None  # under attention DP; None: the engine's default

    @property
    def gpus_per_replica(self) -> int:
        return self.tp * self.pp * self.attn_dp

    @property
    def gpus(self) -> int:
        return self.gpus_per_replica * self.dp

    def validate(self) -> Layout:
        for name in ("tp", "pp", "ep", "dp", "attn_dp"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise InputError(f"--{name.replace('_', '-')} {v!r}: must be a whole number "
                                 ">= 1")
        return self


@dataclass(frozen=True)
class Workload:
    """``concurrency`` requests in flight (all replicas; a closed loop, as serving benchmarks
    run), or with ``rate`` requests arriving at random, that many per second over all replicas
    (an open loop: the concurrency is what the rate sustains), each ``isl`` prompt tokens and
    ``osl`` output tokens. ``num_prompts``: the closed-loop benchmark's run length, all
    replicas (``vllm bench serve --num-prompts``, ``sglang.bench_serving --num-prompts``): the
    first ``concurrency`` prompts arrive at once and queue, the rest arrive as earlier ones
    end, so the mean TTFT moves from the first wave's towards the later ones' as the run
    grows. None: the convention the engines were calibrated under (engines.toml
    ``[fit.benchmark]``)."""

    isl: int = 1024
    osl: int = 1024
    concurrency: int = 1
    rate: float | None = None  # requests per second (Poisson arrivals), all replicas
    num_prompts: int | None = None  # requests over the closed-loop run, all replicas

    def validate(self, model: ModelSpec | None = None) -> Workload:
        for name, lo in (("isl", 1), ("osl", 2), ("concurrency", 1)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                why = " (TPOT is defined over the output tokens after the first)" \
                    if name == "osl" else ""
                raise InputError(f"--{name} {v!r}: must be a whole number >= {lo}{why}")
        if self.rate is not None and (isinstance(self.rate, bool) or
                                      not isinstance(self.rate, int | float) or
                                      not math.isfinite(self.rate) or self.rate <= 0):
            raise InputError(f"--rate {self.rate!r}: must be a number of requests per second "
                             "> 0")
        if self.num_prompts is not None:
            v = self.num_prompts
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise InputError(f"--num-prompts {v!r}: must be a whole number >= 1")
            if self.rate is not None:
                raise InputError("--num-prompts with --rate: a run length applies to the "
                                 "closed loop (--concurrency); an open loop's requests each "
                                 "arrive alone, however many there are")
            if v < self.concurrency:
                raise InputError(f"--num-prompts {v} is below --concurrency "
                                 f"{self.concurrency}: such a run never has that many "
                                 "requests in flight; lower --concurrency or raise "
                                 "--num-prompts")
        if model is not None and self.isl + self.osl > model.max_position:
            raise InputError(f"--isl {self.isl} + --osl {self.osl} exceeds the "
                             f"{model.max_position}-token context of {model.name}; shorten "
                             "them")
        return self


@dataclass(frozen=True)
class Prediction:
    """A serving prediction (times in seconds, memory in bytes, per GPU where it says)."""

    model: ModelSpec
    hw: HardwareSpec
    layout: Layout
    workload: Workload
    engine: EngineParams
    ceiling: str
    weight_dtype: str
    act_dtype: str
    kv_dtype: str
    ttft_s: float
    tpot_s: float
    e2e_s: float
    tokens_per_s_per_gpu: float
    tokens_per_s_per_user: float
    memory_per_gpu_bytes: float
    fits: bool
    ttft_burst_s: float
    queue_s: float
    decode_step_s: float
    prefill_s: float
    running: int  # sequences decoding together per replica
    max_concurrency: int  # most requests in flight whose KV cache fits (all replicas)
    weights_per_gpu_bytes: float
    kv_bytes_per_seq: float
    uncertainty: dict[str, Any] = field(default_factory=dict)
    decode_ops: tuple[dict[str, Any], ...] = ()
    prefill_ops: tuple[dict[str, Any], ...] = ()
    ttft_steady_s: float = 0.0
    calibration: dict[str, Any] | None = None  # the measured calibration applied, if any
    benchmark: dict[str, Any] = field(default_factory=dict)  # the TTFT model's convention
    moe_comm: str = "all_to_all"  # dispatch/combine under attention DP
    in_flight: float = 0.0  # mean requests in flight, all replicas (--rate: what it sustains)

    def to_json(self) -> dict[str, Any]:
        return to_json(self)


_CACHE: dict[tuple, tuple[ModelSpec, HardwareSpec, StepModel]] = {}


def step_model(model: ModelSpec, hw: HardwareSpec, scenario: Scenario,
               usable_bytes: float | None = None) -> StepModel:
    """``fit_step_model``, memoised per (model, device, configuration) in this process."""
    key = (id(model), id(hw), scenario)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is model and hit[1] is hw:
        if usable_bytes is not None and hit[2].weights_bytes >= usable_bytes:
            raise WeightsDoNotFit(hit[2].weights_bytes, usable_bytes)
        return hit[2]
    sm = fit_step_model(model, hw, scenario, usable_bytes)
    if len(_CACHE) > 512:
        _CACHE.clear()
    _CACHE[key] = (model, hw, sm)
    return sm


# how tokens reach their experts under attention DP when the layout does not say: vLLM's
# default all2all backend gathers every token and reduce-scatters (--all2all-backend
# allgather_reducescatter); TensorRT-LLM and SGLang (DeepEP) dispatch all-to-all
ENGINE_MOE_COMM = {"vllm": "allgather_reducescatter"}


def scenario_for(layout: Layout, *, weight_dtype: str | None = None,
                 act_dtype: str | None = None, kv_dtype: str | None = None,
                 group_size: int | None = None, ceiling: str = "empirical",
                 engine: str | None = None) -> Scenario:
    moe_comm = layout.moe_comm or ENGINE_MOE_COMM.get(engine or "", "all_to_all")
    return layout_scenario(Scenario(), tp=layout.tp, pp=layout.pp, ep=layout.ep,
                           attn_dp=layout.attn_dp, moe_comm=moe_comm,
                           weight_dtype=weight_dtype, act_dtype=act_dtype, kv_dtype=kv_dtype,
                           group_size=group_size, ceiling=ceiling).validate()


def predict(model: ModelSpec, hw: HardwareSpec, layout: Layout, workload: Workload, *,
            engine: str | None = None, weight_dtype: str | None = None,
            act_dtype: str | None = None, kv_dtype: str | None = None,
            group_size: int | None = None, ceiling: str = "empirical",
            table: EngineTable | None = None, calibration: Calibration | None = None,
            calibration_file: str | None = None) -> Prediction:
    """Predict serving ``workload`` on ``layout``: TTFT and TPOT as a serving benchmark
    measures them (means over all requests; TTFT with the queueing of prompts that arrive
    together), throughput, memory. Empirical ceilings by default; ``ceiling="spec"`` gives the
    datasheet roofline (an optimistic bound). ``calibration``: a measured
    ``perfscope.calibration/1`` prices every step instead of the engine's fitted kernel
    efficiencies and fixed costs (``perfscope.serving.calibrated``)."""
    layout.validate()
    workload.validate(model)
    if ceiling not in ("spec", "empirical"):
        raise InputError(f"--ceiling {ceiling!r}: use spec or empirical")
    tab = table or load_engines()
    eng = get_engine(engine, tab)
    sc = scenario_for(layout, weight_dtype=weight_dtype, act_dtype=act_dtype,
                      kv_dtype=kv_dtype, group_size=group_size, ceiling=ceiling,
                      engine=eng.name)
    sm = step_model(model, hw, sc)
    eff = efficiency(eng, ceiling)
    cal_info = None
    if calibration is not None:
        from perfscope.serving.calibrated import calibrate

        sm, notes = calibrate(sm, calibration)
        eff = IDEAL  # the calibration measured the kernels against these very ceilings
        eng = replace(eng, step_overhead_s=0.0)  # its framework term is the host's time
        cal_info = {"applied": True, "file": calibration_file,
                    "hardware": calibration.hardware, "ceiling": calibration.ceiling,
                    "dtype": calibration.dtype, "created": calibration.created,
                    "fit_error": dict(calibration.fit_error), "notes": notes,
                    "replaces": "the engine's kernel efficiencies, fixed kernel, collective "
                                "and step costs (its scheduler and per-request overhead "
                                "stay)"}
    if workload.rate is None:
        c_rep: float = math.ceil(workload.concurrency / layout.dp)
        bench, source = tab.benchmark, "calibration"
        if workload.num_prompts is not None:  # each replica serves its share of the run
            bench = Benchmark("closed_loop", None, workload.num_prompts / layout.dp)
            source = "num_prompts"
        s = serve(sm, eng, c_rep, workload.isl, workload.osl, bench=bench, eff=eff)
        arrivals = {"kind": bench.kind,
                    "requests_per_client": bench.requests_per_client,
                    "total_requests": bench.total_requests,
                    "num_prompts": workload.num_prompts,
                    "source": source,
                    "description": _run_text(bench, workload, layout)}
    else:
        try:
            s = serve_rate(sm, eng, workload.rate / layout.dp, workload.isl, workload.osl,
                           eff=eff)
        except Overloaded as e:
            raise InputError(f"--rate {workload.rate:g}: more requests per second than this "
                             f"configuration serves (at most {e.max_rate * layout.dp:.3g} "
                             f"over {layout.dp} replica(s): {e.why}); lower the rate, or add "
                             "replicas (--dp) or GPUs") from None
        arrivals = {"kind": "open", "requests_per_client": None, "total_requests": None,
                    "num_prompts": None, "source": "rate", "rate_per_s": workload.rate,
                    "description": f"open loop: {workload.rate:g} requests/s arriving at "
                                   "random (Poisson), each alone"}
    v = {k: float(np.asarray(getattr(s, k))) for k in Served._fields}
    tok_s_replica = v["output_tokens_per_s"]
    return Prediction(
        model, hw, layout, workload, eng, ceiling, sm.weight_dtype, sm.act_dtype, sm.kv_dtype,
        ttft_s=v["ttft_s"], tpot_s=v["tpot_s"], e2e_s=v["e2e_s"],
        tokens_per_s_per_gpu=tok_s_replica / layout.gpus_per_replica,
        tokens_per_s_per_user=1.0 / v["tpot_s"],
        memory_per_gpu_bytes=v["memory_per_gpu_bytes"], fits=bool(v["fits"]),
        ttft_burst_s=v["ttft_burst_s"], queue_s=v["queue_s"],
        decode_step_s=v["decode_step_s"], prefill_s=v["prefill_s"], running=int(v["running"]),
        max_concurrency=int(v["max_running"]) * layout.dp,
        weights_per_gpu_bytes=sm.weights_bytes, kv_bytes_per_seq=v["kv_bytes_per_seq"],
        uncertainty=uncertainty(eng, tab, model, hw, ceiling, v, cal_info,
                                sm.weight_base if sm.streams_all_experts(
                                    eng.moe_streams_all_experts) else None),
        decode_ops=op_table(sm, "decode", int(v["running"]),
                            workload.isl + workload.osl / 2 - 1, eff),
        prefill_ops=op_table(sm, "fill", 1, workload.isl, eff),
        ttft_steady_s=v["ttft_steady_s"], calibration=cal_info, moe_comm=sc.moe_comm,
        benchmark=arrivals, in_flight=v["concurrency"] * layout.dp)


def _run_text(bench: Benchmark, workload: Workload, layout: Layout) -> str:
    """The closed loop's run in the user's terms."""
    if workload.num_prompts is None:
        return bench.describe()
    per = f" ({workload.num_prompts / layout.dp:.3g} per replica)" if layout.dp > 1 else ""
    return (f"closed loop, {workload.num_prompts} prompts in the run{per}, "
            f"{workload.num_prompts / workload.concurrency:.3g} per client (first wave at "
            "once)")


def uncertainty(eng: EngineParams, tab: EngineTable, model: ModelSpec, hw: HardwareSpec,
                ceiling: str, v: dict[str, float],
                cal: dict[str, Any] | None = None,
                streamed: str | None = None) -> dict[str, Any]:
    """How far to trust the numbers: the calibration's error for this engine (held-out
    cross-validation where there is one), as a band, and what extrapolates."""
    err = dict(eng.error)
    tp = err.get("cv_tpot_mape", err.get("tpot_mape"))
    tt = err.get("cv_ttft_mape", err.get("ttft_mape"))
    notes = []
    if cal is not None:
        notes.append("step times from the measured calibration "
                     f"{cal['file'] or ''} ({cal['hardware']}); the engine calibration's "
                     "error band assumes its own fit")
    if ceiling == "spec":
        notes.append("spec ceilings: the datasheet roofline is a bound, not a prediction; the "
                     "calibration error does not apply")
    if model.name.lower() not in CALIBRATED_MODELS:
        notes.append(f"{model.name} was not among the calibration models")
    if hw.name not in CALIBRATED_HW:
        notes.append(f"{hw.display_name} was not among the calibration devices")
    if not v["fits"]:
        notes.append("does not fit: times assume one sequence and ignore memory")
    if streamed is not None:  # the weight dtype whose experts the engine streams whole
        notes.append(f"{eng.display_name}: {streamed} MoE decode streams every expert of "
                     "the GPU each step (observed in the calibration rows), whatever the "
                     "tokens route to")
    out: dict[str, Any] = {
        "basis": "mean absolute percentage error of this engine's calibration "
                 "(leave-one-model-out where available) on measured serving benchmarks",
        "engine": eng.name, "fit_date": tab.fit_date, "source": tab.source,
        "tpot_mape": tp, "ttft_mape": tt,
        "fit_tpot_mape": err.get("tpot_mape"), "fit_ttft_mape": err.get("ttft_mape"),
        "calibration_rows": int(err.get("rows", 0)), "notes": notes}
    if tp is not None and tt is not None:
        # a factor of (1 + error) either way: never below zero, even where the held-out
        # error exceeds 100% (TensorRT-LLM's TTFT leaving one model out)
        out["tpot_s_range"] = [v["tpot_s"] / (1 + tp), v["tpot_s"] * (1 + tp)]
        out["ttft_s_range"] = [v["ttft_s"] / (1 + tt), v["ttft_s"] * (1 + tt)]
    return out


def op_table(sm: StepModel, phase: str, seqs: float, context: float,
             eff: Efficiency, kv_bits: int | None = None) -> tuple[dict[str, Any], ...]:
    """Every op of one step (a decode step of ``seqs`` sequences at ``context``, or a prefill
    of ``context`` tokens) with its time, bound and roofline position."""
    pm = sm.decode if phase == "decode" else sm.fill
    phi = sm.decode_features(seqs, context) if phase == "decode" else \
        sm.fill_features(seqs, context, 0)
    t = sm.op_times(pm, phi, eff, kv_bits)
    flops = phi @ pm.flops.T
    kv_scale = (kv_bits or sm.kv_bits_fit) / sm.kv_bits_fit
    nbytes = phi @ (pm.hbm + kv_scale * pm.kv).T
    peak, bw = roofs(pm, eff)
    rows = []
    for i, name in enumerate(pm.names):
        link = bool(pm.link[i])
        bound = "comm" if link else ("compute" if flops[i] / peak[i] >= nbytes[i] / bw[i]
                                     else "memory")
        rows.append({"name": name, "kind": pm.kinds[i], "count": int(pm.instances[i]),
                     "time_s": float(t[i] * pm.instances[i]), "bound": bound,
                     "flops": float(flops[i]), "bytes": float(nbytes[i]),
                     "intensity": float(flops[i] / nbytes[i]) if nbytes[i] and not link
                     else 0.0,
                     "ridge": float(peak[i] / bw[i]) if not link else 0.0})
    return tuple(rows)


def to_json(p: Prediction) -> dict[str, Any]:
    lay, w = p.layout, p.workload
    return {
        "schema": SCHEMA,
        "model": {"name": p.model.name, "params": p.model.params,
                  "active_params": p.model.active_params},
        "hardware": {"name": p.hw.name, "display_name": p.hw.display_name,
                     "gpus": lay.gpus,
                     "gpu_link": p.hw.gpu_link.name if p.hw.gpu_link else None},
        "config": {"tp": lay.tp, "pp": lay.pp, "ep": lay.ep, "dp": lay.dp,
                   "attn_dp": lay.attn_dp, "moe_comm": p.moe_comm, "gpus": lay.gpus,
                   "gpus_per_replica": lay.gpus_per_replica, "isl": w.isl, "osl": w.osl,
                   "concurrency": w.concurrency if w.rate is None else None,
                   "request_rate_per_s": w.rate, "num_prompts": w.num_prompts,
                   "in_flight": p.in_flight,
                   "weight_dtype": p.weight_dtype,
                   "act_dtype": p.act_dtype, "kv_dtype": p.kv_dtype, "engine": p.engine.name},
        "ttft_s": p.ttft_s, "tpot_s": p.tpot_s, "e2e_s": p.e2e_s,
        "tokens_per_s_per_gpu": p.tokens_per_s_per_gpu,
        "tokens_per_s_per_user": p.tokens_per_s_per_user,
        "memory_per_gpu_bytes": p.memory_per_gpu_bytes, "fits": p.fits,
        "ceiling": p.ceiling, "uncertainty": p.uncertainty,
        # beyond the contract
        "ttft_burst_s": p.ttft_burst_s, "ttft_steady_s": p.ttft_steady_s,
        "queue_s": p.queue_s, "benchmark": p.benchmark,
        "calibration": p.calibration,
        "decode_step_s": p.decode_step_s, "prefill_s": p.prefill_s,
        "running_per_replica": p.running, "max_concurrency": p.max_concurrency,
        "weights_per_gpu_bytes": p.weights_per_gpu_bytes,
        "kv_bytes_per_seq": p.kv_bytes_per_seq,
        "engine": {"name": p.engine.name, "display_name": p.engine.display_name,
                   "max_num_tokens": p.engine.max_num_tokens,
                   "chunked_prefill": p.engine.chunked_prefill,
                   "mixed_batches": p.engine.mixed_batches,
                   "kv_block_tokens": p.engine.kv_block_tokens},
        "decode_ops": list(p.decode_ops), "prefill_ops": list(p.prefill_ops),
    }
