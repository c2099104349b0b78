"""The core's non-linear cost functions as tables that numpy grids can read.

Two quantities of a step are not linear in its features, and the serving model reads them from
the core's own functions rather than re-deriving them:

- ``CommTable``: the time of one collective against its message size, from
  ``perfscope.collectives.collective_cost`` (NCCL's ring/tree x LL/LL128/Simple model: piecewise
  affine in the bytes, with jumps where a protocol threshold or a tree correction factor
  changes). Knots are whole bytes: every power of two and its neighbours (where the jumps of
  NCCL's model sit), then bisection of any segment whose midpoint the chord misses, down to
  one byte. Between knots the table is the chord, so at whole-byte messages it equals
  ``collective_cost`` to rounding (the model is affine on each segment); a message of a
  fractional byte count within one byte of a switch is blended across it.
- ``ExpertTable``: the busiest expert-parallel rank's expected distinct experts touched and
  token-expert assignments against the step's tokens, from
  ``perfscope.analytic.expert_load.busiest_rank``. Exact at every whole token count up to
  ``EXACT_TOKENS``; above, knots 2^(1/16) apart interpolated in log-log space, refined by
  bisection wherever the midpoint misses by more than ``EXPERT_RTOL`` (the core's switch from
  its local central limit to the normal limit is a small jump: the refinement brackets it to
  one token). tests/test_serving_tables.py measures both against the core at random sizes.

Both are built once per (topology, group) or (experts, top-k, ranks) and cached.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from perfscope.analytic.expert_load import busiest_rank, expected_experts
from perfscope.collectives import collective_cost, group_path
from perfscope.specs.links import Topology

COMM_MAX_BYTES = 2**44  # 16 TiB per rank: beyond it the last segment extends (affine there)
_AFFINE_RTOL = 1e-12  # a segment whose midpoint is on the chord to this is affine
EXACT_TOKENS = 256  # expert loads exact at every whole token count up to here
EXPERT_MAX_TOKENS = 2**30
EXPERT_RTOL = 1e-5  # log-log interpolation error the expert table is refined to
_PER_OCTAVE = 16


class CommTable(NamedTuple):
    """Time (s) of one ``collective`` over ``ranks`` GPUs ``stride`` apart, against the
    message bytes per rank (NCCL's count, as ``Op.comm_bytes``)."""

    collective: str
    ranks: int
    stride: int
    xs: np.ndarray  # knots, whole bytes, increasing (0 first)
    ys: np.ndarray  # collective_cost(...).time_s at each knot
    slopes: np.ndarray  # (ys[i+1] - ys[i]) / (xs[i+1] - xs[i]); the last one repeated
    bus_bytes_s: float  # the bus rate the model uses for this group (after efficiency)
    one_node: bool  # the group stays inside one scale-up domain of a node

    def __call__(self, msg: np.ndarray) -> np.ndarray:
        m = np.asarray(msg, dtype=float)
        # xs[0] = 0: the segment index is in [0, len - 1] for every m >= 0
        i = np.maximum(np.searchsorted(self.xs, m, side="right") - 1, 0)
        t = self.ys[i] + self.slopes[i] * (m - self.xs[i])
        return np.where(m > 0, t, 0.0)


def _bisect(knots: list[int], split: Callable[[int, int, int], bool]) -> None:
    """Refine between whole-number knots: each interval [a, b] wider than one is halved at
    m = (a + b) // 2 while ``split(a, b, m)`` says the interpolant misses there (``split``
    records what it evaluated)."""
    stack = list(itertools.pairwise(knots))
    while stack:
        a, b = stack.pop()
        if b - a < 2:
            continue
        m = (a + b) // 2
        if split(a, b, m):
            stack += [(a, m), (m, b)]


@lru_cache(maxsize=256)
def comm_table(topo: Topology, collective: str, ranks: int, stride: int = 1,
               ceiling: str = "spec") -> CommTable:
    """The table of ``collective_cost(topo, collective, bytes, ranks, stride, ceiling)`` over
    bytes (module doc); raises what ``collective_cost`` raises for an impossible group."""
    raw = collective_cost.__wrapped__  # not its per-size cache (thousands of sizes)

    def f(x: int) -> float:
        return raw(topo, collective, float(x), ranks, stride, ceiling).time_s

    top = int(math.log2(COMM_MAX_BYTES))
    knots = {0, 1, 2, 3}
    for n in range(2, top + 1):
        p = 1 << n
        knots |= {p - 1, p, p + 1, p + (p >> 1)}
    xs = sorted(k for k in knots if k <= COMM_MAX_BYTES)
    ys = {x: f(x) for x in xs}

    def split(a: int, b: int, m: int) -> bool:
        fm = f(m)
        chord = ys[a] + (ys[b] - ys[a]) * ((m - a) / (b - a))
        if abs(fm - chord) <= _AFFINE_RTOL * abs(fm):
            return False  # affine on [a, b]: NCCL's model is a min of affine pieces per range
        ys[m] = fm
        return True

    _bisect(xs, split)
    x = np.array(sorted(ys), dtype=float)
    y = np.array([ys[int(v)] for v in x])
    slopes = np.diff(y) / np.diff(x)
    slopes = np.append(slopes, slopes[-1])
    cost = raw(topo, collective, 1.0, ranks, stride, ceiling)
    path = group_path(topo, ranks, stride)
    one_node = path.nodes == 1 and path.intra is not None and path.intra is topo.scale_up
    return CommTable(collective, ranks, stride, x, y, slopes, cost.bus_bytes_s, one_node)


class ExpertTable(NamedTuple):
    """Busiest EP rank of ``ranks`` under uniform top-``top_k`` routing over ``n_experts``:
    expected distinct experts touched and token-expert assignments against the tokens the
    MoE layer routes (``expert_load.busiest_rank``)."""

    n_experts: int
    top_k: int
    ranks: int
    xs: np.ndarray  # token knots (whole tokens)
    touched: np.ndarray
    assigned: np.ndarray

    def exact(self, tokens: int) -> tuple[float, float]:
        """(experts touched, assignments) of the busiest rank at a whole token count."""
        load = busiest_rank(self.n_experts, self.top_k, self.ranks, int(tokens))
        return load.experts_max, load.assignments_max

    def __call__(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(experts touched, assignments) at ``tokens`` (any shape; fractional tokens between
        whole ones interpolate linearly)."""
        n = np.asarray(tokens, dtype=float)
        if self.ranks == 1:  # closed forms: E (1 - (1 - k/E)^N) and k N
            e, k = self.n_experts, self.top_k
            return (np.where(n > 0, e * (1.0 - (1.0 - k / e) ** np.maximum(n, 0.0)), 0.0),
                    k * np.maximum(n, 0.0))
        small = n <= EXACT_TOKENS
        out = []
        for ys in (self.touched, self.assigned):
            lo = np.interp(n, self.xs[:EXACT_TOKENS + 1], ys[:EXACT_TOKENS + 1])
            if small.all():
                out.append(lo)
                continue
            big = self.xs >= EXACT_TOKENS
            lx, ly = np.log(self.xs[big]), np.log(np.maximum(ys[big], 1e-300))
            hi = np.exp(np.interp(np.log(np.maximum(n, EXACT_TOKENS)), lx, ly))
            out.append(np.where(small, lo, hi))
        return out[0], out[1]


@lru_cache(maxsize=64)
def expert_table(n_experts: int, top_k: int, ranks: int) -> ExpertTable:
    """The table of ``busiest_rank(n_experts, top_k, ranks, tokens)`` (module doc)."""
    if ranks == 1:
        z = np.zeros(0)
        return ExpertTable(n_experts, top_k, 1, z, z, z)
    vals: dict[int, tuple[float, float]] = {}

    def f(n: int) -> tuple[float, float]:
        v = vals.get(n)
        if v is None:
            load = busiest_rank(n_experts, top_k, ranks, n)
            v = vals[n] = (load.experts_max, load.assignments_max)
        return v

    for n in range(EXACT_TOKENS + 1):
        f(n)
    steps = int(_PER_OCTAVE * math.log2(EXPERT_MAX_TOKENS / EXACT_TOKENS))
    geo = sorted({round(EXACT_TOKENS * 2 ** (j / _PER_OCTAVE)) for j in range(steps + 1)})
    for n in geo:
        f(n)

    def split(a: int, b: int, m: int) -> bool:  # f(m) is kept either way (``vals``)
        fa, fb, fm = f(a), f(b), f(m)
        w = math.log(m / a) / math.log(b / a)
        ok = True
        for j in range(2):
            if fa[j] <= 0 or fb[j] <= 0:
                continue
            guess = math.exp(math.log(fa[j]) + w * (math.log(fb[j]) - math.log(fa[j])))
            if abs(guess / fm[j] - 1) > EXPERT_RTOL:
                ok = False
        return not ok

    _bisect(geo, split)
    xs = np.array(sorted(vals), dtype=float)
    return ExpertTable(n_experts, top_k, ranks, xs,
                       np.array([vals[int(x)][0] for x in xs]),
                       np.array([vals[int(x)][1] for x in xs]))


__all__ = ["CommTable", "ExpertTable", "comm_table", "expected_experts", "expert_table"]
