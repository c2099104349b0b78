"""Figure builders: what they draw, and that files are written whole."""

from __future__ import annotations

import pytest

pytest.importorskip("matplotlib")

from perfscope.api import Scenario, analyze, load_hw, load_model
from perfscope.errors import InputError
from perfscope.report import figures as F


def test_roofline_figure_draws_each_roof_and_point():
    pts = [{"name": "a", "kind": "gemm", "intensity": 100.0, "flops_per_s": 5e13,
            "source": "measured"},
           {"name": "a", "kind": "gemm", "intensity": 100.0, "flops_per_s": 6e13,
            "source": "predicted"},
           {"name": "n", "kind": "norm", "intensity": 0.5, "flops_per_s": 1e12,
            "source": "predicted"}]
    fig = F.roofline_figure({"bf16": 1e15}, {"spec": 3e12, "measured": 2.8e12}, pts, "t")
    ax = fig.axes[0]
    roofs = ax.get_lines()
    assert len(roofs) == 2  # one ceiling x two bandwidths
    # each roof bends at its ridge point: peak / bandwidth
    ridge = sorted(roofs[0].get_xdata())[1]
    assert ridge == pytest.approx(1e15 / 3e12)
    assert sum(len(c.get_offsets()) for c in ax.collections) == 3
    assert "measured" in ax.get_title()


def test_analysis_points_are_flops_over_time():
    a = analyze(load_model("llama-3.1-8b"), load_hw("h100-sxm"),
                Scenario(phase="decode", batch=8, context_len=1024))
    pts = F.analysis_points(a)
    by = {p.op.name: p for p in a.points}
    for q in pts:
        p = by[q["name"]]
        assert q["flops_per_s"] == pytest.approx(p.op.flops / p.time_s)
        assert q["intensity"] == p.intensity
    comp, bws = F.hw_ceilings(a.hw, ["bf16"])
    assert list(comp.values()) == [pytest.approx(989.4e12)]
    assert 3350e9 in bws.values()


def test_save_figure_writes_a_whole_png_and_refuses_other_suffixes(tmp_path):
    fig = F.comm_figure([{"op": "all_reduce", "size_bytes": 1 << 20, "busbw_bytes_s": 1e9},
                         {"op": "all_reduce", "size_bytes": 1 << 24, "busbw_bytes_s": 5e9}],
                        {"nvlink4 spec": 450e9}, "t")
    out = tmp_path / "c.png"
    F.save_figure(fig, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.png"]  # no temp file left
    with pytest.raises(InputError, match="--plot"):
        F.save_figure(fig, tmp_path / "c.gif")
