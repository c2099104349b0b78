"""What a roofline chart shows, as plain records, for both renderers (plotly for the HTML
report, matplotlib for PNG/SVG/PDF): roofs with their source kind, ridge points, one point
per op (predicted hollow, measured filled, sized by share of the step), comm points against
their link. No drawing here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from perfscope.report import fmt as F

KIND_COLORS = {"gemm": "#1f77b4", "attention": "#ff7f0e", "norm": "#2ca02c",
               "elementwise": "#bcbd22", "softmax": "#9467bd", "embedding": "#8c564b",
               "comm": "#7f7f7f"}
OTHER_COLOR = "#d62728"
PHASE_SYMBOLS = {"prefill": "circle", "decode": "diamond", "chunked_prefill": "square"}
# how a roof is drawn: a published spec solid, anything achieved (published or measured
# here) dashed, a value derived from others dotted
SOURCE_DASH = {"spec": "solid", "empirical": "dash", "measured": "dash", "derived": "dot"}


def color(kind: str) -> str:
    return KIND_COLORS.get(kind, OTHER_COLOR)


class Roof(NamedTuple):
    label: str  # "bf16 tensor", "fp32 vector", "HBM"
    kind: str  # compute | memory
    value: float  # FLOP/s (compute) or bytes/s (memory)
    source: str  # spec | empirical | measured | derived
    detail: str = ""  # where the figure comes from

    @property
    def text(self) -> str:
        v = F.rate(self.value) if self.kind == "compute" else F.si(self.value, "B/s")
        return f"{self.label} {v} ({self.source})"


class Ridge(NamedTuple):
    intensity: float  # FLOP/byte where the compute roof meets the memory roof
    flops_per_s: float
    label: str


class Pt(NamedTuple):
    name: str
    kind: str
    phase: str
    intensity: float  # FLOP/byte
    flops_per_s: float
    source: str  # predicted | measured
    share: float  # of the step's time, 0..1 (sizes the marker)
    hover: tuple[tuple[str, str], ...]
    key: str = ""  # joins a measured point to its prediction


class CommPt(NamedTuple):
    name: str
    phase: str
    size_bytes: float  # message per rank
    busbw_bytes_s: float  # bus bytes / time (nccl-tests convention)
    source: str
    share: float
    hover: tuple[tuple[str, str], ...]
    link: str


class Panel(NamedTuple):
    """One roofline: a device's roofs and the points placed on it."""

    title: str
    roofs: tuple[Roof, ...]
    points: tuple[Pt, ...]
    comm: tuple[CommPt, ...] = ()
    note: str = ""

    @property
    def ridges(self) -> tuple[Ridge, ...]:
        return ridges(self.roofs)


def ridges(roofs: Sequence[Roof]) -> tuple[Ridge, ...]:
    """Each compute roof against the memory roof of the same source (spec with spec, achieved
    with achieved; the fastest when there are several)."""
    out = []
    mems = [r for r in roofs if r.kind == "memory"]
    for c in (r for r in roofs if r.kind == "compute"):
        same = [m for m in mems if _family(m.source) == _family(c.source)] or mems
        if not same:
            continue
        m = max(same, key=lambda r: r.value)
        out.append(Ridge(c.value / m.value, c.value,
                         f"ridge {F.num(c.value / m.value)} FLOP/B"))
    return tuple(out)


def _family(source: str) -> str:
    return "spec" if source == "spec" else "achieved"


# ---- roofs of a device ------------------------------------------------------------------

def hw_roofs(hw: Any, used: Iterable[tuple[str, str]], ceilings: Sequence[str] = ("spec",
             "empirical")) -> tuple[Roof, ...]:
    """Compute roofs for each (dtype, unit) the ops use, and HBM, from a HardwareSpec: the
    spec figures, and the achieved (empirical) ones, each labelled measured or derived by
    perfscope.specs.ceilings' rule."""
    from perfscope.errors import PerfscopeError
    from perfscope.specs.ceilings import memory_ceiling, tensor_ceiling

    want_emp = "empirical" in ceilings
    roofs: list[Roof] = []
    for dtype, unit in dict.fromkeys(used):
        if unit == "link" or not hw.has_dtype(dtype):
            continue
        if unit == "tensor":
            p = hw.peaks[dtype]
            if p.tensor_dense:
                roofs.append(Roof(f"{dtype} tensor", "compute", p.tensor_dense, "spec",
                                  p.source))
            elif p.vector:
                roofs.append(Roof(f"{dtype} (no tensor unit)", "compute", p.vector, "spec",
                                  p.source))
            if want_emp:
                try:
                    c = tensor_ceiling(hw, dtype)
                except PerfscopeError:  # nothing measured to derive it from
                    c = None
                if c is not None and c.source != "spec":
                    roofs.append(Roof(f"{dtype} GEMM", "compute", c.value, c.source, c.note))
        else:
            v = hw.vector_flops(dtype)
            roofs.append(Roof(f"{dtype} vector", "compute", v, "spec",
                              hw.peaks[dtype].source if dtype in hw.peaks else ""))
    roofs.append(Roof("HBM", "memory", hw.memory_bandwidth_bytes_s, "spec", hw.memory_source))
    if want_emp:
        try:
            m = memory_ceiling(hw)
        except PerfscopeError:
            m = None
        if m is not None and m.source != "spec":
            roofs.append(Roof("HBM", "memory", m.value, m.source, m.note))
    return _dedupe(roofs)


def _dedupe(roofs: list[Roof]) -> tuple[Roof, ...]:
    seen: set[tuple[str, str, float]] = set()
    out = []
    for r in roofs:
        k = (r.kind, r.source, round(r.value, -6))
        if k not in seen:
            seen.add(k)
            out.append(r)
    return tuple(out)


def doc_roofs(doc: Mapping[str, Any]) -> tuple[Roof, ...]:
    """Roofs measured on this machine, from a ``perfscope.bench/1`` document's ceilings."""
    roofs = []
    for c in (doc.get("ceilings") or {}).get("values", []):
        name, v = c.get("name", ""), c.get("value")
        if not v:
            continue
        detail = f"median of {c.get('stats', {}).get('n', '?')}, shape {c.get('shape')}"
        if c.get("unit") == "FLOP/s":
            roofs.append(Roof(f"{c.get('dtype')} GEMM", "compute", v, "measured", detail))
        elif name.startswith("memory."):
            roofs.append(Roof(f"memory {name.split('.', 1)[1]}", "memory", v, "measured",
                              detail))
        elif name.startswith("cache."):
            roofs.append(Roof("cache (L2/LLC)", "memory", v, "measured", detail))
    return tuple(roofs)


# ---- points of an analysed step ----------------------------------------------------------

def shape_text(shape: Mapping[str, Any] | None) -> str:
    """A shape as a reader wants it: GEMMs m x n x k, attention by batch, lengths, heads."""
    sh = dict(shape or {})
    if {"m", "n", "k"} <= set(sh):
        g = f"{sh['groups']} x " if sh.get("groups", 1) != 1 else ""
        return f"{g}m {sh['m']} x n {sh['n']} x k {sh['k']}"
    if {"q_len", "kv_len", "heads"} <= set(sh):
        d = sh.get("head_dim_qk", sh.get("head_dim", ""))
        dv = sh.get("head_dim_v")
        text = (f"batch {sh.get('batch', 1)}, q {sh['q_len']} x kv {sh['kv_len']}, heads "
                f"{sh['heads']}/{sh.get('kv_heads', sh['heads'])}, d {d}"
                + (f"/{dv}" if dv and dv != d else ""))
        if sh.get("causal"):
            text += ", causal"
        if sh.get("window"):
            text += f", window {sh['window']}"
        return text
    if "bytes" in sh and "ranks" in sh:
        return f"{F.nbytes(sh['bytes'])} over {sh['ranks']} ranks"
    return ", ".join(f"{k} {v}" for k, v in sh.items())


def link_name(a: Any, p: Any) -> str:
    name = getattr(p, "link", None)  # issue 6: each comm point names its link
    if isinstance(name, str) and name:
        return name
    return a.hw.gpu_link.name if a.hw.gpu_link else "link"


def analysis_points(a: Any, phase: str | None = None) -> tuple[tuple[Pt, ...],
                                                                tuple[CommPt, ...]]:
    """Predicted points of an Analysis. Ops without FLOPs (embedding lookups) have no place
    on a FLOP/s axis and are left to the tables; comm ops go against their link."""
    from perfscope.collectives import link_bytes

    phase = phase or a.scenario.phase
    total = a.totals.time_s or 1.0
    pts: list[Pt] = []
    comm: list[CommPt] = []
    for p in a.points:
        op = p.op
        share = p.total_time_s / total
        base = (("op", op.name), ("phase", phase), ("kind", op.kind), ("count", str(op.count)))
        tail = (("time", f"{F.seconds(p.time_s)} x {op.count} = {F.seconds(p.total_time_s)}"),
                ("share of step", F.pct(share)), ("bound", p.bound),
                ("ceiling", p.ceiling))
        if op.unit == "link":
            bus = link_bytes(op)
            link = link_name(a, p)
            comm.append(CommPt(op.name, phase, op.comm_bytes, bus / p.time_s if p.time_s else 0,
                               "predicted", share,
                               (*base, ("collective", f"{op.comm} over {op.ranks} ranks"),
                                ("message", F.nbytes(op.comm_bytes)), ("link", link), *tail),
                               link))
            continue
        if not op.flops or not p.time_s or not p.intensity:
            continue
        hover = (*base, ("shape", shape_text(op.shape)), ("dtype", f"{op.dtype} {op.unit}"),
                 ("FLOPs", F.si(op.flops, "FLOP")), ("bytes", F.nbytes(op.bytes)),
                 ("intensity", f"{F.intensity(p.intensity)} FLOP/B"),
                 ("attainable", F.rate(p.attainable_flops_per_s)), *tail)
        pts.append(Pt(op.name, op.kind, phase, p.intensity, op.flops / p.time_s, "predicted",
                      share, hover, f"{phase}:{op.name}"))
    return tuple(pts), tuple(comm)


def analysis_panel(analyses: Sequence[Any], title: str | None = None) -> Panel:
    """One device's roofline with the points of one or more analysed steps (e.g. prefill and
    decode) of the same model."""
    hw = analyses[0].hw
    used = [(p.op.dtype, p.op.unit) for a in analyses for p in a.points]
    pts: list[Pt] = []
    comm: list[CommPt] = []
    for a in analyses:
        p, c = analysis_points(a)
        pts += p
        comm += c
    return Panel(title or hw.display_name, hw_roofs(hw, used), tuple(pts), tuple(comm))


# ---- measured points (a perfscope.bench/1 document) ------------------------------------

def doc_points(doc: Mapping[str, Any]) -> tuple[Pt, ...]:
    """The ``ops`` section: each op measured here (filled) and its prediction on the measured
    roofline of this machine (hollow), joined by ``key``."""
    out: list[Pt] = []
    ops = doc.get("ops") or {}
    for i, p in enumerate(ops.get("points", [])):
        x, y = p.get("intensity"), p.get("achieved_flops_per_s")
        if not x or not y:
            continue
        ex = p.get("extra") or {}
        phase = ex.get("phase", "")
        sb = ex.get("sweep_batch")
        name = p["name"] + (f" b={sb}" if sb else "")
        st = p.get("stats") or {}
        pred = p.get("predicted_time_s")
        hover = (("op", name), ("phase", phase), ("kind", p.get("kind", "")),
                 ("shape", shape_text(p.get("shape"))),
                 ("scaled", ex.get("scale_note") or "no"), ("dtype", p.get("dtype", "")),
                 ("FLOPs", F.si(p.get("flops"), "FLOP")), ("bytes", F.nbytes(p.get("bytes"))),
                 ("intensity", f"{F.intensity(x)} FLOP/B"),
                 ("measured", f"{F.seconds(st.get('median_s'))} median "
                              f"(p20 {F.seconds(st.get('p20_s'))}, p80 "
                              f"{F.seconds(st.get('p80_s'))}, n {st.get('n')})"),
                 ("predicted", F.seconds(pred)),
                 ("measured / predicted", f"{F.num(st['median_s'] / pred)}x"
                  if pred and st.get("median_s") else "-"),
                 ("achieved", F.rate(y)))
        key = f"m{i}"
        out.append(Pt(name, p.get("kind", ""), phase, x, y, "measured", 0.0, hover, key))
        if pred:
            out.append(Pt(name, p.get("kind", ""), phase, x, p["flops"] / pred, "predicted",
                          0.0, hover, key))
    return tuple(out)


def pairs(points: Sequence[Pt]) -> list[tuple[Pt, Pt]]:
    """(measured, predicted) of the same key."""
    by: dict[str, dict[str, Pt]] = {}
    for p in points:
        if p.key:
            by.setdefault(p.key, {})[p.source] = p
    return [(d["measured"], d["predicted"]) for d in by.values()
            if "measured" in d and "predicted" in d]


def hover_html(hover: Sequence[tuple[str, str]]) -> str:
    """Hover text for plotly (HTML-escaped; <br> between lines)."""
    import html

    return "<br>".join(f"<b>{html.escape(k)}</b>: {html.escape(str(v))}" for k, v in hover)


def marker_px(share: float, lo: float = 7.0, hi: float = 34.0) -> float:
    """Marker diameter in pixels: area grows with the share of the step."""
    return lo + (hi - lo) * max(0.0, min(1.0, share)) ** 0.5
