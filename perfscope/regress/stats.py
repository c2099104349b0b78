"""Paired-ratio statistics: the median ratio, its bootstrap interval, and the verdict rules.

A paired comparison times baseline (A) and candidate (B) back to back in each round, in a
random order, so whatever slows the machine during that round slows both; the ratio
``t_B / t_A`` of one round is what the noise leaves mostly alone. The decision is made on
the median of those ratios (a round hit by a burst of load is an outlier, and the median
ignores a minority of outliers), with a percentile-bootstrap confidence interval around it;
when the rounds come in blocks (each after a fresh setup) the bootstrap resamples blocks
first, so an effect shared by a block widens the interval.

Verdict rules, with ``threshold`` t (0.05 = 5 %) and the interval [lo, hi] of the median:

- ``regression``   lo > 1 + t            (the candidate is slower by more than t, confidently)
- ``improvement``  hi < 1 / (1 + t)      (faster by more than t; symmetric in log-ratio)
- ``no change``    1/(1+t) <= lo and hi <= 1 + t  (the whole interval inside the band)
- ``inconclusive`` anything else: the interval crosses a band edge (too wide, or the true
  change is close to the threshold); the reason says which edge and what would decide it.

Pure Python (no numpy): the measured side may run without it, and 2,000 resamples of a few
hundred ratios take milliseconds.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import NamedTuple

VERDICTS = ("regression", "improvement", "no change", "inconclusive")
# Exit codes of `perfscope regress` (CI reads these): 0 no change or improvement,
# 1 regression, 3 inconclusive; 2 is a usage error or a failure to run (perfscope's errors).
EXIT_CODES = {"no change": 0, "improvement": 0, "regression": 1, "inconclusive": 3}


class Decision(NamedTuple):
    """The verdict on one benchmark: median paired ratio (candidate / baseline time) with its
    bootstrap confidence interval, and why."""

    verdict: str
    ratio: float
    ci_low: float
    ci_high: float
    n: int
    reason: str


def median(values: Sequence[float]) -> float:
    """The median (mean of the two middle values for an even count)."""
    s = sorted(values)
    n = len(s)
    if n == 0:
        raise ValueError("median of no values")
    mid = n // 2
    return s[mid] if n % 2 else 0.5 * (s[mid - 1] + s[mid])


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile of already sorted values (numpy's default)."""
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def bootstrap_median_ci(values: Sequence[float] | Sequence[Sequence[float]], *,
                        confidence: float = 0.95, resamples: int = 2000,
                        seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval of the median.

    ``values`` is a flat list of samples, or a list of blocks of samples (rounds taken after
    the same setup). Flat: draw len(values) samples with replacement, take the median, and
    repeat ``resamples`` times. Blocks: two-stage resampling, first the blocks with
    replacement, then the samples within each drawn block, so that an effect shared by a
    block (a data layout, a process's memory placement) widens the interval as it should
    instead of being counted as many independent samples. Returns the (1-c)/2 and (1+c)/2
    quantiles of the resampled medians; deterministic for a seed.
    """
    blocks = _blocks(values)
    n = sum(len(b) for b in blocks)
    if n == 0:
        raise ValueError("bootstrap of no values")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence {confidence}: must be in (0, 1)")
    rng = random.Random(seed)
    meds = []
    if len(blocks) == 1:
        data = blocks[0]
        for _ in range(resamples):
            meds.append(median(rng.choices(data, k=n)))
    else:
        for _ in range(resamples):
            pool: list[float] = []
            for b in rng.choices(blocks, k=len(blocks)):
                pool += rng.choices(b, k=len(b))
            meds.append(median(pool))
    meds.sort()
    alpha = (1 - confidence) / 2
    return _quantile(meds, alpha), _quantile(meds, 1 - alpha)


def _blocks(values: Sequence[float] | Sequence[Sequence[float]]) -> list[list[float]]:
    if values and isinstance(values[0], (list, tuple)):
        return [list(map(float, b)) for b in values if len(b)]  # type: ignore[arg-type]
    return [[float(v) for v in values]]  # type: ignore[arg-type]


def classify(ci_low: float, ci_high: float, threshold: float) -> tuple[str, str]:
    """The verdict for an interval of the ratio, and a one-line reason."""
    up, down = 1 + threshold, 1 / (1 + threshold)
    band = f"+-{threshold:.0%} band [{down:.3f}, {up:.3f}]"
    if ci_low > up:
        return "regression", f"slower: the whole interval is above {up:.3f}"
    if ci_high < down:
        return "improvement", f"faster: the whole interval is below {down:.3f}"
    if ci_low >= down and ci_high <= up:
        return "no change", f"the interval lies inside the {band}"
    if ci_low > 1:
        why = f"slower (interval above 1) but it crosses {up:.3f}: the change is near the threshold"
    elif ci_high < 1:
        why = f"faster (interval below 1) but it crosses {down:.3f}: the change is near the " \
              "threshold"
    else:
        edges = " and ".join(f"{e:.3f}" for e, hit in ((down, ci_low < down), (up, ci_high > up))
                             if hit)
        why = f"too wide: it crosses {edges}; more rounds or a quieter machine would decide"
    return "inconclusive", why


def decide(ratios: Sequence[float] | Sequence[Sequence[float]], *, threshold: float = 0.05,
           confidence: float = 0.95, resamples: int = 2000, seed: int = 0,
           min_n: int = 5) -> Decision:
    """Verdict on paired ratios (candidate / baseline time per round), flat or in blocks
    (see ``bootstrap_median_ci``)."""
    if not threshold > 0:
        raise ValueError(f"threshold {threshold}: must be > 0")
    flat = [x for b in _blocks(ratios) for x in b]
    n = len(flat)
    if n < min_n:
        m = median(flat) if n else math.nan
        return Decision("inconclusive", m, math.nan, math.nan, n,
                        f"only {n} paired rounds (at least {min_n} needed)")
    lo, hi = bootstrap_median_ci(ratios, confidence=confidence, resamples=resamples, seed=seed)
    verdict, why = classify(lo, hi, threshold)
    return Decision(verdict, median(flat), lo, hi, n, why)


def overall_verdict(verdicts: Sequence[str]) -> str:
    """One verdict for a suite: any regression wins; else any inconclusive; else improvement
    if any benchmark improved; else no change."""
    for v in ("regression", "inconclusive", "improvement"):
        if v in verdicts:
            return v
    return "no change" if verdicts else "inconclusive"
