"""Attribute measured time, FLOPs and bytes to modules, ops, kernels and analytic ops.

Time per call: on CUDA from the profiled steps: every top-level op of a step (an op whose
parent is a perfscope scope, not another op) is one call, timed by the GPU kernels it and its
children launched; the scope ranges around it give its module and function. On a CPU from the
timing run, which clocked every top-level torch call in its scope. The same classifier then
names the analytic op of every call, as for the counting run's FLOP and byte records, so time,
FLOPs and bytes meet on the same names. Per step sums, then the median over the steps.
"""

from __future__ import annotations

import re
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from perfscope.measure.torchprof.instrument import (
    RANGE_FN,
    RANGE_MODULE,
    RANGE_STEP,
    ROOT,
    CallRecord,
)
from perfscope.measure.torchprof.ops import normalize, op_class
from perfscope.measure.torchprof.run import PhaseRun, RunResult
from perfscope.measure.types import TimingStats

# (module path, tag, op, index, dim) -> analytic op name or framework.* row
Classifier = Callable[[str, "str | None", str, int, "int | None"], str]
US = 1e-6

_INDEX = re.compile(r"\.(\d+)(?=\.|$)")


def pattern(path: str) -> str:
    """``model.layers.3.mlp.up_proj`` -> ``model.layers.*.mlp.up_proj``."""
    return _INDEX.sub(".*", path) if path else ROOT


@dataclass(frozen=True)
class RoleStats:
    """One analytic op (or framework row) in one phase, for one step."""

    time_s: float  # median over the profiled steps
    calls: int  # top-level op calls per step
    flops: float  # FlopCounterMode, summed over its calls
    bytes: float  # inputs + outputs of its torch calls (views: 0)
    ops: tuple[str, ...]  # ops seen by the profiler
    flop_ops: tuple[str, ...]  # ops FlopCounterMode counted
    modules: tuple[str, ...]  # module paths, layer indices as *


@dataclass(frozen=True)
class ModuleStat:
    module: str
    type: str
    time_s: float  # median over steps, children included
    self_time_s: float  # ops called by the module itself
    flops: float  # FlopCounterMode, children included
    bytes: float


@dataclass(frozen=True)
class NamedTime:
    name: str  # aten op or kernel
    calls: int  # per step
    time_s: float  # median over steps


@dataclass(frozen=True)
class PhaseMeasurement:
    phase: str
    shape: Mapping[str, int]
    timing: TimingStats  # the uninstrumented step
    profiled_step_s: float  # median step under the profiler (instrumented)
    ops_time_s: float  # median over steps of the time inside top-level ops
    roles: Mapping[str, RoleStats]
    modules: tuple[ModuleStat, ...]
    aten_ops: tuple[NamedTime, ...]  # top-level ops as the profiler names and times them
    kernels: tuple[NamedTime, ...] = ()
    flop_total: float = 0.0  # FlopCounterMode's Global count
    wall: TimingStats | None = None  # the uninstrumented step's wall time
    clock: str = "perf_counter"  # what timed the ops and the step
    notes: tuple[str, ...] = field(default_factory=tuple)


@dataclass
class _Call:
    module: str
    tag: str | None
    op: str
    index: int
    dim: int | None
    time_s: float
    kernels: list[tuple[str, float]]
    name: str = ""  # as the profiler names it (aten::linear)


def _walk(ev: Any, module: tuple[str, int], tag: str | None, counts: dict, out: list[_Call],
          cuda: bool) -> None:
    for ch in ev.cpu_children:
        name = ch.name
        if name.startswith(RANGE_MODULE):
            path = name[len(RANGE_MODULE):]
            _walk(ch, ("" if path == ROOT else path, id(ch)), tag, counts, out, cuda)
        elif name.startswith(RANGE_FN):
            _walk(ch, module, name[len(RANGE_FN):], counts, out, cuda)
        else:
            op = normalize(name)
            key = (module[1], tag, op_class(op))
            index = counts.get(key, 0)
            counts[key] = index + 1
            shapes = ch.input_shapes or []
            first = shapes[0] if shapes and isinstance(shapes[0], list) else []
            kernels = _kernels(ch) if cuda else []
            t = ch.device_time_total if cuda else ch.cpu_time_total
            out.append(_Call(module[0], tag, op, index, int(first[-1]) if first else None,
                             t * US, kernels, name))


def _kernels(ev: Any) -> list[tuple[str, float]]:
    out = [(k.name, k.duration * US) for k in getattr(ev, "kernels", ())]
    for ch in ev.cpu_children:
        out += _kernels(ch)
    return out


def step_events(events: Iterable[Any]) -> dict[str, list[Any]]:
    """phase -> its profiled step ranges, in order."""
    out: dict[str, list[Any]] = defaultdict(list)
    for e in events:
        if e.name.startswith(RANGE_STEP) and e.cpu_parent is None:
            out[e.name[len(RANGE_STEP):].rsplit("#", 1)[0]].append(e)
    return out


def _median_of(per_step: list[dict[str, float]], key: str) -> float:
    return statistics.median(d.get(key, 0.0) for d in per_step)


def _ancestors(path: str) -> list[str]:
    out = [path]
    while path:
        path = path.rpartition(".")[0]
        out.append(path)
    return out


def attribute(result: RunResult, classify: Classifier,
              module_types: Mapping[str, str]) -> list[PhaseMeasurement]:
    """Per phase: time per analytic op (median over steps), FLOPs and bytes per analytic op
    from the counting run, time per module, per aten op and (CUDA) per kernel."""
    cuda = result.device.startswith("cuda")
    steps = step_events(result.events)
    out = []
    for run in result.runs:
        out.append(_phase(run, steps.get(run.phase.name, []), classify, module_types, cuda,
                          result.clock))
    return out


def _timed_calls(records: Iterable[CallRecord]) -> list[_Call]:
    return [_Call(r.module, r.tag, r.op, r.index, r.dim, r.time_s, []) for r in records]


def _named(per_step: list[list[_Call]],
           items: Callable[[_Call], Iterable[tuple[str, float]]]) -> tuple[NamedTime, ...]:
    """(name, calls in the first step, median time over the steps), slowest first."""
    times: list[dict[str, float]] = []
    calls: dict[str, int] = defaultdict(int)
    for si, step in enumerate(per_step):
        t: dict[str, float] = defaultdict(float)
        for c in step:
            for name, dur in items(c):
                t[name] += dur
                if si == 0:
                    calls[name] += 1
        times.append(t)
    return tuple(sorted((NamedTime(k, calls[k], _median_of(times, k)) for k in calls),
                        key=lambda x: -x.time_s))


def _phase(run: PhaseRun, steps: list[Any], classify: Classifier,
           module_types: Mapping[str, str], cuda: bool, clock: str) -> PhaseMeasurement:
    role_t: list[dict[str, float]] = []
    mod_t: list[dict[str, float]] = []
    mod_self: list[dict[str, float]] = []
    role_calls: dict[str, int] = defaultdict(int)
    role_ops: dict[str, set[str]] = defaultdict(set)
    role_mods: dict[str, set[str]] = defaultdict(set)
    totals = []
    profiled_calls = []
    for step in steps:
        calls: list[_Call] = []
        _walk(step, ("", 0), None, {}, calls, cuda)
        profiled_calls.append(calls)
    # CPU: the timing run; CUDA: the kernels of the profiled steps
    walked = [_timed_calls(step) for step in run.timed] if run.timed else profiled_calls
    profiled = statistics.median(s.time_range.elapsed_us() * US for s in steps) if steps \
        else 0.0
    for si, calls in enumerate(walked):
        rt: dict[str, float] = defaultdict(float)
        mt: dict[str, float] = defaultdict(float)
        ms: dict[str, float] = defaultdict(float)
        for c in calls:
            role = classify(c.module, c.tag, c.op, c.index, c.dim)
            rt[role] += c.time_s
            ms[c.module] += c.time_s
            for a in _ancestors(c.module):
                mt[a] += c.time_s
            if si == 0:
                role_calls[role] += 1
                role_ops[role].add(c.op)
                role_mods[role].add(pattern(c.module))
        role_t.append(rt)
        mod_t.append(mt)
        mod_self.append(ms)
        totals.append(sum(c.time_s for c in calls))

    flops: dict[str, float] = defaultdict(float)
    nbytes: dict[str, float] = defaultdict(float)
    flop_ops: dict[str, set[str]] = defaultdict(set)
    mod_bytes: dict[str, float] = defaultdict(float)
    for r in run.records:
        role = classify(r.module, r.tag, r.op, r.index, r.dim)
        if r.flops:
            flops[role] += r.flops
            flop_ops[role].add(r.op)
        if r.bytes:
            nbytes[role] += r.bytes
            for a in _ancestors(r.module):
                mod_bytes[a] += r.bytes
        role_mods[role].add(pattern(r.module))
    roles = {}
    for role in sorted(set(role_calls) | set(flops) | set(nbytes)):
        roles[role] = RoleStats(
            time_s=_median_of(role_t, role) if role_t else 0.0, calls=role_calls.get(role, 0),
            flops=flops.get(role, 0.0), bytes=nbytes.get(role, 0.0),
            ops=tuple(sorted(role_ops.get(role, ()))),
            flop_ops=tuple(sorted(flop_ops.get(role, ()))),
            modules=tuple(sorted(role_mods.get(role, ()))))
    mod_flops = _module_flops(run.flop_table)
    modules = tuple(
        ModuleStat(m or ROOT, module_types.get(m, ""), _median_of(mod_t, m),
                   _median_of(mod_self, m), mod_flops.get(m, 0.0), mod_bytes.get(m, 0.0))
        for m in module_types)
    # as the profiler names and times them (CPU: its own cost per event included)
    aten = _named(profiled_calls, lambda c: [(c.name, c.time_s)])
    kernels = _named(profiled_calls, lambda c: c.kernels)
    return PhaseMeasurement(
        phase=run.phase.name, shape=dict(run.phase.shape), timing=run.timing,
        profiled_step_s=profiled, ops_time_s=statistics.median(totals) if totals else 0.0,
        roles=roles, modules=modules, aten_ops=aten, kernels=kernels,
        flop_total=float(sum(run.flop_table.get("Global", {}).values())),
        wall=run.wall, clock=clock)


def _module_flops(table: Mapping[str, Mapping[str, int]]) -> dict[str, float]:
    """FlopCounterMode names modules ``LlamaForCausalLM.model.layers.0``: drop the root."""
    out: dict[str, float] = {}
    for name, ops in table.items():
        if name == "Global":
            continue
        path = name.partition(".")[2]
        out[path] = out.get(path, 0.0) + float(sum(ops.values()))
    return out
