"""The paired-ratio statistics on synthetic samples with known answers (fast, no timing)."""

from __future__ import annotations

import math
import random

import pytest

from perfscope.regress.stats import (
    EXIT_CODES,
    bootstrap_median_ci,
    classify,
    decide,
    median,
    overall_verdict,
)


def test_median_odd_even() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, 3.0, 2.0]) == 2.5
    with pytest.raises(ValueError):
        median([])


def test_bootstrap_of_constant_data_is_a_point() -> None:
    assert bootstrap_median_ci([1.07] * 25) == (1.07, 1.07)


def test_bootstrap_matches_the_enumerated_distribution() -> None:
    # Resampling [1, 2, 3] three times with replacement: the median is 1 when at least two
    # draws are 1: 3 * (1/3)^2 * (2/3) + (1/3)^3 = 7/27 = 0.259; likewise 3 with 7/27; 2 with
    # 13/27. So the 0.25 quantile of the medians is 1 and the 0.75 quantile is 3
    # (P(median <= 2) = 20/27 = 0.741 < 0.75), while the 0.30 and 0.70 quantiles are both 2.
    assert bootstrap_median_ci([1.0, 2.0, 3.0], confidence=0.5, resamples=20000) == (1.0, 3.0)
    assert bootstrap_median_ci([1.0, 2.0, 3.0], confidence=0.4, resamples=20000) == (2.0, 2.0)


def test_bootstrap_is_deterministic_for_a_seed() -> None:
    rng = random.Random(5)
    xs = [rng.lognormvariate(0, 0.1) for _ in range(40)]
    assert bootstrap_median_ci(xs, seed=3) == bootstrap_median_ci(xs, seed=3)


def _coverage(make, true_median: float, sims: int, resamples: int, blocks: bool) -> float:
    rng = random.Random(11)
    hit = 0
    for i in range(sims):
        data = make(rng)
        flat = [x for b in data for x in b]
        lo, hi = bootstrap_median_ci(data if blocks else flat, resamples=resamples, seed=i)
        hit += lo <= true_median <= hi
    return hit / sims


def test_interval_covers_the_true_median_about_95_percent() -> None:
    # lognormal ratios with median exactly 1: the 95 % interval should contain 1 in ~95 % of
    # samples (percentile bootstrap of a median is a little liberal at small n; 60 is enough)
    def make(rng: random.Random) -> list[list[float]]:
        return [[rng.lognormvariate(0.0, 0.08) for _ in range(60)]]

    assert _coverage(make, 1.0, sims=80, resamples=300, blocks=False) >= 0.88


def test_block_bootstrap_accounts_for_shared_block_effects() -> None:
    # 6 blocks of 10 rounds; each block carries its own offset (a data layout that favours
    # one side for a while) much larger than the noise inside a block. The population
    # median is 1. Treating the 60 rounds as independent overstates the precision; the
    # two-stage resampling keeps the coverage.
    def make(rng: random.Random) -> list[list[float]]:
        out = []
        for _ in range(6):
            off = rng.gauss(0.0, 0.04)
            out.append([math.exp(off + rng.gauss(0.0, 0.004)) for _ in range(10)])
        return out

    flat = _coverage(make, 1.0, sims=60, resamples=200, blocks=False)
    two_stage = _coverage(make, 1.0, sims=60, resamples=200, blocks=True)
    assert flat < 0.65, flat  # 0.47 with these seeds
    assert two_stage >= 0.85, two_stage  # 0.93


@pytest.mark.parametrize(("lo", "hi", "verdict", "words"), [
    (1.06, 1.10, "regression", "above 1.050"),
    (0.90, 0.94, "improvement", "below 0.952"),
    (0.97, 1.03, "no change", "inside"),
    (0.9524, 1.05, "no change", "inside"),
    (1.02, 1.08, "inconclusive", "near the threshold"),
    (0.92, 0.98, "inconclusive", "near the threshold"),
    (0.90, 1.10, "inconclusive", "too wide"),
    (0.99, 1.07, "inconclusive", "crosses 1.050"),
    (1.05, 1.09, "inconclusive", "near the threshold"),  # lo must be strictly above 1 + t
])
def test_verdict_rules(lo: float, hi: float, verdict: str, words: str) -> None:
    v, why = classify(lo, hi, 0.05)
    assert v == verdict
    assert words in why


def _paired(rng: random.Random, n: int, slowdown: float, noise: float) -> list[float]:
    """Ratios of paired timings: each round shares a machine state (a random load factor
    that multiplies both sides), plus independent noise per side."""
    out = []
    for _ in range(n):
        load = rng.lognormvariate(0, 0.3)  # hits both sides of the round alike
        a = 1e-3 * load * rng.lognormvariate(0, noise)
        b = 1e-3 * slowdown * load * rng.lognormvariate(0, noise)
        out.append(b / a)
    return out


@pytest.mark.parametrize(("slowdown", "noise", "n", "verdict"), [
    (1.20, 0.02, 60, "regression"),
    (1.10, 0.03, 200, "regression"),
    (1.00, 0.02, 200, "no change"),
    (0.80, 0.02, 60, "improvement"),
    (1.00, 0.50, 12, "inconclusive"),
    (1.05, 0.02, 400, "inconclusive"),  # a change right at the threshold: cannot tell
])
def test_decide_on_synthetic_pairs(slowdown: float, noise: float, n: int, verdict: str) -> None:
    d = decide(_paired(random.Random(7), n, slowdown, noise), threshold=0.05)
    assert d.verdict == verdict, d
    assert d.ci_low <= d.ratio <= d.ci_high
    assert d.n == n


def test_paired_ratios_cancel_the_shared_load() -> None:
    # the load factor (sd 30 %) dwarfs the 10 % change; the paired ratio still finds it
    d = decide(_paired(random.Random(3), 100, 1.10, 0.02))
    assert abs(d.ratio - 1.10) < 0.01
    assert d.verdict == "regression"


def test_too_few_rounds_is_inconclusive() -> None:
    d = decide([1.3, 1.3, 1.3])
    assert d.verdict == "inconclusive"
    assert "only 3" in d.reason


def test_overall_verdict_and_exit_codes() -> None:
    assert overall_verdict(["no change", "regression", "inconclusive"]) == "regression"
    assert overall_verdict(["no change", "inconclusive", "improvement"]) == "inconclusive"
    assert overall_verdict(["no change", "improvement"]) == "improvement"
    assert overall_verdict(["no change"]) == "no change"
    assert overall_verdict([]) == "inconclusive"
    assert EXIT_CODES == {"no change": 0, "improvement": 0, "regression": 1, "inconclusive": 3}
