"""Serving-engine behaviour: documented scheduler defaults plus a few calibrated parameters.

Each engine is a record in ``perfscope/serving/engines.toml`` (versioned: fit date, data
source, the fit's error). Two kinds of field:

Documented defaults (from each engine's own configuration, not fitted):
- ``max_num_tokens``: token budget of one step (vLLM ``max_num_batched_tokens``, SGLang
  ``chunked_prefill_size``, TensorRT-LLM ``max_num_tokens``);
- ``chunked_prefill``: a prompt longer than the budget is split over steps;
- ``mixed_batches``: prefill chunks ride in the same step as the running decodes (vLLM V1,
  TensorRT-LLM in-flight batching); SGLang runs prefill steps on their own by default;
- ``max_num_seqs``: the most sequences in flight;
- ``kv_block_tokens``: KV-cache page size (vLLM 16, TensorRT-LLM 32, SGLang 1 token);
- ``memory_fraction`` and ``memory_policy``: ``total``: weights + activations + KV take that
  fraction of device memory (vLLM ``gpu_memory_utilization``, SGLang ``mem_fraction_static``);
  ``free``: the KV cache takes that fraction of what weights and activations leave
  (TensorRT-LLM ``free_gpu_memory_fraction``);
- ``kv_admission``: ``full``: a request is admitted only with KV pages for its whole length
  (TensorRT-LLM's guaranteed-no-evict scheduler); ``current``: pages are taken as tokens come
  (vLLM, SGLang), so a running sequence holds ``isl + osl / 2`` tokens on average;
- ``batch_wait_iters``, ``batch_wait_tokens_ratio``: TensorRT-LLM's ``batch_wait_timeout_iters``
  and ``batch_wait_max_tokens_ratio`` (PyTorch executor; default 0, off): while sequences are
  decoding, a waiting prompt is held back until that many iterations have passed or the step's
  tokens reach that fraction of ``max_num_tokens``, so prompts prefill together
  (perfscope/serving/simulate.py prices the wait). Off in every engine's defaults; the
  calibration sets it where the benchmark's server configuration did.
- ``moe_streams_all_experts``: the weight dtypes for which the engine's MoE kernels read the
  weights of every expert on the GPU each step, not only of the experts the step's tokens
  route to. Observed, not documented: vLLM 0.12's Qwen3-235B-A22B-FP8 rows of the calibration
  (fp8 block-scaled experts) keep their TPOT flat while the concurrency, and with it the
  experts touched, triples (51-59 ms on 2 GPUs from 4 to 20 requests, 34-38 ms on 4 GPUs from
  14 to 48), where SGLang's rows of the same model on the same GPUs are 15-29 ms; streaming
  every expert makes the three engines' fitted MoE bandwidths agree
  (benchmarks/calibrate_serving.py). Only fp8 is listed: no row shows it for other formats.

Calibrated (``benchmarks/calibrate_serving.py``; physically meaningful, each bounded). The
kernel parameters are shared by all engines (the neutral fit: held out, sharing generalised
better than fitting them per engine); each engine fits its own host overheads and the
bandwidth its MoE kernels reach (``moe_bandwidth_efficiency``: the engines' grouped expert
GEMMs differ, and fitting it per engine lowered the engines' held-out TPOT error):
- ``flops_efficiency``, ``bandwidth_efficiency``: achieved fraction of the ceilings' compute
  and HBM roofs by the kernels; ``moe_flops_efficiency`` and ``moe_bandwidth_efficiency`` on
  top of them for the grouped expert GEMMs of fine-grained MoE models (experts narrower than
  the hidden size, as the calibration's DeepSeek-V3 and Qwen3-235B; coarse experts such as
  Mixtral's run at the dense efficiencies: ``fitting.fine_grained_experts``);
- ``kernel_overhead_s``: fixed cost per kernel inside the engine's CUDA graph;
- ``collective_latency_s``: fixed cost of the engine's own in-node all-reduce kernel (vLLM's
  and SGLang's custom all-reduce, TensorRT-LLM's one-/two-shot kernels): an all-reduce inside a
  scale-up domain takes the lesser of NCCL's time (perfscope.collectives) and this latency
  plus the ring's bytes at the group's bus rate;
- ``step_overhead_s`` (per engine): host time per scheduler step not hidden behind the GPU;
- ``ttft_overhead_s`` (per engine): per request, before the first token reaches the client
  (HTTP, tokenization, detokenization).

The table also records how the calibration's benchmark issued requests (``Benchmark``: the
closed loop or the empirical cluster law, see perfscope/serving/simulate.py) and why that one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

from perfscope.errors import InputError, SpecError
from perfscope.specs._toml import Fields, read_toml

ENGINES_SCHEMA = "perfscope.engines/1"
DEFAULT_ENGINE = "neutral"
FITTED = ("flops_efficiency", "bandwidth_efficiency", "moe_flops_efficiency",
          "moe_bandwidth_efficiency",
          "kernel_overhead_s", "collective_latency_s", "step_overhead_s", "ttft_overhead_s")
# physical bounds of the fitted parameters (the calibration stays inside them)
BOUNDS: Mapping[str, tuple[float, float]] = MappingProxyType({
    "flops_efficiency": (0.4, 1.0), "bandwidth_efficiency": (0.5, 1.0),
    "moe_flops_efficiency": (0.05, 1.0),
    "moe_bandwidth_efficiency": (0.15, 1.0), "kernel_overhead_s": (0.0, 20e-6),
    "collective_latency_s": (2e-6, 60e-6), "step_overhead_s": (0.0, 10e-3),
    "ttft_overhead_s": (0.0, 0.3)})


@dataclass(frozen=True)
class EngineParams:
    name: str
    display_name: str
    notes: str
    max_num_tokens: int
    chunked_prefill: bool
    mixed_batches: bool
    max_num_seqs: int
    kv_block_tokens: int
    memory_fraction: float
    memory_policy: str  # total | free
    kv_admission: str  # full | current
    batch_wait_iters: int = 0  # TensorRT-LLM batch_wait_timeout_iters (0: off)
    batch_wait_tokens_ratio: float = 0.0  # TensorRT-LLM batch_wait_max_tokens_ratio
    # weight dtypes whose MoE kernels read every local expert each step (see above)
    moe_streams_all_experts: tuple[str, ...] = ()
    flops_efficiency: float = 1.0
    bandwidth_efficiency: float = 1.0
    moe_flops_efficiency: float = 1.0
    moe_bandwidth_efficiency: float = 1.0
    kernel_overhead_s: float | None = None
    collective_latency_s: float | None = None
    step_overhead_s: float = 0.0
    ttft_overhead_s: float = 0.0
    error: Mapping[str, float] = field(default_factory=dict)  # the calibration's error

    def with_fitted(self, values: Mapping[str, float]) -> EngineParams:
        kw: dict[str, Any] = {k: float(v) for k, v in values.items()}
        return replace(self, **kw)


BENCHMARK_KINDS = ("closed_loop", "cluster")


@dataclass(frozen=True)
class Benchmark:
    """How the serving benchmark issues requests (perfscope.serving.simulate derives TTFT
    from it). ``closed_loop``: ``c`` clients, each sending its next request when the previous
    one ends, ``requests_per_client`` requests each (or, with ``total_requests``, that many
    over the run: ``max(1, total / c)`` each); the first wave arrives at once. ``cluster``: the
    empirical law the closed loop replaced, prompts arriving in clusters of
    ``cluster_scale x c ^ cluster_exponent``."""

    kind: str = "closed_loop"
    requests_per_client: float | None = 1.0
    total_requests: float | None = None
    cluster_scale: float = 1.0
    cluster_exponent: float = 1.0

    def runs(self, concurrency: Any) -> Any:
        """Requests per client over the run (closed loop), broadcast over ``concurrency``."""
        import numpy as np

        c = np.asarray(concurrency, dtype=float)
        if self.total_requests is not None:
            return np.maximum(1.0, self.total_requests / c)
        return np.full_like(c, float(self.requests_per_client or 1.0))

    def describe(self) -> str:
        if self.kind == "cluster":
            return (f"prompts arrive in clusters of {self.cluster_scale:.3g} x "
                    f"c^{self.cluster_exponent:.3g}")
        if self.total_requests is not None:
            return (f"closed loop, {self.total_requests:.0f} requests per run "
                    "(first wave at once)")
        return (f"closed loop, {self.requests_per_client:.3g} requests per client (first "
                "wave at once)")


@dataclass(frozen=True)
class EngineTable:
    """engines.toml: the engines, the benchmark convention they were fitted under, the fit."""

    engines: Mapping[str, EngineParams]
    benchmark: Benchmark  # how the calibration's benchmark issued requests
    fit_date: str
    source: str
    method: str
    file: str
    rows: int = 0
    choice: str = ""  # why this benchmark model (held-out errors of the alternatives)
    comparison: Mapping[str, float] = field(default_factory=dict)


def engines_file() -> Path:
    return Path(__file__).with_name("engines.toml")


@lru_cache(maxsize=4)
def load_engines(path: str | None = None) -> EngineTable:
    """Read and validate engines.toml (unknown keys are errors)."""
    p = Path(path) if path else engines_file()
    f = Fields(read_toml(p), str(p))
    schema = f.get("schema", str)
    if schema != ENGINES_SCHEMA:
        raise SpecError(str(p), "schema", f"is {schema!r}", f"set schema = {ENGINES_SCHEMA!r}")
    fit = f.table("fit", required=True)
    assert fit is not None
    date, source, method = fit.get("date", str), fit.get("source", str), fit.get("method", str)
    rows = fit.get("rows", int, 0)
    choice = fit.get("choice", str, "")
    bt = fit.table("benchmark", required=True)
    assert bt is not None
    kind = bt.get("kind", str)
    if kind not in BENCHMARK_KINDS:
        raise SpecError(str(p), "fit.benchmark.kind", f"unknown {kind!r}",
                        f"use one of {', '.join(BENCHMARK_KINDS)}")
    bench = Benchmark(kind, bt.num("requests_per_client", None),
                      bt.num("total_requests", None), bt.num("cluster_scale", 1.0),
                      bt.num("cluster_exponent", 1.0))
    bt.done()
    if kind == "closed_loop" and (bench.requests_per_client is None) == \
            (bench.total_requests is None):
        raise SpecError(str(p), "fit.benchmark", "a closed loop needs requests_per_client or "
                        "total_requests (one of them)", None)
    if bench.requests_per_client is not None and bench.requests_per_client < 1:
        raise SpecError(str(p), "fit.benchmark.requests_per_client",
                        f"{bench.requests_per_client} is below one request", None)
    if not 0 < bench.cluster_exponent <= 1:
        raise SpecError(str(p), "fit.benchmark.cluster_exponent",
                        f"{bench.cluster_exponent} is outside (0, 1]", None)
    comparison: dict[str, float] = {}
    ct = fit.table("comparison")
    if ct is not None:
        comparison = {k: float(ct.num(k, positive=False)) for k in ct.keys()}  # noqa: SIM118
        ct.done()
    fit.done()
    et = f.table("engines", required=True)
    assert et is not None
    engines: dict[str, EngineParams] = {}
    for name in et.keys():  # noqa: SIM118 (Fields, not a dict)
        e = et.table(name)
        assert e is not None
        policy = e.get("memory_policy", str)
        if policy not in ("total", "free"):
            raise SpecError(str(p), f"engines.{name}.memory_policy", f"unknown {policy!r}",
                            "use total or free")
        admission = e.get("kv_admission", str)
        if admission not in ("full", "current"):
            raise SpecError(str(p), f"engines.{name}.kv_admission", f"unknown {admission!r}",
                            "use full or current")
        kw: dict[str, Any] = dict(
            name=name, display_name=e.get("display_name", str), notes=e.get("notes", str, ""),
            max_num_tokens=int(e.num("max_num_tokens")),
            chunked_prefill=e.get("chunked_prefill", bool),
            mixed_batches=e.get("mixed_batches", bool),
            max_num_seqs=int(e.num("max_num_seqs")),
            kv_block_tokens=int(e.num("kv_block_tokens")),
            memory_fraction=e.num("memory_fraction"), memory_policy=policy,
            kv_admission=admission,
            batch_wait_iters=int(e.num("batch_wait_iters", 0, positive=False)),
            batch_wait_tokens_ratio=e.num("batch_wait_tokens_ratio", 0.0, positive=False),
            moe_streams_all_experts=_dtypes(e, name, "moe_streams_all_experts", str(p)))
        if kw["batch_wait_iters"] < 0:
            raise SpecError(str(p), f"engines.{name}.batch_wait_iters",
                            f"{kw['batch_wait_iters']} is negative", "use 0 (off) or more")
        if not 0 <= kw["batch_wait_tokens_ratio"] <= 1:
            raise SpecError(str(p), f"engines.{name}.batch_wait_tokens_ratio",
                            f"{kw['batch_wait_tokens_ratio']} is outside [0, 1]", None)
        ft = e.table("fitted", required=True)
        assert ft is not None
        for k in FITTED:
            v = ft.num(k, None, positive=False)
            if v is not None:
                lo, hi = BOUNDS[k]
                if not lo <= v <= hi:
                    raise SpecError(str(p), f"engines.{name}.fitted.{k}",
                                    f"{v} is outside its physical range [{lo}, {hi}]", None)
                kw[k] = v
        ft.done()
        err = e.table("error")
        if err is not None:
            kw["error"] = MappingProxyType({k: float(err.num(k, positive=False))
                                            for k in err.keys()})  # noqa: SIM118
            err.done()
        e.done()
        engines[name] = EngineParams(**kw)
    et.done()
    f.done()
    if DEFAULT_ENGINE not in engines:
        raise SpecError(str(p), f"engines.{DEFAULT_ENGINE}", "missing",
                        "the neutral default engine must be defined")
    return EngineTable(MappingProxyType(engines), bench, date, source, method, str(p), rows,
                       choice, MappingProxyType(comparison))


def _dtypes(e: Fields, engine: str, key: str, file: str) -> tuple[str, ...]:
    """A list of weight dtype names (``["fp8"]``), checked."""
    from perfscope.units import WEIGHT_DTYPES

    names = e.get(key, list, [])
    for d in names:
        if d not in WEIGHT_DTYPES:
            raise SpecError(file, f"engines.{engine}.{key}", f"unknown weight dtype {d!r}",
                            f"use some of {', '.join(WEIGHT_DTYPES)}")
    return tuple(names)


def get_engine(name: str | None, table: EngineTable | None = None) -> EngineParams:
    t = table or load_engines()
    key = (name or DEFAULT_ENGINE).lower().replace("-", "").replace("_", "")
    aliases = {"tensorrtllm": "trtllm", "trt": "trtllm", "default": DEFAULT_ENGINE,
               "generic": DEFAULT_ENGINE}
    key = aliases.get(key, key)
    if key not in t.engines:
        raise InputError(f"--engine {name!r}: use one of {', '.join(t.engines)}")
    return t.engines[key]


def to_toml(table: EngineTable) -> str:
    """engines.toml text for ``table`` (the calibration script writes it)."""
    out = ["# Serving-engine parameters: documented scheduler defaults and the calibrated",
           "# parameters of perfscope/serving/engines.py. Written by",
           "# benchmarks/calibrate_serving.py; re-run it to re-fit (do not edit the fitted",
           "# values by hand).",
           f'schema = "{ENGINES_SCHEMA}"', "", "[fit]", f'date = "{table.fit_date}"',
           f"source = {_q(table.source)}", f"method = {_q(table.method)}",
           f"rows = {table.rows}"]
    if table.choice:
        out.append(f"choice = {_q(table.choice)}")
    b = table.benchmark
    out += ["", "[fit.benchmark]  # how the benchmark issued requests (serving/simulate.py)",
            f'kind = "{b.kind}"']
    if b.requests_per_client is not None:
        out.append(f"requests_per_client = {b.requests_per_client:.4g}")
    if b.total_requests is not None:
        out.append(f"total_requests = {b.total_requests:.4g}")
    if b.kind == "cluster":
        out += [f"cluster_scale = {b.cluster_scale:.4g}",
                f"cluster_exponent = {b.cluster_exponent:.4g}"]
    if table.comparison:
        out += ["", "[fit.comparison]  # mean absolute % error of each TTFT model, fit and "
                "held out"]
        out += [f"{k} = {v:.6g}" for k, v in table.comparison.items()]
    out.append("")
    for e in table.engines.values():
        out += [f"[engines.{e.name}]", f"display_name = {_q(e.display_name)}"]
        if e.notes:
            out.append(f"notes = {_q(e.notes)}")
        out += [f"max_num_tokens = {e.max_num_tokens}",
                f"chunked_prefill = {str(e.chunked_prefill).lower()}",
                f"mixed_batches = {str(e.mixed_batches).lower()}",
                f"max_num_seqs = {e.max_num_seqs}", f"kv_block_tokens = {e.kv_block_tokens}",
                f"memory_fraction = {e.memory_fraction}",
                f'memory_policy = "{e.memory_policy}"', f'kv_admission = "{e.kv_admission}"']
        if e.batch_wait_iters or e.batch_wait_tokens_ratio:
            out += [f"batch_wait_iters = {e.batch_wait_iters}",
                    f"batch_wait_tokens_ratio = {e.batch_wait_tokens_ratio}"]
        if e.moe_streams_all_experts:
            out.append("moe_streams_all_experts = [" +
                       ", ".join(f'"{d}"' for d in e.moe_streams_all_experts) + "]")
        out += ["", f"[engines.{e.name}.fitted]"]
        for k in FITTED:
            v = getattr(e, k)
            if v is not None:
                out.append(f"{k} = {v:.6g}")
        if e.error:
            out += ["", f"[engines.{e.name}.error]"]
            out += [f"{k} = {v:.6g}" for k, v in e.error.items()]
        out.append("")
    return "\n".join(out)


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
