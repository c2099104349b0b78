"""Static figures (matplotlib: PNG, SVG, PDF): the same rooflines as the report's, from the
same records (perfscope.report.chartdata), and collectives against link ceilings. Builders
take results and return a Figure; they do no I/O (``save_figure`` writes one, atomically).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from perfscope.report import chartdata as C
from perfscope.report import fmt as F
from perfscope.report import labels as L

KIND_COLORS = C.KIND_COLORS
MPL_DASH = {"solid": "-", "dash": "--", "dot": ":"}
MPL_MARKERS = {"circle": "o", "diamond": "D", "square": "s"}
FORMATS = ("png", "svg", "pdf")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _limits(panels: Sequence[C.Panel]) -> tuple[tuple[float, float], tuple[float, float]]:
    from perfscope.report.plotly_roofline import ranges

    (x0, x1), (y0, y1) = ranges(panels)
    return (10 ** x0, 10 ** x1), (10 ** y0, 10 ** y1)


def _px(fig: Any, ax: Any):
    """Data -> pixels with y downwards (the layout module's frame)."""
    h = fig.bbox.height

    def px(x: float, y: float) -> tuple[float, float]:
        X, Y = ax.transData.transform((x, y))
        return float(X), float(h - Y)

    return px


def _bounds(fig: Any, ax: Any) -> L.Box:
    bb = ax.get_window_extent()
    h = fig.bbox.height
    return L.Box(bb.x0, h - bb.y1, bb.x1, h - bb.y0)


def _roofs(fig: Any, ax: Any, panel: C.Panel, xlim: tuple[float, float],
           ylim: tuple[float, float]) -> list[L.Box]:
    """Roof lines, ridge ticks, roof labels (clear of the markers); returns the label boxes."""
    from perfscope.report import layout as LY

    segs = LY.roof_segments(panel, xlim, ylim)
    for r, (x0, y0), (x1, y1) in segs:
        gray = "#444" if r.kind == "memory" else \
            ("#222" if "tensor" in r.label or "GEMM" in r.label else "#888")
        ax.plot([x0, x1], [y0, y1], color=gray, ls=MPL_DASH[C.SOURCE_DASH.get(r.source, "dash")],
                lw=1.6 if r.source == "spec" else 1.2, zorder=1)
    for d in panel.ridges:
        ax.plot([d.intensity], [d.flops_per_s], marker="|", ms=10, color="#555", zorder=2)
    px = _px(fig, ax)
    s = fig.dpi / 100
    markers = LY.marker_boxes(panel.points, px, lambda p: C.marker_px(p.share) / 2 * s)
    placed, taken = LY.place_roofs(panel, segs, px, _bounds(fig, ax), markers,
                                   char_w=5.8 * s, line_h=10 * s)
    for lb in placed:
        ax.annotate(lb.text, (lb.x, lb.y), xytext=(lb.dx * 72 / fig.dpi, -lb.dy * 72 / fig.dpi),
                    textcoords="offset points", rotation=lb.angle, rotation_mode="anchor",
                    ha="center", va="center", fontsize=6.5, color=lb.color)
    return taken


def _points(ax: Any, pts: Sequence[C.Pt], dpi: float) -> None:
    for m, p in C.pairs(pts):
        ax.plot([m.intensity, p.intensity], [m.flops_per_s, p.flops_per_s], color="#999",
                lw=0.8, zorder=2)
    for p in pts:
        col = C.color(p.kind)
        d = C.marker_px(p.share) * 72 / dpi  # px -> points
        ax.scatter([p.intensity], [p.flops_per_s], s=d * d,
                   marker=MPL_MARKERS.get(C.PHASE_SYMBOLS.get(p.phase, "circle"), "o"),
                   facecolors=col if p.source == "measured" else "none", edgecolors=col,
                   linewidths=1.4, zorder=3)


def _labels(fig: Any, ax: Any, pts: Sequence[C.Pt], taken: Sequence[L.Box]) -> list[Any]:
    """Name the largest ops where the layout module finds room."""
    from perfscope.report import layout as LY

    s = fig.dpi / 100
    placed = LY.place_points(pts, _px(fig, ax), _bounds(fig, ax), taken,
                             lambda p: C.marker_px(p.share) / 2 * s, max_labels=12,
                             char_w=5.8 * s, line_h=10 * s)
    return [ax.annotate(lb.text, (p.intensity, p.flops_per_s),
                        xytext=(lb.dx * 72 / fig.dpi, -lb.dy * 72 / fig.dpi),
                        textcoords="offset points", ha="center", va="center", fontsize=6.5,
                        color="#333", arrowprops={"arrowstyle": "-", "color": "#aaa",
                                                  "lw": 0.6})
            for p, lb in placed]


def panels_figure(panels: Sequence[C.Panel], title: str = ""):
    """Side-by-side rooflines (shared log-log axes), as the report draws them."""
    plt = _plt()
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(7.5 * n if n > 1 else 9, 6), sharey=True,
                             squeeze=False, dpi=100)
    xlim, ylim = _limits(panels)
    for ax, panel in zip(axes[0], panels, strict=True):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(*xlim)
        ax.set_ylim(*ylim)
        ax.grid(True, which="major", alpha=0.25)
        ax.set_xlabel("arithmetic intensity (FLOP/byte)")
        ax.xaxis.set_major_formatter(_fmt(lambda v: F.num(v, 1)))
        ax.yaxis.set_major_formatter(_fmt(lambda v: F.si(v, "FLOP/s", 1)))
        ax.set_title(panel.title + (f"\n{panel.note}" if panel.note else ""), fontsize=10)
        _points(ax, panel.points, fig.dpi)
    axes[0][0].set_ylabel("FLOP/s")
    _legend(fig, [p for pn in panels for p in pn.points])
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.canvas.draw()  # fixes the pixel frame the labels are placed in
    for ax, panel in zip(axes[0], panels, strict=True):
        _labels(fig, ax, panel.points, _roofs(fig, ax, panel, xlim, ylim))
    return fig


def _fmt(f):
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _pos: f(v))


def _legend(fig: Any, pts: Sequence[C.Pt]) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], ls="", marker="s", color=C.color(k), label=k)
               for k in sorted({p.kind for p in pts})]
    for ph in sorted({p.phase for p in pts}):
        for src in sorted({p.source for p in pts}):
            handles.append(Line2D([], [], ls="", marker=MPL_MARKERS.get(
                C.PHASE_SYMBOLS.get(ph, "circle"), "o"), color="#555",
                markerfacecolor="#555" if src == "measured" else "none",
                label=f"{ph}, {src}"))
    handles += [Line2D([], [], color="#333", ls="-", label="spec roof"),
                Line2D([], [], color="#333", ls="--", label="achieved roof")]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 8), fontsize=7,
               frameon=False)


def analysis_chart(analyses: Sequence[Any], title: str = ""):
    """The ops of one or more analysed steps, one panel per device."""
    by: dict[str, list[Any]] = {}
    for a in analyses:
        by.setdefault(a.hw.name, []).append(a)
    panels = []
    for group in by.values():
        p = C.analysis_panel(group)
        d = group[-1].totals
        panels.append(p._replace(note=f"{group[-1].scenario.phase} {d.bound}-bound, step "
                                      f"{F.seconds(d.time_s, micro='us')}"))
    a0 = analyses[0]
    s = a0.scenario
    return panels_figure(panels, title or f"{a0.model.name}, batch {s.batch}, "
                                          f"{s.ceiling} ceilings")


# ---- the older dict API (perfscope bench --plot) -----------------------------------------

def roofline_figure(ceilings: Mapping[str, float], bandwidths: Mapping[str, float],
                    points: Iterable[Mapping[str, Any]], title: str):
    """Log-log roofline from plain dicts. ``ceilings``: label -> FLOP/s; ``bandwidths``:
    label -> bytes/s (a label containing "measured" or "empirical" is drawn dashed);
    ``points``: dicts with ``name``, ``kind``, ``intensity``, ``flops_per_s`` and ``source``
    ("predicted" hollow, "measured" filled; the same name joins the two)."""
    def src(label: str) -> str:
        low = label.lower()
        return "measured" if "measured" in low else "empirical" if "empirical" in low \
            else "spec"

    roofs = [C.Roof(k, "compute", v, src(k)) for k, v in ceilings.items()]
    roofs += [C.Roof(k, "memory", v, src(k)) for k, v in bandwidths.items()]
    pts = tuple(C.Pt(p.get("name", ""), p.get("kind", ""), p.get("phase", "prefill"),
                     p["intensity"], p["flops_per_s"], p.get("source", "predicted"), 0.0,
                     (), p.get("name", "")) for p in points
                if p.get("intensity") and p.get("flops_per_s"))
    return panels_figure([C.Panel(title, tuple(roofs), pts)],
                         title + ("\n(filled: measured, hollow: predicted)"
                                  if any(p.source == "measured" for p in pts) else ""))


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
        ax.axhline(bw, color="black", ls="--" if "busbw" in label else "-", lw=0.8)
        ax.annotate(f"{label} {F.si(bw, 'B/s')}", (1, bw), xycoords=("axes fraction", "data"),
                    ha="right", va="bottom", fontsize=8)
    ax.set_xscale("log", base=2)  # message sizes tick at 1 KiB, 4 KiB, ... not 977 KiB
    ax.set_yscale("log")
    ax.xaxis.set_major_formatter(_fmt(lambda v: F.nbytes(v, 1)))
    ax.yaxis.set_major_formatter(_fmt(lambda v: F.si(v, "B/s", 1)))
    ax.set_xlabel("message size")
    ax.set_ylabel("bus bandwidth")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.2)
    if ax.get_legend_handles_labels()[0]:  # no measured ops: no legend (matplotlib warns)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def figure_bytes(fig: Any, fmt: str) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=130)
    return buf.getvalue()


def save_figure(fig: Any, path: Path, what: str = "--plot") -> None:
    """PNG, SVG or PDF by suffix, written atomically (a missing folder is an error)."""
    from perfscope.errors import InputError
    from perfscope.io import write_atomic

    fmt = path.suffix.lstrip(".").lower()
    try:
        if fmt not in FORMATS:
            raise InputError(f"{what} {path}: use a .png, .svg or .pdf file name")
        write_atomic(path, figure_bytes(fig, fmt), what=what)
    finally:
        _plt().close(fig)


def analysis_points(a: Any) -> list[dict[str, Any]]:
    """Predicted points of an Analysis as dicts (compute ops only)."""
    return [{"name": p.op.name, "kind": p.op.kind, "intensity": p.intensity,
             "flops_per_s": p.op.flops / p.time_s if p.time_s else 0.0, "source": "predicted"}
            for p in a.points if p.op.unit != "link" and p.op.flops]


def hw_ceilings(hw: Any, dtypes: Iterable[str], ceiling: str = "spec") -> tuple[dict, dict]:
    """Roofs of a device as label -> value dicts: compute per dtype, memory bandwidths."""
    comp: dict[str, float] = {}
    for d in dict.fromkeys(dtypes):
        if hw.has_dtype(d):
            peak, src = hw.tensor_flops(d, ceiling)
            comp[f"{d} ({src})"] = peak
    bws = {f"memory {F.si(hw.memory_bandwidth_bytes_s, 'B/s')} (spec)":
           hw.memory_bandwidth_bytes_s}
    if hw.empirical and hw.empirical.memory_bandwidth_bytes_s:
        bws[f"memory {F.si(hw.empirical.memory_bandwidth_bytes_s, 'B/s')} (empirical)"] = \
            hw.empirical.memory_bandwidth_bytes_s
    return comp, bws
