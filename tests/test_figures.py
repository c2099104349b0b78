"""Charts: what they draw (roofs, ridges, points, pairs, labels), for both renderers, and that
files are written whole. Expected values come from the device specs' published figures."""

from __future__ import annotations

import math
import os
import stat

import pytest

pytest.importorskip("matplotlib")

import itertools

from perfscope.api import Scenario, analyze, load_hw, load_model
from perfscope.errors import InputError
from perfscope.report import chartdata as C
from perfscope.report import figures as F
from perfscope.report import labels as L
from perfscope.report import plotly_charts as PC
from perfscope.report import plotly_roofline as PR
from perfscope.report.study import build_study

H100_BF16, H100_BW, H100_EMP_BW, H100_EMP_BF16 = 989.4e12, 3.35e12, 3.18e12, 794.5e12


@pytest.fixture(scope="module")
def steps():
    m, h = load_model("llama-3.1-8b"), load_hw("h100-sxm")
    return [analyze(m, h, Scenario(phase="prefill", batch=4, seq_len=2048)),
            analyze(m, h, Scenario(phase="decode", batch=16, context_len=2048))]


# ---------------------------------------------------------------- the chart records

def test_roofs_and_ridges_of_a_device(steps):
    panel = C.analysis_panel(steps)
    by = {(r.label, r.source): r.value for r in panel.roofs}
    assert by[("bf16 tensor", "spec")] == pytest.approx(H100_BF16)
    assert by[("bf16 GEMM", "measured")] == pytest.approx(H100_EMP_BF16)
    assert by[("HBM", "spec")] == pytest.approx(H100_BW)
    assert by[("HBM", "measured")] == pytest.approx(H100_EMP_BW)
    assert ("bf16 vector", "spec") in by  # norms and activations run on the vector unit
    ridges = {round(r.intensity, 3) for r in panel.ridges}
    assert round(H100_BF16 / H100_BW, 3) in ridges  # spec with spec
    assert round(H100_EMP_BF16 / H100_EMP_BW, 3) in ridges  # achieved with achieved


def test_points_are_flops_over_time_sized_by_share(steps):
    pts, comm = C.analysis_points(steps[1])
    by = {p.op.name: p for p in steps[1].points}
    total = steps[1].totals.time_s
    for q in pts:
        p = by[q.name]
        assert q.flops_per_s == pytest.approx(p.op.flops / p.time_s)
        assert q.intensity == p.intensity and q.source == "predicted"
        assert q.share == pytest.approx(p.total_time_s / total)
    big = max(pts, key=lambda q: q.share)
    small = min(pts, key=lambda q: q.share)
    assert C.marker_px(big.share) > C.marker_px(small.share)
    assert comm == ()  # TP 1: no collectives


def test_comm_points_name_their_link():
    a = analyze(load_model("llama-3.1-8b"), load_hw("h100-sxm"),
                Scenario(phase="decode", batch=16, context_len=2048, tp=4))
    _, comm = C.analysis_points(a)
    assert comm and all(c.link == "nvlink4" for c in comm)
    assert all(("link", "nvlink4") in c.hover for c in comm)


# ---------------------------------------------------------------- plotly (the report)

def _validate(fig: dict) -> None:
    import plotly.graph_objects as go

    go.Figure(fig)  # raises on any property plotly does not know


def test_plotly_roofline_styles_and_pairs(steps):
    measured = C.Pt("mlp.down_proj", "gemm", "decode", 15.0, 2e13, "measured", 0.2, (), "k")
    panel = C.analysis_panel(steps)
    panel = panel._replace(points=(*panel.points, measured,
                                   measured._replace(source="predicted", flops_per_s=4e13)))
    fig = PR.roofline([panel, C.analysis_panel(steps)])
    _validate(fig)
    lines = [t for t in fig["data"] if t["mode"] == "lines" and t.get("name") != "measured - "
             "predicted"]
    dashes = {t["line"]["dash"] for t in lines}
    assert dashes == {"solid", "dash"}  # spec solid, achieved dashed
    spec_top = [t for t in lines if t["y"] == [H100_BF16, H100_BF16]]
    assert spec_top and spec_top[0]["x"][0] == pytest.approx(H100_BF16 / H100_BW)
    pts = [t for t in fig["data"] if t["mode"] == "markers" and t.get("legendgroup") not in
           (None, "styles") and "text" in t]
    hollow = [t for t in pts if t["marker"]["symbol"].endswith("-open")]
    filled = [t for t in pts if not t["marker"]["symbol"].endswith("-open")]
    assert hollow and filled
    pair = next(t for t in fig["data"] if t.get("name") == "measured - predicted")
    assert pair["x"][:2] == [15.0, 15.0] and pair["y"][:2] == [2e13, 4e13]
    assert fig["layout"]["yaxis2"]["matches"] == "y"  # side by side on shared axes


def _label_boxes(fig: dict, width: int, height: int) -> list[L.Box]:
    """Where plotly will draw each annotation, from its anchor and pixel offsets."""
    xr, yr = fig["layout"]["xaxis"]["range"], fig["layout"]["yaxis"]["range"]
    fr = PR.Frame(width, height, tuple(fig["layout"]["xaxis"]["domain"]), tuple(xr),
                  tuple(yr))
    boxes = []
    for a in fig["layout"]["annotations"]:
        if a.get("xref") != "x" or a.get("textangle"):
            continue
        x, y = fr.px(10 ** a["x"], 10 ** a["y"])
        if a.get("showarrow"):
            x, y = x + a["ax"], y + a["ay"]
        else:
            x, y = x + a.get("xshift", 0), y - a.get("yshift", 0)
        boxes.append(L.text_box(x, y, a["text"]))
    return boxes


def test_plotly_labels_do_not_overlap():
    m = load_model("qwen3-30b-a3b")  # many ops land close together
    h = load_hw("h100-sxm")
    steps = [analyze(m, h, Scenario(phase=ph, batch=b, seq_len=1024, tp=2,
                                    context_len=0 if ph == "prefill" else 1024))
             for ph, b in (("prefill", 2), ("decode", 64))]
    fig = PR.roofline([C.analysis_panel(steps)], width=980, height=540)
    boxes = _label_boxes(fig, 980, 540)
    assert len(boxes) >= 6
    assert L.overlaps(boxes) == []


def test_placer_keeps_labels_apart_and_off_markers():
    xs = [100 + 3 * i for i in range(20)]  # a dense cluster, like decode GEMMs
    ys = [200 + 2 * i for i in range(20)]
    names = [f"op{i}" for i in range(20)]
    placed = L.place(xs, ys, names, [4.0] * 20, L.Box(0, 0, 600, 400), max_labels=20)
    boxes = [p.box for p in placed]
    assert len(placed) >= 8 and L.overlaps(boxes) == []
    for b in boxes:
        for x, y in zip(xs, ys, strict=True):
            assert not b.hits(L.Box(x - 4, y - 4, x + 4, y + 4), pad=0)
    # points on one spot share one label
    merged = L.place([50, 51], [50, 50], ["a", "b"], [3, 3], L.Box(0, 0, 300, 300))
    assert [p.text for p in merged] == ["a, b"]


@pytest.fixture(scope="module")
def study():
    return build_study(load_model("llama-3.1-8b"), [load_hw("h100-sxm")], Scenario(),
                       batch=16, isl=2048, osl=256, batches=(1, 4, 16, 64, 256, 512))


def test_trajectory_slider_shows_one_batch_at_a_time(study):
    fig = PC.trajectory(study.hws[0], "t")
    _validate(fig)
    slider = fig["layout"]["sliders"][0]
    assert [s["label"] for s in slider["steps"]] == ["1", "4", "16", "64", "256", "512"]
    assert slider["active"] == 2  # the operating batch
    n = len(fig["data"])
    paths = [t for t in fig["data"] if t.get("name", "").endswith(" path")]
    assert paths and all(len(t["x"]) == 6 for t in paths)  # each op's path over the sweep
    shown = []
    for step in slider["steps"]:
        vis = step["args"][0]["visible"]
        assert len(vis) == n
        shown.append({i for i, v in enumerate(vis) if v})
    for a, b in itertools.pairwise(shown):
        assert a != b
    # decode GEMMs move right (higher intensity) as the batch grows
    gate = next(t for t in paths if t["name"].startswith("mlp.gate_up_proj"))
    assert gate["x"] == sorted(gate["x"])


def test_batch_chart_marks_compute_bound_and_kv_limit(study):
    h = study.hws[0]
    fig = PC.batch_chart(h, "t")
    _validate(fig)
    texts = [a["text"] for a in fig["layout"]["annotations"]]
    assert f"KV cache full above batch {h.kv_limit_batch}" in texts
    assert f"decode GEMMs compute-bound from batch {h.gemm_compute_batch}" in texts
    xs = {a["text"]: a["x"] for a in fig["layout"]["annotations"]}
    assert 10 ** xs[texts[0]] == pytest.approx(h.kv_limit_batch)
    tok = next(t for t in fig["data"] if t["name"].startswith("tokens/s per GPU, spec"))
    assert tok["y"] == [p.spec.tokens_per_s_per_gpu for p in h.sweep]


def test_kinds_memory_and_compare_charts(study):
    h = study.hws[0]
    rows = [("prefill", h.spec.prefill.totals.time_by_kind, h.spec.prefill.totals.time_s,
             "nvlink4")]
    k = PC.kinds_chart(rows)
    _validate(k)
    assert sum(t["x"][0] for t in k["data"]) == pytest.approx(100)
    mem = PC.memory_chart(h)
    _validate(mem)
    cap = [s for s in mem["layout"]["shapes"] if s["line"]["dash"] == "solid"]
    assert cap[0]["y0"] == pytest.approx(81559 / 1024)  # GiB the driver exposes (nvidia-smi)
    _validate(PC.compare_chart(study.hws))


# ---------------------------------------------------------------- matplotlib (files)

def test_matplotlib_roofline_draws_roofs_points_and_pairs():
    pts = [{"name": "a", "kind": "gemm", "intensity": 100.0, "flops_per_s": 5e13,
            "source": "measured"},
           {"name": "a", "kind": "gemm", "intensity": 100.0, "flops_per_s": 6e13,
            "source": "predicted"},
           {"name": "n", "kind": "norm", "intensity": 0.5, "flops_per_s": 1e12,
            "source": "predicted"}]
    fig = F.roofline_figure({"bf16": 1e15}, {"spec": 3e12, "measured": 2.8e12}, pts, "t")
    ax = fig.axes[0]
    lines = ax.get_lines()
    horiz = [ln for ln in lines if len(set(ln.get_ydata())) == 1 and len(ln.get_xdata()) == 2
             and ln.get_ydata()[0] == 1e15]
    assert horiz and horiz[0].get_xdata()[0] == pytest.approx(1e15 / 3e12)  # the ridge
    styles = {ln.get_linestyle() for ln in lines if len(ln.get_xdata()) == 2
              and ln.get_xdata()[0] != ln.get_xdata()[1]}
    assert {"-", "--"} <= styles  # spec solid, measured dashed
    pair = [ln for ln in lines if list(ln.get_xdata()) == [100.0, 100.0]]
    assert pair and sorted(pair[0].get_ydata()) == [5e13, 6e13]
    faces = [c.get_facecolors() for c in ax.collections]
    assert any(len(f) and f[0][3] > 0 for f in faces)  # filled: measured
    assert any(len(f) == 0 or f[0][3] == 0 for f in faces)  # hollow: predicted
    assert "measured" in fig.texts[0].get_text() or "measured" in fig._suptitle.get_text()


def _corners(t, r) -> list[tuple[float, float]]:
    """The text's own rectangle, rotated as drawn (not its axis-aligned hull; without the
    leader line of an annotation)."""
    from matplotlib.text import Text

    rot = t.get_rotation()
    t.set_rotation(0)
    flat = Text.get_window_extent(t, r)
    t.set_rotation(rot)
    hull = Text.get_window_extent(t, r)
    cx, cy = (hull.x0 + hull.x1) / 2, (hull.y0 + hull.y1) / 2
    a = math.radians(rot)
    w, h = flat.width / 2, flat.height / 2
    return [(cx + dx * math.cos(a) - dy * math.sin(a), cy + dx * math.sin(a) + dy * math.cos(a))
            for dx, dy in ((-w, -h), (w, -h), (w, h), (-w, h))]


def _intersect(p: list, q: list, tol: float = 0.5) -> bool:
    """Separating-axis test of two convex quadrilaterals."""
    for poly in (p, q):
        for i in range(4):
            (x0, y0), (x1, y1) = poly[i], poly[(i + 1) % 4]
            nx, ny = y1 - y0, x0 - x1
            norm = math.hypot(nx, ny) or 1.0
            a = [(x * nx + y * ny) / norm for x, y in p]
            b = [(x * nx + y * ny) / norm for x, y in q]
            if max(a) < min(b) + tol or max(b) < min(a) + tol:
                return False
    return True


def test_matplotlib_labels_do_not_overlap(steps):
    fig = F.analysis_chart(steps)
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    ax = fig.axes[0]
    quads = [(t.get_text(), _corners(t, r)) for t in ax.texts if t.get_text()]
    assert len(quads) >= 5
    for i, (ta, a) in enumerate(quads):
        for tb, b in quads[i + 1:]:
            assert not _intersect(a, b), (ta, tb)


def test_save_figure_writes_whole_files_and_refuses_other_suffixes(tmp_path):
    fig = F.comm_figure([{"op": "all_reduce", "size_bytes": 1 << 20, "busbw_bytes_s": 1e9},
                         {"op": "all_reduce", "size_bytes": 1 << 24, "busbw_bytes_s": 5e9}],
                        {"nvlink4 spec": 450e9}, "t")
    out = tmp_path / "c.png"
    F.save_figure(fig, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.png"]  # no temp file left
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask  # as readable as any file
    with pytest.raises(InputError, match="--plot"):
        F.save_figure(F.comm_figure([], {}, "t"), tmp_path / "c.gif")
    with pytest.raises(InputError, match="does not exist"):
        F.save_figure(F.comm_figure([], {}, "t"), tmp_path / "missing" / "c.png")


def test_log_scale_helpers():
    r = (math.log10(0.05), math.log10(20000))
    ticks = PR.decade_ticks(r, str)
    assert ticks["tickvals"] == [0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0]
