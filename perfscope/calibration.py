"""Calibration: how far this device's framework runs from the roofline, per op kind.

A roofline prediction is an ideal; a real framework on a real device reaches a fraction of it
on big ops and pays a fixed cost (dispatch, launch, Python) on every small one. perfscope fits,
per op kind, one affine correction from profiled runs (``perfscope profile --torch-model
--calibration-out FILE``):

    time of one op instance = scale_kind x roofline time + fixed_kind

(``1 / scale`` is the efficiency the kind reaches on large ops, ``fixed`` the floor of a tiny
one) plus the framework time no analytic op accounts for (layout changes, copies, Python
between ops), fitted per step as ``scale_fw x predicted step time + fixed_fw x op instances``.
Both are least squares on relative error, constrained to be non-negative. The fit's error is
stated in the file: in-sample per kind, and for whole steps both in-sample and leave-one-step-
out (each step predicted by a fit that did not see it).

This module is torch-free: ``load_calibration`` and ``calibrated_times`` serve ``analyze`` and
``predict`` anywhere. File schema ``perfscope.calibration/1``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from perfscope.errors import InputError, SpecError

if TYPE_CHECKING:
    from perfscope.analysis import Analysis

SCHEMA = "perfscope.calibration/1"
FRAMEWORK = "framework"


@dataclass(frozen=True, slots=True)
class OpSample:
    """One analytic op of one profiled step: per instance times, in seconds."""

    step: str  # which profiled step it came from ("llama-tiny prefill b1 s64")
    kind: str
    count: int  # instances in the step (layers)
    predicted_s: float
    measured_s: float


@dataclass(frozen=True, slots=True)
class StepSample:
    """One profiled step: its measured wall time and the time no analytic op accounts for."""

    step: str
    measured_s: float
    framework_s: float
    predicted_s: float  # the analytic step time
    op_instances: int  # analytic op instances in the step (sum of counts)


@dataclass(frozen=True, slots=True)
class KindFit:
    """time = scale x predicted + fixed_s x instances, fitted on ``n`` samples."""

    scale: float
    fixed_s: float
    n: int
    rms_log_error: float  # in-sample: sqrt(mean(ln(fitted / measured)^2))
    max_abs_log_error: float
    rms_log_error_before: float  # the same for the roofline prediction alone

    @property
    def efficiency(self) -> float:
        """Fraction of the roofline the kind reaches on large ops (1 / scale)."""
        return 1.0 / self.scale if self.scale > 0 else math.inf

    def apply(self, predicted_s: float, instances: float = 1.0) -> float:
        return self.scale * predicted_s + self.fixed_s * instances


@dataclass(frozen=True)
class Calibration:
    hardware: str  # the spec the predictions were made against ("local", "h100-sxm")
    ceiling: str  # spec | empirical
    dtype: str  # compute dtype of the profiled runs
    kinds: Mapping[str, KindFit]
    framework: KindFit | None
    device: Mapping[str, Any] = field(default_factory=dict)  # what was measured on
    source: Mapping[str, Any] = field(default_factory=dict)  # runs fitted on, tool
    fit_error: Mapping[str, float] = field(default_factory=dict)
    created: str = ""

    def to_json(self) -> dict[str, Any]:
        def kf(k: KindFit) -> dict[str, Any]:
            return {"scale": k.scale, "fixed_s": k.fixed_s, "efficiency": k.efficiency
                    if math.isfinite(k.efficiency) else None, "n": k.n,
                    "rms_log_error": k.rms_log_error, "max_abs_log_error": k.max_abs_log_error,
                    "rms_log_error_before": k.rms_log_error_before}

        return {
            "schema": SCHEMA, "created": self.created, "hardware": self.hardware,
            "ceiling": self.ceiling, "dtype": self.dtype, "device": dict(self.device),
            "model": "per op instance: scale x roofline time + fixed_s; framework per step: "
                     "scale x predicted step time + fixed_s x op instances",
            "kinds": {k: kf(v) for k, v in sorted(self.kinds.items())},
            "framework": kf(self.framework) if self.framework else None,
            "fit_error": dict(self.fit_error), "source": dict(self.source),
        }


# ---- fitting -------------------------------------------------------------------------------

def _fit_affine(xs: Sequence[float], ns: Sequence[float], ys: Sequence[float]
                ) -> tuple[float, float]:
    """min over a, b >= 0 of sum(((a x + b n) - y) / y)^2: linear least squares in
    u = x / y, v = n / y against 1."""
    pts = [(x / y, n / y) for x, n, y in zip(xs, ns, ys, strict=True) if y > 0]
    if not pts:
        return 1.0, 0.0
    suu = sum(u * u for u, _ in pts)
    svv = sum(v * v for _, v in pts)
    suv = sum(u * v for u, v in pts)
    su = sum(u for u, _ in pts)
    sv = sum(v for _, v in pts)
    det = suu * svv - suv * suv
    if det > 1e-12 * max(suu * svv, 1e-300):
        a = (su * svv - sv * suv) / det
        b = (sv * suu - su * suv) / det
        if a >= 0 and b >= 0:
            return a, b
    # on the boundary: the better of scale-only and fixed-only
    cands = []
    if suu > 0:
        cands.append((su / suu, 0.0))
    if svv > 0:
        cands.append((0.0, sv / svv))
    if not cands:
        return 1.0, 0.0
    return min(cands, key=lambda ab: sum((ab[0] * u + ab[1] * v - 1) ** 2 for u, v in pts))


def _log_errors(fitted: Sequence[float], measured: Sequence[float]) -> tuple[float, float]:
    errs = [math.log(f / m) for f, m in zip(fitted, measured, strict=True) if f > 0 and m > 0]
    if not errs:
        return 0.0, 0.0
    return math.sqrt(sum(e * e for e in errs) / len(errs)), max(abs(e) for e in errs)


def _kind_fit(xs: list[float], ns: list[float], ys: list[float]) -> KindFit:
    a, b = _fit_affine(xs, ns, ys)
    rms, mx = _log_errors([a * x + b * n for x, n in zip(xs, ns, strict=True)], ys)
    before, _ = _log_errors(xs, ys)
    return KindFit(a, b, len(ys), rms, mx, before)


def _fit_kinds(ops: Sequence[OpSample]) -> dict[str, KindFit]:
    by: dict[str, tuple[list[float], list[float], list[float]]] = {}
    for s in ops:
        if s.measured_s > 0 and s.predicted_s > 0:
            x, n, y = by.setdefault(s.kind, ([], [], []))
            x.append(s.predicted_s)
            n.append(1.0)
            y.append(s.measured_s)
    return {k: _kind_fit(*v) for k, v in by.items()}


def _fit_framework(steps: Sequence[StepSample]) -> KindFit | None:
    pts = [s for s in steps if s.framework_s > 0]
    if not pts:
        return None
    return _kind_fit([s.predicted_s for s in pts], [float(s.op_instances) for s in pts],
                     [s.framework_s for s in pts])


def _step_time(step: StepSample, ops: Iterable[OpSample], kinds: Mapping[str, KindFit],
               fw: KindFit | None) -> float:
    t = 0.0
    for o in ops:
        k = kinds.get(o.kind)
        t += (k.apply(o.predicted_s) if k else o.predicted_s) * o.count
    if fw is not None:
        t += fw.apply(step.predicted_s, step.op_instances)
    return t


def fit_calibration(ops: Iterable[OpSample], steps: Iterable[StepSample], *, hardware: str,
                    ceiling: str, dtype: str, device: Mapping[str, Any] | None = None,
                    source: Mapping[str, Any] | None = None) -> Calibration:
    """Fit per-kind factors and the framework term; state the fit's error."""
    op_list = list(ops)
    step_list = list(steps)
    if not op_list:
        raise InputError("no measured op joined to an analytic op: nothing to calibrate on")
    kinds = _fit_kinds(op_list)
    fw = _fit_framework(step_list)
    by_step: dict[str, list[OpSample]] = {}
    for o in op_list:
        by_step.setdefault(o.step, []).append(o)
    err: dict[str, float] = {}
    rel_before, rel_after, rel_cv = [], [], []
    for s in step_list:
        mine = by_step.get(s.step, [])
        if s.measured_s <= 0:
            continue
        rel_before.append(abs(s.predicted_s - s.measured_s) / s.measured_s)
        rel_after.append(abs(_step_time(s, mine, kinds, fw) - s.measured_s) / s.measured_s)
        if len(step_list) >= 3:  # leave this step out of the fit, then predict it
            k_cv = _fit_kinds([o for o in op_list if o.step != s.step])
            fw_cv = _fit_framework([x for x in step_list if x.step != s.step])
            rel_cv.append(abs(_step_time(s, mine, k_cv, fw_cv) - s.measured_s) / s.measured_s)
    if rel_before:
        err["step_mean_abs_rel_error_before"] = sum(rel_before) / len(rel_before)
        err["step_mean_abs_rel_error"] = sum(rel_after) / len(rel_after)
    if rel_cv:
        err["step_mean_abs_rel_error_leave_one_out"] = sum(rel_cv) / len(rel_cv)
    xs = [o.predicted_s for o in op_list if o.measured_s > 0 and o.predicted_s > 0]
    ys = [o.measured_s for o in op_list if o.measured_s > 0 and o.predicted_s > 0]
    fit = [kinds[o.kind].apply(o.predicted_s) for o in op_list
           if o.measured_s > 0 and o.predicted_s > 0]
    err["op_rms_log_error_before"] = _log_errors(xs, ys)[0]
    err["op_rms_log_error"] = _log_errors(fit, ys)[0]
    err["steps"] = float(len(step_list))
    return Calibration(hardware=hardware, ceiling=ceiling, dtype=dtype, kinds=kinds,
                       framework=fw, device=dict(device or {}), source=dict(source or {}),
                       fit_error=err, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


# ---- reading -------------------------------------------------------------------------------

def _kind_from_json(d: Any, file: str, where: str) -> KindFit:
    if not isinstance(d, Mapping):
        raise SpecError(file, where, "expected an object with scale and fixed_s")
    try:
        scale, fixed = float(d["scale"]), float(d["fixed_s"])
    except (KeyError, TypeError, ValueError):
        raise SpecError(file, where, "needs numbers scale and fixed_s",
                        "regenerate it with perfscope profile --calibration-out") from None
    if not (scale >= 0 and fixed >= 0 and math.isfinite(scale) and math.isfinite(fixed)):
        raise SpecError(file, where, f"scale {scale} and fixed_s {fixed} must be finite, >= 0")
    return KindFit(scale, fixed, int(d.get("n", 0)), float(d.get("rms_log_error", 0.0)),
                   float(d.get("max_abs_log_error", 0.0)),
                   float(d.get("rms_log_error_before", 0.0)))


def calibration_from_json(data: Any, file: str = "<calibration>") -> Calibration:
    if not isinstance(data, Mapping):
        raise SpecError(file, None, "expected a JSON object")
    if data.get("schema") != SCHEMA:
        raise SpecError(file, "schema", f"is {data.get('schema')!r}, expected {SCHEMA!r}",
                        "pass a file written by perfscope profile --calibration-out")
    for key in ("hardware", "ceiling", "dtype"):
        if not isinstance(data.get(key), str):
            raise SpecError(file, key, "missing or not a string")
    kinds = data.get("kinds")
    if not isinstance(kinds, Mapping) or not kinds:
        raise SpecError(file, "kinds", "missing or empty")
    fw = data.get("framework")
    return Calibration(
        hardware=data["hardware"], ceiling=data["ceiling"], dtype=data["dtype"],
        kinds={k: _kind_from_json(v, file, f"kinds.{k}") for k, v in kinds.items()},
        framework=_kind_from_json(fw, file, "framework") if fw is not None else None,
        device=dict(data.get("device") or {}), source=dict(data.get("source") or {}),
        fit_error={k: float(v) for k, v in (data.get("fit_error") or {}).items()},
        created=str(data.get("created", "")))


def load_calibration(path: str | Path) -> Calibration:
    """Read a ``perfscope.calibration/1`` file (SpecError naming the field when malformed)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"--calibration {p}: file does not exist; write one with "
                         "perfscope profile --torch-model --calibration-out FILE")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"--calibration {p}: cannot read it ({e})") from None
    except json.JSONDecodeError as e:
        raise SpecError(str(p), None, f"invalid JSON at line {e.lineno} column {e.colno}") \
            from None
    return calibration_from_json(data, str(p))


# ---- applying ------------------------------------------------------------------------------

@dataclass(frozen=True)
class CalibratedTimes:
    per_op_s: tuple[float, ...]  # per instance, aligned with analysis.points
    ops_s: float  # the analytic ops of the step, calibrated
    framework_s: float  # the framework time the calibration adds
    total_s: float  # the step: calibrated ops + framework
    uncalibrated_kinds: tuple[str, ...]  # kinds left at the roofline time (no factor fitted)
    notes: tuple[str, ...] = ()


def check_applicable(analysis: Analysis, cal: Calibration) -> list[str]:
    """Raise when the calibration was fitted against other predictions; notes otherwise."""
    hw, s = analysis.hw, analysis.scenario
    if cal.hardware != hw.name:
        raise InputError(f"--calibration: fitted against predictions for {cal.hardware!r}, "
                         f"but this analysis is for {hw.name!r}; pass --hw {cal.hardware} "
                         "or fit a calibration on this hardware")
    if cal.ceiling != s.ceiling:
        raise InputError(f"--calibration: fitted with --ceiling {cal.ceiling}, but this "
                         f"analysis uses --ceiling {s.ceiling}; use the same ceiling")
    notes = []
    if cal.dtype != analysis.precision.compute:
        notes.append(f"calibration fitted on {cal.dtype} runs, applied to "
                     f"{analysis.precision.compute}")
    return notes


def calibrated_times(analysis: Analysis, cal: Calibration) -> CalibratedTimes:
    """Calibrated per-op (per instance) and step times of one analysis. Pure.

    Comm ops and kinds the calibration has no factor for keep their roofline time (and are
    listed). With pipeline parallelism the step total scales with the op sum."""
    notes = check_applicable(analysis, cal)
    per: list[float] = []
    missing: set[str] = set()
    ops_pred = ops_cal = 0.0
    instances = 0
    for p in analysis.points:
        op = p.op
        k = cal.kinds.get(op.kind) if op.unit != "link" else None
        if op.unit != "link":
            instances += op.count
        if k is None:
            if op.unit != "link":
                missing.add(op.kind)
            t = p.time_s
        else:
            t = k.apply(p.time_s)
        per.append(t)
        ops_pred += p.time_s * op.count
        ops_cal += t * op.count
    step = analysis.totals.time_s * (ops_cal / ops_pred) if ops_pred > 0 else ops_cal
    fw = cal.framework.apply(analysis.totals.time_s, instances) if cal.framework else 0.0
    if missing:
        notes.append(f"no calibration for {', '.join(sorted(missing))}: roofline time kept")
    return CalibratedTimes(tuple(per), step, fw, step + fw, tuple(sorted(missing)),
                           tuple(notes))
