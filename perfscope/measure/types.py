"""Result types of the measured side (no torch import here)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class TimingStats:
    """Distribution of repeated timings of one call, in seconds. Never a single sample."""

    median_s: float
    p20_s: float
    p80_s: float
    min_s: float
    n: int
    cv: float  # coefficient of variation (stdev / mean)
    threads: int | None = None  # CPU: torch intra-op threads in force while timing
    method: str = ""  # "perf_counter" | "cuda_events (why)" | "cuda_graph xN over M input sets"
    # GPU: NVML readings while the timed calls ran (clocks, power, temperature, throttling)
    telemetry: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "median_s": self.median_s, "p20_s": self.p20_s, "p80_s": self.p80_s,
            "min_s": self.min_s, "n": self.n, "cv": self.cv}
        if self.threads is not None:
            d["threads"] = self.threads
        if self.method:
            d["method"] = self.method
        if self.telemetry is not None:
            d["telemetry"] = dict(self.telemetry)
        return d


@dataclass(frozen=True, slots=True)
class MeasuredPoint:
    """One timed op or kernel, joined to the analytic Op of the same ``name``.

    ``flops`` and ``bytes`` are the analytic counts for the shape actually run, so achieved
    rates sit on the same roofline as the prediction.
    """

    name: str
    kind: str
    shape: Mapping[str, int]
    dtype: str
    stats: TimingStats
    flops: float
    bytes: float
    device: str
    predicted_time_s: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def achieved_flops_per_s(self) -> float:
        return self.flops / self.stats.median_s if self.stats.median_s > 0 else 0.0

    @property
    def achieved_bytes_per_s(self) -> float:
        return self.bytes / self.stats.median_s if self.stats.median_s > 0 else 0.0

    @property
    def intensity(self) -> float:
        return self.flops / self.bytes if self.bytes else float("inf")
