"""The report's other charts, as plotly figure dicts: the decode batch sweep (trajectories
along the roof with a slider; tokens/s and TPOT against batch), time by op kind per phase,
memory against capacity, devices compared, and the measured sections (collectives, kernels).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from perfscope.report import chartdata as C
from perfscope.report import fmt as F
from perfscope.report.plotly_roofline import (
    Frame,
    _esc,
    _layout,
    _xaxis,
    _yaxis,
    binary_ticks,
    decade_ticks,
    label_notes,
    legend_keys,
    point_traces,
    roof_traces,
)

MEM_COLORS = {"weights": "#4c78a8", "KV cache": "#f58518", "activations": "#54a24b"}
CEIL_DASH = {"spec": "solid", "empirical": "dash"}


def trajectory(hs: Any, title: str = "") -> dict[str, Any]:
    """Decode on one device as batch grows: every op's path (thin line) and, per slider step,
    the ops at that batch (sized by share). The slider starts at the operating batch."""
    sweep = hs.sweep
    per_batch = [C.analysis_points(p.spec.decode)[0] for p in sweep]
    all_pts = [p for pts in per_batch for p in pts]
    panel = C.Panel(hs.hw.display_name, C.hw_roofs(hs.hw, {(p.op.dtype, p.op.unit) for p in
                                                           sweep[0].spec.decode.points}),
                    tuple(all_pts))
    from perfscope.report.plotly_roofline import ranges

    xr, yr = ranges([panel])
    width, height = 1150, 660
    margin = {"l": 95, "r": 190, "t": 70, "b": 210, "autoexpand": False}  # legend right,
    fr = Frame(width, height, (0.0, 1.0), xr, yr, margin)                 # slider below
    layout = _layout(title, width, height, fixed=True)
    layout["margin"] = margin
    layout["xaxis"] = _xaxis((0.0, 1.0), xr, 0)
    layout["yaxis"] = _yaxis(yr, 0, True)
    data, notes, boxes = roof_traces(0, panel, xr, fr, True)
    paths: dict[str, list[tuple[int, C.Pt]]] = {}
    for bp, pts in zip(sweep, per_batch, strict=True):
        for p in pts:
            paths.setdefault(p.name, []).append((bp.batch, p))
    for name, seq in paths.items():
        kind = seq[0][1].kind
        data.append({"type": "scatter", "mode": "lines", "x": [p.intensity for _, p in seq],
                     "y": [p.flops_per_s for _, p in seq], "name": _esc(f"{name} path"),
                     "line": {"color": C.color(kind), "width": 1}, "opacity": 0.35,
                     "text": [f"{_esc(name)} at batch {b}" for b, _ in seq],
                     "hovertemplate": "%{text}<extra></extra>", "showlegend": False})
    fixed = len(data)
    active = next((i for i, p in enumerate(sweep) if p.batch == hs.spec.batch), 0)
    groups: list[list[int]] = []
    for i, pts in enumerate(per_batch):
        # each batch's traces carry their own legend squares: shown with the batch
        tr = point_traces(0, pts, set(), visible=i == active)
        groups.append(list(range(len(data), len(data) + len(tr))))
        data += tr
    data += legend_keys(per_batch[active])
    n = len(data)
    steps: list[dict[str, Any]] = []
    for i, bp in enumerate(sweep):
        vis = [True] * fixed + [False] * (n - fixed)
        for j in groups[i]:
            vis[j] = True
        for j in range(n - len(legend_keys(per_batch[active])), n):
            vis[j] = True
        d = bp.spec.decode.totals
        steps.append({"method": "update", "label": str(bp.batch),
                      "args": [{"visible": vis},
                               {"title.text": _esc(title) + f"<br><sub>batch {bp.batch}: TPOT "
                                f"{F.seconds(d.time_s)}, {d.bound}-bound, "
                                f"{F.num(bp.spec.tokens_per_s_per_gpu)} tokens/s per GPU"
                                + ("" if bp.spec.final.memory.fits else
                                   ", KV cache does NOT fit") + "</sub>"}]})
    layout["sliders"] = [{"active": active, "steps": steps, "y": -0.2, "yanchor": "top",
                          "len": 0.95, "currentvalue": {"prefix": "decode batch ",
                                                        "font": {"size": 13}},
                          "pad": {"t": 10}}]
    layout["legend"] = {"orientation": "v", "x": 1.02, "y": 1, "font": {"size": 11}}
    notes += label_notes(0, per_batch[active], fr, boxes, max_labels=8)
    layout["annotations"] = notes
    layout["title"]["text"] = steps[active]["args"][1]["title.text"]
    return {"data": data, "layout": layout}


def _vline(x: float, text: str, color: str, yref: str = "paper", dash: str = "dot",
           y: float = 1.0, right: bool = False) -> tuple[dict, dict]:
    """A vertical marker line and its label (to the line's left when ``right``: near the
    right edge of the plot the text would be cut)."""
    shape = {"type": "line", "x0": x, "x1": x, "y0": 0, "y1": 1, "xref": "x", "yref": yref,
             "line": {"color": color, "width": 1.5, "dash": dash}}
    # a log axis places annotations in log10 units
    note = {"x": math.log10(x), "y": y, "xref": "x", "yref": "paper", "text": text,
            "showarrow": False, "xanchor": "right" if right else "left", "yanchor": "top",
            "xshift": -3 if right else 3,
            "font": {"size": 10, "color": color}, "bgcolor": "rgba(255,255,255,0.8)"}
    return shape, note


def batch_chart(hs: Any, title: str = "") -> dict[str, Any]:
    """Output tokens/s per GPU (left axis) and TPOT (right axis) against the decode batch, at
    spec and empirical ceilings; where the GEMMs and the step turn compute-bound; the
    batches whose KV cache does not fit shaded."""
    xs = [p.batch for p in hs.sweep]
    data = []
    for ceil in ("spec", "empirical"):
        words = "spec (upper bound)" if ceil == "spec" else "empirical (expected)"
        ss = [getattr(p, ceil) for p in hs.sweep]
        data.append({"type": "scatter", "mode": "lines+markers", "x": xs,
                     "y": [s.tokens_per_s_per_gpu for s in ss],
                     "name": f"tokens/s per GPU, {words}", "yaxis": "y",
                     "line": {"color": "#1f77b4", "dash": CEIL_DASH[ceil]},
                     "text": [f"batch {s.batch}: {F.num(s.tokens_per_s_per_gpu)} tokens/s per "
                              f"GPU, {F.num(s.tokens_per_s_per_user)} per user" for s in ss],
                     "hovertemplate": "%{text}<extra></extra>"})
        data.append({"type": "scatter", "mode": "lines+markers", "x": xs,
                     "y": [s.tpot_s * 1e3 for s in ss], "name": f"TPOT (ms), {words}",
                     "yaxis": "y2", "line": {"color": "#d62728", "dash": CEIL_DASH[ceil]},
                     "text": [f"batch {s.batch}: TPOT {F.seconds(s.tpot_s)}, TTFT "
                              f"{F.seconds(s.ttft_s)}, decode {s.decode.totals.bound}-bound"
                              for s in ss],
                     "hovertemplate": "%{text}<extra></extra>"})
    shapes, notes = [], []
    span = math.log(max(xs) / min(xs)) or 1.0

    def near_right(b: float) -> bool:
        return math.log(max(b, min(xs)) / min(xs)) / span > 0.55

    if hs.kv_limit_batch < max(xs):
        lo = max(hs.kv_limit_batch, 0.5)
        shapes.append({"type": "rect", "x0": lo, "x1": max(xs) * 1.5, "y0": 0, "y1": 1,
                       "xref": "x", "yref": "paper", "fillcolor": "rgba(214,39,40,0.08)",
                       "line": {"width": 0}})
        s, n = _vline(lo, f"KV cache full above batch {hs.kv_limit_batch}", "#d62728",
                      dash="solid", y=0.98, right=near_right(lo))
        shapes.append(s)
        notes.append(n)
    for b, text, y in ((hs.gemm_compute_batch, "decode GEMMs compute-bound", 0.88),
                       (hs.step_compute_batch, "whole step compute-bound", 0.78)):
        if b is not None and b <= max(xs) * 1.5:
            s, n = _vline(b, f"{text} from batch {b}", "#2ca02c", y=y, right=near_right(b))
            shapes.append(s)
            notes.append(n)
    s, n = _vline(hs.spec.batch, f"operating batch {hs.spec.batch}", "#555", y=0.68,
                  right=near_right(hs.spec.batch))
    shapes.append(s)
    notes.append(n)
    layout = _layout(title, 980, 460)
    layout["xaxis"] = {"type": "log", "title": {"text": "decode batch (sequences)"},
                       "tickvals": xs, "ticktext": [str(x) for x in xs], "gridcolor": "#eee",
                       "range": [math.log10(min(xs)) - 0.1, math.log10(max(xs)) + 0.1]}
    layout["yaxis"] = {"title": {"text": "output tokens/s per GPU"}, "rangemode": "tozero",
                       "gridcolor": "#eee", "tickformat": ",.0f"}
    layout["yaxis2"] = {"title": {"text": "TPOT (ms)"}, "overlaying": "y", "side": "right",
                        "rangemode": "tozero", "showgrid": False, "tickformat": ".3~g"}
    layout["shapes"] = shapes
    layout["annotations"] = notes
    layout["legend"] = {"orientation": "h", "y": -0.2, "font": {"size": 11}}
    layout["margin"] = dict(layout["margin"], r=70, b=110)
    return {"data": data, "layout": layout}


def kinds_chart(rows: Sequence[tuple[str, Mapping[str, float], float, str]],
                title: str = "") -> dict[str, Any]:
    """Share of step time by op kind, one bar per (device, phase): ``rows`` of (label,
    time_by_kind in s, step time in s, link name for comm)."""
    kinds: list[str] = []
    for _, tk, _, _ in rows:
        for k in sorted(tk, key=lambda k: -tk[k]):
            if k not in kinds and tk[k] > 0:
                kinds.append(k)
    data = []
    labels = [_esc(r[0]) for r in rows]
    for k in kinds:
        name = k
        links = {r[3] for r in rows if r[1].get(k)}
        if k == "comm" and links:
            name = f"comm ({', '.join(sorted(links))})"
        vals = [r[1].get(k, 0.0) / r[2] * 100 if r[2] else 0 for r in rows]
        data.append({"type": "bar", "orientation": "h", "name": _esc(name), "y": labels,
                     "x": vals,
                     "marker": {"color": C.color(k)},
                     "text": [f"{F.seconds(r[1].get(k, 0.0))}" if v >= 6 else ""
                              for r, v in zip(rows, vals, strict=True)],
                     "textposition": "inside", "insidetextanchor": "middle",
                     "customdata": [f"{_esc(name)}: {F.seconds(r[1].get(k, 0.0))} of "
                                    f"{F.seconds(r[2])} ({F.pct(v / 100)})"
                                    for r, v in zip(rows, vals, strict=True)],
                     "hovertemplate": "%{y}<br>%{customdata}<extra></extra>"})
    layout = _layout(title, 980, 120 + 34 * len(rows))
    layout["barmode"] = "stack"
    layout["xaxis"] = {"title": {"text": "share of the step's time (%)"}, "range": [0, 100],
                       "gridcolor": "#eee"}
    layout["yaxis"] = {"autorange": "reversed", "automargin": True}
    layout["legend"] = {"orientation": "h", "y": -0.35 if len(rows) < 4 else -0.15}
    layout["margin"] = dict(layout["margin"], l=200, b=90)
    return {"data": data, "layout": layout}


def memory_chart(hs: Any, title: str = "") -> dict[str, Any]:
    """Weights, KV cache and activations per GPU against capacity, as batch grows (left) and
    as context grows at the operating batch (right)."""
    left = [(str(p.batch), p.spec.final.memory) for p in hs.sweep]
    right = [(F.count(c), m) for c, m in hs.contexts]
    data = []
    for i, series in enumerate((left, right)):
        ax = "" if i == 0 else "2"
        for part, attr in (("weights", "weights_bytes"), ("KV cache", "kv_cache_bytes"),
                           ("activations", "activation_peak_bytes")):
            data.append({"type": "bar", "name": part, "legendgroup": part,
                         "showlegend": i == 0, "x": [x for x, _ in series],
                         "y": [getattr(m, attr) / 2**30 for _, m in series],
                         "marker": {"color": MEM_COLORS[part]}, "xaxis": f"x{ax}",
                         "yaxis": f"y{ax}",
                         "customdata": [F.nbytes(getattr(m, attr)) for _, m in series],
                         "hovertemplate": f"{part}: %{{customdata}}<extra>%{{x}}</extra>"})
    cap = hs.spec.final.memory
    shapes = []
    notes = []
    for i in range(2):
        xr = "x" if i == 0 else "x2"
        yr = "y" if i == 0 else "y2"
        for v, text, dash in ((cap.capacity_bytes, "capacity", "solid"),
                              (cap.usable_bytes, f"usable ({cap.reserve_fraction:.0%} kept free)",
                               "dash")):
            shapes.append({"type": "line", "xref": f"{xr} domain", "yref": yr, "x0": 0, "x1": 1,
                           "y0": v / 2**30, "y1": v / 2**30,
                           "line": {"color": "#d62728", "dash": dash, "width": 1.5}})
            notes.append({"xref": f"{xr} domain", "yref": yr, "x": 0.01, "y": v / 2**30,
                          "text": f"{text} {F.nbytes(v)}", "showarrow": False,
                          "xanchor": "left", "yanchor": "bottom" if dash == "solid" else "top",
                          "font": {"size": 10, "color": "#d62728"}})
    top = max(max(m.total_bytes for _, m in left + right), cap.capacity_bytes) / 2**30 * 1.1
    layout = _layout(title, 980, 430)
    layout["barmode"] = "stack"
    cached = F.count(hs.spec.isl + hs.spec.osl)
    layout["xaxis"] = {"domain": [0, 0.47], "type": "category",
                       "title": {"text": f"decode batch (at the last token, {cached} cached)"}}
    layout["xaxis2"] = {"domain": [0.53, 1], "title": {"text": "cached context per sequence "
                                                               f"(batch {hs.spec.batch})"},
                        "type": "category"}
    layout["yaxis"] = {"title": {"text": "memory per GPU (GiB)"}, "range": [0, top],
                       "gridcolor": "#eee"}
    layout["yaxis2"] = {"anchor": "x2", "range": [0, top], "gridcolor": "#eee",
                        "matches": "y"}
    layout["shapes"] = shapes
    layout["annotations"] = notes
    layout["legend"] = {"orientation": "h", "y": -0.25}
    layout["margin"] = dict(layout["margin"], b=100)
    return {"data": data, "layout": layout}


def compare_chart(studies: Sequence[Any], title: str = "") -> dict[str, Any]:
    """Devices side by side: TTFT, TPOT and output tokens/s per GPU, spec and empirical."""
    names = [_esc(h.hw.display_name) for h in studies]
    metrics = (("TTFT (ms)", lambda s: s.ttft_s * 1e3), ("TPOT (ms)", lambda s: s.tpot_s * 1e3),
               ("output tokens/s per GPU", lambda s: s.tokens_per_s_per_gpu))
    data = []
    doms = [(0, 0.29), (0.355, 0.645), (0.71, 1)]
    for i, (label, get) in enumerate(metrics):
        ax = "" if i == 0 else str(i + 1)
        for ceil, color in (("spec", "#4c78a8"), ("empirical", "#9ecae9")):
            vals = [get(getattr(h, ceil)) for h in studies]
            data.append({"type": "bar", "name": "spec (upper bound)" if ceil == "spec" else
                         "empirical (expected)", "legendgroup": ceil, "showlegend": i == 0,
                         "x": names, "y": vals, "marker": {"color": color},
                         "xaxis": f"x{ax}", "yaxis": f"y{ax}",
                         "text": [F.num(v) for v in vals], "textposition": "outside",
                         "hovertemplate": f"{label}: %{{text}}<extra>%{{x}}</extra>"})
    layout = _layout(title, 1150, 420)
    layout["barmode"] = "group"
    notes = []
    for i, ((label, _), dom) in enumerate(zip(metrics, doms, strict=True)):
        ax = "" if i == 0 else str(i + 1)
        layout[f"xaxis{ax}"] = {"domain": list(dom), "anchor": f"y{ax}", "tickangle": -20}
        layout[f"yaxis{ax}"] = {"anchor": f"x{ax}", "rangemode": "tozero", "gridcolor": "#eee"}
        notes.append({"text": f"<b>{label}</b>", "x": (dom[0] + dom[1]) / 2, "y": 1.02,
                      "xref": "paper", "yref": "paper", "showarrow": False,
                      "yanchor": "bottom"})
    layout["annotations"] = notes
    layout["legend"] = {"orientation": "h", "y": -0.3}
    layout["margin"] = dict(layout["margin"], b=120)
    return {"data": data, "layout": layout}


def link_chart(panels: Sequence[tuple[str, Sequence[C.CommPt], Mapping[str, tuple[float, str]]]],
               title: str = "") -> dict[str, Any]:
    """Collectives against their link: achieved bus bandwidth against message size, with
    each link's ceiling. ``panels``: (device, comm points, {label: (bytes/s, source)})."""
    data = []
    shapes: list[dict] = []
    notes: list[dict] = []
    seen: set[str] = set()
    palette = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b")
    xs, ys = [1.0], [1.0]
    for j, (name, pts, roofs) in enumerate(panels):
        col = palette[j % len(palette)]
        first = True
        for p in pts:
            xs.append(p.size_bytes)
            ys.append(p.busbw_bytes_s)
            sym = C.PHASE_SYMBOLS.get(p.phase, "circle") + ("-open" if p.source == "predicted"
                                                            else "")
            data.append({"type": "scatter", "mode": "markers", "x": [p.size_bytes],
                         "y": [p.busbw_bytes_s], "name": _esc(name),
                         "legendgroup": name, "showlegend": first,
                         "marker": {"symbol": sym, "size": C.marker_px(p.share),
                                    "color": col, "line": {"width": 2, "color": col}},
                         "text": [C.hover_html((("device", name), *p.hover))],
                         "hovertemplate": "%{text}<extra></extra>"})
            first = False
        for label, (bw, src) in roofs.items():
            if label in seen:
                continue
            seen.add(label)
            ys.append(bw)
            shapes.append({"type": "line", "xref": "x domain", "yref": "y", "x0": 0, "x1": 1,
                           "y0": bw, "y1": bw, "line": {"color": "#333", "width": 1.5,
                                                        "dash": C.SOURCE_DASH.get(src, "dash")}})
            left = len(notes) % 2 == 1  # alternate sides: close ceilings stay legible
            notes.append({"xref": "x domain", "yref": "y", "x": 0.01 if left else 0.99,
                          "y": math.log10(bw),
                          "text": f"{_esc(label)} {F.si(bw, 'B/s')} ({src})",
                          "showarrow": False, "xanchor": "left" if left else "right",
                          "yanchor": "bottom", "font": {"size": 10}})
    layout = _layout(title, 980, 420)
    xr = (math.log10(min(x for x in xs if x > 1) if len(xs) > 1 else 1) - 0.3,
          math.log10(max(xs)) + 0.3)
    yr = (math.log10(min(ys[1:] or [1.0])) - 0.3, math.log10(max(ys)) + 0.3)
    layout["xaxis"] = {"type": "log", "title": {"text": "message per rank"}, "range": list(xr),
                       "gridcolor": "#eee", **binary_ticks(xr, lambda v: F.nbytes(v, 1))}
    layout["yaxis"] = {"type": "log", "title": {"text": "bus bandwidth"}, "range": list(yr),
                       "gridcolor": "#eee", **decade_ticks(yr, lambda v: F.si(v, "B/s", 1))}
    layout["shapes"] = shapes
    layout["annotations"] = notes
    return {"data": data, "layout": layout}
