"""perfscope hw ... and perfscope models ...: what is built in."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from perfscope.cli.output import check_format, emit, to_csv_text, to_json_text

hw_app = typer.Typer(help="Hardware specs.", no_args_is_help=True)
models_app = typer.Typer(help="Model specs.", no_args_is_help=True)
FormatOpt = Annotated[str, typer.Option("--format", "-f", help="table | json | csv")]


def _hw_row(h) -> dict[str, Any]:
    bf = h.peaks.get("bf16") or h.peaks.get("fp16")
    return {"name": h.name, "display_name": h.display_name, "vendor": h.vendor,
            "memory_bytes": h.memory_bytes, "memory_bandwidth_bytes_s": h.memory_bandwidth_bytes_s,
            "bf16_dense_flops_per_s": bf.tensor_dense if bf else None,
            "dtypes": h.dtypes(), "gpu_link": h.gpu_link.name if h.gpu_link else None,
            "empirical": h.empirical is not None, "aliases": list(h.aliases)}


def _render(rows: list[dict], fmt: str, cols: list[str]) -> None:
    if fmt == "json":
        emit(to_json_text(rows), None)
    elif fmt == "csv":
        emit(to_csv_text(rows), None)
    else:
        from rich.table import Table

        from perfscope.cli.output import console

        t = Table()
        for c in cols:
            t.add_column(c)
        for r in rows:
            t.add_row(*[_cell(r[c]) for c in cols])
        console().print(t)


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return " ".join(map(str, v))
    return str(v)


@hw_app.command("list")
def hw_list(fmt: FormatOpt = "table") -> None:
    """Built-in devices (and those on PERFSCOPE_SPEC_PATH)."""
    from perfscope.specs.loading import list_hw

    check_format(fmt)
    rows = [_hw_row(h) for h in list_hw()]
    if fmt == "table":
        for r in rows:
            r["memory_GiB"] = r["memory_bytes"] / 2**30
            r["mem_GB/s"] = r["memory_bandwidth_bytes_s"] / 1e9
            r["16-bit dense TFLOP/s"] = (r["bf16_dense_flops_per_s"] or 0) / 1e12
        _render(rows, fmt, ["name", "display_name", "memory_GiB", "mem_GB/s",
                            "16-bit dense TFLOP/s", "dtypes", "gpu_link"])
    else:
        _render(rows, fmt, [])


@hw_app.command("show")
def hw_show(name: str, fmt: FormatOpt = "table") -> None:
    """Every figure of one device, with its source."""
    from perfscope.specs.ceilings import describe
    from perfscope.specs.loading import load_hw

    check_format(fmt)
    h = load_hw(name)
    peaks: list[dict[str, Any]] = [{"dtype": d, "tensor_dense_flops_per_s": p.tensor_dense,
              "tensor_sparse_flops_per_s": p.tensor_sparse, "vector_flops_per_s": p.vector,
              "source": p.source} for d, p in h.peaks.items()]
    data = _hw_row(h) | {
        "file": h.file, "memory_source": h.memory_source, "l2_bytes": h.l2_bytes,
        "sm_count": h.sm_count, "peaks": peaks,
        "memory_nominal_bytes": h.memory_nominal_bytes,
        "memory_driver_source": h.memory_driver_source,
        "links": {k: (None if v is None else {"name": v.name, "kind": v.kind,
                                              "bandwidth_bytes_s": v.bandwidth_bytes_s,
                                              "latency_class": v.latency_class,
                                              "source": v.source})
                  for k, v in (("gpu", h.gpu_link), ("host", h.host_link),
                               ("network", h.network_link))},
        "topology": h.topology.describe(),
        "empirical": None if h.empirical is None else {
            "gemm_flops_per_s": dict(h.empirical.gemm_flops),
            "gemm_sources": dict(h.empirical.gemm_sources),
            "memory_bandwidth_bytes_s": h.empirical.memory_bandwidth_bytes_s,
            "memory_source": h.empirical.memory_source},
        # every --ceiling empirical figure with its source: measured | derived
        "ceilings": describe(h, "empirical"),
    }
    if fmt == "json":
        emit(to_json_text(data), None)
    elif fmt == "csv":
        emit(to_csv_text(peaks), None)
    else:
        from rich.table import Table

        from perfscope.cli.output import console

        con = console()
        con.print(f"[bold]{h.display_name}[/] ({h.name}) from {h.file}")
        con.print(f"memory {h.memory_bytes / 2**30:.1f} GiB usable of "
                  f"{h.memory_nominal_bytes / 2**30:.0f} GiB at "
                  f"{h.memory_bandwidth_bytes_s / 1e9:,.0f} GB/s  [{h.memory_source}]")
        con.print(f"L2 {h.l2_bytes / 2**20:.0f} MiB, {h.sm_count} SMs")
        t = Table("dtype", "tensor dense TFLOP/s", "with sparsity", "vector TFLOP/s", "source")
        for p in peaks:
            t.add_row(p["dtype"], *[f"{v / 1e12:,.1f}" if v else "-" for v in
                                    (p["tensor_dense_flops_per_s"],
                                     p["tensor_sparse_flops_per_s"], p["vector_flops_per_s"])],
                      p["source"])
        con.print(t)
        for k, v in data["links"].items():
            if v:
                con.print(f"{k} link: {v['name']} {v['bandwidth_bytes_s'] / 1e9:,.1f} GB/s per "
                          f"direction  [{v['source']}]")
        topo = h.topology
        con.print(f"topology: {topo.scale_up_kind} of {topo.scale_up_domain} GPUs, "
                  f"{topo.gpus_per_node} GPUs per node")
        c = data["ceilings"]
        for d, r in c["gemm_flops_per_s"].items():
            con.print(f"empirical GEMM {d}: {r['value'] / 1e12:,.1f} TFLOP/s {r['source']}  "
                      f"[{r['note']}]")
        for key, label, unit, scale in (
                ("memory_bandwidth_bytes_s", "memory bandwidth", "GB/s", 1e9),
                ("kernel_overhead_s", "kernel overhead", "us per kernel", 1e-6)):
            r = c[key]
            con.print(f"empirical {label}: {r['value'] / scale:,.1f} {unit} {r['source']}  "
                      f"[{r['note']}]")


@hw_app.command("links")
def hw_links(fmt: FormatOpt = "table") -> None:
    """Built-in interconnects: per-direction bandwidth per GPU, latencies, measured busbw."""
    from perfscope.specs.loading import list_links

    check_format(fmt)
    rows: list[dict[str, Any]] = [{"name": k.name, "display_name": k.display_name, "kind": k.kind,
             "bandwidth_bytes_s": k.bandwidth_bytes_s, "latency_class": k.latency_class,
             "empirical_busbw_bytes_s": k.empirical_busbw_bytes_s, "source": k.source}
            for k in list_links()]
    if fmt == "table":
        for r in rows:
            r["GB/s_per_dir"] = r["bandwidth_bytes_s"] / 1e9
            r["busbw_GB/s"] = (r["empirical_busbw_bytes_s"] or 0) / 1e9 or "-"
    _render(rows, fmt, ["name", "display_name", "kind", "GB/s_per_dir", "latency_class",
                        "busbw_GB/s"])


def _model_row(m) -> dict[str, Any]:
    return {"name": m.name, "model_type": m.model_type, "params": m.params,
            "active_params": m.active_params, "layers": m.n_layers, "hidden": m.hidden,
            "heads": m.n_heads, "kv_heads": m.n_kv_heads, "head_dim": m.head_dim,
            "intermediate": m.intermediate, "vocab": m.vocab, "max_position": m.max_position,
            "attention": "mla" if m.mla else ("mha" if m.n_kv_heads == m.n_heads else
                                              ("mqa" if m.n_kv_heads == 1 else "gqa")),
            "experts": m.moe.n_experts if m.moe else 0,
            "top_k": m.moe.top_k if m.moe else 0,
            "sliding_window": m.sliding_window}


@models_app.command("list")
def models_list(fmt: FormatOpt = "table") -> None:
    """Built-in models (workloads/models/*.json)."""
    from perfscope.specs.model import load_model, model_files

    check_format(fmt)
    rows = [_model_row(load_model(str(p))) | {"name": p.stem} for p in model_files()]
    if fmt == "table":
        for r in rows:
            r["params_B"] = r["params"] / 1e9
            r["active_B"] = r["active_params"] / 1e9
    _render(rows, fmt, ["name", "model_type", "params_B", "active_B", "layers", "hidden",
                        "heads", "kv_heads", "attention", "experts", "sliding_window"])


@models_app.command("show")
def models_show(name: str, fmt: FormatOpt = "json") -> None:
    """The parsed shape of one model."""
    from perfscope.specs.model import load_model

    check_format(fmt)
    m = load_model(name)
    row = _model_row(m) | {"source": m.source}
    _render([row], fmt, list(row))
