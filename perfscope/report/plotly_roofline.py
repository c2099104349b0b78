"""Roofline charts for the HTML report, as plotly figure dicts (no plotly import: the page
carries plotly.js and these plain dicts; tests can still validate them with plotly).

Log-log intensity (FLOP/byte) against FLOP/s. Roofs: compute per dtype and unit, memory (HBM,
measured caches), each labelled with its source kind: spec solid, achieved dashed. Ridge
points marked and labelled. One marker per op, coloured by kind, area by share of the step,
predicted hollow, measured filled, each measured point joined to its prediction. Several
devices side by side share the axes. Labels are placed so they do not overlap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from perfscope.report import chartdata as C
from perfscope.report import labels as L

FONT = "system-ui, -apple-system, Segoe UI, Roboto, sans-serif"
# fixed margins (no autoexpand): label positions are computed in pixels, so the plot area
# must not move when plotly lays out the legend
MARGIN = {"l": 95, "r": 20, "t": 60, "b": 130, "autoexpand": False}
GAP = 0.06  # between side-by-side panels, fraction of the width


def _ax(i: int, kind: str) -> str:
    return kind if i == 0 else f"{kind}{i + 1}"


def _ref(i: int, kind: str) -> str:
    return kind[0] if i == 0 else f"{kind[0]}{i + 1}"


def domains(n: int, gap: float = GAP) -> list[tuple[float, float]]:
    w = (1 - gap * (n - 1)) / n
    return [(i * (w + gap), i * (w + gap) + w) for i in range(n)]


def ranges(panels: Sequence[C.Panel]) -> tuple[tuple[float, float], tuple[float, float]]:
    """Shared log10 axis ranges that hold every point, roof and ridge."""
    xs = [p.intensity for pn in panels for p in pn.points] or [1.0]
    ys = [p.flops_per_s for pn in panels for p in pn.points] or [1e12]
    rid = [r.intensity for pn in panels for r in pn.ridges] or [100.0]
    peaks = [r.value for pn in panels for r in pn.roofs if r.kind == "compute"] or [max(ys)]
    x0 = math.log10(min(min(xs), 0.1) / 2)
    x1 = math.log10(max(max(xs), max(rid)) * 8)
    y0 = math.log10(min(ys) / 3)
    y1 = math.log10(max(max(peaks), max(ys)) * 3)
    return (x0, x1), (y0, y1)


class Frame:
    """Pixel geometry of one panel (fixed-size figures, so label positions are known)."""

    def __init__(self, width: float, height: float, dom: tuple[float, float],
                 xr: tuple[float, float], yr: tuple[float, float],
                 margin: dict | None = None):
        mg = margin or MARGIN
        aw = width - mg["l"] - mg["r"]
        self.left = mg["l"] + aw * dom[0]
        self.w = aw * (dom[1] - dom[0])
        self.top = mg["t"]
        self.h = height - mg["t"] - mg["b"]
        self.xr, self.yr = xr, yr

    def px(self, x: float, y: float) -> tuple[float, float]:
        fx = (math.log10(x) - self.xr[0]) / (self.xr[1] - self.xr[0])
        fy = (self.yr[1] - math.log10(y)) / (self.yr[1] - self.yr[0])
        return self.left + fx * self.w, self.top + fy * self.h

    @property
    def bounds(self) -> L.Box:
        return L.Box(self.left, self.top, self.left + self.w, self.top + self.h)

    def slope_angle(self) -> float:
        """On-screen angle (degrees, plotly's clockwise sign) of a bandwidth roof."""
        dx = self.w / (self.xr[1] - self.xr[0])
        dy = self.h / (self.yr[1] - self.yr[0])
        return -math.degrees(math.atan2(dy, dx))


def roof_traces(i: int, panel: C.Panel, xr: tuple[float, float], fr: Frame,
                first: bool) -> tuple[list[dict], list[dict], list[L.Box]]:
    """Roof lines, ridge ticks and the roof labels (placed clear of the markers) of panel
    ``i``; returns traces, annotations and the boxes the labels took."""
    from perfscope.report import layout as LY

    traces: list[dict] = []
    notes: list[dict] = []
    xlim = (10 ** xr[0], 10 ** xr[1])
    ylim = (10 ** fr.yr[0], 10 ** fr.yr[1])
    segs = LY.roof_segments(panel, xlim, ylim)
    for r, (x0, y0), (x1, y1) in segs:
        gray = "#444" if r.kind == "memory" else \
            ("#222" if "tensor" in r.label or "GEMM" in r.label else "#888")
        traces.append({"type": "scatter", "mode": "lines", "x": [x0, x1], "y": [y0, y1],
                       "xaxis": _ref(i, "x"), "yaxis": _ref(i, "y"),
                       "line": {"color": gray, "width": 2 if r.source == "spec" else 1.6,
                                "dash": C.SOURCE_DASH.get(r.source, "dash")},
                       "hovertemplate": C.hover_html([("roof", r.text), ("source", r.detail)])
                       + "<extra></extra>", "showlegend": False, "name": _esc(r.label)})
    for d in panel.ridges:
        traces.append({"type": "scatter", "mode": "markers", "x": [d.intensity],
                       "y": [d.flops_per_s], "xaxis": _ref(i, "x"), "yaxis": _ref(i, "y"),
                       "marker": {"symbol": "line-ns", "size": 14,
                                  "line": {"color": "#555", "width": 2}},
                       "hovertemplate": f"{d.label}<extra></extra>", "showlegend": False,
                       "name": d.label})
    markers = LY.marker_boxes(panel.points, fr.px, lambda p: C.marker_px(p.share) / 2)
    placed, taken = LY.place_roofs(panel, segs, fr.px, fr.bounds, markers)
    for lb in placed:
        notes.append({"x": math.log10(lb.x), "y": math.log10(lb.y), "xref": _ref(i, "x"),
                      "yref": _ref(i, "y"), "text": _esc(lb.text), "showarrow": False,
                      "textangle": -lb.angle, "xshift": lb.dx, "yshift": -lb.dy,
                      "xanchor": "center", "yanchor": "middle",
                      "font": {"size": 10, "color": lb.color}})
    return traces, notes, taken


def point_traces(i: int, pts: Sequence[C.Pt], seen: set[str],
                 visible: bool = True) -> list[dict]:
    """One trace per (kind, source, phase): legend by kind, symbol by phase, hollow when
    predicted, filled when measured."""
    groups: dict[tuple[str, str, str], list[C.Pt]] = {}
    for p in pts:
        groups.setdefault((p.kind, p.source, p.phase), []).append(p)
    out = []
    for (kind, source, phase), ps in sorted(groups.items()):
        sym = C.PHASE_SYMBOLS.get(phase, "circle") + ("-open" if source == "predicted" else "")
        if kind not in seen:  # the legend names kinds with a plain square
            seen.add(kind)
            out.append({"type": "scatter", "mode": "markers", "x": [None], "y": [None],
                        "name": _esc(kind), "legendgroup": kind, "visible": visible,
                        "marker": {"symbol": "square", "size": 11, "color": C.color(kind)},
                        "hoverinfo": "skip", "xaxis": _ref(i, "x"), "yaxis": _ref(i, "y")})
        show = False
        out.append({
            "type": "scatter", "mode": "markers", "name": _esc(kind), "legendgroup": kind,
            "showlegend": show, "visible": visible,
            "x": [p.intensity for p in ps], "y": [p.flops_per_s for p in ps],
            "xaxis": _ref(i, "x"), "yaxis": _ref(i, "y"),
            "text": [C.hover_html(p.hover) for p in ps],
            "hovertemplate": "%{text}<extra></extra>",
            "marker": {"symbol": sym, "size": [C.marker_px(p.share) for p in ps],
                       "color": C.color(kind), "opacity": 0.9,
                       "line": {"color": C.color(kind) if source == "predicted" else "white",
                                "width": 2 if source == "predicted" else 1}}})
    return out


def pair_trace(i: int, pts: Sequence[C.Pt]) -> dict | None:
    xs: list[float | None] = []
    ys: list[float | None] = []
    for m, p in C.pairs(pts):
        xs += [m.intensity, p.intensity, None]
        ys += [m.flops_per_s, p.flops_per_s, None]
    if not xs:
        return None
    return {"type": "scatter", "mode": "lines", "x": xs, "y": ys, "xaxis": _ref(i, "x"),
            "yaxis": _ref(i, "y"), "line": {"color": "#999", "width": 1},
            "hoverinfo": "skip", "showlegend": False, "name": "measured - predicted"}


def legend_keys(pts: Sequence[C.Pt]) -> list[dict]:
    """Legend entries that explain the marker styles in use (no data)."""
    out = []
    phases = sorted({p.phase for p in pts})
    sources = sorted({p.source for p in pts})
    for ph in phases:
        for src in sources:
            sym = C.PHASE_SYMBOLS.get(ph, "circle") + ("-open" if src == "predicted" else "")
            out.append({"type": "scatter", "mode": "markers", "x": [None], "y": [None],
                        "name": f"{ph}, {src}", "legendgroup": "styles",
                        "marker": {"symbol": sym, "size": 10, "color": "#555",
                                   "line": {"color": "#555", "width": 2}},
                        "hoverinfo": "skip"})
    return out


def label_notes(i: int, pts: Sequence[C.Pt], fr: Frame, taken: list[L.Box],
                max_labels: int = 12) -> list[dict]:
    """Annotations naming the largest ops, placed so that none overlap."""
    from perfscope.report import layout as LY

    placed = LY.place_points(pts, fr.px, fr.bounds, taken,
                             lambda p: C.marker_px(p.share) / 2, max_labels=max_labels)
    taken.extend(lb.box for _, lb in placed)
    return [{"x": math.log10(p.intensity), "y": math.log10(p.flops_per_s),
             "xref": _ref(i, "x"), "yref": _ref(i, "y"), "text": _esc(lb.text),
             "showarrow": True, "arrowhead": 0, "arrowwidth": 0.7, "arrowcolor": "#aaa",
             "ax": lb.dx, "ay": lb.dy, "font": {"size": 10, "color": "#333"},
             "bgcolor": "rgba(255,255,255,0.7)"} for p, lb in placed]


def roofline(panels: Sequence[C.Panel], *, title: str = "", height: int = 540,
             width: int | None = None, labels: bool = True) -> dict[str, Any]:
    """Side-by-side rooflines, one panel per device, shared log-log axes."""
    n = len(panels)
    width = width or (980 if n == 1 else min(1180, 590 * n))
    (xr, yr) = ranges(panels)
    layout: dict[str, Any] = _layout(title, width, height, fixed=True)
    data: list[dict] = []
    notes: list[dict] = []
    seen: set[str] = set()
    for i, (panel, dom) in enumerate(zip(panels, domains(n), strict=True)):
        fr = Frame(width, height, dom, xr, yr)
        layout[_ax(i, "xaxis")] = _xaxis(dom, xr, i)
        layout[_ax(i, "yaxis")] = _yaxis(yr, i, shown=i == 0)
        rt, rn, boxes = roof_traces(i, panel, xr, fr, i == 0)
        data += rt
        notes += rn
        pt = pair_trace(i, panel.points)
        if pt:
            data.append(pt)
        data += point_traces(i, panel.points, seen)
        if labels:
            notes += label_notes(i, panel.points, fr, boxes)
        notes.append({"text": f"<b>{_esc(panel.title)}</b>" + (
            f"<br><span style='font-size:11px'>{_esc(panel.note)}</span>" if panel.note else ""),
            "x": (dom[0] + dom[1]) / 2, "y": 1.0, "xref": "paper", "yref": "paper",
            "yanchor": "bottom", "showarrow": False, "font": {"size": 13}})
    data += legend_keys([p for pn in panels for p in pn.points])
    layout["annotations"] = notes
    return {"data": data, "layout": layout}


def _esc(s: str) -> str:
    import html

    return html.escape(s)


def _layout(title: str, width: int, height: int, fixed: bool = False) -> dict[str, Any]:
    """Common layout; ``fixed``: margins that plotly may not grow (rooflines, whose labels
    are placed in pixels)."""
    margin = dict(MARGIN) if fixed else {"l": 80, "r": 20, "t": 60, "b": 60}
    return {"title": {"text": _esc(title), "x": 0.01, "font": {"size": 15}},
            "width": width, "height": height, "margin": margin,
            "font": {"family": FONT, "size": 12}, "hovermode": "closest",
            "plot_bgcolor": "white", "paper_bgcolor": "white",
            "legend": {"orientation": "h", "y": -0.17, "yanchor": "top", "x": 0,
                       "font": {"size": 11}}}


def decade_ticks(r: tuple[float, float], text) -> dict[str, Any]:
    """Tick at every power of ten in the log10 range ``r``, labelled by ``text(value)``."""
    vals = [10.0 ** e for e in range(math.ceil(r[0]), math.floor(r[1]) + 1)]
    return {"tickmode": "array", "tickvals": vals, "ticktext": [text(v) for v in vals]}


def binary_ticks(r: tuple[float, float], text, most: int = 8) -> dict[str, Any]:
    """Ticks at powers of two in the log10 range ``r`` (sizes in bytes read as 1 KiB, 4 KiB,
    ... not 977 KiB), every 2^k-th power so that at most ``most`` remain."""
    exps = list(range(math.ceil(r[0] / math.log10(2)), math.floor(r[1] / math.log10(2)) + 1))
    step = 1
    while len([e for e in exps if e % step == 0]) > most:
        step *= 2
    vals = [2.0 ** e for e in exps if e % step == 0]
    return {"tickmode": "array", "tickvals": vals, "ticktext": [text(v) for v in vals]}


def _xaxis(dom: tuple[float, float], xr: tuple[float, float], i: int) -> dict[str, Any]:
    from perfscope.report import fmt as F

    return {"type": "log", "range": list(xr), "domain": list(dom),
            "title": {"text": "arithmetic intensity (FLOP/byte)"}, "gridcolor": "#eee",
            "zeroline": False, "anchor": _ref(i, "y"), "showline": True, "linecolor": "#999",
            **decade_ticks(xr, lambda v: F.num(v, 1))}


def _yaxis(yr: tuple[float, float], i: int, shown: bool) -> dict[str, Any]:
    from perfscope.report import fmt as F

    ax = {"type": "log", "range": list(yr), "gridcolor": "#eee", "zeroline": False,
          "anchor": _ref(i, "x"), "showline": True, "linecolor": "#999",
          "title": {"text": "FLOP/s" if shown else ""},
          **decade_ticks(yr, lambda v: F.si(v, "FLOP/s", 1))}
    if i:  # side by side: one shared scale, labelled once on the left
        ax["matches"] = "y"
        ax["showticklabels"] = False
    return ax
