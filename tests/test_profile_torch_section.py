"""perfscope profile --torch-profile FILE: a torch profile's "where the time went" section in
the report (and the JSON), every string escaped; bad files fail before any work."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARK = "<script>alert(1)</script>"


def _doc(tmp_path: Path) -> Path:
    doc = {"schema": "perfscope.profile/1",
           "model": {"name": f"tiny{MARK}", "layers": 2},
           "hardware": {"display_name": "local", "source": "quick"},
           "device": {"name": "cpu", "device": "cpu"}, "config": {"dtype": "fp32"},
           "phases": [{"phase": "prefill", "step_time_s": {"median_s": 0.010},
                       "predicted_time_s": 0.004}],
           "ops": [{"phase": "prefill", "name": "attn.core", "kind": "attention",
                    "measured_time_s": 0.006, "predicted_time_s": 0.003,
                    "analytic_flops": 1e9, "flops_check": "equal"},
                   {"phase": "prefill", "name": "framework.copy", "kind": "framework",
                    "measured_time_s": 0.004, "predicted_time_s": None}],
           "notes": [f"a note {MARK}"]}
    p = tmp_path / "prof.json"
    p.write_text(json.dumps(doc))
    return p


def _profile(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "perfscope", "profile", "--no-measure",
                           "--batches", "1,8", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT)


def test_the_section_is_in_the_report_escaped(tmp_path):
    out = tmp_path / "r.html"
    r = _profile("--torch-profile", _doc(tmp_path), "-o", out)
    assert r.returncode == 0, r.stderr
    html = out.read_text()
    assert 'id="torch-profile"' in html and "Where the time went" in html
    assert MARK not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    # measured 6 ms against 3 ms predicted: 2x, 60% of the 10 ms step
    assert ">2<" in html and "60.0%" in html


def test_json_carries_the_profile(tmp_path):
    r = _profile("--torch-profile", _doc(tmp_path), "--format", "json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert [p["model"]["name"] for p in d["torch_profiles"]] == [f"tiny{MARK}"]


def test_a_file_that_is_not_a_profile_is_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema": "perfscope.bench/1"}))
    out = tmp_path / "r.html"
    for path, msg in ((bad, "not a perfscope.profile/1 document"),
                      (tmp_path / "none.json", "does not exist")):
        r = _profile("--torch-profile", path, "-o", out)
        assert r.returncode != 0 and msg in r.stderr and "Traceback" not in r.stderr
        assert not out.exists()
