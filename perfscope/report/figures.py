"""Figures: roofline charts with predicted and measured points, collectives against link
ceilings. Builders take results and return a matplotlib Figure; they do no I/O
(``save_figure`` writes one, atomically)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

KIND_COLORS = {"gemm": "tab:blue", "attention": "tab:orange", "norm": "tab:green",
               "elementwise": "tab:olive", "softmax": "tab:purple", "embedding": "tab:brown",
               "comm": "tab:gray"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def roofline_figure(ceilings: Mapping[str, float], bandwidths: Mapping[str, float],
                    points: Iterable[Mapping[str, Any]], title: str):
    """Log-log roofline.

    ``ceilings``: label -> compute ceiling in FLOP/s (one horizontal roof each, e.g.
    "bf16 tensor (spec)"); ``bandwidths``: label -> bytes/s (one diagonal each). ``points``:
    dicts with ``name``, ``kind``, ``intensity`` (FLOP/byte), ``flops_per_s`` and ``source``
    ("predicted" hollow, "measured" filled).
    """
    plt = _plt()
    pts = [p for p in points if p.get("intensity") and p.get("flops_per_s")]
    fig, ax = plt.subplots(figsize=(9, 6))
    xs = [p["intensity"] for p in pts] or [1.0]
    lo, hi = min(*xs, 0.1) / 2, max(*xs, 1e3) * 2
    styles = ("-", "--", ":", "-.")
    for i, (label, bw) in enumerate(bandwidths.items()):
        for j, (clabel, peak) in enumerate(ceilings.items()):
            grid = [lo, min(peak / bw, hi), hi]
            ax.plot(grid, [min(peak, x * bw) for x in grid], color="black",
                    lw=1.4 if j == 0 else 0.8, ls=styles[i % 4], alpha=0.8,
                    label=f"roof: {label}" if j == 0 else None)
            if i == 0:
                ax.annotate(clabel, (hi, peak), ha="right", va="bottom", fontsize=8)
    seen: set[str] = set()
    names: dict[tuple[float, float], list[str]] = {}
    for p in pts:
        kind = p.get("kind", "")
        color = KIND_COLORS.get(kind, "tab:red")
        measured = p.get("source") == "measured"
        ax.scatter(p["intensity"], p["flops_per_s"], s=36, color=color if measured else "none",
                   edgecolors=color, label=kind if kind not in seen else None, zorder=3)
        seen.add(kind)
        key = (float(f"{p['intensity']:.2g}"), float(f"{p['flops_per_s']:.2g}"))
        names.setdefault(key, []).append(p.get("name", ""))
    for (x, y), ns in names.items():  # one label per spot: ops that land together share it
        ax.annotate(", ".join(dict.fromkeys(ns)), (x, y), fontsize=6, xytext=(4, 4),
                    textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP / byte)")
    ax.set_ylabel("FLOP/s")
    if any(p.get("source") == "measured" for p in pts):
        title += "\n(filled: measured, hollow: predicted)"
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.2)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def comm_figure(results: Iterable[Mapping[str, Any]], ceilings: Mapping[str, float],
                title: str):
    """Bus bandwidth (nccl-tests convention) against message size, one line per collective,
    with each link ceiling (label -> bytes/s) as a horizontal line."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 5))
    by: dict[str, list[tuple[float, float]]] = {}
    for r in results:
        if r.get("busbw_bytes_s"):
            by.setdefault(r["op"], []).append((r["size_bytes"], r["busbw_bytes_s"]))
    for op, xy in by.items():
        xy.sort()
        ax.plot([x for x, _ in xy], [y for _, y in xy], marker="o", label=op)
    for label, bw in ceilings.items():
        ax.axhline(bw, color="black", ls="--", lw=0.8)
        ax.annotate(label, (1, bw), xycoords=("axes fraction", "data"), ha="right",
                    va="bottom", fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("message size (bytes)")
    ax.set_ylabel("bus bandwidth (bytes/s)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.2)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def save_figure(fig, path: Path) -> None:
    """PNG, SVG or PDF by suffix; written via a temp file and a rename."""
    import os
    import tempfile

    from perfscope.errors import InputError

    fmt = path.suffix.lstrip(".").lower()
    if fmt not in ("png", "svg", "pdf"):
        raise InputError(f"--plot {path}: use a .png, .svg or .pdf file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".{fmt}")
        os.close(fd)
        fig.savefig(tmp, format=fmt, dpi=130)
        os.replace(tmp, path)
    except OSError as e:
        raise InputError(f"--plot {path}: cannot write there ({e.strerror or e})") from e
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
        if "tmp" in locals():
            Path(tmp).unlink(missing_ok=True)


def analysis_points(a) -> list[dict[str, Any]]:
    """Predicted points of an Analysis (compute ops only)."""
    return [{"name": p.op.name, "kind": p.op.kind, "intensity": p.intensity,
             "flops_per_s": p.op.flops / p.time_s if p.time_s else 0.0, "source": "predicted"}
            for p in a.points if p.op.unit != "link" and p.op.flops]


def hw_ceilings(hw, dtypes: Iterable[str], ceiling: str = "spec") -> tuple[dict, dict]:
    """Roofs to draw for a device: compute ceilings per dtype and the memory bandwidths."""
    comp: dict[str, float] = {}
    for d in dict.fromkeys(dtypes):
        if hw.has_dtype(d):
            peak, src = hw.tensor_flops(d, ceiling)
            comp[f"{d} ({src})"] = peak
    bws = {f"memory {hw.memory_bandwidth_bytes_s / 1e9:,.0f} GB/s (spec)":
           hw.memory_bandwidth_bytes_s}
    if hw.empirical and hw.empirical.memory_bandwidth_bytes_s:
        bws[f"{hw.empirical.memory_bandwidth_bytes_s / 1e9:,.0f} GB/s (measured)"] = \
            hw.empirical.memory_bandwidth_bytes_s
    return comp, bws
