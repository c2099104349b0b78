"""Machine ceilings: peak GEMM FLOP/s per dtype, memory bandwidth, cache plateau, measured in
rounds so a roof drawn on a noisy machine says how much it moved.

GEMM: square-ish torch GEMMs over a size sweep (the ceiling is the best shape's rate at its
median time, like stas00's mamf-finder), every timed output checked against float64. fp8 is
measured with and without fast accumulation. Bandwidth: STREAM copy and triad
(``bandwidth``). After the sweep, the best GEMM shape of each dtype, copy and triad are timed
again in ``rounds - 1`` more rounds, interleaved, so a burst of load from another process
lands on one round rather than on the whole roof. A ceiling's ``value`` is its best round
(a roof is what the machine reached); ``low`` is the worst round and ``high`` the best
round's p20 rate: the spread to read any measured point against.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from perfscope.measure.bandwidth import (
    MIB,
    bandwidth_array_bytes,
    cache_sizes,
    cache_sweep,
    plateau,
    stream_arrays,
    stream_point,
)
from perfscope.measure.dtypes import check_dtype_supported, supported_dtypes
from perfscope.measure.gemm import Gemm, time_gemm
from perfscope.measure.skips import reason_or_raise
from perfscope.measure.timing import VERIFY_SETS, cache_bytes, is_cuda
from perfscope.measure.types import MeasuredPoint, TimingStats

# Square GEMM sizes swept for the ceiling. CPU sizes keep one call under ~0.3 s at 2 cores.
GPU_GEMM_SIZES = (2048, 4096, 6144, 8192, 12288)
GPU_GEMM_SIZES_QUICK = (4096, 8192)
CPU_GEMM_SIZES = (256, 512, 768, 1024, 1536, 2048)
CPU_GEMM_SIZES_QUICK = (512, 1024, 1536)
ROUNDS = 3

Progress = Callable[[str, int, int], None]  # (label, done, total)


@dataclass(frozen=True)
class Ceiling:
    """One achieved ceiling over ``rounds`` (the rate of each round's median time):
    ``value`` the best round, ``low`` the worst, ``high`` the best round's p20 rate."""

    name: str  # gemm.bf16 | gemm.fp8.fast_accum | memory.copy | memory.triad | cache.plateau
    value: float
    low: float
    high: float
    unit: str  # FLOP/s | bytes/s
    dtype: str
    shape: dict[str, int]
    stats: TimingStats  # of the best round
    rounds: tuple[float, ...] = ()

    @property
    def spread(self) -> float:
        """(best - worst round) / best: how much the roof moved between rounds."""
        return (self.value - self.low) / self.value if self.value > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "low": self.low, "high": self.high,
                "unit": self.unit, "dtype": self.dtype, "shape": dict(self.shape),
                "rounds": list(self.rounds), "spread": self.spread,
                "stats": self.stats.to_dict()}


def work(p: MeasuredPoint, unit: str) -> float:
    return p.flops if unit == "FLOP/s" else p.bytes


def ceiling_from(name: str, rounds: list[MeasuredPoint], unit: str) -> Ceiling:
    """The ceiling of repeated measurements of one shape (one or more rounds)."""
    rates = [work(p, unit) / p.stats.median_s for p in rounds]
    best = rounds[max(range(len(rounds)), key=rates.__getitem__)]
    high = work(best, unit) / best.stats.p20_s
    return Ceiling(name, max(rates), min(rates), high, unit, best.dtype, dict(best.shape),
                   best.stats, tuple(rates))


@dataclass
class CeilingsResult:
    device: str
    ceilings: list[Ceiling] = field(default_factory=list)
    points: list[MeasuredPoint] = field(default_factory=list)  # every shape and round timed
    skipped: list[str] = field(default_factory=list)  # one line per thing that did not run

    def get(self, name: str) -> Ceiling | None:
        return next((c for c in self.ceilings if c.name == name), None)

    def gemm(self) -> dict[str, Ceiling]:
        """Best GEMM ceiling per dtype (fp8: the faster of plain and fast accumulation)."""
        out: dict[str, Ceiling] = {}
        for c in self.ceilings:
            if c.name.startswith("gemm.") and (c.dtype not in out or
                                               c.value > out[c.dtype].value):
                out[c.dtype] = c
        return out

    def bandwidth(self) -> Ceiling | None:
        """The better of copy and triad: what a memory-bound kernel can reach."""
        bw = [c for c in self.ceilings if c.name.startswith("memory.")]
        return max(bw, key=lambda c: c.value) if bw else None


@dataclass(frozen=True)
class _GemmKind:
    name: str  # the ceiling's name
    dtype: str
    fast_accum: bool = False


def gemm_kinds(dtypes: list[str]) -> list[_GemmKind]:
    out = []
    for dt in dtypes:
        out.append(_GemmKind(f"gemm.{dt}", dt))
        if dt == "fp8":
            out.append(_GemmKind("gemm.fp8.fast_accum", "fp8", fast_accum=True))
    return out


def measure_ceilings(device: str = "cpu", *, dtypes: list[str] | None = None,
                     quick: bool = False, sweep: bool | None = None, rounds: int = ROUNDS,
                     progress: Progress | None = None) -> CeilingsResult:
    """GEMM ceilings for ``dtypes`` (default: all the device supports), copy and triad
    bandwidth over ``rounds`` rounds, and the cache plateau (default: on GPUs, and on CPUs
    outside quick mode).

    Dtypes the device lacks and shapes that do not fit in memory are lines in ``skipped``;
    any other failure (a wrong result included) raises.
    """
    res = CeilingsResult(device)
    want = dtypes if dtypes is not None else supported_dtypes(device)
    gpu = is_cuda(device)
    sizes = (GPU_GEMM_SIZES_QUICK if quick else GPU_GEMM_SIZES) if gpu else \
        (CPU_GEMM_SIZES_QUICK if quick else CPU_GEMM_SIZES)
    budget = 0.25 if quick else 1.0
    runs = 5 if quick else 10  # timed calls of a GEMM shape at least (its rounds repeat it)
    checks = 2 if quick else VERIFY_SETS  # input sets whose timed outputs are checked
    kinds = []
    for dt in want:
        reason = _dtype_skip(dt, device)
        if reason:
            res.skipped.append(f"ceiling gemm {dt}: {reason}; skipped")
        else:
            kinds += gemm_kinds([dt])
    do_sweep = sweep if sweep is not None else (gpu or not quick)
    n_sweep = len(cache_sizes(cache_bytes(device))) if do_sweep else 0
    total = len(kinds) * len(sizes) + 2 + (rounds - 1) * (len(kinds) + 2) + n_sweep
    done = [0]

    def step(label: str) -> None:
        if progress:
            progress(label, done[0], total)
        done[0] += 1

    best: dict[str, list[MeasuredPoint]] = {}
    for kind in kinds:  # round 1: the size sweep
        pts = []
        for s in sizes:
            step(f"gemm {kind.name} {s}^3")
            p = _attempt(res, f"ceiling {kind.name} {s}^3",
                         _gemm_call(kind, s, device, budget, runs, checks))
            if p is not None:
                pts.append(p)
        if pts:
            best[kind.name] = [max(pts, key=lambda p: p.achieved_flops_per_s)]
    nbytes = bandwidth_array_bytes(device, quick)
    arrays: list[Any] = []  # one set of STREAM arrays for every round, made on first use
    streams: dict[str, list[MeasuredPoint]] = {"copy": [], "triad": []}
    for r in range(rounds):
        if r:  # later rounds: the best GEMM shapes again, between the bandwidth runs
            for kind in kinds:
                if kind.name not in best:
                    continue
                b = best[kind.name][0].shape["m"]
                step(f"gemm {kind.name} {b}^3 (round {r + 1})")
                p = _attempt(res, f"ceiling {kind.name} {b}^3",
                             _gemm_call(kind, b, device, budget, runs, checks))
                if p is not None:
                    best[kind.name].append(p)
        for sk in ("copy", "triad"):
            step(f"memory {sk} {nbytes // MIB} MiB" + (f" (round {r + 1})" if r else ""))
            p = _attempt(res, f"ceiling memory {sk}",
                         _stream_call(sk, device, nbytes, budget, arrays, checks))
            if p is not None:
                streams[sk].append(p)
    for kind in kinds:
        if kind.name in best:
            res.ceilings.append(ceiling_from(kind.name, best[kind.name], "FLOP/s"))
    for sk, pts in streams.items():
        if pts:
            res.ceilings.append(ceiling_from(f"memory.{sk}", pts, "bytes/s"))
    if do_sweep:
        pts = _attempt_list(res, "cache sweep", lambda: cache_sweep(
            device, budget_s=0.1 if quick else 0.3, step=step))
        top = plateau(pts, cache_bytes(device))
        if top is not None:
            res.ceilings.append(ceiling_from("cache.plateau", [top], "bytes/s"))
    arrays.clear()
    if progress:
        progress("done", total, total)
    return res


def _dtype_skip(dtype: str, device: str) -> str:
    try:
        check_dtype_supported(dtype, device)
    except Exception as e:
        return reason_or_raise(f"ceiling gemm {dtype}", e)
    return ""


def _gemm_call(kind: _GemmKind, size: int, device: str, budget: float, runs: int,
               checks: int) -> Callable[[], MeasuredPoint]:
    g = Gemm(kind.dtype, size, size, size, fast_accum=kind.fast_accum)
    return lambda: time_gemm(g, device, budget_s=budget, min_runs=runs,
                             name=f"ceiling.{kind.name}", verify_sets=checks)


def _stream_call(kind: str, device: str, nbytes: int, budget: float, arrays: list[Any],
                 checks: int) -> Callable[[], MeasuredPoint]:
    def run() -> MeasuredPoint:
        if not arrays:
            arrays.extend(stream_arrays(device, nbytes))
        a, b, c = arrays
        return stream_point(kind, device, nbytes, budget_s=budget, flush_l2=False,
                            arrays=(a, b, c), verify_sets=checks)

    return run


def _attempt(res: CeilingsResult, what: str,
             run: Callable[[], MeasuredPoint]) -> MeasuredPoint | None:
    """Run one measurement; a skip becomes a line in ``res.skipped``, an error raises."""
    try:
        p = run()
    except Exception as e:
        res.skipped.append(f"{what}: {reason_or_raise(what, e)}; skipped")
        return None
    res.points.append(p)
    return p


def _attempt_list(res: CeilingsResult, what: str,
                  run: Callable[[], list[MeasuredPoint]]) -> list[MeasuredPoint]:
    try:
        pts = run()
    except Exception as e:
        res.skipped.append(f"{what}: {reason_or_raise(what, e)}; skipped")
        return []
    res.points.extend(pts)
    return pts


def agree(a: Ceiling, b: Ceiling) -> bool:
    """Two measurements of one ceiling agree when their [low, high] spreads overlap."""
    return a.low <= b.high and b.low <= a.high


def rate_at(p: MeasuredPoint) -> float:
    return p.flops / p.stats.median_s if p.stats.median_s > 0 else math.nan
