"""perfscope.calibration: the fit recovers known factors, files round-trip and fail cleanly,
and applying a calibration to an analysis is the affine map the file states. Torch-free."""

from __future__ import annotations

import json
import math

import pytest

from perfscope.analysis import analyze
from perfscope.calibration import (
    SCHEMA,
    Calibration,
    KindFit,
    OpSample,
    StepSample,
    calibrated_times,
    calibration_from_json,
    fit_calibration,
    load_calibration,
)
from perfscope.errors import InputError, SpecError
from perfscope.specs.loading import load_hw
from perfscope.specs.model import load_model
from perfscope.specs.scenario import Scenario


def _samples(scale: float, fixed: float, kind: str = "gemm", step: str = "s"):
    # measured = scale x predicted + fixed, exactly, over three decades of op size
    return [OpSample(step, kind, 2, p, scale * p + fixed) for p in (1e-6, 1e-5, 1e-4, 1e-3)]


def test_fit_recovers_known_scale_and_fixed_cost():
    steps = [StepSample("s", 1.0, 0.0, 0.5, 8)]
    cal = fit_calibration(_samples(3.0, 2e-5) + _samples(1.5, 0.0, "norm"), steps,
                          hardware="local", ceiling="spec", dtype="fp32")
    g, n = cal.kinds["gemm"], cal.kinds["norm"]
    assert g.scale == pytest.approx(3.0, rel=1e-9)
    assert g.fixed_s == pytest.approx(2e-5, rel=1e-9)
    assert g.efficiency == pytest.approx(1 / 3)
    assert g.rms_log_error == pytest.approx(0.0, abs=1e-12)
    # before the fit the log error is that of measured / predicted: ln(3 + 2e-5 / p)
    before = [math.log(3 + 2e-5 / p) for p in (1e-6, 1e-5, 1e-4, 1e-3)]
    assert g.rms_log_error_before == pytest.approx(
        math.sqrt(sum(e * e for e in before) / 4), rel=1e-9)
    assert n.scale == pytest.approx(1.5) and n.fixed_s == pytest.approx(0.0, abs=1e-15)
    assert cal.framework is None  # no step had framework time


def test_fit_never_goes_negative():
    # measured falls with predicted: the unconstrained fit wants a negative scale
    ops = [OpSample("s", "gemm", 1, p, m) for p, m in ((1e-6, 3e-5), (1e-4, 1e-5))]
    k = fit_calibration(ops, [], hardware="h", ceiling="spec", dtype="bf16").kinds["gemm"]
    assert k.scale >= 0 and k.fixed_s >= 0
    assert k.scale == 0.0  # a fixed cost alone fits better than a scale alone here


def test_framework_term_and_step_errors():
    ops = _samples(2.0, 0.0, step="a") + _samples(2.0, 0.0, step="b") + \
        _samples(2.0, 0.0, step="c")
    op_time = sum(2.0 * p * 2 for p in (1e-6, 1e-5, 1e-4, 1e-3))
    pred = sum(p * 2 for p in (1e-6, 1e-5, 1e-4, 1e-3))
    # framework time = 1e-5 per op instance (8 instances)
    steps = [StepSample(s, op_time + 8e-5, 8e-5, pred, 8) for s in "abc"]
    cal = fit_calibration(ops, steps, hardware="h", ceiling="spec", dtype="fp32")
    assert cal.framework is not None
    assert cal.framework.apply(pred, 8) == pytest.approx(8e-5, rel=1e-9)
    assert cal.fit_error["step_mean_abs_rel_error"] == pytest.approx(0.0, abs=1e-9)
    assert cal.fit_error["step_mean_abs_rel_error_leave_one_out"] == pytest.approx(0.0,
                                                                                   abs=1e-9)
    # uncalibrated: predicted / measured - 1
    assert cal.fit_error["step_mean_abs_rel_error_before"] == pytest.approx(
        1 - pred / (op_time + 8e-5), rel=1e-9)


def test_json_round_trip(tmp_path):
    cal = fit_calibration(_samples(3.0, 1e-6), [], hardware="local", ceiling="spec",
                          dtype="fp32", device={"kind": "cpu"}, source={"runs": []})
    p = tmp_path / "cal.json"
    p.write_text(json.dumps(cal.to_json()))
    back = load_calibration(p)
    assert back.kinds["gemm"].scale == pytest.approx(cal.kinds["gemm"].scale)
    assert back.kinds["gemm"].fixed_s == pytest.approx(cal.kinds["gemm"].fixed_s)
    assert back.hardware == "local" and back.device == {"kind": "cpu"}
    assert cal.to_json()["schema"] == SCHEMA


@pytest.mark.parametrize(("data", "field"), [
    ({"schema": "perfscope.calibration/0"}, "schema"),
    ({"schema": SCHEMA, "ceiling": "spec", "dtype": "fp32", "kinds": {}}, "hardware"),
    ({"schema": SCHEMA, "hardware": "h", "ceiling": "spec", "dtype": "fp32", "kinds": {}},
     "kinds"),
    ({"schema": SCHEMA, "hardware": "h", "ceiling": "spec", "dtype": "fp32",
      "kinds": {"gemm": {"scale": -1, "fixed_s": 0}}}, "kinds.gemm"),
])
def test_malformed_files_name_the_field(data, field):
    with pytest.raises(SpecError, match=field.replace(".", r"\.")):
        calibration_from_json(data, "cal.json")


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_calibration(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SpecError, match="invalid JSON at line 1"):
        load_calibration(bad)


def _analysis(hw: str = "h100-sxm"):
    return analyze(load_model("llama-3.1-8b"), load_hw(hw),
                   Scenario(phase="decode", batch=4, context_len=1000))


def test_calibrated_times_are_the_stated_affine_map():
    a = _analysis()
    cal = Calibration(hardware="h100-sxm", ceiling="spec", dtype="bf16",
                      kinds={"gemm": KindFit(2.0, 1e-6, 1, 0, 0, 0)},
                      framework=KindFit(0.5, 1e-6, 1, 0, 0, 0))
    ct = calibrated_times(a, cal)
    instances = sum(p.op.count for p in a.points if p.op.unit != "link")
    ops = 0.0
    for p, t in zip(a.points, ct.per_op_s, strict=True):
        want = 2.0 * p.time_s + 1e-6 if p.op.kind == "gemm" else p.time_s
        assert t == pytest.approx(want, rel=1e-12)
        ops += want * p.op.count
    assert ct.ops_s == pytest.approx(ops, rel=1e-12)
    assert ct.framework_s == pytest.approx(0.5 * a.totals.time_s + 1e-6 * instances, rel=1e-12)
    assert ct.total_s == pytest.approx(ct.ops_s + ct.framework_s, rel=1e-12)
    assert set(ct.uncalibrated_kinds) == {p.op.kind for p in a.points} - {"gemm"}
    assert any("no calibration for" in n for n in ct.notes)


def test_fixed_cost_is_per_framework_call():
    # two ops of one kind: 1 call and 8 calls per instance; measured = 2 x predicted +
    # 5 us per call -> the fit finds 5 us per call, and applies it by the op's own calls
    ops = [OpSample("s", "norm", 2, p, 2 * p + 5e-6 * c, calls=c, name=n)
           for p in (1e-6, 1e-4) for c, n in ((1, "mlp.residual"), (8, "attn.norm"))]
    cal = fit_calibration(ops, [], hardware="h100-sxm", ceiling="spec", dtype="bf16")
    k = cal.kinds["norm"]
    assert k.scale == pytest.approx(2.0, rel=1e-3) and k.fixed_s == pytest.approx(5e-6, rel=1e-3)
    assert cal.calls_per_op == {"mlp.residual": 1, "attn.norm": 8}
    a = _analysis()
    ct = calibrated_times(a, cal)
    for p, t in zip(a.points, ct.per_op_s, strict=True):
        if p.op.name == "attn.norm":
            assert t == pytest.approx(k.scale * p.time_s + k.fixed_s * 8, rel=1e-12)
        elif p.op.kind == "norm":  # not profiled: the median calls of its kind
            assert t == pytest.approx(k.scale * p.time_s + k.fixed_s * 4.5, rel=1e-12)


def test_calibration_for_other_hardware_is_refused():
    cal = Calibration(hardware="local", ceiling="spec", dtype="fp32",
                      kinds={"gemm": KindFit(2.0, 0.0, 1, 0, 0, 0)}, framework=None)
    with pytest.raises(InputError, match="fitted against predictions for 'local'"):
        calibrated_times(_analysis(), cal)
    emp = Calibration(hardware="h100-sxm", ceiling="empirical", dtype="bf16",
                      kinds={"gemm": KindFit(2.0, 0.0, 1, 0, 0, 0)}, framework=None)
    with pytest.raises(InputError, match="--ceiling"):
        calibrated_times(_analysis(), emp)


def test_calibration_module_is_torch_free():
    import subprocess
    import sys

    code = ("import sys, perfscope.calibration; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
