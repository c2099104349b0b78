"""perfscope hw ... and perfscope models ...: what is built in.

Every command answers in table (default), json or csv, to stdout or -o.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from perfscope.cli.output import check_format, emit, out_width, show, to_csv_text, to_json_text

hw_app = typer.Typer(help="Hardware specs.", no_args_is_help=True)
models_app = typer.Typer(help="Model specs.", no_args_is_help=True)
FormatOpt = Annotated[str, typer.Option("--format", "-f", help="table | json | csv")]
OutputOpt = Annotated[Path | None, typer.Option("--output", "-o",
                                                help="Write to this file (atomically).")]


def _data(data: Any, fmt: str, output: Path | None, rows: list[dict] | None = None) -> None:
    if fmt == "json":
        emit(to_json_text(data), output)
    else:
        emit(to_csv_text(rows if rows is not None else data), output)


@hw_app.command("list")
def hw_list(fmt: FormatOpt = "table", output: OutputOpt = None) -> None:
    """Built-in devices (and those on PERFSCOPE_SPEC_PATH), with their ridge points."""
    from perfscope.report.spec_tables import hw_list_renderables, hw_row
    from perfscope.specs.loading import list_hw

    check_format(fmt)
    hws = list_hw()
    if fmt == "table":
        width = out_width(output)
        show(hw_list_renderables(hws, width), output, width)
        return
    rows = [hw_row(h) for h in hws]
    _data(rows, fmt, output)


@hw_app.command("show")
def hw_show(name: str, fmt: FormatOpt = "table", output: OutputOpt = None) -> None:
    """Every figure of one device with its source, and its ridge points."""
    from perfscope.report.spec_tables import hw_row, hw_show_renderables, ridge_points
    from perfscope.specs.ceilings import describe
    from perfscope.specs.loading import load_hw

    check_format(fmt)
    h = load_hw(name)
    if fmt == "table":
        width = out_width(output)
        show(hw_show_renderables(h, width), output, width)
        return
    peaks: list[dict[str, Any]] = [{"dtype": d, "tensor_dense_flops_per_s": p.tensor_dense,
              "tensor_sparse_flops_per_s": p.tensor_sparse, "vector_flops_per_s": p.vector,
              "source": p.source} for d, p in h.peaks.items()]
    data = hw_row(h) | {
        "file": h.file, "memory_source": h.memory_source, "l2_bytes": h.l2_bytes,
        "sm_count": h.sm_count, "peaks": peaks, "ridge_points": ridge_points(h),
        "memory_nominal_bytes": h.memory_nominal_bytes,
        "memory_driver_source": h.memory_driver_source,
        "topology": h.topology.describe(),
        "links": {k: (None if v is None else {"name": v.name, "kind": v.kind,
                                              "bandwidth_bytes_s": v.bandwidth_bytes_s,
                                              "latency_class": v.latency_class,
                                              "source": v.source})
                  for k, v in (("gpu", h.gpu_link), ("host", h.host_link),
                               ("network", h.network_link))},
        "empirical": None if h.empirical is None else {
            "gemm_flops_per_s": dict(h.empirical.gemm_flops),
            "gemm_sources": dict(h.empirical.gemm_sources),
            "memory_bandwidth_bytes_s": h.empirical.memory_bandwidth_bytes_s,
            "memory_source": h.empirical.memory_source},
        # every --ceiling empirical figure with its source: measured | derived
        "ceilings": describe(h, "empirical"),
    }
    ridges = {(r["dtype"], r["unit"], r["ceiling"]): r["intensity"] for r in ridge_points(h)}
    rows = [p | {"ridge_tensor_flop_per_byte": ridges.get((p["dtype"], "tensor", "spec")),
                 "ridge_vector_flop_per_byte": ridges.get((p["dtype"], "vector", "spec"))}
            for p in peaks]
    _data(data, fmt, output, rows)


@hw_app.command("links")
def hw_links(fmt: FormatOpt = "table", output: OutputOpt = None) -> None:
    """Built-in interconnects: per-direction bandwidth per GPU, latencies, measured busbw."""
    from perfscope.report.spec_tables import links_renderables
    from perfscope.specs.loading import list_links

    check_format(fmt)
    links = list_links()
    if fmt == "table":
        width = out_width(output)
        show(links_renderables(links, width), output, width)
        return
    rows: list[dict[str, Any]] = [
        {"name": k.name, "display_name": k.display_name, "kind": k.kind,
         "bandwidth_bytes_s": k.bandwidth_bytes_s, "latency_class": k.latency_class,
         "empirical_busbw_bytes_s": k.empirical_busbw_bytes_s, "source": k.source}
        for k in links]
    _data(rows, fmt, output)


@models_app.command("list")
def models_list(fmt: FormatOpt = "table", output: OutputOpt = None) -> None:
    """Built-in models (workloads/models/*.json)."""
    from perfscope.report.spec_tables import model_row, models_list_renderables
    from perfscope.specs.model import load_model, model_files

    check_format(fmt)
    models = [(p.stem, load_model(str(p))) for p in model_files()]
    if fmt == "table":
        width = out_width(output)
        show(models_list_renderables(models, width), output, width)
        return
    rows = [model_row(m) | {"name": name} for name, m in models]
    if fmt == "csv":
        rows = [{k: v for k, v in r.items() if k not in ("moe", "mla")} for r in rows]
    _data(rows, fmt, output)


@models_app.command("show")
def models_show(name: str, fmt: FormatOpt = "table", output: OutputOpt = None) -> None:
    """The parsed shape of one model: attention (MLA ranks), experts, bytes per token."""
    from perfscope.report.spec_tables import model_row, model_show_renderables
    from perfscope.specs.model import load_model

    check_format(fmt)
    m = load_model(name)
    if fmt == "table":
        width = out_width(output)
        show(model_show_renderables(m, width), output, width)
        return
    row = model_row(m) | {"source": m.source}
    flat = {k: v for k, v in row.items() if k not in ("moe", "mla")}
    for group in ("moe", "mla"):
        for k, v in (row.get(group) or {}).items():
            flat[f"{group}_{k}"] = v
    _data(row, fmt, output, [flat])
