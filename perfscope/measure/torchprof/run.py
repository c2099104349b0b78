"""Run the phases: warm-up, timed steps without instrumentation, one counting step, and the
profiled steps under torch.profiler (shapes recorded; CUDA kernels through CUPTI on GPUs).

A phase is one kind of step (prefill, one decode step, a user module's forward) with a
``prepare`` that builds its untimed state (a fresh KV cache, a copy of a prefilled one).
"""

from __future__ import annotations

import copy
import functools
import inspect
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perfscope.errors import InputError, MeasureError
from perfscope.measure.torchprof.instrument import (
    RANGE_STEP,
    CallRecord,
    Scopes,
    count_flops_and_bytes,
    instrument,
    time_calls,
    wrap_cache,
)
from perfscope.measure.types import TimingStats


@dataclass(frozen=True)
class Phase:
    name: str
    prepare: Callable[[], Any]  # untimed state for one step
    step: Callable[[Any], Any]  # the timed step
    shape: dict[str, int]  # batch, seq_len, context_len... (for the report)


@dataclass(frozen=True)
class PhaseRun:
    phase: Phase
    timing: TimingStats  # the uninstrumented step, on the run's clock (see RunResult)
    wall: TimingStats  # the same steps' wall time
    records: tuple[CallRecord, ...]  # the counting run
    flop_table: dict[str, dict[str, int]]  # FlopCounterMode: module -> op -> FLOPs
    timed: tuple[tuple[CallRecord, ...], ...] = ()  # CPU: every call timed, per step


@dataclass(frozen=True)
class RunResult:
    runs: tuple[PhaseRun, ...]
    events: Any  # torch.profiler's FunctionEvent list
    trace_json: bytes | None  # Chrome trace of the profiled steps
    functions_wrapped: tuple[str, ...]
    notes: tuple[str, ...]
    threads: int
    device: str
    # CPU, one thread: "thread_time" (the thread's CPU time: other processes on a shared CPU
    # do not inflate it); else "perf_counter" (wall time)
    clock: str = "perf_counter"


def hf_phases(model: Any, *, batch: int, seq_len: int, context_len: int,
              phases: tuple[str, ...], device: str, seed: int = 0) -> list[Phase]:
    """Prefill of ``seq_len`` tokens from an empty DynamicCache, and one decode step with
    ``context_len`` tokens cached (each decode step starts from a copy of the same cache).
    Logits for the last position only (``logits_to_keep=1``), as serving engines do."""
    import torch
    from transformers import DynamicCache

    vocab = int(model.config.vocab_size)
    g = torch.Generator().manual_seed(seed)
    max_pos = getattr(model.config, "max_position_embeddings", None)
    for what, n in (("--seq-len", seq_len), ("--context-len + 1", context_len + 1)):
        if max_pos and n > max_pos:
            raise InputError(f"{what} = {n} exceeds the model's {max_pos} positions")

    # transformers 5 renamed past_key_values to cache
    key = "cache" if "cache" in inspect.signature(model.forward).parameters else \
        "past_key_values"

    def forward(ids: Any, cache: Any) -> Any:
        return model(input_ids=ids, use_cache=True, logits_to_keep=1, **{key: cache})

    out: list[Phase] = []
    if "prefill" in phases:
        ids = torch.randint(0, vocab, (batch, seq_len), generator=g).to(device)
        out.append(Phase("prefill", lambda: DynamicCache(config=model.config),
                         lambda cache: forward(ids, cache),
                         {"batch": batch, "seq_len": seq_len, "context_len": 0}))
    if "decode" in phases:
        ctx = torch.randint(0, vocab, (batch, context_len), generator=g).to(device)
        nxt = torch.randint(0, vocab, (batch, 1), generator=g).to(device)
        base = DynamicCache(config=model.config)
        with torch.inference_mode():
            forward(ctx, base)
        if base.get_seq_length() != context_len:
            raise MeasureError(f"the prefilled cache holds {base.get_seq_length()} tokens, "
                               f"not {context_len}")
        out.append(Phase("decode", lambda: copy.deepcopy(base),
                         lambda cache: forward(nxt, cache),
                         {"batch": batch, "seq_len": 1, "context_len": context_len}))
    return out


def module_phase(um: Any) -> Phase:
    return Phase("forward", lambda: None, lambda _s: um.module(*um.args, **um.kwargs), {})


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)


def _stats(samples: list[float], threads: int, method: str) -> TimingStats:
    s = sorted(samples)
    n = len(s)

    def q(p: float) -> float:
        pos = p * (n - 1)
        lo = int(pos)
        hi = min(lo + 1, n - 1)
        return s[lo] + (s[hi] - s[lo]) * (pos - lo)

    mean = statistics.fmean(s)
    cv = statistics.stdev(s) / mean if n > 1 and mean > 0 else 0.0
    return TimingStats(median_s=q(0.5), p20_s=q(0.2), p80_s=q(0.8), min_s=s[0], n=n, cv=cv,
                       threads=threads, method=method)


def _time(ph: Phase, device: str, *, warmup: int, repeat: int, threads: int,
          clock: str) -> tuple[TimingStats, TimingStats]:
    """(the chosen clock, wall time) of ``repeat`` steps after ``warmup``, each from a fresh,
    untimed state."""
    import torch

    tick = time.thread_time if clock == "thread_time" else time.perf_counter
    with torch.inference_mode():
        for _ in range(warmup):
            ph.step(ph.prepare())
        _sync(device)
        on_clock, wall = [], []
        for _ in range(repeat):
            state = ph.prepare()
            _sync(device)
            c0, t0 = tick(), time.perf_counter()
            ph.step(state)
            _sync(device)
            wall.append(time.perf_counter() - t0)
            on_clock.append(tick() - c0)
    method = "perf_counter + cuda.synchronize" if device.startswith("cuda") else clock
    return _stats(on_clock, threads, method), _stats(wall, threads, method.replace(
        "thread_time", "perf_counter"))


def measure(model: Any, phases: list[Phase], *, device: str, warmup: int, repeat: int,
            trace: bool) -> RunResult:
    """Time, count and profile every phase of ``model``.

    Op times: on CUDA the kernels each op launched, from the profiler; on a CPU a timing run
    of ``repeat`` steps that clocks every top-level torch call (the profiler's own cost per
    recorded event, microseconds, would inflate small CPU ops). With one CPU thread the clock
    is the thread's CPU time, which other processes sharing the CPU do not inflate."""
    import torch

    if repeat < 2:
        raise InputError(f"--repeat {repeat}: at least 2 steps make a median")
    if warmup < 0:
        raise InputError(f"--warmup {warmup}: must be >= 0")
    cuda = device.startswith("cuda")
    threads = int(torch.get_num_threads())
    clock = "thread_time" if not cuda and threads == 1 else "perf_counter"
    tick = time.thread_time if clock == "thread_time" else time.perf_counter
    times = {ph.name: _time(ph, device, warmup=max(1, warmup), repeat=repeat,
                            threads=threads, clock=clock) for ph in phases}
    scopes = Scopes()
    runs: list[PhaseRun] = []
    notes: list[str] = []
    with instrument(model, scopes) as wrapped:
        for ph in phases:
            state = wrap_cache(ph.prepare(), scopes)
            records, table, n = count_flops_and_bytes(functools.partial(ph.step, state),
                                                     scopes)
            notes += [x for x in n if x not in notes]
            timed: list[tuple[CallRecord, ...]] = []
            if not cuda:
                for i in range(repeat + 1):  # the first is a warm-up through the wrappers
                    state = wrap_cache(ph.prepare(), scopes)
                    calls = time_calls(functools.partial(ph.step, state), scopes, tick)
                    if i:
                        timed.append(tuple(calls))
            runs.append(PhaseRun(ph, times[ph.name][0], times[ph.name][1], tuple(records),
                                 table, tuple(timed)))
        events, trace_json = _profile(phases, scopes, device=device, repeat=repeat,
                                      trace=trace)
    return RunResult(tuple(runs), events, trace_json, tuple(wrapped), tuple(notes), threads,
                     device, clock)


def _profile(phases: list[Phase], scopes: Scopes, *, device: str, repeat: int,
             trace: bool) -> tuple[Any, bytes | None]:
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    activities = [ProfilerActivity.CPU]
    if device.startswith("cuda"):
        activities.append(ProfilerActivity.CUDA)
    states = {ph.name: [wrap_cache(ph.prepare(), scopes) for _ in range(repeat + 1)]
              for ph in phases}
    with torch.inference_mode():
        scopes.ranges = True
        try:
            for ph in phases:  # one instrumented warm-up: first calls through the wrappers
                ph.step(states[ph.name].pop())
            _sync(device)
            with profile(activities=activities, record_shapes=True) as prof:
                for ph in phases:
                    for i, state in enumerate(states[ph.name]):
                        with record_function(f"{RANGE_STEP}{ph.name}#{i}"):
                            ph.step(state)
                            _sync(device)
        finally:
            scopes.ranges = False
    events = prof.events()
    data = None
    if trace:
        with tempfile.TemporaryDirectory(prefix="perfscope-trace-") as tmp:
            path = Path(tmp) / "trace.json"
            prof.export_chrome_trace(str(path))
            data = path.read_bytes()
    return events, data
