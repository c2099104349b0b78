"""The HTML page as text: self-contained, every chart valid plotly, user strings escaped,
the reproducibility header, the measured / recommendations / Pareto slots."""

from __future__ import annotations

import json
import re

import pytest

from perfscope.api import Scenario, load_hw, load_model
from perfscope.report.html import json_script, table
from perfscope.report.page import ReportInput, render_report
from perfscope.report.study import build_study

JS = "/* plotly.js would be here */"


@pytest.fixture(scope="module")
def study():
    return build_study(load_model("llama-3.1-8b"), [load_hw("h100-sxm"),
                                                     load_hw("a100-sxm-80gb")],
                       Scenario(tp=2), batch=16, isl=2048, osl=256, batches=(1, 16, 256))


def page(study, **kw) -> str:
    inp = ReportInput(study, "perfscope profile --tp 2", "2026-01-01T00:00:00Z",
                      {"perfscope": "0.1.0", "python": "3.11.7"}, **kw)
    return render_report(inp, js=JS)


def figures(html: str) -> list[dict]:
    return [json.loads(m) for m in re.findall(
        r'<script type="application/json" id="fig\d+-data">(.*?)</script>', html, re.S)]


def test_self_contained_and_every_chart_is_valid_plotly(study):
    import plotly.graph_objects as go

    html = page(study)
    assert html.startswith("<!DOCTYPE html>") and JS in html
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=|<img[^>]+src=\"?http", html)
    assert "default-src 'none'" in html  # the page may not fetch anything
    figs = figures(html)
    assert len(figs) == html.count('data-figure="')
    assert len(figs) >= 8
    for f in figs:
        go.Figure(f)  # raises on a property plotly does not know
    for anchor in ("summary", "devices", "roofline", "sweep", "breakdown", "ops", "notes"):
        assert f'id="{anchor}"' in html, anchor
    assert 'id="measured"' not in html and 'id="recommendations"' not in html


def test_summary_names_the_bottleneck_and_both_ceilings(study):
    html = page(study)
    h = study.hws[0]
    assert "memory-bound" in html and "mlp.gate_up_proj" in html
    assert "TTFT" in html and "TPOT" in html and "tokens/s per GPU" in html
    assert "tokens/s per user" in html and "expected" in html
    assert f"batch {h.gemm_compute_batch}" in html
    assert f"{h.kv_limit_batch}" in html


def test_reproducibility_header(study):
    html = page(study)
    head = html[html.index("<h1>"):html.index('<nav class="toc">')]
    assert "perfscope profile --tp 2" in head and "2026-01-01T00:00:00Z" in head
    assert "h100-sxm.toml" in head and "llama-3.1-8b.json" in head and "nvlink4" in head
    assert "version perfscope" in head and "DS-020" in head  # the spec figures' sources


def test_sortable_op_tables(study):
    html = page(study)
    # op tables (devices x phases), a sweep table per device, the device comparison
    assert html.count('class="sortable"') == 2 * 2 + 2 + 1
    cells = re.findall(r'<td class="[^"]*" data-v="([^"]+)">', html)
    assert cells and all(float(v) == float(v) for v in cells)  # numeric sort keys
    t = table(["op", "time"], [["<b>x</b>", ("1 ms", 1e-3)]])
    assert "&lt;b&gt;x&lt;/b&gt;" in t and 'data-v="0.001"' in t


def test_json_cannot_close_its_script_tag():
    text = json_script({"name": "</script><script>alert(1)</script>", "v": float("nan")})
    assert "</" not in text and "<" not in text
    assert json.loads(text) == {"name": "</script><script>alert(1)</script>", "v": None}


def test_measured_recommendations_and_pareto_slots(study):
    from test_report_browser import BENCH_DOC

    recs = [{"rule": "batch.headroom", "message": "Batch to 128 <now>",
             "evidence": {"max_batch": 202}, "expected_gain": "3.0x tokens/s"}]
    pareto = {"data": [{"type": "scatter", "x": [1, 2], "y": [3, 4], "name": "front"}],
              "layout": {"title": {"text": "Pareto"}}}
    html = page(study, measured=BENCH_DOC, recommendations=recs, pareto=pareto)
    assert 'id="measured"' in html and "Test CPU" in html and "gemm.fp32" in html
    assert "add_rmsnorm.fused.torch" in html and "all_reduce" in html
    assert 'id="recommendations"' in html and "batch.headroom" in html
    assert "Batch to 128 &lt;now&gt;" in html and "3.0x tokens/s" in html
    assert 'id="pareto"' in html
    assert any(f["layout"].get("title", {}).get("text") == "Pareto" for f in figures(html))


def test_byte_axes_tick_at_powers_of_two():
    """A message-size axis reads 64 KiB, 256 KiB, 1 MiB ..., not 977 KiB (powers of ten shown
    in binary units)."""
    import math

    from perfscope.report import fmt as F
    from perfscope.report.plotly_roofline import binary_ticks

    t = binary_ticks((math.log10(3e4), math.log10(5e8)), lambda v: F.nbytes(v, 1))
    assert t["ticktext"] == ["64 KiB", "256 KiB", "1 MiB", "4 MiB", "16 MiB", "64 MiB",
                             "256 MiB"]
    assert all(math.log2(v).is_integer() for v in t["tickvals"])
