"""Where a roofline's words go, in pixels, for both renderers: roof labels (each compute roof
also names its ridge point), then the op labels, none overlapping each other or a marker.

``px(x, y)`` maps data to pixels with y growing downwards; renderers convert back (plotly:
data anchor + pixel shift; matplotlib: data anchor + offset points).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

from perfscope.report import chartdata as C
from perfscope.report import labels as L

Px = Callable[[float, float], tuple[float, float]]


class Placed(NamedTuple):
    text: str
    x: float  # data anchor
    y: float
    dx: float  # text centre from the anchor, px (y downwards)
    dy: float
    angle: float  # degrees, counter-clockwise on screen
    box: L.Box
    color: str = "#333"


def rotated_boxes(cx: float, cy: float, w: float, h: float, angle: float) -> list[L.Box]:
    """A rotated w x h label as a chain of small upright boxes along its axis (a single
    bounding box of slanted text would claim a large empty square)."""
    a = math.radians(angle)
    ux, uy = math.cos(a), -math.sin(a)  # along the text, y downwards
    n = max(1, math.ceil(w / h))
    step = w / n
    out = []
    for k in range(n):
        t = -w / 2 + step * (k + 0.5)
        x, y = cx + ux * t, cy + uy * t
        if abs(math.sin(a)) < 0.05:  # upright: one box per step, full height
            out.append(L.Box(x - step / 2, y - h / 2, x + step / 2, y + h / 2))
        else:  # slanted: squares a little smaller than the line height, along the axis
            half = 0.4 * h
            out.append(L.Box(x - half, y - half, x + half, y + half))
    return out


def segment_boxes(p0: tuple[float, float], p1: tuple[float, float], r: float = 1.5
                  ) -> list[L.Box]:
    """A drawn line as small boxes every few pixels (labels keep off the roofs)."""
    n = max(1, int(math.hypot(p1[0] - p0[0], p1[1] - p0[1]) / 6))
    return [L.Box(p0[0] + (p1[0] - p0[0]) * k / n - r, p0[1] + (p1[1] - p0[1]) * k / n - r,
                  p0[0] + (p1[0] - p0[0]) * k / n + r, p0[1] + (p1[1] - p0[1]) * k / n + r)
            for k in range(n + 1)]


def roof_segments(panel: C.Panel, xlim: tuple[float, float], ylim: tuple[float, float]
                  ) -> list[tuple[C.Roof, tuple[float, float], tuple[float, float]]]:
    """Each roof as a segment in data space: compute roofs from their ridge to the right
    edge, memory roofs from the bottom-left edge up to the highest compute roof of their
    source family."""
    mems = [r for r in panel.roofs if r.kind == "memory"]
    comps = [r for r in panel.roofs if r.kind == "compute"]

    def same(r: C.Roof, pool: list[C.Roof]) -> list[C.Roof]:
        return [m for m in pool if C._family(m.source) == C._family(r.source)] or pool

    out = []
    for c in sorted(comps, key=lambda r: -r.value):
        bw = max((m.value for m in same(c, mems)), default=c.value / xlim[0])
        out.append((c, (max(c.value / bw, xlim[0]), c.value), (xlim[1], c.value)))
    for m in sorted(mems, key=lambda r: -r.value):
        top = max((c.value for c in same(m, comps)), default=m.value * xlim[1])
        x1 = min(top / m.value, xlim[1])
        x0 = max(xlim[0], ylim[0] / m.value)
        out.append((m, (x0, x0 * m.value), (x1, x1 * m.value)))
    return out


def roof_texts(panel: C.Panel, r: C.Roof) -> list[str]:
    """The label of a roof, longest first: a compute roof names its ridge point when there
    is room, and goes without it when not."""
    from perfscope.report import fmt as F

    unit = F.rate(r.value) if r.kind == "compute" else F.si(r.value, "B/s")
    short = f"{unit} ({r.source})"
    if r.kind != "compute":
        return [r.text, short]
    rid = next((d for d in panel.ridges if d.flops_per_s == r.value), None)
    full = [r.text + f", ridge {rid.label.split(' ', 1)[1]}"] if rid else []
    return [*full, r.text, short]


def place_roofs(panel: C.Panel, segs: Sequence[tuple[C.Roof, tuple[float, float],
                                                     tuple[float, float]]],
                px: Px, bounds: L.Box, markers: Sequence[L.Box], *,
                char_w: float = 6.3, line_h: float = 12.0) -> tuple[list[Placed], list[L.Box]]:
    """A label for each roof beside its line, clear of the markers, of the other roofs and
    of each other (a roof whose label finds no place goes unlabelled; hover names it).
    Returns the labels and every box now taken (labels, roof lines, ridge ticks)."""
    taken: list[L.Box] = []
    for _, a, b in segs:
        taken += segment_boxes(px(*a), px(*b))
    out: list[Placed] = []
    for r, (x0, y0), (x1, y1) in segs:
        for text in roof_texts(panel, r):
            lb = _place_one(r, text, (x0, y0), (x1, y1), px, bounds, markers, taken,
                            char_w, line_h)
            if lb is not None:
                out.append(lb)
                break
    for d in panel.ridges:  # the point labels keep the ridge ticks visible
        x, y = px(d.intensity, d.flops_per_s)
        taken.append(L.Box(x - 3, y - 8, x + 3, y + 8))
    return out, taken


def _place_one(r: C.Roof, text: str, a: tuple[float, float], b: tuple[float, float],
               px: Px, bounds: L.Box, markers: Sequence[L.Box], taken: list[L.Box],
               char_w: float, line_h: float) -> Placed | None:
    (x0, y0), (x1, y1) = a, b
    w, h = char_w * len(text) + 4, line_h
    p0, p1 = px(x0, y0), px(x1, y1)
    angle = math.degrees(math.atan2(p0[1] - p1[1], p1[0] - p0[0]))
    length = math.hypot(p1[0] - p0[0], p1[1] - p0[1])
    if length < 1:
        return None
    ux, uy = (p1[0] - p0[0]) / length, (p1[1] - p0[1]) / length
    nx, ny = uy, -ux  # normal pointing up-left of the line on screen
    if r.kind == "compute":
        # right-aligned at the plot's edge, ending at the ridge (above the roof, left of the
        # ridge, is empty space), starting at the ridge, or centred
        alongs = [bounds.x1 - 3 - w / 2 - p0[0], -w / 2 - 6, w / 2 + 4, length / 2]
    else:
        alongs = [min(max(f * length, w / 2 + 4), length - w / 2 - 4)
                  for f in (0.22, 0.36, 0.5, 0.64, 0.78, 0.1)]
    color = "#444" if r.kind == "memory" else \
        ("#222" if "tensor" in r.label or "GEMM" in r.label else "#888")
    for along in alongs:
        bx, by = p0[0] + ux * along, p0[1] + uy * along
        for side in (1, -1):
            off = side * (h / 2 + 3)
            cx, cy = bx + nx * off, by + ny * off
            boxes = rotated_boxes(cx, cy, w, h, angle)
            if any(q.x0 < bounds.x0 or q.x1 > bounds.x1 or q.y0 < bounds.y0 or
                   q.y1 > bounds.y1 for q in boxes):
                continue
            if any(q.hits(t, 0) for q in boxes for t in taken) or \
                    any(q.hits(m, 0) for q in boxes for m in markers):
                continue
            ax_, ay_ = _data_at(x0, y0, x1, y1, along / length)
            taken += boxes
            return Placed(text, ax_, ay_, cx - bx, cy - by, angle,
                          L.Box(min(q.x0 for q in boxes), min(q.y0 for q in boxes),
                                max(q.x1 for q in boxes), max(q.y1 for q in boxes)), color)
    return None


def _data_at(x0: float, y0: float, x1: float, y1: float, t: float) -> tuple[float, float]:
    """The point a fraction ``t`` along a segment that is straight on log-log axes."""
    return (10 ** (math.log10(x0) + t * (math.log10(x1) - math.log10(x0))),
            10 ** (math.log10(y0) + t * (math.log10(y1) - math.log10(y0))))


def label_order(pts: Sequence[C.Pt], limit: int = 40) -> list[C.Pt]:
    """The points worth naming, most important first: predictions (or measurements without
    one) by share of the step; measured-only charts keep their order."""
    keyed = {p.key for p in pts if p.source == "predicted" and p.key}
    order = [p for p in pts if p.source == "predicted" or p.key not in keyed]
    order.sort(key=lambda p: -p.share)
    return order[:limit]


def place_points(pts: Sequence[C.Pt], px: Px, bounds: L.Box, taken: Sequence[L.Box],
                 radius: Callable[[C.Pt], float], *, max_labels: int = 12,
                 char_w: float = 6.3, line_h: float = 13.0) -> list[tuple[C.Pt, L.Label]]:
    order = label_order(pts)
    if not order:
        return []
    xy = [px(p.intensity, p.flops_per_s) for p in order]
    others = [p for p in pts if p not in order]
    obstacles = list(taken)
    for p in others:
        x, y = px(p.intensity, p.flops_per_s)
        rr = radius(p)
        obstacles.append(L.Box(x - rr, y - rr, x + rr, y + rr))
    placed = L.place([x for x, _ in xy], [y for _, y in xy], [p.name for p in order],
                     [radius(p) for p in order], bounds, obstacles=obstacles,
                     max_labels=max_labels, char_w=char_w, line_h=line_h)
    return [(order[lb.point], lb) for lb in placed]


def marker_boxes(pts: Sequence[C.Pt], px: Px, radius: Callable[[C.Pt], float]) -> list[L.Box]:
    out = []
    for p in pts:
        x, y = px(p.intensity, p.flops_per_s)
        r = radius(p)
        out.append(L.Box(x - r, y - r, x + r, y + r))
    return out
