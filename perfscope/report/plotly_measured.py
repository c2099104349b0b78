"""Charts of the measured sections (plotly figure dicts): collectives and reference kernels
as measured on this machine, from a ``perfscope.bench/1`` document's rows."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from perfscope.report import fmt as F
from perfscope.report.plotly_roofline import _esc, _layout, binary_ticks, decade_ticks


def comm_measured_chart(results: Sequence[Mapping[str, Any]], title: str = "") -> dict:
    """Measured collectives: bus bandwidth against message size, one line per collective."""
    by: dict[str, list[Mapping[str, Any]]] = {}
    for r in results:
        if r.get("busbw_bytes_s"):
            by.setdefault(str(r.get("op")), []).append(r)
    data = []
    for op, rs in by.items():
        rs = sorted(rs, key=lambda r: r["size_bytes"])
        data.append({"type": "scatter", "mode": "lines+markers", "name": _esc(op),
                     "x": [r["size_bytes"] for r in rs], "y": [r["busbw_bytes_s"] for r in rs],
                     "text": [f"{_esc(op)} {F.nbytes(r['size_bytes'])}: "
                              f"{F.si(r['busbw_bytes_s'], 'B/s')} bus, median "
                              f"{F.seconds(r.get('median_s'))} ({r.get('backend')}, "
                              f"{r.get('ranks')} ranks)" for r in rs],
                     "hovertemplate": "%{text}<extra></extra>"})
    layout = _layout(title, 980, 400)
    xs = [r["size_bytes"] for rs in by.values() for r in rs] or [1.0]
    ys = [r["busbw_bytes_s"] for rs in by.values() for r in rs] or [1.0]
    xr = (math.log10(min(xs)) - 0.2, math.log10(max(xs)) + 0.2)
    yr = (math.log10(min(ys)) - 0.3, math.log10(max(ys)) + 0.3)
    layout["xaxis"] = {"type": "log", "range": list(xr), "title": {"text": "message (bytes)"},
                       "gridcolor": "#eee", **binary_ticks(xr, lambda v: F.nbytes(v, 1))}
    layout["yaxis"] = {"type": "log", "range": list(yr), "gridcolor": "#eee",
                       "title": {"text": "bus bandwidth"},
                       **decade_ticks(yr, lambda v: F.si(v, "B/s", 1))}
    return {"data": data, "layout": layout}


def kernels_chart(points: Sequence[Mapping[str, Any]], bandwidth: float | None,
                  title: str = "") -> dict[str, Any]:
    """Reference kernels: achieved bytes/s of each variant, beside the measured bandwidth."""
    names = [_esc(str(p.get("name"))) for p in points]
    vals = [p.get("achieved_bytes_per_s") or 0 for p in points]
    data = [{"type": "bar", "orientation": "h", "y": names, "x": [v / 1e9 for v in vals],
             "marker": {"color": ["#1f77b4" if "fused" in n and "unfused" not in n else
                                  "#9ecae9" for n in names]},
             "text": [f"{F.si(v, 'B/s')} ({F.seconds((p.get('stats') or {}).get('median_s'))})"
                      for v, p in zip(vals, points, strict=True)],
             "textposition": "auto", "hovertemplate": "%{y}: %{text}<extra></extra>",
             "name": "achieved"}]
    layout = _layout(title, 980, 120 + 30 * len(points))
    shapes = []
    if bandwidth:
        shapes.append({"type": "line", "x0": bandwidth / 1e9, "x1": bandwidth / 1e9,
                       "y0": 0, "y1": 1,
                       "xref": "x", "yref": "paper",
                       "line": {"color": "#d62728", "dash": "dash", "width": 1.5}})
        layout["annotations"] = [{"x": bandwidth / 1e9, "y": 1, "xref": "x", "yref": "paper",
                                  "text": f"measured memory bandwidth {F.si(bandwidth, 'B/s')}",
                                  "showarrow": False, "yanchor": "bottom",
                                  "font": {"size": 10, "color": "#d62728"}}]
    layout["shapes"] = shapes
    layout["xaxis"] = {"title": {"text": "achieved bandwidth (GB/s of the kernel's memory "
                                         "traffic)"},
                       "gridcolor": "#eee", "rangemode": "tozero", "ticksuffix": " GB/s"}
    layout["yaxis"] = {"automargin": True, "autorange": "reversed"}
    layout["showlegend"] = False
    layout["margin"] = dict(layout["margin"], l=230)
    return {"data": data, "layout": layout}
