"""Timing harness: repeated, warmed-up, cache-cold timings reported as a distribution.

Following ``triton.testing.do_bench``, a result is the median with the 20th/80th percentiles,
never a single sample. Every timed call starts cache-cold: rotating input sets, and a buffer
of twice the last-level cache (GPU: L2) overwritten before each call, outside the timed
region. CPU: ``time.perf_counter`` around each call, with the torch thread count set
explicitly and recorded. CUDA (``cuda_timing``): device events, on the device asked for, with
CUDA-graph replay for microsecond kernels and NVML telemetry sampled while the calls run.

Correctness covers what is timed: ``verify`` is called on the outputs of timed calls (graph
replays included), against a higher-precision reference of the same inputs (``checks``).

torch is imported inside functions only.
"""

from __future__ import annotations

import contextlib
import functools
import math
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from perfscope.errors import InputError, MeasureError
from perfscope.measure.types import TimingStats

# Input sets built by ``setup`` and cycled through, so consecutive calls do not re-read the
# operands the previous call left in cache.
INPUT_SETS = 4
# Outputs of at most this many distinct input sets are checked after timing.
VERIFY_SETS = 8

Verify = Callable[[tuple[Any, ...], Any], float]  # (call arguments, output) -> max error


# ---- statistics ---------------------------------------------------------------------------

def quantile(sorted_samples: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default), ``q`` in [0, 1]."""
    n = len(sorted_samples)
    if n == 0:
        raise MeasureError("no samples to summarize")
    pos = q * (n - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    return sorted_samples[lo] * (1 - frac) + sorted_samples[hi] * frac


def summarize(samples: Sequence[float], *, threads: int | None = None,
              method: str = "") -> TimingStats:
    """Median, p20, p80, min, n and coefficient of variation (sample stdev / mean) in seconds."""
    if len(samples) < 2:
        raise MeasureError(f"{len(samples)} timing sample(s): a distribution needs at least 2")
    s = sorted(float(x) for x in samples)
    mean = statistics.fmean(s)
    cv = statistics.stdev(s) / mean if mean > 0 else 0.0
    return TimingStats(median_s=quantile(s, 0.5), p20_s=quantile(s, 0.2),
                       p80_s=quantile(s, 0.8), min_s=s[0], n=len(s), cv=cv,
                       threads=threads, method=method)


def run_count(per_call_s: float, *, budget_s: float, min_runs: int, max_runs: int) -> int:
    """Timed calls that fit in ``budget_s`` at ``per_call_s`` each, clamped to [min, max]."""
    if per_call_s <= 0:
        return max_runs
    return max(min_runs, min(max_runs, int(budget_s / per_call_s)))


# ---- cache flush --------------------------------------------------------------------------

def flush_buffer_bytes(cache_bytes: int | float) -> int:
    """Size of the buffer overwritten before each timed call: twice the cache, whole MiB.

    Twice, because a cache that is not strictly LRU can keep part of a buffer of its own size.
    """
    mib = 2**20
    return max(mib, math.ceil(2 * max(float(cache_bytes), 0.0) / mib) * mib)


def cache_bytes(device: str) -> int:
    """The last-level cache in bytes: a GPU's L2, a CPU's largest cache."""
    if is_cuda(device):
        import torch

        props = torch.cuda.get_device_properties(torch.device(device))
        return int(getattr(props, "L2_cache_size", 0) or 50 * 2**20)
    from perfscope.measure.device import cpu_caches

    caches = cpu_caches()
    return max(caches.values()) if caches else 32 * 2**20


@functools.lru_cache(maxsize=2)
def _flush_buffer(device: str, nbytes: int) -> Any:
    """One flush buffer per device, kept: allocating tens of MB per benchmark costs a page
    fault per 4 KiB page each time (the allocator maps large blocks fresh and unmaps them on
    free), which showed as most of a quick run's system time."""
    import torch

    return torch.empty(nbytes, dtype=torch.int8, device=torch.device(device))


def make_flush(device: str) -> Callable[[], None]:
    """A function that overwrites a buffer larger than the device's L2 (CPU: last-level cache)."""
    buf = _flush_buffer(device, flush_buffer_bytes(cache_bytes(device)))
    val = [0]

    def flush() -> None:
        val[0] = (val[0] + 1) % 127  # a new value each time: no "already equal" shortcut
        buf.fill_(val[0])

    return flush


# ---- devices ------------------------------------------------------------------------------

def is_cuda(device: str) -> bool:
    return device.startswith("cuda")


def check_device(device: str) -> None:
    if device == "cpu":
        return
    if not is_cuda(device):
        raise InputError(f"device {device!r}: use cpu or cuda[:N]")
    import torch

    if not torch.cuda.is_available():
        raise MeasureError(f"device {device}: CUDA is not available (no GPU or a CPU-only torch);"
                           " use --device cpu")


def synchronize(device: str) -> None:
    if is_cuda(device):
        import torch

        torch.cuda.synchronize(torch.device(device))


def set_cpu_threads(n: int | None) -> int:
    """Set torch's intra-op thread count (None: one per usable core) and return what is set."""
    import os

    import torch

    if n is None:
        try:
            n = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            n = os.cpu_count() or 1
    if n < 1:
        raise InputError(f"--threads {n}: must be >= 1")
    torch.set_num_threads(n)
    return int(torch.get_num_threads())


# ---- the harness --------------------------------------------------------------------------

def benchmark(fn: Callable[..., Any], *, device: str = "cpu", warmup_s: float = 0.05,
              min_runs: int = 5, max_runs: int = 200, budget_s: float = 0.5,
              flush_l2: bool = True, cuda_graph: bool | None = False,
              setup: Callable[[int], Any] | None = None,
              params: Callable[[int], Any] | None = None, set_bytes: float | None = None,
              verify: Verify | None = None, verify_sets: int = VERIFY_SETS) -> TimingStats:
    """Time ``fn`` repeatedly and return its distribution in seconds.

    - Calls: ``fn()`` without ``setup``; ``fn(setup(i))`` with it; ``fn(setup(i), params(i))``
      with ``params`` too. ``setup(i)`` builds input set i (fresh random tensors); calls cycle
      through the sets, so repeated calls do not measure the cache. ``params(i)`` builds the
      weights: set 0's are shared by all sets (a layer's weight is one tensor; the flush keeps
      it out of cache), except in a CUDA graph, where each set gets its own (see below).
    - Warm-up: calls for ``warmup_s`` seconds (at least two), which also estimate the time of
      one call; then ``budget_s`` / estimate timed calls, clamped to [min_runs, max_runs].
    - ``flush_l2``: overwrite a buffer of twice the L2 (CPU: last-level cache) before every
      timed call, outside the timed region (before each graph replay in a graph).
    - ``cuda_graph`` (CUDA only): True or None (auto: when a call is short enough for launch
      overhead to matter) captures calls into a CUDA graph and times replays. No flush runs
      between the calls of one replay, so the graph rotates through enough independent sets
      (weights included) that each call's data was evicted by the ones before it
      (``cuda_timing.graph_plan``, from ``set_bytes``, the bytes one call reads and writes);
      where those sets do not fit in memory, it times flushed single calls instead.
    - ``verify(args, out)``: called after timing on the output of one timed call of each of
      up to ``verify_sets`` distinct input sets, spread over them with the first and the
      last included (``args`` is the call's argument tuple); it raises on a wrong result.
      This checks the timed calls themselves, graph replays included. Repeated calls on one
      set are the same computation on the same data, so one output per set is checked.
    - CPU timing uses perf_counter; the thread count in force is recorded in the result
      (set it with ``set_cpu_threads`` first). CUDA timing samples NVML telemetry.
    """
    if min_runs < 2:
        raise InputError(f"min_runs {min_runs}: a distribution needs at least 2 timed runs")
    if max_runs < min_runs:
        raise InputError(f"max_runs {max_runs} < min_runs {min_runs}")
    check_device(device)
    if cuda_graph and not is_cuda(device):
        raise InputError("cuda_graph=True needs a CUDA device")
    if params is not None and setup is None:
        raise InputError("params needs setup: weights go with input sets")
    if verify_sets < 1:
        raise InputError(f"verify_sets {verify_sets}: check at least one input set")

    shared = params(0) if params is not None else None
    sets: list[tuple[Any, ...]] = []
    for i in range(INPUT_SETS if setup is not None else 1):
        if setup is None:
            sets.append(())
        else:
            sets.append((setup(i),) if params is None else (setup(i), shared))

    def call(j: int) -> Any:
        return fn(*sets[j % len(sets)])

    if is_cuda(device):
        from perfscope.measure import cuda_timing

        return cuda_timing.time_cuda(
            fn, sets, device=device, warmup_s=warmup_s, min_runs=min_runs, max_runs=max_runs,
            budget_s=budget_s, flush_l2=flush_l2, cuda_graph=cuda_graph,
            setup=setup, params=params, set_bytes=set_bytes, verify=verify,
            verify_sets=verify_sets)

    warm_up(call, device, warmup_s)  # the CPU loop is budgeted by wall time, not by estimate
    flush = make_flush(device) if flush_l2 else None
    stats, outs = _time_cpu(call, len(sets), flush, budget_s, min_runs, max_runs,
                            keep=verify_sets if verify is not None else 0)
    if verify is not None:
        verify_outputs(verify, sets, outs)
    return stats


def warm_up(call: Callable[[int], Any], device: str, warmup_s: float) -> float:
    """Call for ``warmup_s`` (at least twice; first calls pay for allocation, JIT, autotuning)
    and return the median time of the second half of the calls."""
    warm: list[float] = []
    t_end = time.perf_counter() + warmup_s
    j = 0
    while j < 2 or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        call(j)
        synchronize(device)
        warm.append(time.perf_counter() - t0)
        j += 1
        if j >= 10_000:
            break
    return statistics.median(warm[len(warm) // 2:])


def verify_outputs(verify: Verify, sets: Sequence[tuple[Any, ...]],
                   outs: dict[int, Any]) -> float:
    """Check the kept output of each set (on one CPU thread: see ``one_thread``); returns
    the largest error."""
    if not outs:
        raise MeasureError("no timed output was kept to check")
    with one_thread():
        return max(verify(sets[i], out) for i, out in sorted(outs.items()))


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch's CPU ops on one thread inside (the checks, which are not timed).

    A parallel region waits for all of its threads: when another process holds one of the
    cores, a tiny float64 product on 2 threads took ~16 ms against 0.04 ms on one, and a
    check is hundreds of such small products."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def kept_sets(n_sets: int, limit: int = VERIFY_SETS) -> set[int]:
    """Which of ``n_sets`` input sets have an output checked: all, or ``limit`` spread out
    (the first and, from two on, the last included)."""
    if n_sets <= limit:
        return set(range(n_sets))
    if limit <= 1:
        return {0}
    return {round(i * (n_sets - 1) / (limit - 1)) for i in range(limit)}


def _time_cpu(call: Callable[[int], Any], n_sets: int, flush: Callable[[], None] | None,
              budget_s: float, min_runs: int, max_runs: int, *,
              keep: int) -> tuple[TimingStats, dict[int, Any]]:
    """``keep``: the outputs of up to this many input sets are returned for checking."""
    import torch

    samples: list[float] = []
    outs: dict[int, Any] = {}
    want = kept_sets(n_sets, keep) if keep else set()
    start = time.perf_counter()
    j = 0
    # the budget counts wall time including flushes, so --quick bounds the whole run
    while len(samples) < min_runs or (len(samples) < max_runs and
                                      time.perf_counter() - start < budget_s):
        if flush is not None:
            flush()
        t0 = time.perf_counter()
        out = call(j)
        samples.append(time.perf_counter() - t0)
        if j % n_sets in want and j % n_sets not in outs:
            outs[j % n_sets] = out
        j += 1
    return summarize(samples, threads=int(torch.get_num_threads()), method="perf_counter"), outs
