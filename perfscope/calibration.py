"""Calibration: how far this device's framework runs from the roofline, per op kind.

A roofline prediction is an ideal; a real framework on a real device reaches a fraction of it
on big ops and pays a fixed cost (dispatch, launch, Python) on every call it makes. perfscope
fits, per op kind, one affine correction from profiled runs (``perfscope profile --torch-model
--calibration-out FILE``):

    time of one op instance = scale_kind x roofline time + fixed_kind x calls

(``1 / scale`` is the efficiency the kind reaches on large ops, ``fixed`` the cost of one
framework call, ``calls`` how many calls the framework makes for one instance of that op, as
profiled: eager RMSNorm is 8 torch calls, a projection 1) plus the framework time no analytic
op accounts for (layout changes, copies, Python between ops), fitted per step as
``scale_fw x predicted step time + fixed_fw x op instances``.
Both minimise the time-weighted mean absolute log error (robust to the outliers a shared
machine produces), constrained to be non-negative. The fit's error is
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
    calls: float = 1.0  # framework calls per instance (torch calls, or ops launching kernels)
    name: str = ""  # the analytic op ("attn.rotary")


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
    """time = scale x predicted + fixed_s x calls (framework: x op instances), fitted on
    ``n`` samples."""

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

    def apply(self, predicted_s: float, calls: float = 1.0) -> float:
        return self.scale * predicted_s + self.fixed_s * calls


@dataclass(frozen=True)
class Calibration:
    hardware: str  # the spec the predictions were made against ("local", "h100-sxm")
    ceiling: str  # spec | empirical
    dtype: str  # compute dtype of the profiled runs
    kinds: Mapping[str, KindFit]
    framework: KindFit | None
    calls_per_op: Mapping[str, float] = field(default_factory=dict)  # per instance, profiled
    calls_per_kind: Mapping[str, float] = field(default_factory=dict)  # for ops not profiled
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
            "model": "per op instance: scale x roofline time + fixed_s x calls (calls_per_op, "
                     "else calls_per_kind); framework per step: scale x predicted step time "
                     "+ fixed_s x op instances; fitted by minimising the time-weighted mean "
                     "|ln(fitted / measured)|",
            "kinds": {k: kf(v) for k, v in sorted(self.kinds.items())},
            "calls_per_op": dict(sorted(self.calls_per_op.items())),
            "calls_per_kind": dict(sorted(self.calls_per_kind.items())),
            "framework": kf(self.framework) if self.framework else None,
            "fit_error": dict(self.fit_error), "source": dict(self.source),
        }


# ---- fitting -------------------------------------------------------------------------------

_SCALES = tuple(10 ** (i / 10) for i in range(-30, 41))  # 1e-3 .. 1e4, 10 per decade
_FIXED = (0.0, *(10 ** (i / 5) for i in range(-45, -4)))  # 0, 1 ns .. 0.1 s, 5 per decade


def _fit_affine(xs: Sequence[float], ns: Sequence[float], ys: Sequence[float],
                ws: Sequence[float] | None = None) -> tuple[float, float]:
    """a, b >= 0 minimising the weighted mean |ln((a x + b n) / y)|.

    Log errors, because ops span six decades of time and a ratio is what is off; absolute
    values, because a step slowed by another process must not pull the fit (a shared machine
    gives such outliers). Weights: each sample's measured time (the ops that make up the
    step count most). A grid over both (10 scales and 5 fixed costs per decade), a finer
    grid around the best point, and the exact fits through pairs of samples: deterministic,
    no solver."""
    pts = [(x, n, y, w) for x, n, y, w in zip(xs, ns, ys, ws or ys, strict=True)
           if y > 0 and x >= 0]
    if not pts:
        return 1.0, 0.0
    total = sum(w for *_, w in pts) or 1.0

    def loss(a: float, b: float) -> float:
        acc = 0.0
        for x, n, y, w in pts:
            f = a * x + b * n
            acc += w * (abs(math.log(f / y)) if f > 0 else 50.0)
        return acc / total

    best = min(((a, b) for a in (0.0, *_SCALES) for b in _FIXED if a or b),
               key=lambda ab: loss(*ab))
    for step in (100, 1000):  # refine: +-1 grid step in tenths, then +-0.1 step in tenths
        a0, b0 = best
        cands = [(a0 * 10 ** (i / step), b0 * 10 ** (2 * j / step)) for i in range(-10, 11)
                 for j in range(-10, 11)]
        best = min([best, *cands], key=lambda ab: loss(*ab))
    # an absolute-error fit tends to pass exactly through samples: try every line through
    # two of them (the 40 heaviest), and through one with the other parameter at 0
    top = sorted(pts, key=lambda p: -p[3])[:40]
    vertices = [(y / x, 0.0) for x, _, y, _ in top if x > 0]
    vertices += [(0.0, y / n) for _, n, y, _ in top if n > 0]
    for i, (x1, n1, y1, _) in enumerate(top):
        for x2, n2, y2, _ in top[i + 1:]:
            det = x1 * n2 - x2 * n1
            if abs(det) > 1e-12 * abs(x1 * n2):
                a, b = (y1 * n2 - y2 * n1) / det, (x1 * y2 - x2 * y1) / det
                if a >= 0 and b >= 0:
                    vertices.append((a, b))
    return min([best, *vertices], key=lambda ab: loss(*ab))


def _log_errors(fitted: Sequence[float], measured: Sequence[float]) -> tuple[float, float]:
    errs = [math.log(f / m) for f, m in zip(fitted, measured, strict=True) if f > 0 and m > 0]
    if not errs:
        return 0.0, 0.0
    return math.sqrt(sum(e * e for e in errs) / len(errs)), max(abs(e) for e in errs)


def _kind_fit(xs: list[float], ns: list[float], ys: list[float],
              ws: list[float] | None = None) -> KindFit:
    a, b = _fit_affine(xs, ns, ys, ws)
    rms, mx = _log_errors([a * x + b * n for x, n in zip(xs, ns, strict=True)], ys)
    before, _ = _log_errors(xs, ys)
    return KindFit(a, b, len(ys), rms, mx, before)


def _fit_kinds(ops: Sequence[OpSample]) -> dict[str, KindFit]:
    by: dict[str, tuple[list[float], list[float], list[float], list[float]]] = {}
    for s in ops:
        if s.measured_s > 0 and s.predicted_s > 0:
            x, n, y, w = by.setdefault(s.kind, ([], [], [], []))
            x.append(s.predicted_s)
            n.append(s.calls)
            y.append(s.measured_s)
            w.append(s.measured_s * s.count)  # its share of the step
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
        t += (k.apply(o.predicted_s, o.calls) if k else o.predicted_s) * o.count
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
    fit = [kinds[o.kind].apply(o.predicted_s, o.calls) for o in op_list
           if o.measured_s > 0 and o.predicted_s > 0]
    err["op_rms_log_error_before"] = _log_errors(xs, ys)[0]
    err["op_rms_log_error"] = _log_errors(fit, ys)[0]
    err["steps"] = float(len(step_list))
    by_name: dict[str, list[float]] = {}
    by_kind: dict[str, list[float]] = {}
    for o in op_list:
        if o.name:
            by_name.setdefault(o.name, []).append(o.calls)
        by_kind.setdefault(o.kind, []).append(o.calls)
    return Calibration(hardware=hardware, ceiling=ceiling, dtype=dtype, kinds=kinds,
                       framework=fw, calls_per_op={k: _median(v) for k, v in by_name.items()},
                       calls_per_kind={k: _median(v) for k, v in by_kind.items()},
                       device=dict(device or {}), source=dict(source or {}),
                       fit_error=err, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


def _median(xs: Sequence[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


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
    calls = {}
    for key in ("calls_per_op", "calls_per_kind"):
        d = data.get(key) or {}
        if not isinstance(d, Mapping) or not all(
                isinstance(v, (int, float)) and v >= 0 for v in d.values()):
            raise SpecError(file, key, "expected an object of non-negative numbers")
        calls[key] = {k: float(v) for k, v in d.items()}
    return Calibration(
        hardware=data["hardware"], ceiling=data["ceiling"], dtype=data["dtype"],
        kinds={k: _kind_from_json(v, file, f"kinds.{k}") for k, v in kinds.items()},
        framework=_kind_from_json(fw, file, "framework") if fw is not None else None,
        calls_per_op=calls["calls_per_op"], calls_per_kind=calls["calls_per_kind"],
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


def op_calls(cal: Calibration, name: str, kind: str) -> float:
    """Framework calls per instance of an analytic op: as profiled for this op (window tags
    dropped), else the median of its kind, else 1."""
    base = name.split("@", 1)[0]
    for key in (name, base):
        if key in cal.calls_per_op:
            return cal.calls_per_op[key]
    return cal.calls_per_kind.get(kind, 1.0)


def calibrated_times(analysis: Analysis, cal: Calibration) -> CalibratedTimes:
    """Calibrated per-op (per instance) and step times of one analysis. Pure.

    Per instance: scale x roofline time + fixed_s x calls (``op_calls``). Comm ops and kinds
    the calibration has no factor for keep their roofline time (and are listed). With
    pipeline parallelism the step total scales with the op sum."""
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
            t = k.apply(p.time_s, op_calls(cal, op.name, op.kind))
        per.append(t)
        ops_pred += p.time_s * op.count
        ops_cal += t * op.count
    step = analysis.totals.time_s * (ops_cal / ops_pred) if ops_pred > 0 else ops_cal
    fw = cal.framework.apply(analysis.totals.time_s, instances) if cal.framework else 0.0
    if missing:
        notes.append(f"no calibration for {', '.join(sorted(missing))}: roofline time kept")
    return CalibratedTimes(tuple(per), step, fw, step + fw, tuple(sorted(missing)),
                           tuple(notes))


def calibrated_json(doc: dict[str, Any], analysis: Analysis, cal: Calibration,
                    file: str) -> dict[str, Any]:
    """``doc`` (the ``perfscope.analysis/1`` document of ``analysis``) with the calibrated
    times added: ``calibrated_time_s`` per op row (per instance, like ``time_s``) and a
    ``calibration`` block with the calibrated step and what it was fitted on."""
    ct = calibrated_times(analysis, cal)
    ops = [row | {"calibrated_time_s": t} for row, t in zip(doc["ops"], ct.per_op_s,
                                                              strict=True)]
    block = {"file": file, "hardware": cal.hardware, "ceiling": cal.ceiling,
             "dtype": cal.dtype, "created": cal.created, "time_s": ct.total_s,
             "ops_time_s": ct.ops_s, "framework_time_s": ct.framework_s,
             "uncalibrated_kinds": list(ct.uncalibrated_kinds), "notes": list(ct.notes),
             "fit_error": dict(cal.fit_error)}
    return doc | {"ops": ops, "calibration": block}
