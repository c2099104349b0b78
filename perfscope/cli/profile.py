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


def profile_cmd(
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
) -> None:
    """The main job: a model on one or more GPUs, both phases, a batch sweep, measured
    points of this machine beside the predictions, in one HTML report."""
    args = ProfileArgs(model=model, hw=hw, fmt=fmt, output=output, measure=measure,
                       torch_model=torch_model, module=module, layers=layers, device=device,
                       trace=trace)
    if torch_model or module:
        from perfscope.cli.profile_torch import run as run_torch

        run_torch(args)
    else:
        from perfscope.cli.profile_report import run as run_report

        run_report(args)
