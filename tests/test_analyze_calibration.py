"""perfscope analyze --calibration FILE: calibrated times beside the roofline's, by hand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _cal(tmp_path: Path, **over) -> Path:
    # per instance: scale x roofline + fixed_s x calls; gemm doubled plus 1 us per call,
    # norm x3, framework 5 us per op instance
    kind = {"n": 4, "rms_log_error": 0.1, "max_abs_log_error": 0.2,
            "rms_log_error_before": 1.0}
    doc = {"schema": "perfscope.calibration/1", "created": "2026-11-30T00:00:00Z",
           "hardware": "h100-sxm", "ceiling": "spec", "dtype": "bf16", "device": {},
           "kinds": {"gemm": kind | {"scale": 2.0, "fixed_s": 1e-6},
                     "norm": kind | {"scale": 3.0, "fixed_s": 0.0}},
           "calls_per_op": {"attn.qkv_proj": 3.0}, "calls_per_kind": {"gemm": 1.0},
           "framework": kind | {"scale": 0.0, "fixed_s": 5e-6},
           "source": {}, "fit_error": {}} | over
    p = tmp_path / "cal.json"
    p.write_text(json.dumps(doc))
    return p


def _run(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "perfscope", "analyze", *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT)


def test_calibrated_times_follow_the_file(tmp_path):
    cal = _cal(tmp_path)
    r = _run("--model", "llama-3.1-8b", "--hw", "h100-sxm", "--phase", "decode",
             "--batch", "4", "--context-len", "1024", "--calibration", cal, "--format", "json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    ops = {o["name"]: o for o in d["ops"]}
    qkv, down, norm, core = (ops["attn.qkv_proj"], ops["mlp.down_proj"], ops["attn.norm"],
                             ops["attn.core"])
    assert qkv["calibrated_time_s"] == pytest.approx(2 * qkv["time_s"] + 3 * 1e-6)
    assert down["calibrated_time_s"] == pytest.approx(2 * down["time_s"] + 1e-6)
    assert norm["calibrated_time_s"] == pytest.approx(3 * norm["time_s"])
    assert core["calibrated_time_s"] == pytest.approx(core["time_s"])  # no attention factor
    c = d["calibration"]
    ops_sum = sum(o["calibrated_time_s"] * o["count"] for o in d["ops"])
    instances = sum(o["count"] for o in d["ops"] if o["kind"] != "comm")
    assert c["ops_time_s"] == pytest.approx(ops_sum)
    assert c["framework_time_s"] == pytest.approx(5e-6 * instances)
    assert c["time_s"] == pytest.approx(ops_sum + 5e-6 * instances)
    assert "attention" in c["uncalibrated_kinds"]


def test_table_and_csv_carry_the_calibrated_step(tmp_path):
    cal = _cal(tmp_path)
    base = ("--model", "llama-3.1-8b", "--hw", "h100-sxm", "--calibration", cal)
    t = subprocess.run([sys.executable, "-m", "perfscope", "analyze", *map(str, base)],
                       capture_output=True, text=True, cwd=ROOT, env={"COLUMNS": "80",
                                                                     "PATH": "/usr/bin:/bin"})
    assert t.returncode == 0, t.stderr
    assert "calibrated by" in t.stdout
    assert max(len(line) for line in t.stdout.splitlines()) <= 80
    c = _run(*base, "--format", "csv")
    assert c.returncode == 0, c.stderr
    assert "step calibrated" in c.stdout and "calibrated_time_s" in c.stdout.splitlines()[0]


@pytest.mark.parametrize(("over", "args", "msg"), [
    ({"hardware": "a100-sxm-80gb"}, (), "fitted against predictions for 'a100-sxm-80gb'"),
    ({"ceiling": "empirical"}, (), "--ceiling empirical"),
    ({}, ("--batch", "1,8"), "applies to one point"),
])
def test_mismatched_calibration_is_one_line(tmp_path, over, args, msg):
    r = _run("--model", "llama-3.1-8b", "--hw", "h100-sxm", "--calibration",
             _cal(tmp_path, **over), *args)
    assert r.returncode != 0
    assert msg in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_missing_calibration_file_fails_before_work(tmp_path):
    r = _run("--calibration", tmp_path / "nope.json")
    assert r.returncode != 0 and "does not exist" in r.stderr
