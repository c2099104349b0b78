"""CUDA timing: the device asked for, device events, cache-cold graph replays, telemetry.

- Device: every CUDA call runs inside ``torch.cuda.device(device)``, so events are recorded
  on the stream of the GPU measured, not on the current device's (``--device cuda:1``).
- Events: a flush of twice the L2 before each call, outside the start/end events.
- Graphs: microsecond kernels lose much of their time to launch overhead, so calls are
  captured in a CUDA graph and replays are timed. A replay runs many calls with no flush
  between them, so a call whose data fits in L2 would find it there (a batch-1 decode GEMM's
  weight of tens of MB inside H200's 60 MB L2). The graph therefore rotates through enough
  independent input sets, weights included, that between two uses of a set more than twice
  the L2 of other data has been touched (``graph_plan``); where those sets do not fit in the
  memory allowed, the op is timed as flushed single calls with events instead.
- Telemetry: NVML is sampled on a background thread while the timed calls run
  (``telemetry.TelemetrySampler``, by PCI bus id).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from perfscope.errors import InputError, MeasureError
from perfscope.measure.types import TimingStats

# A graph replay holds calls for about GRAPH_TARGET_S, at most GRAPH_MAX_INNER of them.
GRAPH_TARGET_S = 1e-3
GRAPH_MAX_INNER = 1000
# Calls longer than this are timed without a graph: ~5 us of launch overhead is < 3% of them.
GRAPH_MAX_CALL_S = 2e-4
# ... unless one call replayed in a graph takes under this share of its eager wall time: then
# the call is many short kernels and launching them is most of its time (an H200 session
# timed an add + RMSNorm + int8 quantization eagerly at 130 us: 447 us of wall time a call,
# nearly all of it launching a dozen kernels of ~1.5 us each).
LAUNCH_BOUND_SHARE = 0.5
GRAPH_MAX_SETS = 4096
# Independent input sets of a graph may take this share of free memory, at most the cap.
GRAPH_MEMORY_FRACTION = 0.25
GRAPH_MEMORY_CAP = 8 * 2**30


def cuda_index(device: str, device_count: int, current: int = 0) -> int:
    """The GPU index of ``cuda`` / ``cuda:N``; InputError when the machine has no such GPU."""
    if device == "cuda":
        return current
    head, _, idx = device.partition(":")
    if head != "cuda" or not idx.isdigit():
        raise InputError(f"--device {device!r}: use cpu, cuda or cuda:N")
    n = int(idx)
    if n >= device_count:
        raise InputError(f"--device {device}: this machine has {device_count} GPU(s) "
                         f"(cuda:0..cuda:{device_count - 1})")
    return n


def select_device(device: str) -> str:
    """Make ``device`` the current CUDA device (streams, events, default allocations) and
    return its normalised name ``cuda:N``."""
    import torch

    n = cuda_index(device, torch.cuda.device_count(), torch.cuda.current_device())
    torch.cuda.set_device(n)
    return f"cuda:{n}"


def graph_inner_calls(per_call_s: float, target_s: float = GRAPH_TARGET_S,
                      max_inner: int = GRAPH_MAX_INNER) -> int:
    """Calls captured in one CUDA graph so that a replay lasts about ``target_s``."""
    if per_call_s <= 0:
        return max_inner
    return max(1, min(max_inner, math.ceil(target_s / per_call_s)))


@dataclass(frozen=True, slots=True)
class GraphPlan:
    """``inner`` calls per replay cycling through ``sets`` independent input sets."""

    sets: int
    inner: int

    @property
    def method(self) -> str:
        return f"cuda_graph x{self.inner} over {self.sets} input sets"


def tensor_bytes(obj: Any) -> int:
    """Bytes of every tensor in ``obj`` (tensors, tuples, lists, dicts): what one input set
    holds in memory, which can far exceed what a call touches (an embedding table)."""
    if hasattr(obj, "element_size") and hasattr(obj, "numel"):
        return int(obj.numel() * obj.element_size())
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def graph_plan(per_call_s: float, set_bytes: float | None, l2_bytes: float,
               budget_bytes: float, *, rotate: bool, cold: bool,
               max_call_s: float = GRAPH_MAX_CALL_S,
               held_bytes: float | None = None,
               replay_s: float | None = None) -> tuple[GraphPlan | None, str]:
    """Whether to time with a graph, and how: (plan, "") or (None, why not).

    ``set_bytes``: bytes one call reads and writes; ``rotate``: the caller can build more
    input sets; ``cold``: calls must not find their data in L2 (False for cache sweeps).
    Between two uses of one set, the other sets of the replay touch (sets - 1) * set_bytes,
    which must exceed twice the L2: sets >= 2 * L2 / set_bytes + 1. A single set that cannot
    be rotated is cold only when its own traffic is at least twice the L2. ``held_bytes``
    (default ``set_bytes``): the memory one set holds, for the budget. A replay of ``inner``
    calls never needs more than ``inner`` sets: the flush before each replay covers the rest.
    ``replay_s``: one call's time replayed in a graph, where it was probed; a long call whose
    replay takes under LAUNCH_BOUND_SHARE of ``per_call_s`` is launch-bound and planned at
    ``replay_s``.
    """
    if per_call_s > max_call_s:
        if replay_s is None or not 0 < replay_s < LAUNCH_BOUND_SHARE * per_call_s:
            seen = "" if replay_s is None else f" ({replay_s * 1e6:.0f} us in a graph)"
            return None, (f"a call takes {per_call_s * 1e6:.0f} us{seen}: launch overhead is "
                          "small against it")
        per_call_s = replay_s
    inner = graph_inner_calls(per_call_s)
    if not cold:
        return GraphPlan(1, inner), ""
    if not set_bytes or set_bytes <= 0:
        return None, "working set unknown: cannot keep graph replays out of L2"
    if not rotate:  # one set: only its own traffic (>= 2 x L2) can evict it before it recurs
        if set_bytes < 2 * l2_bytes:
            return None, "one input set fits in L2 and cannot be rotated"
        return GraphPlan(1, inner), ""
    need = math.ceil(2 * l2_bytes / set_bytes) + 1
    sets = min(max(need, 1), inner)
    held = held_bytes if held_bytes is not None else set_bytes
    if sets > GRAPH_MAX_SETS or sets * held > budget_bytes:
        return None, (f"{sets} input sets of {held / 2**20:.1f} MiB to stay out of L2 "
                      f"exceed the {budget_bytes / 2**30:.1f} GiB allowed")
    return GraphPlan(sets, inner), ""


def time_cuda(fn: Callable[..., Any], sets: list[tuple[Any, ...]], *, device: str,
              warmup_s: float, min_runs: int, max_runs: int, budget_s: float,
              flush_l2: bool, cuda_graph: bool | None, setup: Callable[[int], Any] | None,
              params: Callable[[int], Any] | None, set_bytes: float | None,
              verify: Callable[[tuple[Any, ...], Any], float] | None,
              verify_sets: int) -> TimingStats:
    """The CUDA half of ``timing.benchmark`` (see there); ``sets`` are the eager input sets."""
    import torch

    from perfscope.measure.telemetry import sampler_for
    from perfscope.measure.timing import cache_bytes, make_flush, verify_outputs, warm_up

    dev = torch.device(device)
    with torch.cuda.device(dev):
        est = warm_up(lambda j: fn(*sets[j % len(sets)]), device, warmup_s)
        flush = make_flush(device) if flush_l2 else None
        plan, why = None, "graphs not requested"
        if cuda_graph is None or cuda_graph:
            free = torch.cuda.mem_get_info(dev)[0]
            # a call that looks long in wall time may be launch-bound: replay one to see
            replay = (_replay_time(fn, sets[0], device)
                      if cuda_graph is None and est > GRAPH_MAX_CALL_S else None)
            plan, why = graph_plan(est, set_bytes, cache_bytes(device),
                                   min(GRAPH_MEMORY_FRACTION * free, GRAPH_MEMORY_CAP),
                                   rotate=setup is not None, cold=flush_l2,
                                   max_call_s=math.inf if cuda_graph else GRAPH_MAX_CALL_S,
                                   held_bytes=tensor_bytes(sets[0]), replay_s=replay)
            if plan is not None and replay is not None:
                est = replay  # the run count of the replays follows the time in the graph
        keep = verify_sets if verify is not None else 0
        sampler = sampler_for(device)
        assert sampler is not None
        if plan is not None:
            gsets = graph_sets(sets, plan.sets, setup, params)
            with sampler:
                stats, outs = _time_graph(fn, gsets, plan, device, est, flush, budget_s,
                                          min_runs, max_runs, keep)
            used = gsets
        else:
            with sampler:
                stats, outs = _time_events(fn, sets, device, est, flush, budget_s, min_runs,
                                           max_runs, keep)
            used = sets
            stats = dataclasses.replace(stats, method=f"cuda_events ({why})")
        if verify is not None:
            verify_outputs(verify, used, outs)
    return dataclasses.replace(stats, telemetry=sampler.summary())


def _capture(warm: Callable[[], Any], body: Callable[[], Any], device: str) -> Any:
    """A CUDA graph of ``body()``, captured after ``warm()`` ran on a side stream (capture
    needs its warm-up there, off the stream it captures from)."""
    import torch

    dev = torch.device(device)
    side = torch.cuda.Stream(device=dev)
    side.wait_stream(torch.cuda.current_stream(dev))
    with torch.cuda.stream(side):
        warm()
    torch.cuda.current_stream(dev).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        body()
    return graph


def _replay_samples(graph: Any, n: int, flush: Callable[[], None] | None,
                    device: str) -> list[float]:
    """Seconds of ``n`` replays of ``graph``, each timed by CUDA events, ``flush`` (if any)
    run before each one outside the timed region."""
    import torch

    from perfscope.measure.timing import synchronize

    starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    for j in range(n):
        if flush is not None:
            flush()
        starts[j].record()
        graph.replay()
        ends[j].record()
    synchronize(device)
    return [s.elapsed_time(e) * 1e-3 for s, e in zip(starts, ends, strict=True)]


def _replay_time(fn: Callable[..., Any], args: tuple[Any, ...], device: str) -> float | None:
    """The fastest of three replays of one call captured in a graph (warm, L2 not flushed:
    an estimate for planning, not a measurement); None where the call cannot be captured."""
    import torch

    try:
        graph = _capture(lambda: fn(*args), lambda: fn(*args), device)
        return min(_replay_samples(graph, 3, None, device))
    except RuntimeError:  # not capturable (a host sync, a CPU fallback): time it eagerly
        torch.cuda.synchronize(torch.device(device))
        return None


def graph_sets(sets: Sequence[tuple[Any, ...]], n: int, setup: Callable[[int], Any] | None,
               params: Callable[[int], Any] | None) -> list[tuple[Any, ...]]:
    """``n`` input sets for a graph, each with its own weights (set 0 is the eager set 0)."""
    if setup is None:
        return list(sets[:1]) * n if n > 1 else list(sets[:1])
    out = [sets[0]]
    for i in range(1, n):
        if params is None:
            out.append(sets[i] if i < len(sets) else (setup(i),))
        else:
            out.append((setup(i), params(i)))
    return out


def _time_events(fn: Callable[..., Any], sets: Sequence[tuple[Any, ...]], device: str,
                 est: float, flush: Callable[[], None] | None, budget_s: float, min_runs: int,
                 max_runs: int, keep: int) -> tuple[TimingStats, dict[int, Any]]:
    import torch

    from perfscope.measure.timing import kept_sets, run_count, summarize, synchronize

    n = run_count(est, budget_s=budget_s, min_runs=min_runs, max_runs=max_runs)
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    want = kept_sets(len(sets), keep) if keep else set()
    outs: dict[int, Any] = {}
    for j in range(n):
        if flush is not None:
            flush()  # on the stream before the start event: not timed
        starts[j].record()
        out = fn(*sets[j % len(sets)])
        ends[j].record()
        if j % len(sets) in want and j % len(sets) not in outs:
            outs[j % len(sets)] = out
    synchronize(device)
    samples = [s.elapsed_time(e) * 1e-3 for s, e in zip(starts, ends, strict=True)]
    return summarize(samples, method="cuda_events"), outs


def _time_graph(fn: Callable[..., Any], sets: Sequence[tuple[Any, ...]], plan: GraphPlan,
                device: str, est: float, flush: Callable[[], None] | None, budget_s: float,
                min_runs: int, max_runs: int, keep: int) -> tuple[TimingStats, dict[int, Any]]:
    from perfscope.measure.timing import kept_sets, run_count, summarize, synchronize

    want = kept_sets(min(plan.sets, plan.inner), keep) if keep else set()
    outs: dict[int, Any] = {}

    def warm() -> None:
        for j in range(min(3, len(sets))):
            fn(*sets[j])

    def body() -> None:
        for j in range(plan.inner):
            out = fn(*sets[j % plan.sets])
            if j % plan.sets in want and j % plan.sets not in outs:
                outs[j % plan.sets] = out  # kept alive: its memory holds the replay's result

    graph = _capture(warm, body, device)
    graph.replay()
    synchronize(device)
    n = run_count(est * plan.inner, budget_s=budget_s, min_runs=min_runs, max_runs=max_runs)
    samples = [t / plan.inner for t in _replay_samples(graph, n, flush, device)]
    if keep and not outs:
        raise MeasureError("graph capture kept no output to check")
    return summarize(samples, method=plan.method), outs
