"""perfscope profile: the main job.

Two branches share the command:
- the default (analytic + local measurement -> HTML roofline report):
  perfscope.cli.profile_report.run (library: perfscope.report)
- ``--torch-model`` / ``--module``: a real PyTorch model run under torch.profiler and
  FlopCounterMode, joined to the analytic graph: perfscope.cli.profile_torch.run
  (library: perfscope.measure.torchprof)

This module only parses and dispatches; each branch takes a ProfileArgs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer


@dataclass(frozen=True)
class ProfileArgs:
    """Everything the command line gave, for either branch."""

    model: str
    hw: str  # one name/path, or several separated by commas
    fmt: str | None  # None: the branch's default
    output: Path | None
    measure: bool
    # --torch-model / --module branch
    torch_model: bool = False
    module: str | None = None  # "pkg.mod:factory"
    layers: int | None = None
    device: str | None = None
    trace: Path | None = None
    batch: int = 1
    seq_len: int = 128
    context_len: int | None = None  # decode: tokens cached (None: seq_len)
    phases: str = "prefill,decode"
    dtype: str | None = None  # None: bf16 on CUDA, fp32 on CPU
    attn_impl: str = "sdpa"
    warmup: int = 2
    repeat: int = 5
    threads: int | None = None  # CPU: torch threads
    calibration: Path | None = None  # apply this perfscope.calibration/1 file
    calibration_out: Path | None = None  # fit one from this run and write it here
    hw_given: bool = False  # --hw was on the command line (the torch branch then predicts
    # for it instead of the profiled device's measured ceilings)


def profile_cmd(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", "-m", help="Built-in model name or "
                                                             "config.json path.")] = "llama-3.1-8b",
    hw: Annotated[str, typer.Option("--hw", help="Device name(s) or spec .toml path(s), "
                                                 "comma-separated.")] = "h100-sxm",
    fmt: Annotated[str | None, typer.Option("--format", "-f", help="html (report) | table | "
                                                                     "json | csv")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here "
                                                                       "(atomically).")] = None,
    measure: Annotated[bool, typer.Option("--measure/--no-measure", help="Also measure this "
                                                                          "machine.")] = True,
    torch_model: Annotated[bool, typer.Option("--torch-model", help="Profile the model built "
                                                                     "with transformers (random "
                                                                     "weights).")] = False,
    module: Annotated[str | None, typer.Option("--module", help="Profile your own nn.Module: "
                                                                 "pkg.mod:factory")] = None,
    layers: Annotated[int | None, typer.Option("--layers", help="Build only this many "
                                                                 "layers.")] = None,
    device: Annotated[str | None, typer.Option("--device", help="cpu | cuda | cuda:N")] = None,
    trace: Annotated[Path | None, typer.Option("--trace", help="Chrome trace file "
                                                               "(torch branch).")] = None,
    batch: Annotated[int, typer.Option("--batch", help="Torch branch: sequences.")] = 1,
    seq_len: Annotated[int, typer.Option("--seq-len", help="Torch branch: prompt "
                                                           "tokens.")] = 128,
    context_len: Annotated[int | None, typer.Option(
        "--context-len", help="Torch branch: tokens cached before the decode step "
                              "(default: --seq-len).")] = None,
    phases: Annotated[str, typer.Option("--phases", help="Torch branch: prefill, decode "
                                                         "or both.")] = "prefill,decode",
    dtype: Annotated[str | None, typer.Option("--dtype", help="Torch branch: fp32 | bf16 | "
                                                              "fp16.")] = None,
    attn_impl: Annotated[str, typer.Option("--attn-impl", help="Torch branch: sdpa | "
                                                               "eager.")] = "sdpa",
    warmup: Annotated[int, typer.Option("--warmup", help="Torch branch: untimed "
                                                         "steps.")] = 2,
    repeat: Annotated[int, typer.Option("--repeat", help="Torch branch: timed and "
                                                         "profiled steps.")] = 5,
    threads: Annotated[int | None, typer.Option("--threads", help="Torch branch, CPU: "
                                                                  "torch threads.")] = None,
    calibration: Annotated[Path | None, typer.Option(
        "--calibration", help="Torch branch: apply this calibration file.")] = None,
    calibration_out: Annotated[Path | None, typer.Option(
        "--calibration-out", help="Torch branch: fit a calibration, write it here.")] = None,
) -> None:
    """The main job: a model on one or more GPUs, both phases, a batch sweep, measured
    points of this machine beside the predictions, in one HTML report."""
    args = ProfileArgs(model=model, hw=hw, fmt=fmt, output=output, measure=measure,
                       torch_model=torch_model, module=module, layers=layers, device=device,
                       trace=trace, batch=batch, seq_len=seq_len, context_len=context_len,
                       phases=phases, dtype=dtype, attn_impl=attn_impl, warmup=warmup,
                       repeat=repeat, threads=threads, calibration=calibration,
                       calibration_out=calibration_out, hw_given=_given(ctx, "hw"))
    if torch_model or module:
        from perfscope.cli.profile_torch import run as run_torch

        run_torch(args)
    else:
        from perfscope.cli.profile_report import run as run_report

        run_report(args)


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether a flag was given on the command line (not left at its default)."""
    src = ctx.get_parameter_source(name)
    return src is not None and src.name == "COMMANDLINE"
