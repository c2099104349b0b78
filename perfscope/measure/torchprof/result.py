"""ProfileResult and its public JSON (``perfscope.profile/1``). Pure: no torch.

    {"schema": "perfscope.profile/1", "model": {...}, "hardware": {...}, "device": {...},
     "config": {...}, "phases": [{"phase", "step_time_s", "predicted_time_s", ...}],
     "ops": [{"phase", "name", "kind", "count", "analytic_flops", "profiled_flops",
              "measured_time_s", "predicted_time_s", ["calibrated_time_s"], "module",
              "bytes", "achieved_flops_per_s", "efficiency", "roofline_fraction", ...}],
     "modules": [...], "aten_ops": [...], "kernels": [...], "calibration": {...},
     "notes": [...]}

Every op row is one analytic op over the whole step (all ``count`` layers), or a
``framework.*`` row: measured time no analytic op accounts for (predicted_time_s null).
Times in seconds, FLOPs as 2 per multiply-add, bytes as bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from perfscope.calibration import OpSample, StepSample
from perfscope.measure.torchprof.join import PhaseJoin

SCHEMA = "perfscope.profile/1"


@dataclass(frozen=True)
class ProfileResult:
    model: Mapping[str, Any]  # name, source, class, layers, params
    hardware: Mapping[str, Any]  # the spec predictions used, and where it came from
    device: Mapping[str, Any]  # what ran: describe_device plus torch threads
    config: Mapping[str, Any]  # dtype, attention, batch, lengths, warm-up, repeats
    phases: tuple[PhaseJoin, ...]
    notes: tuple[str, ...] = ()
    trace_json: bytes | None = field(default=None, repr=False)
    calibration: Mapping[str, Any] | None = None  # the calibration applied, if any

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA, "model": dict(self.model), "hardware": dict(self.hardware),
            "device": dict(self.device), "config": dict(self.config),
            "phases": [_phase_json(p) for p in self.phases],
            "ops": [r.to_json() for p in self.phases for r in p.rows],
            "modules": [{"phase": p.phase, "module": m.module, "type": m.type,
                         "time_s": m.time_s, "self_time_s": m.self_time_s, "flops": m.flops,
                         "bytes": m.bytes} for p in self.phases for m in p.measurement.modules],
            "aten_ops": [{"phase": p.phase, "op": a.name, "calls": a.calls,
                          "time_s": a.time_s} for p in self.phases
                         for a in p.measurement.aten_ops],
            "kernels": [{"phase": p.phase, "kernel": k.name, "calls": k.calls,
                         "time_s": k.time_s} for p in self.phases
                        for k in p.measurement.kernels],
            "calibration": dict(self.calibration) if self.calibration else None,
            "notes": list(self.notes),
        }

    def calibration_samples(self) -> tuple[list[OpSample], list[StepSample]]:
        """What a calibration is fitted on: every joined op (per instance) and every step."""
        ops: list[OpSample] = []
        steps: list[StepSample] = []
        for p in self.phases:
            shape = p.measurement.shape
            label = (f"{self.model.get('name')} {p.phase} b{shape.get('batch')} "
                     f"s{shape.get('seq_len')} c{shape.get('context_len')}")
            instances = 0
            for r in p.rows:
                if r.predicted_time_s is None or r.count is None:
                    continue
                instances += r.count
                if r.measured_time_s:
                    ops.append(OpSample(label, r.kind, r.count, r.predicted_time_s / r.count,
                                        r.measured_time_s / r.count,
                                        calls=max(1.0, r.calls / r.count), name=r.name))
            if p.predicted_time_s is not None:
                steps.append(StepSample(label, p.measurement.timing.median_s,
                                        unpredicted_time_s(p), p.predicted_time_s, instances))
        return ops, steps


def unpredicted_time_s(p: PhaseJoin) -> float:
    """Measured time of the rows no analytic op predicts (framework and unmodelled rows)."""
    return sum(r.measured_time_s or 0.0 for r in p.rows if r.predicted_time_s is None)


def _phase_json(p: PhaseJoin) -> dict[str, Any]:
    m = p.measurement
    checks: dict[str, int] = {}
    for r in p.rows:
        if r.kind in ("gemm", "attention"):
            checks[r.flops_check] = checks.get(r.flops_check, 0) + 1
    return {
        "phase": p.phase, "shape": dict(m.shape), "scenario": dict(p.scenario),
        "step_time_s": m.timing.to_dict(),
        "step_wall_time_s": m.wall.to_dict() if m.wall else None,
        "clock": m.clock,
        "profiled_step_time_s": m.profiled_step_s,
        "ops_time_s": m.ops_time_s,
        "predicted_time_s": p.predicted_time_s,
        **({"calibrated_time_s": p.calibrated_time_s} if p.calibrated_time_s is not None
           else {}),
        "attributed_time_s": p.attributed_time_s,
        "framework_time_s": p.framework_time_s,
        "unpredicted_time_s": unpredicted_time_s(p),
        "efficiency_by_kind": p.efficiency_by_kind(),
        "flops_checks": checks,
        "flop_counter_total": m.flop_total,
        "notes": list(p.notes),
    }
