"""Point labels that do not overlap: a greedy placement in pixel space, most important first.

Both renderers use it: the report's plotly charts (fixed pixel size, so positions are known)
and matplotlib (after the axes are laid out). Points that land on one spot share one label
("attn.q_proj, attn.o_proj"); a label that finds no free place is left out (the hover and the
tables still name it) rather than piled on another.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple


class Box(NamedTuple):
    x0: float
    y0: float
    x1: float
    y1: float

    def hits(self, o: Box, pad: float = 1.0) -> bool:
        return not (self.x1 + pad <= o.x0 or o.x1 + pad <= self.x0 or
                    self.y1 + pad <= o.y0 or o.y1 + pad <= self.y0)


class Label(NamedTuple):
    point: int  # index of the first point it names (in the order given)
    text: str
    x: float  # the point, px
    y: float
    dx: float  # label centre relative to the point, px (y grows downwards)
    dy: float
    box: Box


CHAR_W = 6.3  # px per character at the charts' 10 px label font (a little generous)
LINE_H = 13.0


def text_box(cx: float, cy: float, text: str, char_w: float = CHAR_W,
             line_h: float = LINE_H) -> Box:
    w = char_w * len(text) + 4
    return Box(cx - w / 2, cy - line_h / 2, cx + w / 2, cy + line_h / 2)


def merge_close(xs: Sequence[float], ys: Sequence[float], names: Sequence[str],
                radius: float = 5.0) -> list[tuple[int, str, float, float]]:
    """Points within ``radius`` px of an earlier one join its label: (first index, text, x, y)."""
    groups: list[tuple[int, list[str], float, float]] = []
    for i, (x, y, n) in enumerate(zip(xs, ys, names, strict=True)):
        for g in groups:
            if math.hypot(g[2] - x, g[3] - y) <= radius:
                if n not in g[1]:
                    g[1].append(n)
                break
        else:
            groups.append((i, [n], x, y))
    return [(i, ", ".join(ns), x, y) for i, ns, x, y in groups]


def place(xs: Sequence[float], ys: Sequence[float], names: Sequence[str],
          radii: Sequence[float], bounds: Box, *, obstacles: Sequence[Box] = (),
          max_labels: int = 14, char_w: float = CHAR_W, line_h: float = LINE_H,
          max_chars: int = 40) -> list[Label]:
    """Labels for points given in priority order (most important first).

    ``radii``: marker radius of each point in px (labels keep off every marker);
    ``bounds``: the plot area; ``obstacles``: boxes already taken (legend, roof labels)."""
    taken: list[Box] = list(obstacles)
    markers = [Box(x - r, y - r, x + r, y + r) for x, y, r in zip(xs, ys, radii, strict=True)]
    out: list[Label] = []
    for i, text, x, y in merge_close(xs, ys, names):
        if len(out) >= max_labels:
            break
        if len(text) > max_chars:
            text = text[: max_chars - 3].rsplit(", ", 1)[0] + ", ..."
        r = radii[i]
        for dist in (r + 10, r + 22, r + 38, r + 58):
            for ang in (35, 145, -35, -145, 0, 180, 90, -90):
                a = math.radians(ang)
                w = char_w * len(text) + 4
                # centre so the label's near edge sits ``dist`` from the point
                cx = x + math.cos(a) * (dist + w / 2 * abs(math.cos(a)))
                cy = y - math.sin(a) * (dist + line_h / 2 * abs(math.sin(a)))
                b = text_box(cx, cy, text, char_w, line_h)
                if b.x0 < bounds.x0 or b.x1 > bounds.x1 or b.y0 < bounds.y0 or b.y1 > bounds.y1:
                    continue
                if any(b.hits(t) for t in taken) or any(b.hits(m, 0) for m in markers):
                    continue
                taken.append(b)
                out.append(Label(i, text, x, y, cx - x, cy - y, b))
                break
            else:
                continue
            break
    return out


def overlaps(boxes: Sequence[Box]) -> list[tuple[int, int]]:
    """Pairs of boxes that overlap (for tests and checks)."""
    return [(i, j) for i in range(len(boxes)) for j in range(i + 1, len(boxes))
            if boxes[i].hits(boxes[j], pad=0)]
