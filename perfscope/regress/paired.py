"""The paired timing loop: A and B interleaved in a random order, round after round.

A round of a benchmark times one sample of the baseline and one of the candidate back to
back, which of the two goes first drawn at random (so neither side is systematically the one
that runs on a cache or frequency state the other left). The benchmarks take turns
time-fairly: the one that has had the least sampling time goes next, so the benchmarks are
interleaved too and a slow one cannot starve the others of the budget.

A sample is ``inner`` calls timed together, ``inner`` calibrated once so that a sample lasts
about ``sample_s``, and the same for both sides. Every ``block_rounds`` rounds a benchmark is
set up again on both sides (fresh data at fresh addresses): a data layout that happens to
favour one process then varies from block to block, and the interval, which resamples whole
blocks (``stats.bootstrap_median_ci``), widens by that much instead of mistaking one
layout's luck for a change (measured here: the fused add+RMSNorm C kernel ran 4-9 % faster
in one process than in an identical one for a whole run when its tensors were allocated
once).

After ``min_rounds`` a benchmark's verdict is checked every ``check_every`` rounds; once its
interval has settled (any verdict but inconclusive) it stops being sampled. The loop ends
when all have settled or reached ``max_rounds``, or when ``max_time_s`` of sampling has
passed.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from perfscope.regress.sides import SetupReport
from perfscope.regress.stats import Decision, bootstrap_median_ci, decide, median


class Side(Protocol):
    def setup(self, names: Sequence[str] | None) -> SetupReport: ...
    def run(self, name: str, inner: int) -> float: ...
    def reset(self, name: str) -> None: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class Settings:
    """How long and how carefully to compare. Times in seconds."""

    threshold: float = 0.05  # relative change that counts (0.05: 5 %)
    confidence: float = 0.95  # of the bootstrap interval
    min_rounds: int = 30  # per benchmark, before its first decision
    max_rounds: int = 2000  # per benchmark
    max_time_s: float = 240.0  # of sampling, all benchmarks together
    # of the whole comparison, setup included (None: no limit): the sampling budget shrinks
    # by what the setup took, so --quick stays under a minute on a loaded machine, where
    # importing torch alone took 7 s
    total_time_s: float | None = None
    # Short samples, many rounds: on a shared machine a 3 ms sample is less often cut by
    # another process than a 10 ms one, and for the same time the interval narrows faster
    # (measured here: 3 ms samples gave intervals as narrow as min-of-3 schemes, 10 ms ones
    # wider). The pipe round trip (~0.3 ms) bounds how short a sample can usefully be.
    sample_s: float = 0.003
    check_every: int = 10
    block_rounds: int = 15  # rounds between two setups of a benchmark
    clock: str = "wall"  # wall | cpu (process CPU time: blind to preemption and to waiting)
    threads: int = 1
    # warm processes per side (git refs and directories): a benchmark's blocks take turns
    # among them, so one process's lasting luck shows as variation (sides.WorkerPool)
    workers: int = 2
    cpus: tuple[int, ...] = ()
    seed: int = 0
    resamples: int = 2000

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"cpus": list(self.cpus)}


QUICK = Settings(min_rounds=24, max_rounds=1000, max_time_s=25.0, total_time_s=45.0,
                 check_every=4, block_rounds=8)
MIN_SAMPLING_S = 5.0  # sampled at least this long, however long the setup took


@dataclass
class Benchmark:
    """Samples of one benchmark (seconds per call) and, once decided, its verdict."""

    name: str
    inner: int
    baseline_s: list[float] = field(default_factory=list)
    candidate_s: list[float] = field(default_factory=list)
    blocks: list[list[float]] = field(default_factory=lambda: [[]])  # ratios by block
    decision: Decision | None = None

    def add(self, baseline_s: float, candidate_s: float) -> None:
        self.baseline_s.append(baseline_s)
        self.candidate_s.append(candidate_s)
        self.blocks[-1].append(candidate_s / baseline_s)

    def to_json(self, s: Settings) -> dict[str, Any]:
        d = self.decision
        assert d is not None
        row: dict[str, Any] = {
            "name": self.name, "verdict": d.verdict, "ratio": d.ratio, "ci_low": d.ci_low,
            "ci_high": d.ci_high, "reason": d.reason, "rounds": d.n, "blocks": len(self.blocks),
            "inner_calls": self.inner}
        for side, xs in (("baseline", self.baseline_s), ("candidate", self.candidate_s)):
            by_block = _split(xs, [len(b) for b in self.blocks])
            lo, hi = bootstrap_median_ci(by_block, confidence=s.confidence,
                                         resamples=s.resamples, seed=s.seed) if xs else (None,
                                                                                        None)
            row |= {f"{side}_median_s": median(xs) if xs else None,
                    f"{side}_ci_low_s": lo, f"{side}_ci_high_s": hi}
        row["samples"] = {"baseline_s": self.baseline_s, "candidate_s": self.candidate_s}
        return row


@dataclass
class Comparison:
    benchmarks: list[Benchmark]
    skipped: dict[str, str]  # name -> why (skipped or failed on either side)
    rounds: int  # paired samples taken, all benchmarks together
    sampling_s: float
    stopped: str  # why the loop ended


def _split(xs: list[float], sizes: list[int]) -> list[list[float]]:
    out, i = [], 0
    for n in sizes:
        out.append(xs[i:i + n])
        i += n
    return [b for b in out if b]


def _decide(b: Benchmark, s: Settings) -> Decision:
    return decide([blk for blk in b.blocks if blk], threshold=s.threshold, confidence=s.confidence,
                  resamples=s.resamples, seed=s.seed)


def _setup_both(a: Side, b: Side, names: Sequence[str] | None) -> tuple[SetupReport, SetupReport]:
    if isinstance(a, LocalSide):  # one interpreter: warm up one after the other
        return a.setup(names), b.setup(names)
    with ThreadPoolExecutor(2) as pool:  # two processes importing at once: halves the wait
        fa, fb = pool.submit(a.setup, names), pool.submit(b.setup, names)
        return fa.result(), fb.result()


def _calibrate(a: Side, b: Side, name: str, warm_a: float, warm_b: float, s: Settings) -> int:
    """Calls per sample so that one sample lasts about ``sample_s``: from the least disturbed
    of three trial samples per side (one disturbed trial would otherwise shrink every
    sample of the run; they double as a second warm-up)."""
    inner = max(1, round(s.sample_s / max(warm_a, warm_b)))
    t = min(side.run(name, inner) for side in (a, b, a, b, a, b))
    return max(1, round(s.sample_s / max(t, 1e-9)))


def compare(a: Side, b: Side, names: Sequence[str] | None, s: Settings,
            progress: Callable[[str], None] = lambda msg: None,
            check_setup: Callable[[dict[str, str]], None] = lambda skipped: None
            ) -> Comparison:
    """Run the paired loop between baseline ``a`` and candidate ``b``. ``check_setup`` sees
    the skipped benchmarks before any sampling and may raise."""
    t_setup = time.perf_counter()
    rep_a, rep_b = _setup_both(a, b, names)
    skipped: dict[str, str] = {}
    for label, rep in (("baseline", rep_a), ("candidate", rep_b)):
        for n, why in rep.skipped.items():
            skipped.setdefault(n, f"skipped on the {label}: {why}")
            progress(f"{n}: skipped on the {label}: {why}")
        for n, why in rep.errors.items():
            skipped.setdefault(n, f"failed on the {label}: {why}")
            progress(f"{n}: failed on the {label}: {why}")
    check_setup(skipped)
    order = [n for n in rep_a.ready if n in rep_b.ready]
    rng = random.Random(s.seed)
    benches = {}
    for n in order:
        benches[n] = Benchmark(n, _calibrate(a, b, n, rep_a.ready[n], rep_b.ready[n], s))
    budget = s.max_time_s
    if s.total_time_s is not None:
        budget = max(MIN_SAMPLING_S,
                     min(budget, s.total_time_s - (time.perf_counter() - t_setup)))
    progress(f"{len(order)} benchmarks set up and calibrated on both sides in "
             f"{time.perf_counter() - t_setup:.1f} s; sampling for up to {budget:.0f} s")
    active = list(order)
    spent = dict.fromkeys(order, 0.0)  # sampling seconds given to each benchmark
    t0 = time.perf_counter()
    pairs, stopped = 0, "max rounds"
    while active:
        # time-fair: the benchmark that has had the least time goes next (ties at random),
        # so a 50 ms benchmark does not starve the 1 ms ones of the budget
        n = min(active, key=lambda k: (spent[k], rng.random()))
        bm = benches[n]
        t = time.perf_counter()
        if len(bm.blocks[-1]) >= s.block_rounds:
            a.reset(n)
            b.reset(n)
            bm.blocks.append([])
        if rng.random() < 0.5:
            ta = a.run(n, bm.inner)
            tb = b.run(n, bm.inner)
        else:
            tb = b.run(n, bm.inner)
            ta = a.run(n, bm.inner)
        bm.add(ta, tb)
        spent[n] += time.perf_counter() - t
        pairs += 1
        rounds = len(bm.baseline_s)
        if rounds >= s.min_rounds and (rounds - s.min_rounds) % s.check_every == 0:
            d = _decide(bm, s)
            if d.verdict != "inconclusive":
                active.remove(n)
                progress(f"{n}: {d.verdict} after {rounds} rounds (ratio {d.ratio:.3f}, "
                         f"CI {d.ci_low:.3f}..{d.ci_high:.3f})")
                if not active:
                    stopped = "all decided"
        if rounds >= s.max_rounds and n in active:
            active.remove(n)
        if active and time.perf_counter() - t0 > budget:
            stopped = "time budget"
            break
    for bm in benches.values():
        bm.decision = _decide(bm, s)
    return Comparison(list(benches.values()), skipped, pairs, time.perf_counter() - t0,
                      stopped)


class LocalSide:
    """Callables in this process (the pytest fixture compares two implementations)."""

    def __init__(self, fns: dict[str, Callable[[], Any]], clock: str = "wall") -> None:
        self.fns, self.clock = fns, clock

    def setup(self, names: Sequence[str] | None) -> SetupReport:
        from perfscope.regress.worker import _warm

        return SetupReport({n: _warm(f) for n, f in self.fns.items()}, {}, {})

    def run(self, name: str, inner: int) -> float:
        from perfscope.regress.worker import _time

        return _time(self.fns[name], inner, self.clock)

    def reset(self, name: str) -> None:
        pass  # callables, not setups: nothing to build again

    def close(self) -> None:
        pass
