"""A bench session: measure this machine's sections and return one result.

``run_bench`` is the library entry point (``perfscope bench`` and ``perfscope profile`` call
it): it picks the device, runs the sections asked for in a fixed order (ceilings, ops,
kernels, comm), turns what the machine lacks into skipped lines and anything else into an
error, and returns a ``BenchResult`` whose ``to_json()`` is the ``perfscope.bench/1``
document. Progress goes to stderr (``progress``); nothing is written to stdout or files here
except the spec ``CeilingsOptions.save`` asks for.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from perfscope.errors import InputError, MeasureError
from perfscope.measure.progress import Reporter
from perfscope.measure.report import bench_document, clean, csv_rows, point_dict
from perfscope.measure.types import MeasuredPoint

SECTIONS = ("ceilings", "ops", "kernels", "comm")
DEFAULT_MODEL = "qwen2.5-0.5b"


@dataclass(frozen=True)
class CeilingsOptions:
    dtypes: Sequence[str] | None = None  # GEMM dtypes (None: all the device has)
    save: str | None = None  # write the measured spec: a .toml path, or "local"
    sweep: bool | None = None  # cache plateau sweep (None: GPU, or CPU outside quick)
    rounds: int | None = None  # repeated measurements of each ceiling (None: ceilings.ROUNDS)


@dataclass(frozen=True)
class OpsOptions:
    phases: Sequence[str] = ("prefill", "decode")
    batch: int = 1
    seq_len: int = 512
    context_len: int = 512
    ceiling: str = "empirical"  # the roof predictions use: spec | empirical
    only: Sequence[str] | None = None  # only these op names
    sweep: bool = True  # decode GEMMs over batch sizes too
    dtypes: Mapping[str, str | None] = field(default_factory=dict)  # weight/act/kv_dtype
    attention: str = "flash"  # flash | unfused (eager: scores, softmax, values)


@dataclass(frozen=True)
class CommOptions:
    world_size: int = 2
    backend: str | None = None
    link: str | None = None  # interconnect spec to compare busbw with
    sizes: Sequence[int] | None = None  # message sizes in bytes (None: the quick/full set)


@dataclass
class BenchResult:
    """What a bench session measured.

    ``local_hw``: the HardwareSpec measured on this machine (this run's ceilings, the saved
    local spec, or quick ceilings measured for the ops), or None. ``points``: the ops
    section's MeasuredPoints, each named like its analytic Op, with ``predicted_time_s`` and
    achieved rates. ``skipped``: (section, reason) pairs. ``device``: the description dict.
    """

    device: dict[str, Any]
    device_name: str  # "cpu" | "cuda:N"
    quick: bool
    threads: int | None
    argv: list[str]
    started: float
    finished: float = 0.0
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    local_hw: Any = None
    ceilings: Any = None  # CeilingsResult of the ceilings section
    points: list[MeasuredPoint] = field(default_factory=list)
    kernels: list[MeasuredPoint] = field(default_factory=list)
    comm: list[dict[str, Any]] = field(default_factory=list)
    libraries: dict[str, str] = field(default_factory=dict)

    @property
    def ran(self) -> int:
        """Measurements taken (ceiling points, op points, kernel points, collectives)."""
        return len(self.ceilings.points if self.ceilings else []) + len(self.points) + \
            len(self.kernels) + len(self.comm)

    def to_json(self) -> dict[str, Any]:
        """The perfscope.bench/1 document."""
        return bench_document(argv=self.argv, quick=self.quick, device=self.device,
                              libraries=self.libraries, threads=self.threads,
                              sections=self.sections, skipped=self.skipped,
                              started=self.started, finished=self.finished or time.time())

    def csv_rows(self) -> list[dict[str, Any]]:
        return csv_rows(self.to_json())


class _Session:
    def __init__(self, result: BenchResult, reporter: Reporter):
        self.r, self.rep = result, reporter

    @property
    def device(self) -> str:
        return self.r.device_name

    def skip(self, section: str, message: str) -> None:
        self.r.skipped.append((section, message))
        self.rep.log(f"{section}: {message}")


def run_bench(sections: Sequence[str] = SECTIONS, *, quick: bool = True,
              device: str | None = None, threads: int | None = None,
              model: str = DEFAULT_MODEL, hw: str | None = None,
              progress: bool | None = None, ceilings: CeilingsOptions | None = None,
              ops: OpsOptions | None = None, comm: CommOptions | None = None,
              argv: Sequence[str] | None = None, quiet: bool = False) -> BenchResult:
    """Measure ``sections`` of this machine and return the result.

    ``device``: cpu, cuda or cuda:N (None: cuda when present). ``threads``: CPU torch threads
    (None: one per usable core). ``model``: the model whose ops the ops section times.
    ``hw``: the roofline the ops are predicted on (None or "local": this machine's measured
    spec; else a device name or spec path). ``progress``: rich bars on stderr (None: when
    stderr is a terminal); one line per section either way, unless ``quiet``.
    Skips (out of memory, a dtype the device lacks, a missing optional dependency, an op
    without a faithful kernel) are in ``skipped``; any other failure raises a MeasureError.
    """
    bad = [s for s in sections if s not in SECTIONS]
    if bad or not sections:
        raise InputError(f"bench sections {list(bad) or '(none)'}: use some of "
                         f"{', '.join(SECTIONS)}")
    if ceilings and ceilings.save:
        from perfscope.measure.hwspec import check_save_path

        check_save_path(ceilings.save)  # a bad --save fails before a minute of measuring
    if comm and comm.link:
        from perfscope.specs.loading import load_link

        load_link(comm.link)
    rep = Reporter(progress, quiet=quiet)
    s = _Session(_start(device, threads, quick, argv), rep)
    _warn_if_busy(s)
    for name in SECTIONS:  # a fixed order: the ops use the ceilings measured first
        if name not in sections:
            continue
        t0 = time.time()
        with rep.section(name) as step:
            if name == "ceilings":
                _ceilings(s, ceilings or CeilingsOptions(), step)
            elif name == "ops":
                _ops(s, model, hw, ops or OpsOptions(), step)
            elif name == "kernels":
                _kernels(s, step)
            else:
                _comm(s, comm or CommOptions(), step)
        if name in s.r.sections:
            s.r.sections[name]["duration_s"] = time.time() - t0
    s.r.finished = time.time()
    return s.r


def _start(device: str | None, threads: int | None, quick: bool,
           argv: Sequence[str] | None) -> BenchResult:
    try:
        import torch
    except ImportError:
        raise MeasureError("perfscope bench needs torch: pip install 'perfscope[measure]' "
                           "(after installing the torch build for this machine)") from None
    from perfscope.measure.device import describe_device, library_versions
    from perfscope.measure.timing import check_device, set_cpu_threads

    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    check_device(dev)
    if dev.startswith("cuda"):
        from perfscope.measure.cuda_timing import select_device

        dev = select_device(dev)
        if threads is not None:
            raise InputError("--threads sets CPU threads; it does not apply to --device cuda")
        n_threads = None
    else:
        n_threads = set_cpu_threads(threads)
    return BenchResult(device=describe_device(dev), device_name=dev, quick=quick,
                       threads=n_threads, argv=list(argv if argv is not None else sys.argv),
                       started=time.time(), libraries=library_versions())


def _warn_if_busy(s: _Session) -> None:
    if s.device != "cpu" or not hasattr(os, "getloadavg"):
        return
    load = os.getloadavg()[0]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    if load > 0.75 * cores:
        s.rep.log(f"load average {load:.2f} on {cores} cores: other processes share the CPU, "
                  "so timings will be noisy (see each point's cv and each ceiling's rounds)")


# ---- sections ---------------------------------------------------------------------------

def _ceilings(s: _Session, o: CeilingsOptions, step: Any) -> None:
    from perfscope.measure.ceilings import ROUNDS, measure_ceilings
    from perfscope.measure.hwspec import hw_toml, parse_spec_text, save_hw

    res = measure_ceilings(s.device, dtypes=list(o.dtypes) if o.dtypes else None,
                           quick=s.r.quick, sweep=o.sweep, rounds=o.rounds or ROUNDS,
                           progress=step)
    s.r.ceilings = res
    for line in res.skipped:
        s.skip("ceilings", line)
    saved = None
    if res.gemm() and res.bandwidth() is not None:
        s.r.local_hw = parse_spec_text(hw_toml(res, s.r.device), "<measured in this run>")
        if o.save:
            saved = str(save_hw(o.save, res, s.r.device))
            s.rep.log(f"saved the measured spec to {saved}")
    elif o.save:
        raise MeasureError("--save: no spec to write: a spec needs a GEMM and a bandwidth "
                           "ceiling, and one of them did not run (see the skipped lines)")
    s.r.sections["ceilings"] = {"values": [c.to_dict() for c in res.ceilings],
                                "points": [point_dict(p) for p in res.points],
                                "rounds": o.rounds or ROUNDS, "saved_spec": saved}


def local_hw(s: _Session, step: Any = None) -> Any:
    """This machine's measured spec: this run's, else the saved one, else measured now
    (quick ceilings, shown on ``step``)."""
    if s.r.local_hw is not None:
        return s.r.local_hw
    from perfscope.measure.hwspec import hw_toml, load_local_spec, parse_spec_text
    from perfscope.specs.loading import local_spec_path

    hw = load_local_spec()
    if hw is not None:
        s.rep.log(f"ops: the local roof is the saved spec {local_spec_path()}")
        s.r.local_hw = hw
        return hw
    s.rep.log("ops: no saved local spec (perfscope bench ceilings --save local); measuring "
              "quick ceilings first")
    from perfscope.measure.ceilings import measure_ceilings

    res = measure_ceilings(s.device, quick=True, sweep=False, progress=None if step is None
                           else (lambda label, i, n: step(f"local roof: {label}", i, n)))
    s.r.local_hw = parse_spec_text(hw_toml(res, s.r.device), "<measured in this run>")
    return s.r.local_hw


def _rates(hw: Any) -> tuple[float, float]:
    f = max((hw.tensor_flops(d, "empirical")[0] for d in hw.dtypes()), default=5e10)
    return f, hw.memory_bandwidth("empirical")[0]


def _ops(s: _Session, model: str, hw_name: str | None, o: OpsOptions, step: Any) -> None:
    from perfscope.measure.ops import bench_model_ops
    from perfscope.specs.loading import LOCAL_NAME, load_hw

    if o.ceiling not in ("spec", "empirical"):
        raise InputError(f"--ceiling {o.ceiling!r}: use spec or empirical")
    local = hw_name in (None, LOCAL_NAME)
    here = local_hw(s, step) if local or s.device == "cpu" else None
    hw = here if local else load_hw(str(hw_name))
    rates = _rates(here) if here is not None else (1e15, 3e12)  # GPU: full shapes anyway
    run = bench_model_ops(model, hw, device=s.device, phases=list(o.phases), batch=o.batch,
                          seq_len=o.seq_len, context_len=o.context_len, quick=s.r.quick,
                          rates=rates, ceiling=o.ceiling, dtypes=dict(o.dtypes),
                          only=list(o.only) if o.only else None, sweep=o.sweep,
                          measured_roof=local, attention=o.attention, progress=step)
    for line in run.skipped:
        s.skip("ops", line)
    if "dtype_note" in run.meta:
        s.rep.log(f"ops: {run.meta['dtype_note']}")
    if "roof_note" in run.meta:
        s.rep.log(f"ops: {run.meta['roof_note']}")
    s.r.points = run.points
    s.r.sections["ops"] = {**run.meta, "points": [point_dict(p) for p in run.points]}


def _kernels(s: _Session, step: Any) -> None:
    from perfscope.measure.kernels.bench import kernel_skips, run_kernel_benchmarks
    from perfscope.measure.skips import reason_or_raise

    for line in kernel_skips(s.device):
        s.skip("kernels", line)
    try:
        pts = run_kernel_benchmarks(s.device, s.r.quick, progress=step)
    except Exception as e:
        s.skip("kernels", f"reference kernels: {reason_or_raise('reference kernels', e)}; "
                          "skipped")
        return
    s.r.kernels = pts
    s.r.sections["kernels"] = {"points": [point_dict(p) for p in pts]}


def against_link(results: list[dict[str, Any]], link_name: str) -> list[dict[str, Any]]:
    """Each result beside the ceiling of an interconnect spec: the link's per-direction
    bandwidth (what ring busbw can reach) and its published achieved busbw where known."""
    from perfscope.specs.loading import load_link

    link = load_link(link_name)
    out = []
    for r in results:
        bus = r.get("busbw_bytes_s") or 0.0
        out.append(r | {"link": link.name,
                        "link_bandwidth_bytes_s": link.bandwidth_bytes_s,
                        "link_empirical_busbw_bytes_s": link.empirical_busbw_bytes_s,
                        "fraction_of_link": bus / link.bandwidth_bytes_s})
    return out


def _comm(s: _Session, o: CommOptions, step: Any) -> None:
    from perfscope.measure.comm import choose_backend, run_comm_benchmarks, under_torchrun
    from perfscope.measure.skips import reason_or_raise

    ranks = int(os.environ["WORLD_SIZE"]) if under_torchrun() else o.world_size
    backend, note = choose_backend(o.backend, ranks)
    try:
        res = run_comm_benchmarks(s.r.quick, o.world_size, o.backend,
                                  sizes=list(o.sizes) if o.sizes else None, progress=step)
    except Exception as e:
        s.skip("comm", f"collectives: {reason_or_raise('collectives', e)}; skipped")
        return
    if note:
        s.rep.log(f"comm: {note}")
    if o.link:
        res = against_link(res, o.link)
    s.r.comm = res
    ran_on = res[0].get("device", "cpu") if res else ("cuda" if backend == "nccl" else "cpu")
    sec: dict[str, Any] = {"backend": res[0]["backend"] if res else backend,
                           "device": ran_on, "ranks": res[0]["ranks"] if res else ranks,
                           "results": clean(res)}
    if note:
        sec["note"] = note
    s.r.sections["comm"] = sec
