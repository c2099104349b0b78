"""Records of the recommender: what was asked, each candidate row, explanations, the result."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from perfscope.specs.hardware import HardwareSpec
from perfscope.specs.model import ModelSpec


@dataclass(frozen=True)
class Recommendation:
    """One explained piece of advice, as data: ``rule`` (stable id), ``message`` (one or two
    sentences for people), ``evidence`` (the numbers behind it, SI units in the key names),
    ``expected_gain`` (ratio of the metric ``gain_metric`` names, 1.0 = none; None where the
    advice is a constraint rather than a gain)."""

    rule: str
    message: str
    evidence: dict[str, float]
    expected_gain: float | None = None
    gain_metric: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "message": self.message, "evidence": dict(self.evidence),
                "expected_gain": self.expected_gain, "gain_metric": self.gain_metric}


@dataclass(frozen=True)
class Scheme:
    """A quantization scheme: how weights are stored and which tensor math runs."""

    name: str  # bf16 | fp8 | int8 | int8-wo | int4 | fp4
    weight_dtype: str
    act_dtype: str | None  # None: the scenario's default for the weight dtype
    label: str  # W8A8-fp8, W4A16, ...

    def scenario_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"weight_dtype": self.weight_dtype}
        if self.act_dtype:
            kw["act_dtype"] = self.act_dtype
        return kw


@dataclass(frozen=True)
class RecommendRequest:
    """What the user asks. Times in seconds; None leaves a target open."""

    model: ModelSpec
    hw: HardwareSpec
    gpus: int
    isl: int
    osl: int
    ttft_s: float | None = None
    tpot_s: float | None = None
    weight_dtypes: tuple[str, ...] | None = None  # None: every scheme the device runs
    kv_dtypes: tuple[str, ...] | None = None
    max_gpus: int | None = None  # GPUs one replica may span (default: all)
    engine: str | None = None
    ceiling: str = "empirical"
    max_concurrency: int = 1024  # per replica
    calibration: Any = None  # a perfscope.calibration/1 Calibration pricing every step
    calibration_file: str | None = None


@dataclass(frozen=True)
class Candidate:
    """One evaluated configuration (a row of the ranked table)."""

    tp: int
    pp: int
    ep: int
    attn_dp: int
    dp: int  # replicas on the GPUs given
    scheme: str
    weight_dtype: str
    act_dtype: str
    kv_dtype: str
    concurrency: int  # per replica
    ttft_s: float
    tpot_s: float
    e2e_s: float
    tokens_per_s_per_gpu: float
    tokens_per_s_per_user: float
    memory_per_gpu_bytes: float
    max_concurrency: int  # per replica: sequences whose KV cache fits
    meets_targets: bool

    @property
    def gpus_per_replica(self) -> int:
        return self.tp * self.pp * self.attn_dp

    @property
    def layout(self) -> str:
        s = f"TP{self.tp}"
        if self.pp > 1:
            s += f" PP{self.pp}"
        if self.ep > 1:
            s += f" EP{self.ep}"
        if self.attn_dp > 1:
            s += f" ADP{self.attn_dp}"
        return s

    def to_json(self) -> dict[str, Any]:
        return {"tp": self.tp, "pp": self.pp, "ep": self.ep, "attn_dp": self.attn_dp,
                "dp": self.dp, "gpus_per_replica": self.gpus_per_replica,
                "layout": self.layout, "scheme": self.scheme,
                "weight_dtype": self.weight_dtype, "act_dtype": self.act_dtype,
                "kv_dtype": self.kv_dtype, "concurrency_per_replica": self.concurrency,
                "concurrency": self.concurrency * self.dp, "ttft_s": self.ttft_s,
                "tpot_s": self.tpot_s, "e2e_s": self.e2e_s,
                "tokens_per_s_per_gpu": self.tokens_per_s_per_gpu,
                "tokens_per_s_per_user": self.tokens_per_s_per_user,
                "memory_per_gpu_bytes": self.memory_per_gpu_bytes,
                "max_concurrency_per_replica": self.max_concurrency,
                "meets_targets": self.meets_targets}


@dataclass(frozen=True)
class RecommendResult:
    request: RecommendRequest
    engine: str
    status: str  # ok | no_fit | no_target
    message: str
    top: Candidate | None
    ranked: tuple[Candidate, ...]
    pareto: tuple[Candidate, ...]
    # every feasible (fitting) candidate's (tokens/s/user, tokens/s/GPU), for the chart
    cloud: tuple[tuple[float, float], ...]
    recommendations: tuple[Recommendation, ...]
    answers: dict[str, Any]
    quantization: tuple[dict[str, Any], ...]
    searched: dict[str, Any]
    uncertainty: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        from perfscope.recommend.report import to_json

        return to_json(self)
