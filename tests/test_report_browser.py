"""The HTML report in a real browser (headless Chromium): it opens offline with no console
error and no network request, its charts render (plotly's plot layers are in the DOM, the
screenshot is not blank), and user-supplied strings stay text.

.ci/run installs Debian's chromium; without it these tests skip.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import browser

ROOT = Path(__file__).resolve().parents[1]
H100 = ROOT / "hw_specs" / "gpus" / "h100-sxm.toml"
QWEN = ROOT / "workloads" / "models" / "qwen2.5-0.5b.json"
EVIL = "<img src=x onerror=\"window.pwned=1\"><script>window.pwned=2</script>"

pytestmark = pytest.mark.skipif(browser.chromium() is None,
                                reason="chromium is not installed (.ci/run installs it)")

PROBE = """(() => ({
  figures: document.querySelectorAll('div[data-figure]').length,
  plots: document.querySelectorAll('div[data-figure].js-plotly-plot').length,
  drawn: Array.from(document.querySelectorAll('div[data-figure]')).filter(
      d => d.querySelector('.main-svg .cartesianlayer, .main-svg .barlayer')).length,
  traces: document.querySelectorAll('.scatterlayer .trace, .barlayer .trace').length,
  points: document.querySelectorAll('.scatterlayer .points path').length,
  sliders: document.querySelectorAll('.slider-container').length,
  sortable: document.querySelectorAll('table.sortable').length,
  scripts: Array.from(document.scripts).filter(s => !s.type).length,
  externalSrc: Array.from(document.querySelectorAll('[src],[href]')).map(
      e => e.getAttribute('src') || e.getAttribute('href')).filter(
      u => /^[a-z]+:/i.test(u) && !/^(data|blob|javascript):/i.test(u)),
  pwned: window.pwned || 0,
  title: document.title,
  h1: document.querySelector('h1') ? document.querySelector('h1').textContent : '',
}))()"""

BENCH_DOC = {
    "schema": "perfscope.bench/1", "created": "2026-01-01T00:00:00Z",
    "command": "perfscope bench --quick", "argv": ["perfscope", "bench"], "quick": True,
    "device": {"kind": "cpu", "name": "Test CPU", "logical_cpus": 2},
    "libraries": {"python": "3.11", "torch": "2.13.0+cpu"}, "threads": 2, "duration_s": 12.5,
    "ceilings": {"values": [
        {"name": "gemm.fp32", "value": 6.0e10, "low": 5.0e10, "high": 7.0e10,
         "unit": "FLOP/s", "dtype": "fp32", "shape": {"m": 1024, "n": 1024, "k": 1024},
         "stats": {"median_s": 0.036, "p20_s": 0.03, "p80_s": 0.04, "min_s": 0.03, "n": 10,
                   "cv": 0.1}},
        {"name": "memory.triad", "value": 9.0e9, "low": 8.0e9, "high": 1.0e10,
         "unit": "bytes/s", "dtype": "fp32", "shape": {"elements": 1 << 25},
         "stats": {"median_s": 0.045, "p20_s": 0.04, "p80_s": 0.05, "min_s": 0.04, "n": 7,
                   "cv": 0.1}}], "points": [], "saved_spec": None},
    "ops": {"model": "qwen2.5-0.5b", "hardware": "local", "ceiling": "empirical",
            "scaling": "none", "points": [
                {"name": "mlp.down_proj", "kind": "gemm", "dtype": "fp32",
                 "shape": {"m": 512, "n": 896, "k": 4864}, "device": "cpu",
                 "stats": {"median_s": 0.1, "p20_s": 0.09, "p80_s": 0.11, "min_s": 0.09,
                           "n": 5, "cv": 0.1},
                 "flops": 2 * 512 * 896 * 4864, "bytes": 4 * (512 * 4864 + 896 * 4864 + 512 * 896),
                 "intensity": 2 * 512 * 896 * 4864 / (4 * (512 * 4864 + 896 * 4864 + 512 * 896)),
                 "achieved_flops_per_s": 2 * 512 * 896 * 4864 / 0.1,
                 "achieved_bytes_per_s": 4 * (512 * 4864 + 896 * 4864 + 512 * 896) / 0.1,
                 "predicted_time_s": 0.075, "pct_of_roof": 75.0,
                 "extra": {"phase": "prefill"}}]},
    "kernels": {"points": [
        {"name": "add_rmsnorm.fused.torch", "kind": "norm", "dtype": "fp32",
         "shape": {"tokens": 2048, "hidden": 4096}, "device": "cpu",
         "stats": {"median_s": 0.03, "p20_s": 0.03, "p80_s": 0.03, "min_s": 0.03, "n": 5,
                   "cv": 0.05}, "flops": 4.2e7, "bytes": 1.34e8, "intensity": 0.31,
         "achieved_flops_per_s": 1.4e9, "achieved_bytes_per_s": 4.47e9,
         "predicted_time_s": None, "pct_of_roof": None, "extra": {}}]},
    "comm": {"results": [
        {"op": "all_reduce", "size_bytes": s, "ranks": 2, "backend": "gloo", "median_s": t,
         "busbw_bytes_s": s / t} for s, t in ((4096, 1e-3), (1 << 20, 3e-3), (1 << 24, 4e-2))]},
    "skipped": [],
}


def run_profile(tmp: Path, *args: str) -> Path:
    out = tmp / "report.html"
    env = {k: v for k, v in os.environ.items() if k != "PERFSCOPE_DEBUG"} | {"COLUMNS": "80"}
    r = subprocess.run([sys.executable, "-m", "perfscope", "profile", "--no-measure",
                        "-o", str(out), *args], capture_output=True, text=True, cwd=ROOT,
                       env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    return out


def blank(png: bytes) -> bool:
    from PIL import Image

    im = Image.open(io.BytesIO(png)).convert("L")
    lo, hi = im.getextrema()
    return hi - lo < 40 or len(im.resize((64, 64)).getcolors(4096) or ()) < 8


def check_clean(res: dict) -> None:
    assert res["errors"] == [], res["errors"]
    assert res["exceptions"] == [], res["exceptions"]
    outside = [u for u in res["requests"] if not u.startswith(("file:", "data:", "blob:",
                                                                "about:"))]
    assert outside == [], outside
    assert len([u for u in res["requests"] if u.startswith("file:")]) == 1  # the page only
    assert res["value"]["externalSrc"] == []


def test_the_harness_sees_errors_and_requests(tmp_path):
    """The checks below can fail: a page that logs an error and fetches is caught."""
    page = tmp_path / "bad.html"
    page.write_text("<html><body><img src='http://example.invalid/x.png'>"
                    "<script>console.error('boom'); undefined_function();</script></body></html>")
    res = browser.visit(page, "1", settle_s=1.0)
    assert any("example.invalid" in u for u in res["requests"])
    assert res["errors"] and res["exceptions"]


def test_default_report_renders_offline(tmp_path):
    out = run_profile(tmp_path, "--hw", "h100-sxm,a100-sxm-80gb", "--tp", "2",
                      "--bench", _bench(tmp_path))
    res = browser.visit(out, PROBE)
    check_clean(res)
    v = res["value"]
    assert v["figures"] >= 8 and v["plots"] == v["figures"]  # every chart became a plot
    assert v["drawn"] == v["figures"]  # each has its plot layers in the DOM
    assert v["traces"] > 40 and v["points"] > 40
    assert v["sliders"] >= 1  # the batch-sweep trajectory
    assert v["sortable"] >= 4
    assert v["scripts"] == 2  # plotly.js inlined, and ours: nothing else runs
    assert not blank(res["screenshot"])


def _bench(tmp: Path) -> str:
    p = tmp / "bench.json"
    p.write_text(json.dumps(BENCH_DOC))
    return str(p)


def test_hostile_names_stay_text(tmp_path):
    """A device display name and a model folder that carry markup are shown, not run."""
    spec = tmp_path / "evil.toml"
    text = re.sub(r'(?m)^display_name = .*$', f"display_name = {json.dumps(EVIL)}",
                  H100.read_text())
    spec.write_text(text.replace('name = "h100-sxm"', 'name = "evil-gpu"'))
    folder = tmp_path / "<b onmouseover=alert(1)>model"
    folder.mkdir()
    (folder / "config.json").write_text(QWEN.read_text())
    out = run_profile(tmp_path, "--hw", str(spec), "--model", str(folder / "config.json"),
                      "--isl", "512", "--osl", "64")
    html = out.read_text()
    assert EVIL not in html and "<b onmouseover" not in html
    assert "&lt;img src=x" in html  # shown, escaped
    res = browser.visit(out, PROBE)
    check_clean(res)
    assert res["value"]["pwned"] == 0
    assert res["value"]["scripts"] == 2
    assert "<img src=x" in res["value"]["h1"] or "<img src=x" in res["value"]["title"]
