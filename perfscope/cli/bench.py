"""perfscope bench: measured ceilings, op microbenchmarks, reference kernels, collectives.

Parses, calls ``perfscope.measure.session.run_bench``, renders. Data goes to stdout (or
--output), progress and one line per skipped benchmark to stderr. Exit status: 0 when at
least one benchmark ran (skips are listed in the output's ``skipped``), 1 when nothing ran,
2 for bad input or a failed measurement (a wrong result, a file that cannot be written).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
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
                                               help="Small sweeps, short budgets (bare bench: "
                                                    "under a minute on 2 idle CPU cores).")]
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
                                                  help="Progress bars on stderr (default: "
                                                       "on a terminal).")]
FILE_WIDTH = 120  # columns of a table written with -o


@dataclass(frozen=True)
class Opts:
    quick: bool = False
    fmt: str = "table"
    device: str | None = None
    threads: int | None = None
    output: Path | None = None
    progress: bool | None = None


def _merge(ctx: typer.Context, quick: bool | None, fmt: str | None, device: str | None,
           threads: int | None, output: Path | None, progress: bool | None) -> Opts:
    """A subcommand's options over the ones given before it (``bench --quick ceilings``)."""
    base: Opts = ctx.obj if isinstance(ctx.obj, Opts) else Opts()
    return Opts(quick=base.quick if quick is None else quick,
                fmt=check_format(fmt if fmt is not None else base.fmt),
                device=device if device is not None else base.device,
                threads=threads if threads is not None else base.threads,
                output=output if output is not None else base.output,
                progress=base.progress if progress is None else progress)


def _run(opts: Opts, sections: tuple[str, ...], **kw: Any) -> Any:
    from perfscope.measure.session import run_bench

    return run_bench(sections, quick=opts.quick, device=opts.device, threads=opts.threads,
                     progress=opts.progress, argv=list(sys.argv), **kw)


def render(result: Any, opts: Opts) -> None:
    """The result in --format, to stdout or --output; exit 1 when nothing ran."""
    from perfscope.errors import MeasureError

    doc = result.to_json()
    if opts.fmt == "json":
        emit(to_json_text(doc), opts.output)
    elif opts.fmt == "csv":
        emit(to_csv_text(result.csv_rows()), opts.output)
    elif opts.output is not None:
        from perfscope.report.bench_tables import bench_text

        emit(bench_text(doc, FILE_WIDTH), opts.output)
    else:
        from rich.console import Console

        from perfscope.report.bench_tables import bench_renderables

        con = Console(highlight=False)  # the terminal's width (COLUMNS in a pipe, else 80)
        for r in bench_renderables(doc):
            con.print(r)
    if result.ran == 0:
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
    model: Annotated[str | None, typer.Option("--model", "-m",
                                              help="Model for the op benchmarks "
                                                   "(default: qwen2.5-0.5b).")] = None,
    world_size: Annotated[int, typer.Option(help="Ranks for the collectives.")] = 2,
) -> None:
    """Ceilings, then the ops of --model on the measured local roofline, kernels, comm."""
    from perfscope.measure.session import DEFAULT_MODEL, CommOptions

    opts = _merge(ctx, quick, fmt, device, threads, output, progress)
    ctx.obj = opts
    if ctx.invoked_subcommand is not None:
        if model is not None:
            from perfscope.errors import InputError

            raise InputError("--model before a subcommand applies to the bare `perfscope "
                             "bench`; put it after the subcommand (bench ops --model ...)")
        return
    render(_run(opts, ("ceilings", "ops", "kernels", "comm"), model=model or DEFAULT_MODEL,
                comm=CommOptions(world_size=world_size)), opts)


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
    rounds: Annotated[int | None, typer.Option(help="Measure each ceiling this many times "
                                                    "(default 3); the roof is the best.")
                      ] = None,
    quick: QuickOpt = None, fmt: FormatOpt = None, device: DeviceOpt = None,
    threads: ThreadsOpt = None, output: OutputOpt = None, progress: ProgressOpt = None,
) -> None:
    """Peak GEMM FLOP/s per dtype, copy/triad bandwidth, L2 plateau; --save writes a spec."""
    from perfscope.errors import InputError
    from perfscope.measure.session import CeilingsOptions

    if rounds is not None and rounds < 1:
        raise InputError(f"--rounds {rounds}: must be >= 1")
    opts = _merge(ctx, quick, fmt, device, threads, output, progress)
    render(_run(opts, ("ceilings",), ceilings=CeilingsOptions(
        dtypes=_csv_list(dtype), save=save, sweep=sweep, rounds=rounds)), opts)


@bench_app.command("ops")
def ops_cmd(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", "-m", help="Built-in model or config.json."
                                       )] = "qwen2.5-0.5b",
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
    attention: Annotated[str, typer.Option(help="flash | unfused (eager scores, softmax, "
                                                "values)")] = "flash",
    plot: PlotOpt = None,
    quick: QuickOpt = None, fmt: FormatOpt = None, device: DeviceOpt = None,
    threads: ThreadsOpt = None, output: OutputOpt = None, progress: ProgressOpt = None,
) -> None:
    """Time every distinct op shape of --model's analytic graph beside its prediction."""
    from perfscope.errors import InputError
    from perfscope.measure.session import OpsOptions

    phases = {"both": ("prefill", "decode"), "prefill": ("prefill",), "decode": ("decode",)}
    if phase not in phases:
        raise InputError(f"--phase {phase!r}: use prefill, decode or both")
    if ceiling not in ("spec", "empirical"):
        raise InputError(f"--ceiling {ceiling!r}: use spec or empirical")
    if attention not in ("flash", "unfused"):
        raise InputError(f"--attention {attention!r}: use flash or unfused")
    if plot is not None:
        _check_plot(plot)
    if hw != "local":
        from perfscope.specs.loading import load_hw

        load_hw(hw)  # a bad name fails before anything runs
    opts = _merge(ctx, quick, fmt, device, threads, output, progress)
    result = _run(opts, ("ops",), model=model, hw=hw, ops=OpsOptions(
        phases=phases[phase], batch=batch, seq_len=seq_len, context_len=context_len,
        ceiling=ceiling, only=_csv_list(op), sweep=sweep, attention=attention,
        dtypes={"weight_dtype": weight_dtype, "act_dtype": act_dtype, "kv_dtype": kv_dtype}))
    if plot is not None and result.points:
        plot_ops(result, hw, ceiling, plot)
    render(result, opts)


@bench_app.command("kernels")
def kernels_cmd(
    ctx: typer.Context,
    quick: QuickOpt = None, fmt: FormatOpt = None, device: DeviceOpt = None,
    threads: ThreadsOpt = None, output: OutputOpt = None, progress: ProgressOpt = None,
) -> None:
    """Reference kernels (fused add+RMSNorm, paged decode attention) against torch."""
    opts = _merge(ctx, quick, fmt, device, threads, output, progress)
    render(_run(opts, ("kernels",)), opts)


@bench_app.command("comm")
def comm_cmd(
    ctx: typer.Context,
    world_size: Annotated[int, typer.Option(help="Ranks (processes) in the group.")] = 2,
    backend: Annotated[str | None, typer.Option(help="nccl | gloo (default: nccl with a "
                                                     "GPU per rank, else gloo)")] = None,
    link: Annotated[str | None, typer.Option(help="Interconnect spec to compare with "
                                                  "(nvlink4, pcie5-x16, ... or a .toml)")
                    ] = None,
    plot: PlotOpt = None,
    quick: QuickOpt = None, fmt: FormatOpt = None, device: DeviceOpt = None,
    threads: ThreadsOpt = None, output: OutputOpt = None, progress: ProgressOpt = None,
) -> None:
    """Collectives (all-reduce, all-gather, reduce-scatter): size, time, algbw, busbw."""
    from perfscope.measure.session import CommOptions

    if plot is not None:
        _check_plot(plot)
    opts = _merge(ctx, quick, fmt, device, threads, output, progress)
    result = _run(opts, ("comm",), comm=CommOptions(world_size=world_size, backend=backend,
                                                    link=link))
    if plot is not None and result.comm:
        plot_comm(result, link, plot)
    render(result, opts)


# ---- figures ------------------------------------------------------------------------------

def _check_plot(path: Path) -> None:
    from perfscope.errors import InputError

    if path.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise InputError(f"--plot {path}: use a .png, .svg or .pdf file name")
    if not path.parent.is_dir():
        raise InputError(f"--plot {path}: the folder {path.parent} does not exist")


def plot_ops(result: Any, hw_name: str, ceiling: str, path: Path) -> None:
    """Measured (filled) and predicted (hollow) points of the ops on the roofline used."""
    from perfscope.report.figures import hw_ceilings, roofline_figure, save_figure
    from perfscope.specs.loading import LOCAL_NAME, load_hw

    sec = result.sections["ops"]
    hw = result.local_hw if hw_name == LOCAL_NAME else load_hw(hw_name)
    pts: list[dict[str, Any]] = []
    for p in result.points:
        base = {"name": p.name, "kind": p.kind, "intensity": p.intensity}
        pts.append(base | {"flops_per_s": p.achieved_flops_per_s, "source": "measured"})
        if p.predicted_time_s:
            pts.append(base | {"flops_per_s": p.flops / p.predicted_time_s,
                               "source": "predicted"})
    comp, bws = hw_ceilings(hw, [p.dtype for p in result.points], ceiling)
    title = f"{sec.get('model', '')} ops on {hw.display_name} ({result.device_name})"
    save_figure(roofline_figure(comp, bws, pts, title), path)
    log(f"perfscope bench: wrote {path}")


def plot_comm(result: Any, link_name: str | None, path: Path) -> None:
    """Bus bandwidth against message size, with the link's spec and measured ceilings."""
    from perfscope.report.figures import comm_figure, save_figure

    ceilings: dict[str, float] = {}
    if link_name:
        from perfscope.specs.loading import load_link

        link = load_link(link_name)
        ceilings[f"{link.name} spec"] = link.bandwidth_bytes_s
        if link.empirical_busbw_bytes_s:
            ceilings[f"{link.name} published busbw"] = link.empirical_busbw_bytes_s
    sec = result.sections["comm"]
    title = f"collectives ({sec['backend']} between {sec['ranks']} {sec['device']} ranks)"
    save_figure(comm_figure(result.comm, ceilings, title), path)
    log(f"perfscope bench: wrote {path}")
