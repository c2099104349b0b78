"""perfscope roofline: one roofline chart to a file (.svg, .png, .pdf via matplotlib; .html,
interactive and self-contained, via plotly). Several --hw draw side by side."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from perfscope.cli.output import log

SUFFIXES = (".svg", ".png", ".pdf", ".html")


def roofline_cmd(
    model: Annotated[str, typer.Option("--model", "-m", help="Built-in model name or "
                                                             "config.json path.")] = "llama-3.1-8b",
    hw: Annotated[str, typer.Option("--hw", help="Device name(s) or spec .toml path(s), "
                                                 "comma-separated: one panel each.")
                  ] = "h100-sxm",
    phase: Annotated[str, typer.Option(help="prefill | decode | both")] = "both",
    batch: Annotated[int, typer.Option(help="Sequences in the batch.")] = 1,
    seq_len: Annotated[int, typer.Option(help="Prompt tokens (prefill).")] = 2048,
    context_len: Annotated[int | None, typer.Option(help="Tokens cached before the decode "
                                                         "step (default: --seq-len).")] = None,
    weight_dtype: Annotated[str | None, typer.Option(help="bf16 fp16 fp32 fp8 int8 int4")
                            ] = None,
    act_dtype: Annotated[str | None, typer.Option(help="bf16 fp16 fp32 tf32 fp8 int8")] = None,
    kv_dtype: Annotated[str | None, typer.Option(help="bf16 fp16 fp32 fp8 int8")] = None,
    tp: Annotated[int, typer.Option(help="Tensor-parallel degree.")] = 1,
    pp: Annotated[int, typer.Option(help="Pipeline-parallel degree.")] = 1,
    ep: Annotated[int, typer.Option(help="Expert-parallel degree.")] = 1,
    ceiling: Annotated[str, typer.Option(help="spec (upper-bound speed) | empirical "
                                              "(expected)")] = "spec",
    out: Annotated[Path | None, typer.Option("--out", "-o", "--output",
                                             help="fig.svg | .png | .pdf | .html (default: "
                                                  "reports/<model>_<hw>_roofline.svg)")
                   ] = None,
) -> None:
    """One roofline chart of a model's ops on one or more devices, written to a file."""
    from dataclasses import replace

    from perfscope.analysis import analyze
    from perfscope.cli.analyze import split_list
    from perfscope.errors import InputError
    from perfscope.io import write_atomic
    from perfscope.specs.loading import load_hw
    from perfscope.specs.model import load_model
    from perfscope.specs.scenario import Scenario

    phases = {"both": ("prefill", "decode"), "prefill": ("prefill",), "decode": ("decode",)}
    if phase not in phases:
        raise InputError(f"--phase {phase!r}: use prefill, decode or both")
    default = out is None
    if out is not None and out.suffix.lower() not in SUFFIXES:
        raise InputError(f"--out {out}: use a .svg, .png, .pdf or .html file name")
    m = load_model(model)
    hws = [load_hw(h) for h in split_list(hw)]
    if not hws:
        raise InputError("--hw: give at least one device")
    if out is None:
        from perfscope.cli.profile_report import _slug

        out = Path("reports") / (f"{_slug(m.name)}_{'+'.join(_slug(h.name) for h in hws)}_"
                                 f"{phase}_roofline.svg")
    elif not out.parent.is_dir():
        raise InputError(f"--out {out}: the folder {out.parent} does not exist; create it "
                         "first or choose another path")
    base = Scenario(batch=batch, weight_dtype=weight_dtype, act_dtype=act_dtype,
                    kv_dtype=kv_dtype, tp=tp, pp=pp, ep=ep, ceiling=ceiling)
    analyses = []
    for h in hws:
        for ph in phases[phase]:
            s = replace(base, phase=ph, seq_len=seq_len if ph == "prefill" else 1,
                        context_len=0 if ph == "prefill" else (context_len or seq_len))
            analyses.append(analyze(m, h, s))
    lengths = ([f"prompt {seq_len}"] if "prefill" in phases[phase] else []) + \
        ([f"context {context_len or seq_len}"] if "decode" in phases[phase] else [])
    title = f"{m.name}, batch {batch}, {', '.join(lengths)}, {ceiling} ceilings"
    if out.suffix.lower() == ".html":
        data = _html(analyses, title).encode("utf-8")
    else:
        from perfscope.report.figures import analysis_chart, figure_bytes

        fig = analysis_chart(analyses, title)
        data = figure_bytes(fig, out.suffix.lower().lstrip("."))
    write_atomic(out, data, what="--out", make_parents=default)
    log(f"wrote {out}")


def _html(analyses: list, title: str) -> str:
    from perfscope.report import chartdata as C
    from perfscope.report import plotly_roofline as PR
    from perfscope.report.html import Page, esc, plotly_js

    by: dict[str, list] = {}
    for a in analyses:
        by.setdefault(a.hw.name, []).append(a)
    panels = []
    for group in by.values():
        d = group[-1].totals
        panels.append(C.analysis_panel(group)._replace(
            note=f"{group[-1].scenario.phase} {d.bound}-bound"))
    page = Page(f"perfscope roofline: {title}")
    page.figure(PR.roofline(panels, title=title))
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return page.render(plotly_js(), f"<h1>{esc(title)}</h1><p class=\"sub\">Hollow markers: "
                       f"predicted; area: share of the step. Created {created}.</p>")
