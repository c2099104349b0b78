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
    # both branches: sequences and prompt tokens (each branch has its own defaults:
    # BRANCH_DEFAULTS), CPU threads
    batch: int = 16
    isl: int = 2048
    threads: int | None = None
    # default branch (HTML report): the workload, the sweep, what to measure
    batches: str = "1,2,4,8,16,32,64,128,256,512"
    osl: int = 256
    weight_dtype: str | None = None
    act_dtype: str | None = None
    kv_dtype: str | None = None
    group_size: int | None = None
    tp: int = 1
    pp: int = 1
    ep: int = 1
    attn_dp: int = 1
    attention: str = "flash"
    reserve: float = 0.10
    bench: tuple[Path, ...] = ()  # perfscope.bench/1 JSONs to include (measured elsewhere)
    sections: str = "ceilings,ops"  # what a local measurement runs
    quick: bool = True
    measure_given: bool = False  # --measure/--no-measure given explicitly
    torch_profiles: tuple[Path, ...] = ()  # perfscope.profile/1 documents to include
    # default branch: the serving engine of the predictions, latency targets of the advice
    engine: str = "neutral"
    ttft: float | None = None  # seconds
    tpot: float | None = None  # seconds
    # --torch-model / --module branch: steps, dtype, timing, calibration
    context_len: int | None = None  # decode: tokens cached (None: --isl)
    phases: str = "prefill,decode"
    dtype: str | None = None  # None: bf16 on CUDA, fp32 on CPU
    attn_impl: str = "sdpa"
    warmup: int = 2
    repeat: int = 5
    calibration: Path | None = None  # apply this perfscope.calibration/1 file
    calibration_out: Path | None = None  # fit one from this run and write it here
    hw_given: bool = False  # --hw was typed: the torch branch predicts for it instead of
    # the profiled device's measured ceilings
    lengths_given: bool = True  # --isl or --osl was typed (else the defaults may be fitted
    # into a short context)


# (batch, prompt tokens) when not given: a serving operating point for the report, a small
# real step for the torch branch (it runs the model on this machine)
BRANCH_DEFAULTS = {"report": (16, 2048), "torch": (1, 128)}


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
    batch: Annotated[int | None, typer.Option(
        "--batch", "-b", help="Concurrent requests the summary is for (default 16); torch "
                              "branch: sequences run (default 1).")] = None,
    batches: Annotated[str, typer.Option("--batches", help="Batch sweep (comma-separated)."
                                         )] = "1,2,4,8,16,32,64,128,256,512",
    isl: Annotated[int | None, typer.Option(
        "--isl", "--prompt-len", "--seq-len", help="Prompt tokens per request (default "
                                                   "2048; torch branch: 128).")] = None,
    osl: Annotated[int, typer.Option("--osl", "--output-len", help="Output tokens per "
                                                                   "request.")] = 256,
    weight_dtype: Annotated[str | None, typer.Option(help="bf16 fp16 fp32 fp8 int8 int4")
                            ] = None,
    act_dtype: Annotated[str | None, typer.Option(help="bf16 fp16 fp32 tf32 fp8 int8")] = None,
    kv_dtype: Annotated[str | None, typer.Option(help="bf16 fp16 fp32 fp8 int8")] = None,
    group_size: Annotated[int | None, typer.Option(help="Quantization group (int4 default "
                                                        "128).")] = None,
    tp: Annotated[int, typer.Option(help="Tensor-parallel degree.")] = 1,
    pp: Annotated[int, typer.Option(help="Pipeline-parallel degree.")] = 1,
    ep: Annotated[int, typer.Option(help="Expert-parallel degree (divides --tp x "
                                         "--attn-dp).")] = 1,
    attn_dp: Annotated[int, typer.Option(help="Attention data-parallel groups (MoE).")] = 1,
    attention: Annotated[str, typer.Option(help="flash | unfused")] = "flash",
    reserve: Annotated[float, typer.Option(help="Fraction of memory kept free.")] = 0.10,
    bench: Annotated[list[Path] | None, typer.Option(
        "--bench", help="Include measurements from a `perfscope bench --format json` file "
                        "(e.g. taken on a GPU; repeatable: one device's files, merged); "
                        "skips measuring here unless --measure is given.")] = None,
    sections: Annotated[str, typer.Option("--measure-sections", help="What to measure here: "
                                          "ceilings,ops,kernels,comm,torch (torch: the model, "
                                          "2 layers, under torch.profiler).")] = "ceilings,ops",
    torch_profile: Annotated[list[Path] | None, typer.Option(
        "--torch-profile", help="Include a `perfscope profile --torch-model --format json` "
                                "result (repeatable).")] = None,
    quick: Annotated[bool, typer.Option("--quick/--full", help="Quick measurement (default) "
                                        "or the full sweeps.")] = True,
    threads: Annotated[int | None, typer.Option("--threads", help="CPU: torch threads for "
                                                                  "measuring.")] = None,
    engine: Annotated[str, typer.Option(
        "--engine", help="Serving engine of the TTFT/TPOT predictions: trtllm | vllm | "
                         "sglang | neutral.")] = "neutral",
    ttft: Annotated[float | None, typer.Option(
        "--ttft", help="TTFT target (seconds) for the recommendations.")] = None,
    tpot: Annotated[float | None, typer.Option(
        "--tpot", help="TPOT target (seconds) for the recommendations.")] = None,
    context_len: Annotated[int | None, typer.Option(
        "--context-len", help="Torch branch: tokens cached before the decode step "
                              "(default: --isl).")] = None,
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
    calibration: Annotated[Path | None, typer.Option(
        "--calibration", help="Torch branch: apply this calibration file.")] = None,
    calibration_out: Annotated[Path | None, typer.Option(
        "--calibration-out", help="Torch branch: fit a calibration, write it here.")] = None,
) -> None:
    """The main job: a model on one or more GPUs, both phases, a batch sweep, measured
    points of this machine beside the predictions, in one HTML report."""
    torch_branch = bool(torch_model or module)
    d_batch, d_isl = BRANCH_DEFAULTS["torch" if torch_branch else "report"]
    args = ProfileArgs(model=model, hw=hw, fmt=fmt, output=output, measure=measure,
                       torch_model=torch_model, module=module, layers=layers, device=device,
                       trace=trace, batch=d_batch if batch is None else batch,
                       isl=d_isl if isl is None else isl, threads=threads, batches=batches,
                       osl=osl, weight_dtype=weight_dtype, act_dtype=act_dtype,
                       kv_dtype=kv_dtype, group_size=group_size, tp=tp, pp=pp, ep=ep,
                       attn_dp=attn_dp, attention=attention, reserve=reserve,
                       bench=tuple(bench or ()),
                       sections=sections, quick=quick, measure_given=_given(ctx, "measure"),
                       torch_profiles=tuple(torch_profile or ()),
                       context_len=context_len, phases=phases, dtype=dtype,
                       attn_impl=attn_impl, warmup=warmup, repeat=repeat,
                       calibration=calibration, calibration_out=calibration_out,
                       hw_given=_given(ctx, "hw"), engine=engine, ttft=ttft, tpot=tpot,
                       lengths_given=_given(ctx, "isl") or _given(ctx, "osl"))
    if torch_branch:
        from perfscope.cli.profile_torch import run as run_torch

        run_torch(args)
    else:
        from perfscope.cli.profile_report import run as run_report

        run_report(args)


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether a flag was given on the command line (not left at its default)."""
    src = ctx.get_parameter_source(name)
    return src is not None and src.name == "COMMANDLINE"
