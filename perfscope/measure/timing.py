"""Timing harness: repeated, warmed-up, cache-cold timings reported as a distribution.

CUDA: device events around each call, warm-up by time, an L2 flush (a buffer twice the L2
overwritten) before every timed call and outside its events, optional CUDA-graph replay for
microsecond kernels (launch overhead gone), rotating input sets. CPU: ``time.perf_counter``
around each call with the torch thread count set explicitly and recorded; the "L2 flush" on a
CPU overwrites twice the last-level cache. Following ``triton.testing.do_bench``, the result
is the median with the 20th/80th percentiles, never a single sample.

Correctness before speed: ``check_close`` compares a kernel's output against a
higher-precision reference computed on fresh random data (``random_tensor``, never zeros);
the benchmark modules call it before they time anything.

torch is imported inside functions only.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from perfscope.errors import InputError, MeasureError
from perfscope.measure.types import TimingStats

# Input sets built by ``setup`` and cycled through, so consecutive calls do not re-read the
# operands the previous call left in cache.
INPUT_SETS = 4
# A CUDA-graph replay holds this many calls at least when each is shorter than ~GRAPH_TARGET_S.
GRAPH_TARGET_S = 1e-3
GRAPH_MAX_INNER = 1000


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


def _cache_bytes(device: str) -> int:
    if is_cuda(device):
        import torch

        props = torch.cuda.get_device_properties(torch.device(device))
        return int(getattr(props, "L2_cache_size", 0) or 50 * 2**20)
    from perfscope.measure.device import cpu_caches

    caches = cpu_caches()
    return max(caches.values()) if caches else 32 * 2**20


def make_flush(device: str) -> Callable[[], None]:
    """A function that overwrites a buffer larger than the device's L2 (CPU: last-level cache)."""
    import torch

    buf = torch.empty(flush_buffer_bytes(_cache_bytes(device)), dtype=torch.int8,
                      device=torch.device(device))
    val = [0]

    def flush() -> None:
        val[0] = (val[0] + 1) % 127  # a new value each time: no "already equal" shortcut
        buf.fill_(val[0])

    return flush


# ---- devices ------------------------------------------------------------------------------

def is_cuda(device: str) -> bool:
    return device.startswith("cuda")


def _check_device(device: str) -> None:
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


# ---- correctness --------------------------------------------------------------------------

# (rtol, atol) against a reference computed in fp32/fp64; low-precision dtypes accumulate
# rounding of their inputs and of their output, so the tolerance follows the mantissa width.
TOLERANCES: dict[str, tuple[float, float]] = {
    "fp64": (1e-9, 1e-9), "fp32": (1e-4, 1e-4), "tf32": (5e-3, 5e-3), "bf16": (3e-2, 3e-2),
    "fp16": (5e-3, 5e-3), "fp8": (1.5e-1, 1.5e-1), "int8": (0.0, 0.0),
}


def random_tensor(shape: Sequence[int], dtype: Any, device: str = "cpu", *,
                  seed: int | None = None, scale: float = 1.0) -> Any:
    """Fresh random data, never zeros: normal(0, scale) floats, uniform [-64, 64) integers."""
    import torch

    gen = torch.Generator(device=torch.device(device))
    gen.manual_seed(seed if seed is not None else time.perf_counter_ns() & 0x7FFFFFFF)
    if dtype.is_floating_point:
        make = dtype if dtype.itemsize >= 2 else torch.float32  # fp8 has no randn
        t = torch.randn(tuple(shape), generator=gen, dtype=make, device=device) * scale
        return t.to(dtype)
    return torch.randint(-64, 64, tuple(shape), generator=gen, dtype=dtype, device=device)


def check_close(actual: Any, expected: Any, dtype: str, what: str) -> float:
    """Raise MeasureError unless ``actual`` matches the higher-precision ``expected``.

    Tolerance scales with the reference's magnitude (a GEMM's sum of k products). Returns the
    largest error relative to that scale.
    """
    import torch

    a = actual.detach().to(torch.float64)
    e = expected.detach().to(torch.float64)
    if a.shape != e.shape:
        raise MeasureError(f"{what}: output shape {tuple(a.shape)} != reference "
                           f"{tuple(e.shape)}")
    if not bool(torch.isfinite(a).all()):
        raise MeasureError(f"{what}: output has inf/nan (dtype {dtype})")
    rtol, atol = TOLERANCES.get(dtype, (3e-2, 3e-2))
    ref_scale = float(e.abs().max()) if e.numel() else 0.0
    if ref_scale == 0.0:
        raise MeasureError(f"{what}: reference output is all zeros; the check needs random data")
    err = float((a - e).abs().max()) / ref_scale
    if err > rtol + atol:
        raise MeasureError(f"{what}: wrong result in {dtype}: max error {err:.3g} of the "
                           f"output scale exceeds {rtol + atol:.3g}")
    return err


def is_oom(exc: BaseException) -> bool:
    """True for torch's out-of-memory errors (CUDA or a failed host allocation)."""
    name = type(exc).__name__
    return name == "OutOfMemoryError" or "out of memory" in str(exc).lower() or \
        "DefaultCPUAllocator: can't allocate" in str(exc)


# ---- the harness --------------------------------------------------------------------------

def benchmark(fn: Callable[..., Any], *, device: str = "cpu", warmup_s: float = 0.05,
              min_runs: int = 5, max_runs: int = 200, budget_s: float = 0.5,
              flush_l2: bool = True, cuda_graph: bool = False,
              setup: Callable[[int], Any] | None = None) -> TimingStats:
    """Time ``fn`` repeatedly and return its distribution in seconds.

    - ``setup`` None: each call is ``fn()``. With ``setup``, ``setup(i)`` is called once for
      each i in range(INPUT_SETS) before any timing and the timed call j is
      ``fn(sets[j % INPUT_SETS])``: rotating input sets, so repeated calls do not measure the
      cache. ``setup`` should return fresh random tensors (``random_tensor``).
    - Warm-up: calls for ``warmup_s`` seconds (at least two), which also estimate the time of
      one call; then ``budget_s`` / estimate timed calls, clamped to [min_runs, max_runs].
    - ``flush_l2``: overwrite a buffer of twice the L2 (CPU: last-level cache) before every
      timed call, outside the timed region.
    - ``cuda_graph`` (CUDA only): capture calls into a CUDA graph (enough that one replay
      lasts ~1 ms) and time replays; the sample is replay time / calls captured. Removes
      launch overhead from microsecond kernels; the flush then precedes each replay only.
    - CPU timing uses perf_counter; the thread count in force is recorded in the result
      (set it with ``set_cpu_threads`` first).
    """
    if min_runs < 2:
        raise InputError(f"min_runs {min_runs}: a distribution needs at least 2 timed runs")
    if max_runs < min_runs:
        raise InputError(f"max_runs {max_runs} < min_runs {min_runs}")
    _check_device(device)
    if cuda_graph and not is_cuda(device):
        raise InputError("cuda_graph=True needs a CUDA device")

    sets = [setup(i) for i in range(INPUT_SETS)] if setup is not None else None

    def call(j: int) -> Any:
        return fn(sets[j % INPUT_SETS]) if sets is not None else fn()

    flush = make_flush(device) if flush_l2 else None

    # warm-up by time (first calls pay for allocation, JIT, autotuning); estimate one call
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
    est = statistics.median(warm[len(warm) // 2:])

    if is_cuda(device):
        if cuda_graph:
            return _time_cuda_graph(call, device, est, flush, budget_s, min_runs, max_runs)
        return _time_cuda_events(call, device, est, flush, budget_s, min_runs, max_runs)
    return _time_cpu(call, flush, budget_s, min_runs, max_runs)


def _time_cpu(call: Callable[[int], Any], flush: Callable[[], None] | None, budget_s: float,
              min_runs: int, max_runs: int) -> TimingStats:
    import torch

    samples: list[float] = []
    start = time.perf_counter()
    j = 0
    # the budget counts wall time including flushes, so --quick bounds the whole run
    while len(samples) < min_runs or (len(samples) < max_runs and
                                      time.perf_counter() - start < budget_s):
        if flush is not None:
            flush()
        t0 = time.perf_counter()
        call(j)
        samples.append(time.perf_counter() - t0)
        j += 1
    return summarize(samples, threads=int(torch.get_num_threads()), method="perf_counter")


def _time_cuda_events(call: Callable[[int], Any], device: str, est: float,
                      flush: Callable[[], None] | None, budget_s: float, min_runs: int,
                      max_runs: int) -> TimingStats:
    import torch

    n = run_count(est, budget_s=budget_s, min_runs=min_runs, max_runs=max_runs)
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    for j in range(n):
        if flush is not None:
            flush()  # on the stream before the start event: not timed
        starts[j].record()
        call(j)
        ends[j].record()
    synchronize(device)
    samples = [s.elapsed_time(e) * 1e-3 for s, e in zip(starts, ends, strict=True)]
    return summarize(samples, method="cuda_events")


def graph_inner_calls(per_call_s: float, target_s: float = GRAPH_TARGET_S,
                      max_inner: int = GRAPH_MAX_INNER) -> int:
    """Calls captured in one CUDA graph so that a replay lasts about ``target_s``."""
    if per_call_s <= 0:
        return max_inner
    return max(1, min(max_inner, math.ceil(target_s / per_call_s)))


def _time_cuda_graph(call: Callable[[int], Any], device: str, est: float,
                     flush: Callable[[], None] | None, budget_s: float, min_runs: int,
                     max_runs: int) -> TimingStats:
    import torch

    # the warm-up estimate includes launch overhead, so it overstates short kernels: inner is
    # a lower bound on the calls needed, which is the safe side
    inner = graph_inner_calls(est)
    side = torch.cuda.Stream(device=torch.device(device))
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):  # capture needs its warm-up on a side stream
        for j in range(3):
            call(j)
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for j in range(inner):
            call(j)
    graph.replay()
    synchronize(device)
    n = run_count(est * inner, budget_s=budget_s, min_runs=min_runs, max_runs=max_runs)
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    for j in range(n):
        if flush is not None:
            flush()
        starts[j].record()
        graph.replay()
        ends[j].record()
    synchronize(device)
    samples = [s.elapsed_time(e) * 1e-3 / inner for s, e in zip(starts, ends, strict=True)]
    return summarize(samples, method=f"cuda_graph x{inner}")
