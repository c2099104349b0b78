"""perfscope recommend: which layout, quantization, KV dtype and concurrency to serve with."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from perfscope.cli.output import (
    check_format,
    emit,
    log,
    serving_lengths,
    to_csv_text,
    to_json_text,
)
from perfscope.cli.predict import (
    CalibrationOpt,
    CeilingOpt,
    EngineOpt,
    FormatOpt,
    HwOpt,
    ModelOpt,
    OutputOpt,
    _width,
    one_blas_thread,
)


def _dtypes(value: str | None, flag: str) -> tuple[str, ...] | None:
    from perfscope.errors import InputError
    from perfscope.recommend.space import SCHEMES

    if value is None:
        return None
    out = tuple(v.strip().lower() for v in value.split(",") if v.strip())
    allowed = tuple(SCHEMES) if flag == "--weight-dtypes" else ("bf16", "fp16", "fp8", "int8")
    bad = [v for v in out if v not in allowed]
    if bad or not out:
        raise InputError(f"{flag} {value!r}: use a comma-separated list of "
                         f"{', '.join(allowed)}")
    return out


def recommend_cmd(
    model: ModelOpt = "llama-3.1-8b",
    hw: HwOpt = "h100-sxm",
    gpus: Annotated[int, typer.Option(help="GPUs available.")] = 1,
    isl: Annotated[int | None, typer.Option(
        help="Input (prompt) tokens per request. [default: 1024]")] = None,
    osl: Annotated[int | None, typer.Option(
        help="Output tokens per request. [default: 1024]")] = None,
    ttft: Annotated[float | None, typer.Option(help="TTFT target, seconds.")] = None,
    tpot: Annotated[float | None, typer.Option(help="TPOT target, seconds.")] = None,
    weight_dtypes: Annotated[str | None, typer.Option(
        help="Weight formats allowed, e.g. bf16,fp8,int8,int4 (default: all the device "
             "runs).")] = None,
    kv_dtypes: Annotated[str | None, typer.Option(
        help="KV-cache dtypes allowed, e.g. bf16,fp8 (default bf16,fp8).")] = None,
    max_gpus: Annotated[int | None, typer.Option(help="GPUs one replica may span "
                                                      "(default: --gpus).")] = None,
    max_concurrency: Annotated[int, typer.Option(help="Largest concurrency per replica "
                                                      "searched.")] = 1024,
    engine: EngineOpt = "neutral",
    ceiling: CeilingOpt = "empirical",
    calibration: CalibrationOpt = None,
    top: Annotated[int, typer.Option(help="Rows of the ranked table shown.")] = 10,
    plot: Annotated[Path | None, typer.Option(help="Also write the Pareto chart (.html, "
                                                   "plotly).")] = None,
    fmt: FormatOpt = "table",
    output: OutputOpt = None,
) -> None:
    """Search TP x PP x EP x replicas, weight quantization, KV dtype and concurrency; keep
    what fits and meets the targets; rank by tokens/s per GPU, give the Pareto front against
    tokens/s per user, answer the usual questions, and explain the choice with the roofline."""
    one_blas_thread()
    from perfscope.recommend.report import csv_rows, render_text
    from perfscope.recommend.search import recommend
    from perfscope.recommend.types import RecommendRequest
    from perfscope.specs.loading import load_hw
    from perfscope.specs.model import load_model

    check_format(fmt)
    cal = None
    if calibration is not None:
        from perfscope.calibration import load_calibration

        cal = load_calibration(calibration)  # a bad file fails before any work
    m = load_model(model)
    isl, osl = serving_lengths(m, isl, osl, "recommend")
    req = RecommendRequest(m, load_hw(hw), gpus, isl, osl, ttft, tpot,
                           _dtypes(weight_dtypes, "--weight-dtypes"),
                           _dtypes(kv_dtypes, "--kv-dtypes"), max_gpus, engine, ceiling,
                           max_concurrency, cal, str(calibration) if calibration else None)
    result = recommend(req)
    if plot is not None:
        from perfscope.io import write_atomic
        from perfscope.recommend.report import pareto_figure

        html = pareto_figure(result).to_html(include_plotlyjs="cdn", full_html=True)
        write_atomic(plot, html, what="--plot")
        log(f"wrote {plot}")
    if fmt == "json":
        emit(to_json_text(result.to_json()), output)
    elif fmt == "csv":
        emit(to_csv_text(csv_rows(result)), output)
    else:
        emit(render_text(result, width=_width() if output is None else 80, top_n=top), output)
