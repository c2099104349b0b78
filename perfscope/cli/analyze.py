"""perfscope analyze: one step of a model on a device, op by op, on the roofline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from perfscope.cli.output import check_format, emit, to_csv_text, to_json_text
from perfscope.specs.scenario import DEFAULT_SEQ_LEN, Scenario

DEFAULT = Scenario()  # the library's defaults are the CLI's

ModelOpt = Annotated[str, typer.Option("--model", "-m",
                                       help="Built-in model name or config.json path.")]
HwOpt = Annotated[str, typer.Option("--hw", help="Built-in device name or spec .toml path.")]
FormatOpt = Annotated[str, typer.Option("--format", "-f", help="table | json | csv")]
OutputOpt = Annotated[Path | None, typer.Option("--output", "-o",
                                                help="Write to this file (atomically).")]


def analyze_cmd(
    ctx: typer.Context,
    scenario_file: Annotated[str | None, typer.Option(
        "--scenario", help="Scenario TOML (built-in name or path) giving model, hw and the "
                           "flags below; flags given on the command line override it.")] = None,
    model: ModelOpt = "llama-3.1-8b",
    hw: HwOpt = "h100-sxm",
    phase: Annotated[str, typer.Option(help="prefill | decode | chunked_prefill")] = DEFAULT.phase,
    batch: Annotated[int, typer.Option(help="Sequences in the batch.")] = DEFAULT.batch,
    seq_len: Annotated[int, typer.Option(help="Prompt tokens (prefill) or new tokens of a "
                                              "chunk; in decode the cached length when "
                                              "--context-len is not given.")] = DEFAULT_SEQ_LEN,
    context_len: Annotated[int | None, typer.Option(help="Tokens already cached (decode, "
                                                         "chunked_prefill).")] = None,
    tp: Annotated[int, typer.Option(help="Tensor-parallel degree.")] = 1,
    pp: Annotated[int, typer.Option(help="Pipeline-parallel degree.")] = 1,
    ep: Annotated[int, typer.Option(help="Expert-parallel degree (divides --tp x "
                                         "--attn-dp).")] = 1,
    attn_dp: Annotated[int, typer.Option(help="Attention data-parallel groups: tp x attn-dp "
                                              "GPUs per stage, MoE experts spread over all of "
                                              "them.")] = 1,
    moe_comm: Annotated[str, typer.Option(help="Under --attn-dp: all_to_all | "
                                               "allgather_reducescatter.")] = DEFAULT.moe_comm,
    weight_dtype: Annotated[str | None, typer.Option(help="bf16 fp16 fp32 fp8 int8 int4 fp4 "
                                                          "(default: the checkpoint's)")] = None,
    act_dtype: Annotated[str | None, typer.Option(help="bf16 fp16 fp32 tf32 fp8 int8 fp4")] = None,
    kv_dtype: Annotated[str | None, typer.Option(help="bf16 fp16 fp32 fp8 int8")] = None,
    group_size: Annotated[int | None, typer.Option(help="Quantization group (int4 default "
                                                        "128).")] = None,
    attention: Annotated[str, typer.Option(help="flash | unfused")] = "flash",
    fused_norm: Annotated[bool, typer.Option("--fused-norm/--unfused-norm",
                                             help="Residual add fused into the norm.")] = True,
    mla_absorb: Annotated[str, typer.Option(help="MLA weight absorption: auto (decode only) "
                                                 "| on | off")] = "auto",
    ceiling: Annotated[str, typer.Option(help="spec | empirical")] = "spec",
    reserve: Annotated[float, typer.Option(help="Fraction of memory kept free.")] = \
        DEFAULT.memory_reserve,
    fmt: FormatOpt = "table",
    output: OutputOpt = None,
    plot: Annotated[Path | None, typer.Option(help="Also draw the ops on the device's "
                                                   "roofline (.png, .svg or .pdf).")] = None,
) -> None:
    """Per-op FLOPs, bytes, roofline time and memory for one prefill or decode step."""
    from perfscope.analysis import analyze
    from perfscope.errors import InputError
    from perfscope.specs.loading import load_hw
    from perfscope.specs.model import load_model
    check_format(fmt)
    absorbs: dict[str, bool | None] = {"auto": None, "on": True, "off": False}
    if mla_absorb not in absorbs:
        raise InputError(f"--mla-absorb {mla_absorb!r}: use auto, on or off")
    flags = dict(phase=phase, batch=batch, seq_len=seq_len, context_len=context_len,
                 weight_dtype=weight_dtype, act_dtype=act_dtype, kv_dtype=kv_dtype,
                 group_size=group_size, tp=tp, pp=pp, ep=ep, attn_dp=attn_dp, moe_comm=moe_comm,
                 attention=attention,
                 fused_norm=fused_norm, mla_absorb=absorbs[mla_absorb], ceiling=ceiling,
                 memory_reserve=reserve)
    if scenario_file is not None:
        from perfscope.specs.scenario_file import load_scenario

        sf = load_scenario(scenario_file)
        given = {k for k in ctx.params if _given(ctx, k)}
        param = {"memory_reserve": "reserve"}
        values = sf.values | {k: v for k, v in flags.items() if param.get(k, k) in given}
        model = model if "model" in given else sf.model
        hw = hw if "hw" in given else sf.hw
    else:
        values = flags
    scenario = Scenario(**values)
    result = analyze(load_model(model), load_hw(hw), scenario)
    if plot is not None:
        from perfscope.report.figures import (
            analysis_points,
            hw_ceilings,
            roofline_figure,
            save_figure,
        )

        comp, bws = hw_ceilings(result.hw, [result.precision.compute, result.precision.act],
                                scenario.ceiling)
        title = (f"{result.model.name} {scenario.phase} batch {scenario.batch} on "
                 f"{result.hw.display_name}")
        save_figure(roofline_figure(comp, bws, analysis_points(result), title), plot)
    if fmt == "json":
        emit(to_json_text(result.to_json()), output)
    elif fmt == "csv":
        emit(to_csv_text(result.to_json()["ops"]), output)
    else:
        from perfscope.report.tables import analysis_table

        analysis_table(result, output)


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether a flag was given on the command line (not left at its default)."""
    src = ctx.get_parameter_source(name)
    return src is not None and src.name == "COMMANDLINE"
