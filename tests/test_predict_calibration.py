"""perfscope predict / recommend --calibration FILE: a measured perfscope.calibration/1 prices
every serving step, exactly as perfscope.calibration.calibrated_times prices one analysed step
(the independent reference here is that function applied to analyze())."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from perfscope import Scenario, analyze, load_hw, load_model
from perfscope.calibration import calibrated_times, calibration_from_json
from perfscope.errors import InputError
from perfscope.serving.calibrated import calibrate
from perfscope.serving.fitting import fit_step_model
from perfscope.serving.predict import Layout, Workload, predict

ROOT = Path(__file__).resolve().parent.parent
KIND = {"n": 4, "rms_log_error": 0.1, "max_abs_log_error": 0.2, "rms_log_error_before": 1.0}


def doc(hardware: str = "h100-sxm", ceiling: str = "empirical") -> dict:
    # gemm x2 + 1 us per call (qkv: 3 calls), norm x3, attention x1.5 + 4 us; framework
    # 0.1 x the step plus 5 us per op instance; elementwise and comm left uncalibrated
    return {"schema": "perfscope.calibration/1", "created": "2026-11-30T00:00:00Z",
            "hardware": hardware, "ceiling": ceiling, "dtype": "bf16", "device": {},
            "kinds": {"gemm": KIND | {"scale": 2.0, "fixed_s": 1e-6},
                      "norm": KIND | {"scale": 3.0, "fixed_s": 0.0},
                      "attention": KIND | {"scale": 1.5, "fixed_s": 4e-6}},
            "calls_per_op": {"attn.qkv_proj": 3.0}, "calls_per_kind": {"gemm": 1.0},
            "framework": KIND | {"scale": 0.1, "fixed_s": 5e-6},
            "source": {}, "fit_error": {"steps": 3.0}}


@pytest.fixture(scope="module")
def setup():
    m, hw = load_model("llama-3.1-8b"), load_hw("h100-sxm")
    sc = Scenario(tp=2, ceiling="empirical")
    cal = calibration_from_json(doc())
    sm, notes = calibrate(fit_step_model(m, hw, sc), cal)
    return m, hw, sc, cal, sm, notes


def test_calibrated_steps_equal_calibrated_times(setup):
    m, hw, sc, cal, sm, notes = setup
    rng = np.random.default_rng(11)
    for _ in range(6):
        b, c = int(rng.integers(1, 300)), int(rng.integers(1, 50000))
        a = analyze(m, hw, dataclasses.replace(sc, phase="decode", batch=b, context_len=c))
        assert float(sm.decode_time(b, c)) == pytest.approx(calibrated_times(a, cal).total_s,
                                                            rel=1e-9)
        b, t, c0 = int(rng.integers(1, 6)), int(rng.integers(1, 8000)), \
            int(rng.integers(0, 8000))
        a = analyze(m, hw, dataclasses.replace(
            sc, phase="prefill" if c0 == 0 else "chunked_prefill", batch=b, seq_len=t,
            context_len=c0))
        assert float(sm.fill_time(b, t, c0)) == pytest.approx(
            calibrated_times(a, cal).total_s, rel=1e-9)
    assert any("elementwise" in n for n in notes)  # kinds without a factor are named


def test_one_request_tpot_is_the_calibrated_decode_step(setup):
    """c = 1: nobody else prefills in the decode window, so TPOT is the mean decode step;
    decode is linear in the context, so it is the calibrated step at the mean context, and
    the calibration stands in for the engine's step overhead."""
    m, hw, sc, cal, _, _ = setup
    isl, osl = 1000, 202
    p = predict(m, hw, Layout(tp=2), Workload(isl, osl, 1), calibration=cal,
                calibration_file="cal.json")
    a = analyze(m, hw, dataclasses.replace(sc, phase="decode", batch=1,
                                           context_len=isl + (osl - 2) // 2))
    assert p.tpot_s == pytest.approx(calibrated_times(a, cal).total_s, rel=1e-9)
    assert p.calibration["applied"] and p.calibration["file"] == "cal.json"
    plain = predict(m, hw, Layout(tp=2), Workload(isl, osl, 1))
    assert p.tpot_s > plain.tpot_s  # GEMMs at twice the roofline time
    d = p.to_json()
    assert d["calibration"]["applied"] is True
    assert any("calibration" in n for n in d["uncertainty"]["notes"])


def test_calibration_for_another_device_is_refused(setup):
    m = setup[0]
    cal = calibration_from_json(doc(hardware="a100-sxm-80gb"))
    with pytest.raises(InputError, match="--calibration"):
        predict(m, load_hw("h100-sxm"), Layout(), Workload(500, 20, 1), calibration=cal)
    cal = calibration_from_json(doc(ceiling="spec"))
    with pytest.raises(InputError, match="ceiling"):
        predict(m, load_hw("h100-sxm"), Layout(), Workload(500, 20, 1), calibration=cal)


def _cli(tmp_path: Path, cmd: str, *args: str) -> subprocess.CompletedProcess:
    f = tmp_path / "cal.json"
    f.write_text(json.dumps(doc()))
    return subprocess.run([sys.executable, "-m", "perfscope", cmd, "--model", "llama-3.1-8b",
                           "--hw", "h100-sxm", "--calibration", str(f), *args],
                          capture_output=True, text=True, cwd=ROOT,
                          env={"COLUMNS": "80", "PATH": "/usr/bin:/bin"}, timeout=300)


def test_predict_cli_says_the_calibration_applied(tmp_path):
    r = _cli(tmp_path, "predict", "--isl", "500", "--osl", "100", "--concurrency", "4",
             "--format", "json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["calibration"]["applied"] is True
    r = _cli(tmp_path, "predict", "--isl", "500", "--osl", "100")
    assert r.returncode == 0 and "calibration" in r.stdout and "applied" in r.stdout
    r = _cli(tmp_path, "predict", "--isl", "500", "--osl", "100", "--format", "csv")
    assert r.returncode == 0 and "cal.json" in r.stdout.splitlines()[1]


def test_recommend_cli_applies_it_too(tmp_path):
    r = _cli(tmp_path, "recommend", "--gpus", "1", "--isl", "500", "--osl", "100",
             "--weight-dtypes", "bf16", "--max-concurrency", "16", "--format", "json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["uncertainty"]["calibration"]["applied"] is True
    r = _cli(tmp_path, "recommend", "--gpus", "1", "--isl", "500", "--osl", "100",
             "--weight-dtypes", "bf16", "--max-concurrency", "16")
    assert r.returncode == 0 and "calibration applied" in r.stdout
