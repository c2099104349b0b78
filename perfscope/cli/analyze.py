"""perfscope analyze: one step of a model on a device, op by op, on the roofline.

Every scenario flag (and --model, --hw) takes a comma-separated list: ``--batch 1,8,64,256
--weight-dtype bf16,fp8`` analyses each combination and prints one row per point
(``perfscope.sweep/1``), so the everyday questions are one command. A single point keeps the
per-op output and ``perfscope.analysis/1``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from perfscope.cli.output import (
    check_format,
    emit,
    log,
    out_width,
    show,
    to_csv_text,
    to_json_text,
)
from perfscope.specs.scenario import DEFAULT_SEQ_LEN, Scenario

DEFAULT = Scenario()  # the library's defaults are the CLI's

ModelOpt = Annotated[str, typer.Option("--model", "-m",
                                       help="Built-in model name or config.json path "
                                            "(comma-separate to compare).")]
HwOpt = Annotated[str, typer.Option("--hw", help="Built-in device name or spec .toml path "
                                                 "(comma-separate to compare).")]
FormatOpt = Annotated[str, typer.Option("--format", "-f", help="table | json | csv")]
OutputOpt = Annotated[Path | None, typer.Option("--output", "-o",
                                                help="Write to this file (atomically).")]
LIST = " Comma-separate values to sweep."


def split_list(text: str | None) -> list[str]:
    if text is None:
        return []
    return [v.strip() for v in str(text).split(",") if v.strip()]


def int_list(flag: str, text: str | int | None) -> list[int] | None:
    """``"1,8,64"`` -> [1, 8, 64]; a bad value is a one-line error naming the flag."""
    from perfscope.errors import InputError

    if text is None:
        return None
    out = []
    for v in split_list(str(text)) or [str(text)]:
        try:
            n = int(v)
        except ValueError:
            n = -1
        if n < (0 if flag == "--context-len" else 1):
            floor = 0 if flag == "--context-len" else 1
            raise InputError(f"{flag} {text!r}: use whole numbers >= {floor}, comma-separated "
                             "(e.g. 1,8,64)")
        out.append(n)
    return out


def str_list(flag: str, text: str | None, allowed: tuple[str, ...] | None = None
             ) -> list[str] | None:
    from perfscope.units import check_dtype

    if text is None:
        return None
    vals = split_list(text)
    if allowed is not None:
        vals = [check_dtype(v, allowed, flag) for v in vals]
    return vals


def analyze_cmd(
    ctx: typer.Context,
    scenario_file: Annotated[str | None, typer.Option(
        "--scenario", help="Scenario TOML (built-in name or path) giving model, hw and the "
                           "flags below; flags given on the command line override it.")] = None,
    model: ModelOpt = "llama-3.1-8b",
    hw: HwOpt = "h100-sxm",
    phase: Annotated[str, typer.Option(help="prefill | decode | chunked_prefill." + LIST)
                     ] = DEFAULT.phase,
    batch: Annotated[str, typer.Option(help="Sequences in the batch." + LIST)
                     ] = str(DEFAULT.batch),
    seq_len: Annotated[str, typer.Option(help="Prompt tokens (prefill) or new tokens of a "
                                              "chunk; in decode the cached length when "
                                              "--context-len is not given." + LIST)
                       ] = str(DEFAULT_SEQ_LEN),
    context_len: Annotated[str | None, typer.Option(help="Tokens already cached (decode, "
                                                         "chunked_prefill)." + LIST)] = None,
    tp: Annotated[str, typer.Option(help="Tensor-parallel degree." + LIST)] = "1",
    pp: Annotated[str, typer.Option(help="Pipeline-parallel degree." + LIST)] = "1",
    ep: Annotated[str, typer.Option(help="Expert-parallel degree (divides --tp x --attn-dp)."
                                         + LIST)] = "1",
    attn_dp: Annotated[str, typer.Option(help="Attention data-parallel groups: tp x attn-dp "
                                              "GPUs per stage, MoE experts spread over all of "
                                              "them." + LIST)] = "1",
    moe_comm: Annotated[str, typer.Option(help="Under --attn-dp: all_to_all | "
                                               "allgather_reducescatter.")] = DEFAULT.moe_comm,
    weight_dtype: Annotated[str | None, typer.Option(help="bf16 fp16 fp32 fp8 int8 int4 fp4 "
                                                          "(default: the checkpoint's)." + LIST)
                            ] = None,
    act_dtype: Annotated[str | None, typer.Option(help="bf16 fp16 fp32 tf32 fp8 int8 fp4."
                                                       + LIST)] = None,
    kv_dtype: Annotated[str | None, typer.Option(help="bf16 fp16 fp32 fp8 int8." + LIST)] = None,
    group_size: Annotated[int | None, typer.Option(help="Quantization group (int4 default "
                                                        "128).")] = None,
    attention: Annotated[str, typer.Option(help="flash | unfused")] = "flash",
    fused_norm: Annotated[bool, typer.Option("--fused-norm/--unfused-norm",
                                             help="Residual add fused into the norm.")] = True,
    mla_absorb: Annotated[str, typer.Option(help="MLA weight absorption: auto (decode only) "
                                                 "| on | off")] = "auto",
    ceiling: Annotated[str, typer.Option(help="spec (upper-bound speed) | empirical "
                                              "(expected)." + LIST)] = DEFAULT.ceiling,
    reserve: Annotated[float, typer.Option(help="Fraction of memory kept free.")] = \
        DEFAULT.memory_reserve,
    fmt: FormatOpt = "table",
    output: OutputOpt = None,
    plot: Annotated[Path | None, typer.Option(help="Also draw the ops on the device's "
                                                   "roofline (.png, .svg or .pdf).")] = None,
    calibration: Annotated[Path | None, typer.Option(
        help="Also give times calibrated by this perfscope.calibration/1 file (perfscope "
             "profile --torch-model --calibration-out FILE).")] = None,
) -> None:
    """Per-op FLOPs, bytes, roofline time and memory for one prefill or decode step; with
    lists (--batch 1,8,64 --weight-dtype bf16,fp8 ...), one row per combination."""
    from perfscope.errors import InputError
    from perfscope.units import ACT_DTYPES, KV_DTYPES, WEIGHT_DTYPES

    check_format(fmt)
    absorbs: dict[str, bool | None] = {"auto": None, "on": True, "off": False}
    if mla_absorb not in absorbs:
        raise InputError(f"--mla-absorb {mla_absorb!r}: use auto, on or off")
    lists: dict[str, list[Any] | None] = {
        "phase": str_list("--phase", phase), "batch": int_list("--batch", batch),
        "seq_len": int_list("--seq-len", seq_len),
        "context_len": int_list("--context-len", context_len),
        "weight_dtype": str_list("--weight-dtype", weight_dtype, WEIGHT_DTYPES),
        "act_dtype": str_list("--act-dtype", act_dtype, ACT_DTYPES),
        "kv_dtype": str_list("--kv-dtype", kv_dtype, KV_DTYPES),
        "tp": int_list("--tp", tp), "pp": int_list("--pp", pp), "ep": int_list("--ep", ep),
        "attn_dp": int_list("--attn-dp", attn_dp), "ceiling": str_list("--ceiling", ceiling)}
    fixed = dict(group_size=group_size, attention=attention, fused_norm=fused_norm,
                 mla_absorb=absorbs[mla_absorb], memory_reserve=reserve, moe_comm=moe_comm)
    models, hws = split_list(model), split_list(hw)
    if scenario_file is not None:
        from perfscope.specs.scenario_file import load_scenario

        sf = load_scenario(scenario_file)
        given = {k for k in ctx.params if _given(ctx, k)}
        param = {"memory_reserve": "reserve"}
        for k, v in sf.values.items():
            if param.get(k, k) in given:
                continue
            if k in lists:
                lists[k] = [v]
            else:
                fixed[k] = v
        models = models if "model" in given else [sf.model]
        hws = hws if "hw" in given else [sf.hw]
    values = {k: v for k, v in lists.items() if v}
    if not models or not hws:
        raise InputError("--model and --hw need at least one name")
    if len(models) > 1 or len(hws) > 1 or any(len(v) > 1 for v in values.values()):
        if plot is not None:
            raise InputError("--plot draws one point; for several use `perfscope roofline "
                             "--hw a,b` or `perfscope profile`")
        if calibration is not None:
            raise InputError("--calibration applies to one point; drop the lists (or run "
                             "one analyze per point)")
        _sweep(models, hws, values, fixed, fmt, output)
        return
    cal = None
    if calibration is not None:
        from perfscope.calibration import load_calibration

        cal = load_calibration(calibration)  # a bad file fails before any work
    _single(models[0], hws[0], {k: v[0] for k, v in values.items()} | fixed, fmt, output, plot,
            cal, calibration,
            lengths_given=_given(ctx, "seq_len") or _given(ctx, "context_len") or
            (scenario_file is not None and bool({"seq_len", "context_len"} & set(sf.values))))


def _single(model: str, hw: str, values: dict[str, Any], fmt: str, output: Path | None,
            plot: Path | None, cal: Any = None, cal_file: Path | None = None, *,
            lengths_given: bool = True) -> None:
    from dataclasses import replace

    from perfscope.analysis import analyze
    from perfscope.specs.loading import load_hw
    from perfscope.specs.model import load_model

    scenario = Scenario(**values)
    m, h = load_model(model), load_hw(hw)
    if not lengths_given and scenario.tokens_after > m.max_position:
        # the default lengths do not fit this model's context (a 2,048-token llava): the
        # longest step that does, said on stderr
        if scenario.phase == "prefill":
            scenario = replace(scenario, seq_len=m.max_position)
        else:
            scenario = replace(scenario, context_len=m.max_position - scenario.new_tokens)
        log(f"perfscope analyze: {m.name} holds {m.max_position:,} tokens; the default "
            "lengths are cut to fit (set --seq-len / --context-len to choose)")
    result = analyze(m, h, scenario)
    doc = None
    if cal is not None:
        from perfscope.calibration import calibrated_json

        doc = calibrated_json(result.to_json(), result, cal, str(cal_file))
    if plot is not None:
        from perfscope.report.figures import analysis_chart, save_figure

        save_figure(analysis_chart([result]), plot)
    if fmt == "json":
        emit(to_json_text(doc or result.to_json()), output)
    elif fmt == "csv":
        from perfscope.report.rows import analysis_csv_rows

        emit(to_csv_text(analysis_csv_rows(result, doc)), output)
    else:
        from dataclasses import replace

        from perfscope.report.tables import analysis_renderables

        other_ceiling = "empirical" if scenario.ceiling == "spec" else "spec"
        other = analyze(m, h, replace(scenario, ceiling=other_ceiling))
        width = out_width(output)
        show(analysis_renderables(result, width, other, doc), output, width)


def _sweep(models: list[str], hws: list[str], values: dict[str, list[Any]],
           fixed: dict[str, Any], fmt: str, output: Path | None) -> None:
    from perfscope.report.sweep import csv_rows, document, run_sweep

    axes = {"model": models, "hardware": hws} | values
    varied = {k: v for k, v in axes.items() if len(v) > 1}
    constant = {k: v[0] for k, v in axes.items() if len(v) == 1}
    rows = run_sweep(axes, fixed)
    if fmt == "json":
        emit(to_json_text(document(varied, constant | fixed, rows)), output)
    elif fmt == "csv":
        emit(to_csv_text(csv_rows(rows)), output)
    else:
        from perfscope.report.tables import sweep_renderables

        width = out_width(output)
        desc = ", ".join(f"{k} {v}" for k, v in constant.items())
        show(sweep_renderables(rows, list(varied), desc, width), output, width)


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether a flag was given on the command line (not left at its default)."""
    src = ctx.get_parameter_source(name)
    return src is not None and src.name == "COMMANDLINE"
