"""perfscope bench: measured ceilings, op microbenchmarks, reference kernels, collectives.

Data goes to stdout (or --output), progress and one line per skipped benchmark to stderr.
Exit status: 0 when at least one benchmark ran (skips are listed in the output's
``skipped``), 1 when nothing ran at all, 2 for a bad flag (before anything runs).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from perfscope.cli.output import check_format, emit, log, to_csv_text, to_json_text

bench_app = typer.Typer(
    help="Measure this machine: GEMM/bandwidth ceilings, a model's ops, kernels, collectives. "
         "Without a subcommand: all of them.",
    no_args_is_help=False, invoke_without_command=True, rich_markup_mode=None,
)

QuickOpt = Annotated[bool | None, typer.Option("--quick/--full",
                                               help="Small sweeps, short budgets (<60 s on "
                                                    "2 CPU cores).")]
FormatOpt = Annotated[str | None, typer.Option("--format", "-f", help="table | json | csv")]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="cpu | cuda | cuda:N "
                                                                "(default: cuda if present)")]
ThreadsOpt = Annotated[int | None, typer.Option("--threads", help="CPU: torch threads "
                                                                  "(default: usable cores).")]
OutputOpt = Annotated[Path | None, typer.Option("--output", "-o", help="Write the data to "
                                                                       "this file.")]
PlotOpt = Annotated[Path | None, typer.Option(help="Also draw the results (.png, .svg or "
                                                   ".pdf).")]
ProgressOpt = Annotated[bool | None, typer.Option("--progress/--no-progress",
                                                  help="Progress bars on stderr.")]
DEFAULT_MODEL = "qwen2.5-0.5b"


@dataclass
class Opts:
    quick: bool = False
    fmt: str = "table"
    device: str | None = None
    threads: int | None = None
    output: Path | None = None
    progress: bool = field(default_factory=lambda: sys.stderr.isatty())


@dataclass
class Session:
    """What one bench command collects: sections of the document and the skipped lines."""

    opts: Opts
    device: str = "cpu"
    threads: int | None = None
    sections: dict[str, Any] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    ran: int = 0
    started: float = field(default_factory=time.time)
    local_hw: Any = None  # HardwareSpec measured in this run (ceilings section)

    def skip(self, section: str, message: str) -> None:
        self.skipped.append((section, message))
        log(f"perfscope bench: {message}")


def _merge(ctx: typer.Context, quick: bool | None, fmt: str | None, device: str | None,
           threads: int | None, output: Path | None, progress: bool | None) -> Opts:
    base: Opts = ctx.obj if isinstance(ctx.obj, Opts) else Opts()
    return Opts(quick=base.quick if quick is None else quick,
                fmt=check_format(fmt if fmt is not None else base.fmt),
                device=device if device is not None else base.device,
                threads=threads if threads is not None else base.threads,
                output=output if output is not None else base.output,
                progress=base.progress if progress is None else progress)


def _start(opts: Opts) -> Session:
    from perfscope.errors import MeasureError
    from perfscope.measure.timing import set_cpu_threads

    try:
        import torch
    except ImportError:
        raise MeasureError("perfscope bench needs torch: pip install 'perfscope[measure]' "
                           "(after installing the torch build for this machine)") from None
    dev = opts.device or ("cuda" if torch.cuda.is_available() else "cpu")
    s = Session(opts, device=dev)
    s.threads = set_cpu_threads(opts.threads) if dev == "cpu" else None
    _warn_if_busy(dev)
    return s


def _warn_if_busy(device: str) -> None:
    import os

    if device != "cpu" or not hasattr(os, "getloadavg"):
        return
    load = os.getloadavg()[0]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    if load > 0.75 * cores:
        log(f"perfscope bench: load average {load:.2f} on {cores} cores: other processes "
            "share the CPU, so timings will be noisy (see each point's cv)")


@contextmanager
def _progress(s: Session, title: str) -> Iterator[Callable[[str, int, int], None]]:
    """A callback (label, done, total) driving a rich progress bar on stderr."""
    if not s.opts.progress:
        yield lambda label, i, n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    con = Console(stderr=True)
    with Progress(TextColumn(f"[bold]{title}[/]"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.description}"), TimeElapsedColumn(), console=con,
                  transient=True) as prog:
        task = prog.add_task("", total=None)

        def cb(label: str, i: int, n: int) -> None:
            prog.update(task, description=label, completed=i, total=n or None)

        yield cb


# ---- sections -----------------------------------------------------------------------------

def run_ceilings(s: Session, dtypes: list[str] | None = None, save: str | None = None,
                 sweep: bool | None = None) -> None:
    from perfscope.measure.ceilings import measure_ceilings
    from perfscope.measure.device import describe_device
    from perfscope.measure.hwspec import hw_toml, parse_spec_text, save_hw
    from perfscope.measure.report import point_dict

    with _progress(s, "ceilings") as cb:
        count = [0]

        def step(label: str) -> None:
            count[0] += 1
            cb(label, count[0], 0)

        res = measure_ceilings(s.device, dtypes=dtypes, quick=s.opts.quick, sweep=sweep,
                               progress=step)
    for line in res.skipped:
        s.skip("ceilings", line)
    s.ran += len(res.points)
    saved = None
    desc = describe_device(s.device)
    try:
        s.local_hw = parse_spec_text(hw_toml(res, desc), "<measured in this run>")
        if save:
            saved = str(save_hw(save, res, desc))
            log(f"perfscope bench: saved the measured spec to {saved}")
    except Exception as e:  # a spec needs a GEMM and a bandwidth ceiling
        s.skip("ceilings", f"hardware spec: {e}")
    s.sections["ceilings"] = {"values": [c.to_dict() for c in res.ceilings],
                              "points": [_tel(s, point_dict(p)) for p in res.points],
                              "saved_spec": saved}


def _tel(s: Session, d: dict[str, Any]) -> dict[str, Any]:
    """On a GPU, NVML telemetry right after the measurement (clocks, power, throttling)."""
    if s.device.startswith("cuda"):
        from perfscope.measure.device import nvml_telemetry

        idx = int(s.device.split(":")[1]) if ":" in s.device else 0
        tel = nvml_telemetry(idx)
        if tel:
            d.setdefault("extra", {})["telemetry"] = tel
    return d


def _local_hw(s: Session) -> Any:
    """The local device's measured spec: this run's, else the saved one, else measured now."""
    if s.local_hw is not None:
        return s.local_hw
    from perfscope.measure.hwspec import load_local_spec, local_spec_path

    hw = load_local_spec()
    if hw is not None:
        log(f"perfscope bench: --hw local: using the saved spec {local_spec_path()}")
        return hw
    log("perfscope bench: --hw local: no saved spec (perfscope bench ceilings --save local); "
        "measuring quick ceilings first")
    from perfscope.measure.ceilings import measure_ceilings
    from perfscope.measure.device import describe_device
    from perfscope.measure.hwspec import hw_toml, parse_spec_text

    res = measure_ceilings(s.device, quick=True, sweep=False)
    s.local_hw = parse_spec_text(hw_toml(res, describe_device(s.device)), "<measured>")
    return s.local_hw


def _rates(hw: Any) -> tuple[float, float]:
    f = max((hw.tensor_flops(d, "empirical")[0] for d in hw.dtypes()), default=5e10)
    return f, hw.memory_bandwidth("empirical")[0]


def run_ops(s: Session, model: str, hw_name: str, phases: list[str], batch: int, seq_len: int,
            context_len: int, ceiling: str, only: list[str] | None, sweep: bool,
            dtypes: dict[str, str | None]) -> None:
    from perfscope.measure.ops import bench_model_ops
    from perfscope.measure.report import point_dict
    from perfscope.specs.loading import load_hw

    local = _local_hw(s) if hw_name == "local" or s.device == "cpu" else None
    hw = local if hw_name == "local" else load_hw(hw_name)
    rates = _rates(local) if local is not None else (1e15, 3e12)
    with _progress(s, "ops") as cb:
        run = bench_model_ops(model, hw, device=s.device, phases=phases, batch=batch,
                              seq_len=seq_len, context_len=context_len, quick=s.opts.quick,
                              rates=rates, ceiling=ceiling, dtypes=dtypes, only=only,
                              sweep=sweep, progress=cb)
    for line in run.skipped:
        s.skip("ops", line)
    if "dtype_note" in run.meta:
        log(f"perfscope bench: {run.meta['dtype_note']}")
    s.ran += len(run.points)
    s.sections["ops"] = {**run.meta, "points": [_tel(s, point_dict(p)) for p in run.points]}


def plot_ops(s: Session, hw_name: str, ceiling: str, path: Path) -> None:
    """Measured (filled) and predicted (hollow) points of the ops on the roofline used."""
    from perfscope.report.figures import hw_ceilings, roofline_figure, save_figure
    from perfscope.specs.loading import load_hw

    sec = s.sections["ops"]
    hw = _local_hw(s) if hw_name == "local" else load_hw(hw_name)
    pts: list[dict[str, Any]] = []
    for p in sec["points"]:
        base = {"name": p["name"], "kind": p["kind"], "intensity": p["intensity"]}
        pts.append(base | {"flops_per_s": p["achieved_flops_per_s"], "source": "measured"})
        if p.get("predicted_time_s"):
            pts.append(base | {"flops_per_s": p["flops"] / p["predicted_time_s"],
                               "source": "predicted"})
    comp, bws = hw_ceilings(hw, [p["dtype"] for p in sec["points"]], ceiling)
    title = f"{sec.get('model', '')} ops on {hw.display_name} ({s.device})"
    save_figure(roofline_figure(comp, bws, pts, title), path)
    log(f"perfscope bench: wrote {path}")


def plot_comm(s: Session, link_name: str | None, path: Path) -> None:
    """Bus bandwidth against message size, with the link's spec and measured ceilings."""
    from perfscope.report.figures import comm_figure, save_figure

    ceilings: dict[str, float] = {}
    if link_name:
        from perfscope.specs.loading import load_link

        link = load_link(link_name)
        ceilings[f"{link.name} spec"] = link.bandwidth_bytes_s
        if link.empirical_busbw_bytes_s:
            ceilings[f"{link.name} published busbw"] = link.empirical_busbw_bytes_s
    res = s.sections["comm"]["results"]
    backend = res[0].get("backend", "") if res else ""
    save_figure(comm_figure(res, ceilings, f"collectives ({backend}, {s.device})"), path)
    log(f"perfscope bench: wrote {path}")


def _optional(module: str, name: str) -> Callable[..., Any] | None:
    """A function of a module that another part of perfscope provides, or None."""
    import importlib

    try:
        return getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None


def run_kernels(s: Session) -> None:
    from perfscope.measure.report import point_dict

    run_kernel_benchmarks = _optional("perfscope.measure.kernels", "run_kernel_benchmarks") \
        or _optional("perfscope.measure.kernels.bench", "run_kernel_benchmarks")
    if run_kernel_benchmarks is None:
        s.skip("kernels", "reference kernels: perfscope.measure.kernels.run_kernel_benchmarks "
                          "is not available in this build; skipped")
        return
    try:
        pts = run_kernel_benchmarks(s.device, s.opts.quick)
    except Exception as e:
        from perfscope.measure.ceilings import skip_line

        s.skip("kernels", skip_line("reference kernels", e))
        return
    s.ran += len(pts)
    s.sections["kernels"] = {"points": [_tel(s, point_dict(p)) for p in pts]}


def against_link(results: list[dict], link_name: str) -> list[dict]:
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


def run_comm(s: Session, world_size: int, backend: str | None,
             link: str | None = None) -> None:
    run_comm_benchmarks = _optional("perfscope.measure.comm", "run_comm_benchmarks")
    if run_comm_benchmarks is None:
        s.skip("comm", "collectives: perfscope.measure.comm.run_comm_benchmarks is not "
                       "available in this build; skipped")
        return
    try:
        res = run_comm_benchmarks(s.opts.quick, world_size, backend)
    except Exception as e:
        from perfscope.measure.ceilings import skip_line

        s.skip("comm", skip_line("collectives", e))
        return
    if link:
        res = against_link(res, link)
    s.ran += len(res)
    s.sections["comm"] = {"results": res}


# ---- output -------------------------------------------------------------------------------

def timed(s: Session, section: str, run: Callable[[], None]) -> None:
    """Run one section; its wall time lands in the section's ``duration_s``."""
    t0 = time.time()
    run()
    if section in s.sections:
        s.sections[section]["duration_s"] = time.time() - t0


def finish(s: Session) -> None:
    from perfscope.errors import MeasureError
    from perfscope.measure.device import describe_device, library_versions
    from perfscope.measure.report import bench_document, csv_rows

    doc = bench_document(argv=list(sys.argv), quick=s.opts.quick,
                         device=describe_device(s.device), libraries=library_versions(),
                         threads=s.threads, sections=s.sections, skipped=s.skipped,
                         started=s.started, finished=time.time())
    if s.opts.fmt == "json":
        emit(to_json_text(doc), s.opts.output)
    elif s.opts.fmt == "csv":
        emit(to_csv_text(csv_rows(doc)), s.opts.output)
    else:
        from perfscope.cli.bench_tables import render

        render(doc, s.opts.output)
    if s.ran == 0:
        err = MeasureError("no benchmark ran (see the skipped lines above)")
        err.exit_code = 1
        raise err


def _csv_list(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [v.strip() for x in values for v in x.split(",") if v.strip()]


# ---- commands -----------------------------------------------------------------------------

@bench_app.callback(invoke_without_command=True)
def bench_all(
    ctx: typer.Context,
    quick: QuickOpt = None, fmt: FormatOpt = None, device: DeviceOpt = None,
    threads: ThreadsOpt = None, output: OutputOpt = None, progress: ProgressOpt = None,
    model: Annotated[str, typer.Option("--model", "-m",
                                       help="Model for the op benchmarks.")] = DEFAULT_MODEL,
    world_size: Annotated[int, typer.Option(help="Ranks for the collectives.")] = 2,
) -> None:
    """Ceilings, then the ops of --model on the measured local roofline, kernels, comm."""
    opts = _merge(ctx, quick, fmt, device, threads, output, progress)
    ctx.obj = opts
    if ctx.invoked_subcommand is not None:
        return
    s = _start(opts)
    timed(s, "ceilings", lambda: run_ceilings(s))

    def ops() -> None:
        try:
            run_ops(s, model, "local", ["prefill", "decode"], 1, 512, 512, "empirical", None,
                    True, {})
        except Exception as e:
            from perfscope.measure.ceilings import skip_line

            s.skip("ops", skip_line(f"ops of {model}", e))

    timed(s, "ops", ops)
    timed(s, "kernels", lambda: run_kernels(s))
    timed(s, "comm", lambda: run_comm(s, world_size, None))
    finish(s)


@bench_app.command("ceilings")
def ceilings_cmd(
    ctx: typer.Context,
    dtype: Annotated[list[str] | None, typer.Option(
        "--dtype", help="GEMM dtypes (repeat or comma-separate; default: all the device "
                        "has): fp32 tf32 bf16 fp16 fp8 int8")] = None,
    save: Annotated[str | None, typer.Option(
        "--save", help="Write the measured perfscope.hw/1 spec: a .toml path, or 'local' "
                       "for the spec that --hw local reads")] = None,
    sweep: Annotated[bool | None, typer.Option("--sweep/--no-sweep", help="Cache plateau "
                                               "working-set sweep (default: GPU, or CPU "
                                               "outside --quick).")] = None,
    quick: QuickOpt = None, fmt: FormatOpt = None, device: DeviceOpt = None,
    threads: ThreadsOpt = None, output: OutputOpt = None, progress: ProgressOpt = None,
) -> None:
    """Peak GEMM FLOP/s per dtype, copy/triad bandwidth, L2 plateau; --save writes a spec."""
    s = _start(_merge(ctx, quick, fmt, device, threads, output, progress))
    run_ceilings(s, _csv_list(dtype), save, sweep)
    finish(s)


@bench_app.command("ops")
def ops_cmd(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", "-m", help="Built-in model or config.json."
                                       )] = DEFAULT_MODEL,
    hw: Annotated[str, typer.Option("--hw", help="Roofline for the predictions: 'local' "
                                                 "(measured spec of this machine) or a "
                                                 "device name / spec .toml")] = "local",
    phase: Annotated[str, typer.Option(help="prefill | decode | both")] = "both",
    batch: Annotated[int, typer.Option(help="Sequences in the batch.")] = 1,
    seq_len: Annotated[int, typer.Option(help="Prompt tokens (prefill).")] = 512,
    context_len: Annotated[int, typer.Option(help="Cached tokens (decode).")] = 512,
    ceiling: Annotated[str, typer.Option(help="spec | empirical roof for predictions")
                       ] = "empirical",
    op: Annotated[list[str] | None, typer.Option("--op", help="Only these op names (repeat "
                                                               "or comma-separate).")] = None,
    sweep: Annotated[bool, typer.Option("--sweep/--no-sweep", help="Decode GEMMs at batch "
                                        "1..256 too.")] = True,
    weight_dtype: Annotated[str | None, typer.Option(help="bf16 fp16 fp32 fp8 int8")] = None,
    act_dtype: Annotated[str | None, typer.Option(help="bf16 fp16 fp32 fp8 int8")] = None,
    kv_dtype: Annotated[str | None, typer.Option(help="bf16 fp16 fp32 fp8 int8")] = None,
    plot: PlotOpt = None,
    quick: QuickOpt = None, fmt: FormatOpt = None, device: DeviceOpt = None,
    threads: ThreadsOpt = None, output: OutputOpt = None, progress: ProgressOpt = None,
) -> None:
    """Time every distinct op shape of --model's analytic graph beside its prediction."""
    from perfscope.errors import InputError

    phases = {"both": ["prefill", "decode"], "prefill": ["prefill"], "decode": ["decode"]}
    if phase not in phases:
        raise InputError(f"--phase {phase!r}: use prefill, decode or both")
    if ceiling not in ("spec", "empirical"):
        raise InputError(f"--ceiling {ceiling!r}: use spec or empirical")
    s = _start(_merge(ctx, quick, fmt, device, threads, output, progress))
    run_ops(s, model, hw, phases[phase], batch, seq_len, context_len, ceiling, _csv_list(op),
            sweep, {"weight_dtype": weight_dtype, "act_dtype": act_dtype,
                    "kv_dtype": kv_dtype})
    finish(s)
    if plot is not None and "ops" in s.sections:
        plot_ops(s, hw, ceiling, plot)


@bench_app.command("kernels")
def kernels_cmd(
    ctx: typer.Context,
    quick: QuickOpt = None, fmt: FormatOpt = None, device: DeviceOpt = None,
    threads: ThreadsOpt = None, output: OutputOpt = None, progress: ProgressOpt = None,
) -> None:
    """Reference kernels (fused add+RMSNorm, paged decode attention) against torch."""
    s = _start(_merge(ctx, quick, fmt, device, threads, output, progress))
    run_kernels(s)
    finish(s)


@bench_app.command("comm")
def comm_cmd(
    ctx: typer.Context,
    world_size: Annotated[int, typer.Option(help="Ranks (processes) in the group.")] = 2,
    backend: Annotated[str | None, typer.Option(help="nccl | gloo (default: nccl on GPUs)")
                       ] = None,
    link: Annotated[str | None, typer.Option(help="Interconnect spec to compare with "
                                                  "(nvlink4, pcie5-x16, ... or a .toml)")
                    ] = None,
    plot: PlotOpt = None,
    quick: QuickOpt = None, fmt: FormatOpt = None, device: DeviceOpt = None,
    threads: ThreadsOpt = None, output: OutputOpt = None, progress: ProgressOpt = None,
) -> None:
    """Collectives (all-reduce, all-gather, ...) bus bandwidth over message sizes."""
    if link:
        from perfscope.specs.loading import load_link

        load_link(link)  # a bad name fails before anything runs
    s = _start(_merge(ctx, quick, fmt, device, threads, output, progress))
    run_comm(s, world_size, backend, link)
    finish(s)
    if plot is not None and "comm" in s.sections:
        plot_comm(s, link, plot)
