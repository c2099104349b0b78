"""Paired comparison of two callables in this process (the pytest fixture's engine).

Both run in one process, interleaved in a random order with the same calibrated number of
calls per sample, so process-level effects cannot favour either: the right tool for "is my
kernel at least as fast as the reference?" inside a test suite.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

from perfscope.regress.paired import LocalSide, Settings, compare


class PairedResult(NamedTuple):
    """Verdict on candidate vs baseline; ``ratio`` is candidate / baseline time."""

    verdict: str
    ratio: float
    ci_low: float
    ci_high: float
    rounds: int
    baseline_median_s: float
    candidate_median_s: float
    reason: str
    threshold: float

    @property
    def summary(self) -> str:
        return (f"{self.verdict}: candidate/baseline {self.ratio:.3f} "
                f"(CI {self.ci_low:.3f}..{self.ci_high:.3f}, {self.rounds} rounds, "
                f"+-{self.threshold:.0%} band; baseline {self.baseline_median_s:.3g} s, "
                f"candidate {self.candidate_median_s:.3g} s per call): {self.reason}")


def compare_callables(baseline: Callable[[], Any], candidate: Callable[[], Any], *,
                      threshold: float = 0.05, confidence: float = 0.95,
                      max_time_s: float = 5.0, min_rounds: int = 20, max_rounds: int = 2000,
                      sample_s: float = 0.003, seed: int = 0,
                      clock: str = "wall") -> PairedResult:
    """Time ``baseline`` and ``candidate`` (zero-argument callables) paired and interleaved
    for at most ``max_time_s`` seconds; stop early once the verdict settles."""
    s = dataclasses.replace(Settings(), threshold=threshold, confidence=confidence,
                            max_time_s=max_time_s, min_rounds=min_rounds,
                            max_rounds=max_rounds, sample_s=sample_s, seed=seed,
                            check_every=5, clock=clock)
    c = compare(LocalSide({"fn": baseline}, clock), LocalSide({"fn": candidate}, clock),
                ["fn"], s)
    row = c.benchmarks[0].to_json(s)
    return PairedResult(row["verdict"], row["ratio"], row["ci_low"], row["ci_high"],
                        row["rounds"], row["baseline_median_s"], row["candidate_median_s"],
                        row["reason"], threshold)
