"""Join measured ops to the analytic graph: predicted beside measured, op by op, plus the time
no analytic op accounts for (framework rows). Pure: no torch.

Every row is one analytic op for the whole step (all ``count`` layers together): FLOPs, bytes
and times are step totals. Each row is also placed on the device's measured roofline:
``roofline_time_s`` is max(FLOPs / peak, bytes / bandwidth) for the counts profiled (FLOPs
from FlopCounterMode where it counts them, bytes from tensor sizes), and ``roofline_fraction``
= roofline_time_s / measured_time_s.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from perfscope.measure.torchprof.attribute import PhaseMeasurement, RoleStats
from perfscope.measure.torchprof.roles import FRAMEWORK_ROWS

if TYPE_CHECKING:
    from perfscope.analysis import Analysis
    from perfscope.calibration import Calibration
    from perfscope.specs.hardware import HardwareSpec

COUNTED_KINDS = ("gemm", "attention")  # FlopCounterMode counts matrix products only
REL_TOL = 1e-9


@dataclass(frozen=True)
class OpRow:
    phase: str
    name: str
    kind: str
    count: int | None
    measured_time_s: float | None
    predicted_time_s: float | None
    analytic_flops: float | None = None
    profiled_flops: float | None = None
    analytic_bytes: float | None = None
    profiled_bytes: float | None = None
    calibrated_time_s: float | None = None
    roofline_time_s: float | None = None
    bound: str | None = None
    module: str = ""
    calls: int = 0
    ops: tuple[str, ...] = ()
    flops_check: str = "-"  # equal | differs | not counted | blind spot | not measured
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        t = self.measured_time_s or 0.0
        flops = self.profiled_flops if self.profiled_flops else self.analytic_flops
        nbytes = self.profiled_bytes if self.profiled_bytes else self.analytic_bytes

        def per_s(x: float | None) -> float | None:
            return x / t if t > 0 and x else None

        return {
            "phase": self.phase, "name": self.name, "kind": self.kind, "count": self.count,
            "analytic_flops": self.analytic_flops, "profiled_flops": self.profiled_flops,
            "measured_time_s": self.measured_time_s, "predicted_time_s": self.predicted_time_s,
            **({"calibrated_time_s": self.calibrated_time_s}
               if self.calibrated_time_s is not None else {}),
            "module": self.module, "calls": self.calls, "ops": list(self.ops),
            "analytic_bytes": self.analytic_bytes, "profiled_bytes": self.profiled_bytes,
            "bytes": nbytes,
            "achieved_flops_per_s": per_s(flops), "achieved_bytes_per_s": per_s(nbytes),
            "measured_intensity": flops / nbytes if flops and nbytes else None,
            "efficiency": per_s(self.predicted_time_s),
            "roofline_time_s": self.roofline_time_s,
            "roofline_fraction": per_s(self.roofline_time_s),
            "bound": self.bound, "flops_check": self.flops_check, "note": self.note,
        }


@dataclass(frozen=True)
class PhaseJoin:
    phase: str
    rows: tuple[OpRow, ...]
    measurement: PhaseMeasurement
    predicted_time_s: float | None  # the analytic step
    calibrated_time_s: float | None
    scenario: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def attributed_time_s(self) -> float:
        return sum(r.measured_time_s or 0.0 for r in self.rows
                   if not r.name.startswith("framework."))

    @property
    def framework_time_s(self) -> float:
        return sum(r.measured_time_s or 0.0 for r in self.rows
                   if r.name.startswith("framework."))

    def efficiency_by_kind(self) -> dict[str, dict[str, float]]:
        """Per kind: predicted and measured time of the joined ops, and predicted / measured."""
        out: dict[str, dict[str, float]] = {}
        for r in self.rows:
            if r.predicted_time_s is None or not r.measured_time_s:
                continue
            d = out.setdefault(r.kind, {"predicted_time_s": 0.0, "measured_time_s": 0.0})
            d["predicted_time_s"] += r.predicted_time_s
            d["measured_time_s"] += r.measured_time_s
        for d in out.values():
            d["efficiency"] = d["predicted_time_s"] / d["measured_time_s"]
        return out


def _roofline_time(hw: HardwareSpec, unit: str, dtype: str, ceiling: str, flops: float,
                   nbytes: float) -> float:
    peak = hw.tensor_flops(dtype, ceiling)[0] if unit == "tensor" else hw.vector_flops(dtype)
    return max(flops / peak if peak else 0.0, nbytes / hw.memory_bandwidth(ceiling)[0])


def _flops_check(kind: str, r: RoleStats | None, analytic: float, *, explain: str
                 ) -> tuple[float | None, str, str]:
    """(profiled FLOPs, check, note) of one analytic op."""
    if r is None or not r.calls:
        return None, "not measured", "no profiled op was attributed to this analytic op"
    if kind not in COUNTED_KINDS and not r.flops:
        return None, "not counted", ""
    if not r.flops:
        return 0.0, "blind spot", (f"FlopCounterMode counted no FLOPs for {', '.join(r.ops)} "
                                   "(fused, grouped or custom kernel)")
    if abs(r.flops - analytic) <= REL_TOL * max(abs(analytic), 1.0):
        return r.flops, "equal", ""
    return r.flops, "differs", explain or (f"profiled / analytic = {r.flops / analytic:.4g}"
                                           if analytic else "no analytic FLOPs")


def join_phase(a: Analysis, pm: PhaseMeasurement, *, cal: Calibration | None = None
               ) -> PhaseJoin:
    """Rows of one phase: the analytic ops in graph order, then the framework rows."""
    hw, s = a.hw, a.scenario
    cal_times = None
    notes: list[str] = []
    if cal is not None:
        from perfscope.calibration import calibrated_times

        cal_times = calibrated_times(a, cal)
        notes += cal_times.notes
    rows: list[OpRow] = []
    names = set()
    for i, p in enumerate(a.points):
        op = p.op
        names.add(op.name)
        r = pm.roles.get(op.name)
        analytic = op.flops * op.count
        explain = ""
        if op.kind == "attention" and s.attention == "flash" and s.new_tokens > 1:
            explain = ("torch's SDPA formula counts the full T x K score matrix; a causal "
                       "kernel computes about half, as the analytic count does")
        elif op.impl and op.impl.get("bias"):
            explain = "the analytic count adds the bias (m x n); FlopCounterMode counts 2mnk"
        prof, check, note = _flops_check(op.kind, r, analytic, explain=explain)
        measured = r.time_s if r is not None and r.calls else None
        nbytes = r.bytes if r is not None and r.bytes else None
        roof = None
        if measured is not None and op.unit != "link":
            roof = _roofline_time(hw, op.unit, op.dtype, s.ceiling,
                                  prof if prof else analytic,
                                  nbytes if nbytes else op.bytes * op.count)
        rows.append(OpRow(
            phase=pm.phase, name=op.name, kind=op.kind, count=op.count,
            measured_time_s=measured, predicted_time_s=p.time_s * op.count,
            analytic_flops=analytic, profiled_flops=prof, analytic_bytes=op.bytes * op.count,
            profiled_bytes=nbytes,
            calibrated_time_s=cal_times.per_op_s[i] * op.count if cal_times else None,
            roofline_time_s=roof, bound=p.bound,
            module=", ".join(r.modules) if r is not None else "",
            calls=r.calls if r is not None else 0, ops=r.ops if r is not None else (),
            flops_check=check, note=note))
    rows += _framework_rows(pm, names)
    return PhaseJoin(pm.phase, tuple(rows), pm, a.totals.time_s,
                     cal_times.total_s if cal_times else None,
                     a.to_json()["scenario"], tuple(notes))


def _framework_rows(pm: PhaseMeasurement, analytic_names: set[str]) -> list[OpRow]:
    rows = []
    for role, r in pm.roles.items():
        if role in analytic_names or not r.calls:
            continue
        framework = role.startswith("framework.")
        note = FRAMEWORK_ROWS.get(role, "") if framework else \
            "measured, but the analytic graph has no such op"
        rows.append(OpRow(pm.phase, role, "framework" if framework else "unmodelled", None,
                          r.time_s, None, profiled_flops=r.flops or None,
                          profiled_bytes=r.bytes or None, module=", ".join(r.modules),
                          calls=r.calls, ops=r.ops, note=note))
    rows.sort(key=lambda x: -(x.measured_time_s or 0.0))
    inside = sum(r.time_s for r in pm.roles.values())
    overhead = pm.timing.median_s - inside
    note = FRAMEWORK_ROWS["framework.overhead"]
    if overhead < 0:
        note += ("; the ops add up to more than the uninstrumented step (timing noise, or "
                 "the cost of clocking each call)")
    rows.append(OpRow(pm.phase, "framework.overhead", "framework", None, max(0.0, overhead),
                      None, note=note))
    return rows


# ---- user modules: no analytic graph, the roofline of the profiled counts ----------------

_KIND_BY_CLASS = (("Linear", "gemm"), ("Conv", "gemm"), ("Embedding", "embedding"),
                  ("Norm", "norm"), ("Attention", "attention"), ("Softmax", "softmax"))


def module_kind(type_name: str, r: RoleStats) -> str:
    for key, kind in _KIND_BY_CLASS:
        if key in type_name:
            return kind
    return "gemm" if r.flops else "elementwise"


def join_module_phase(pm: PhaseMeasurement, hw: HardwareSpec, dtype: str, ceiling: str,
                      module_types: Mapping[str, str]) -> PhaseJoin:
    """A user module: one row per module (the ops it calls itself), predicted from its own
    profiled FLOPs and bytes on the device's roofline."""
    rows = []
    for role, r in pm.roles.items():
        if role.startswith("framework.") or not r.calls:
            continue
        kind = module_kind(module_types.get(role, ""), r)
        unit = "tensor" if kind in COUNTED_KINDS else "vector"
        pred = _roofline_time(hw, unit, dtype, ceiling, r.flops, r.bytes)
        rows.append(OpRow(pm.phase, role or "(root)", kind, 1, r.time_s, pred,
                          profiled_flops=r.flops if r.flop_ops else None,
                          profiled_bytes=r.bytes or None, roofline_time_s=pred,
                          module=role or "(root)", calls=r.calls, ops=r.ops,
                          flops_check="not counted" if not r.flop_ops else "-",
                          note=module_types.get(role, "")))
    rows.sort(key=lambda x: -(x.measured_time_s or 0.0))
    rows += _framework_rows(pm, {k for k in pm.roles if not k.startswith("framework.")})
    pred = sum(r.predicted_time_s or 0.0 for r in rows)
    return PhaseJoin(pm.phase, tuple(rows), pm, pred, None, {}, ())
