"""The busiest expert-parallel rank: expected maximum load under uniform top-k routing.

A step waits for its slowest rank, not the average one. With E experts spread over R EP
ranks (m = E / R contiguous experts each) and N tokens each routed to k distinct experts
chosen uniformly, two loads matter per rank: the distinct experts it touches (their weights are
streamed: decode) and the token-expert assignments it receives (FLOPs and activations:
prefill). ``busiest_rank`` returns the expected maximum of each over the ranks.

Derivation (deterministic; tests/test_moe_expert_parallel.py checks it against a seeded
Monte-Carlo simulation of the routing):

- Experts touched. The set of touched experts is exchangeable, so given its size t it is a
  uniform t-subset of the E experts, and the counts per rank are multivariate hypergeometric:
  P(max <= x | t) = [z^t] (sum_{j<=x} C(m, j) z^j)^R / C(E, t). It is evaluated at
  t = E (1 - (1 - k/E)^N), the expected number touched, interpolating linearly between the
  integers around it (the total varies little next to the spread between ranks).
- Assignments. The N k picks are the uniform choice of N k of the N E (token, expert) slots
  once the rule that a token's k experts differ is relaxed; the counts per rank are then again
  multivariate hypergeometric, with E' = N E and t = N k (exact for N = 1, where assignments
  and touched experts coincide; a few % low when a rank holds one expert and tokens are few).
- E[max] = sum_{x >= 0} (1 - P(max <= x)). For small t (t log2 C(n, t) <= 6000: t up to
  about 30) the coefficient is computed exactly in integers (Kronecker substitution: the
  polynomial evaluated at 2^b, one big-integer power). Above, the ranks' counts are
  independent Binomial(m, t/E) conditioned on their sum:
  P(max <= x | S = t) = F(x)^R P(S = t | all <= x) / P(S = t), the conditional sum taken by
  its local central limit (a normal density at t with the truncated law's mean and variance)
  and P(S = t) the Binomial(E, t/E) probability; against the exact value this is within
  0.6% for t >= 24 on a grid up to E = 8192, R = 64. Per-rank means above 128 use the normal
  limit with the sum constraint: E[max] = mu + sigma sqrt(R / (R - 1)) c_R, c_R the expected
  maximum of R standard normals; between 64 and 128 the two are blended linearly in the mean,
  so the load is continuous in the token count.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import NamedTuple

_EXACT_BITS = 6000  # exact while t x bits of C(n, t) stays this small (under ~1 ms)
_NORMAL_MU = 64.0  # per-rank mean above which the normal limit is used


class RankLoad(NamedTuple):
    """Per EP rank: distinct experts touched and token-expert assignments, mean and busiest."""

    experts_mean: float
    experts_max: float
    assignments_mean: float
    assignments_max: float


def expected_experts(n_experts: int, top_k: int, tokens: float) -> float:
    """Distinct experts touched when ``tokens`` tokens each pick ``top_k`` of ``n_experts``
    uniformly without replacement: E * (1 - (1 - k/E)^tokens)."""
    if tokens <= 0:
        return 0.0
    return n_experts * (1.0 - (1.0 - top_k / n_experts) ** tokens)


@lru_cache(maxsize=4096)
def busiest_rank(n_experts: int, top_k: int, ranks: int, tokens: int) -> RankLoad:
    """Expected loads of the average and of the busiest of ``ranks`` EP ranks when
    ``tokens`` tokens each route to ``top_k`` of ``n_experts`` experts uniformly."""
    touched = expected_experts(n_experts, top_k, tokens)
    assigned = float(tokens * top_k)
    if ranks == 1 or tokens <= 0:
        return RankLoad(touched, touched, assigned, assigned)
    lo = math.floor(touched)
    frac = touched - lo
    e_lo = max_count(n_experts, ranks, lo)
    e_max = e_lo if frac < 1e-9 else e_lo + frac * (max_count(n_experts, ranks, lo + 1) - e_lo)
    a_max = max_count(n_experts * tokens, ranks, tokens * top_k)
    return RankLoad(touched / ranks, e_max, assigned / ranks, a_max)


@lru_cache(maxsize=4096)
def max_count(n: int, ranks: int, t: int) -> float:
    """E[max over ranks] when ``t`` of ``n`` items (``ranks`` equal groups) are drawn
    uniformly without replacement (multivariate hypergeometric)."""
    m = n // ranks
    if t <= 0:
        return 0.0
    if t >= n:
        return float(m)
    mu = t / ranks
    log2_comb = (math.lgamma(n + 1) - math.lgamma(t + 1) - math.lgamma(n - t + 1)) / math.log(2)
    if t * log2_comb <= _EXACT_BITS:
        total = 0.0
        for x in range(m):  # E[max] = sum_x P(max > x)
            tail = 1.0 if x * ranks < t else 1.0 - _exact_le(n, ranks, t, x)
            total += tail
            if tail < 1e-10:
                break
        return total
    if mu <= _NORMAL_MU:
        return _local_clt_max(n, ranks, t)
    var = t * (m / n) * (1 - m / n) * (n - t) / (n - 1)
    normal = min(float(m), mu + math.sqrt(var * ranks / (ranks - 1)) * _max_normal(ranks))
    if mu >= 2 * _NORMAL_MU:
        return normal
    # between the two: blend linearly in mu, so the load has no step where the method changes
    # (the two differ by up to ~0.7% there)
    w = mu / _NORMAL_MU - 1.0
    return (1.0 - w) * _local_clt_max(n, ranks, t) + w * normal


def _exact_le(n: int, ranks: int, t: int, x: int) -> float:
    """P(max <= x) = [z^t] (sum_{j<=x} C(m,j) z^j)^R / C(n, t), in exact integers."""
    m = n // ranks
    total = math.comb(n, t)
    b = total.bit_length() + 1  # every coefficient up to degree t is at most C(n, t)
    keep = (1 << (b * (t + 1))) - 1  # degrees above t never reach the coefficient of z^t
    base = 0
    for j in range(min(x, m, t) + 1):
        base |= math.comb(m, j) << (b * j)
    power, e = 1, ranks
    while e:
        if e & 1:
            power = (power * base) & keep
        e >>= 1
        if e:
            base = (base * base) & keep
    return ((power >> (b * t)) & ((1 << b) - 1)) / total


def _local_clt_max(n: int, ranks: int, t: int) -> float:
    """E[max]: independent Binomial(m, t/n) ranks conditioned on their sum being t, with
    P(all <= x | S = t) = F(x)^R P(S = t | all <= x) / P(S = t) and the conditional sum by its
    local central limit."""
    m = n // ranks
    th = t / n
    lp, lq = math.log(th), math.log1p(-th)
    sd = math.sqrt(m * th * (1 - th))
    lo, hi = max(0, int(m * th - 12 * sd)), min(m, int(m * th + 12 * sd) + 2)
    # the Binomial(m, th) pmf over [lo, hi] by its ratio recurrence from lo, and running sums
    w = math.exp(math.lgamma(m + 1) - math.lgamma(lo + 1) - math.lgamma(m - lo + 1) +
                 lo * lp + (m - lo) * lq)
    odds = th / (1 - th)
    s0 = s1 = s2 = 0.0
    log_sum_t = math.lgamma(n + 1) - math.lgamma(t + 1) - math.lgamma(n - t + 1) + t * lp + \
        (n - t) * lq
    total = float(lo)  # P(max > x) = 1 below lo (< mean - 12 sd)
    for x in range(lo, m):
        s0, s1, s2 = s0 + w, s1 + x * w, s2 + x * x * w
        w *= (m - x) / (x + 1) * odds
        if x * ranks < t or x >= hi:
            total += 1.0 if x < hi else 0.0
            if x >= hi:
                break
            continue
        mean = s1 / s0
        var = s2 / s0 - mean * mean
        if var <= 0:
            continue
        z = (t - ranks * mean) / math.sqrt(ranks * var)
        log_p = ranks * math.log(s0) - 0.5 * math.log(2 * math.pi * ranks * var) - \
            z * z / 2 - log_sum_t
        tail = 1.0 - min(1.0, math.exp(log_p))
        total += tail
        if tail < 1e-10:
            break
    return total


@lru_cache(maxsize=128)
def _max_normal(r: int) -> float:
    """c_R: E[max of r independent standard normals] (integrated on a grid)."""
    step, total = 0.01, 0.0
    for i in range(-800, 1001):
        x = i * step
        cdf = 0.5 * (1 + math.erf(x / math.sqrt(2)))
        total += x * r * cdf ** (r - 1) * math.exp(-x * x / 2) / math.sqrt(2 * math.pi)
    return total * step
