"""Fit a StepModel from analyze() probes (see ``perfscope.serving.stepmodel``).

``fit_step_model`` calls ``analyze()`` at a handful of steps chosen so every feature column
varies, solves one least-squares system per phase for all ops and quantities at once, and
checks the result on a step it did not fit: an op whose cost stops being linear in the
features (a change in the analytic core) raises DecompositionError naming it, instead of
silently mispredicting.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from perfscope.analysis import Analysis, analyze
from perfscope.analytic.ops import OpGraph
from perfscope.errors import PerfscopeError
from perfscope.roofline import roofline
from perfscope.serving.features import FeatureSpace
from perfscope.serving.stepmodel import (
    EXACT_RTOL,
    CommCurve,
    DecompositionError,
    PhaseModel,
    StepModel,
)
from perfscope.specs.hardware import HardwareSpec
from perfscope.specs.model import ModelSpec
from perfscope.specs.scenario import Scenario
from perfscope.units import DTYPE_BITS


def layout_scenario(base: Scenario, **changes: Any) -> Scenario:
    """``base`` with ``changes``, dropping fields this version of Scenario lacks (attn_dp)."""
    names = {f.name for f in dataclasses.fields(Scenario)}
    return dataclasses.replace(base, **{k: v for k, v in changes.items() if k in names})


def attn_dp_of(s: Scenario) -> int:
    return int(getattr(s, "attn_dp", 1) or 1)


def _probes(max_pos: int, windows, dp: int, n_dec: int, n_fill: int) -> tuple[
        list[tuple[int, int]], list[tuple[int, int, int]]]:
    """Probe steps spread so every feature column varies; lengths fit the context."""
    L = max(64, max_pos - 2)
    big = max((w for w in windows if w), default=0)
    span = min(L, max(8192, 2 * big + 64))

    def ln(x: float) -> int:
        return max(1, min(L - 1, int(x)))

    dec = [(1 * dp, ln(17)), (64 * dp, ln(0.9 * span)), (8 * dp, ln(0.21 * span)),
           (3 * dp, ln(0.04 * span)), (21 * dp, ln(0.011 * span)), (5 * dp, ln(0.7 * span))]
    dec = [*dec[:n_dec], (13 * dp, ln(0.55 * span))]  # the last one checks
    # tiny steps too (few tokens touch few experts); prompts from an empty cache and chunks
    # over a cached prefix alternate, so any prefix of this list varies every column
    fill = [(1, 2, 0), (1, 3, ln(0.15 * span)), (2, ln(0.09 * span), 0),
            (1, ln(0.05 * span), ln(0.3 * span)), (4, ln(0.02 * span), 0),
            (2, ln(0.004 * span), ln(0.85 * span)), (3, ln(0.8 * span), 0),
            (5, ln(0.03 * span), ln(0.08 * span)), (1, ln(0.37 * span), 0),
            (1, ln(0.2 * span), ln(0.6 * span)), (3, ln(0.12 * span), ln(0.02 * span)),
            (1, ln(64), 0)]
    fill = [*fill[:n_fill], (2, ln(0.1 * span), ln(0.45 * span))]  # the last one checks
    # keep every probe inside the context window
    fill = [(b, t, c0 if t + c0 <= L else max(0, L - t)) for b, t, c0 in fill]
    return dec, fill


class WeightsDoNotFit(PerfscopeError):
    """The weights alone exceed the memory the caller allows (``fit_step_model``)."""

    def __init__(self, weights_bytes: float, usable_bytes: float):
        super().__init__(f"the weights need {weights_bytes / 2**30:.1f} GiB per GPU, more than "
                         f"the {usable_bytes / 2**30:.1f} GiB usable")
        self.weights_bytes, self.usable_bytes = weights_bytes, usable_bytes


def fit_step_model(model: ModelSpec, hw: HardwareSpec, scenario: Scenario,
                   usable_bytes: float | None = None) -> StepModel:
    """Fit the decode and fill models of ``scenario``'s configuration from ``analyze()`` probes
    (13 calls for a dense model with full attention), and check each on a probe it did not
    fit. Batch and lengths of ``scenario`` are ignored; attention runs flash (as every serving
    engine does). With ``usable_bytes``, stops after the first probe with WeightsDoNotFit
    when the weights per GPU alone exceed it."""
    base = layout_scenario(scenario, attention="flash", batch=1)
    dp = attn_dp_of(base)
    fs = FeatureSpace([w for w, _ in model.window_groups],
                      (model.moe.n_experts, model.moe.top_k) if model.moe else None)
    # as many probes as each model has independent columns, one spare for the fill model,
    # then one to check: decode sees (1, B, B C per window, experts); fill sees them all
    n_dec = 2 + len(fs.windows) + (1 if fs.moe else 0)
    dec_pts, fill_pts = _probes(model.max_position, fs.windows, dp, min(6, n_dec),
                                min(12, fs.size + 1))
    first = analyze(model, hw, layout_scenario(base, phase="decode", batch=dec_pts[0][0],
                                               context_len=dec_pts[0][1], seq_len=1))
    if usable_bytes is not None and first.memory.weights_bytes >= usable_bytes:
        raise WeightsDoNotFit(first.memory.weights_bytes, usable_bytes)
    dec_runs = [first] + [analyze(model, hw, layout_scenario(
        base, phase="decode", batch=b, context_len=c, seq_len=1)) for b, c in dec_pts[1:]]
    fill_runs = [analyze(model, hw, layout_scenario(
        base, phase="prefill" if c0 == 0 else "chunked_prefill", batch=b, seq_len=t,
        context_len=c0)) for b, t, c0 in fill_pts]
    dphi = [fs.build(b, 1, c) for b, c in dec_pts]
    fphi = [fs.build(b, t, c0) for b, t, c0 in fill_pts]
    decode = _fit_phase("decode", dec_runs, dphi, hw, base.ceiling)
    fill = _fit_phase("fill", fill_runs, fphi, hw, base.ceiling)
    a0 = dec_runs[0]
    # memory: weights constant; KV linear in cached tokens per window; activations = the
    # largest op's inputs + outputs plus the residual stream (one hidden row per token)
    kv_cols = np.array([fs.kv_tokens(b, c + 1) for b, c in dec_pts])
    kv_per_tok = _lstsq(kv_cols, np.array([r.memory.kv_cache_bytes for r in dec_runs]),
                        "memory.kv_cache_bytes")
    resid = [r.memory.activation_peak_bytes - max(p.op.act_in_bytes + p.op.act_out_bytes
                                                 for p in r.points)
             for r in fill_runs]
    ntok = np.array([b * t for b, t, _ in fill_pts], float)
    act_tok = float(np.dot(resid, ntok) / np.dot(ntok, ntok))
    prec = a0.precision
    return StepModel(model, hw, base, fs, decode, fill, str(prec.weight), prec.act, prec.kv,
                     prec.compute, DTYPE_BITS[prec.kv], a0.memory.weights_bytes, kv_per_tok,
                     act_tok, base.tp * base.pp * dp, dp)


def _lstsq(phi: np.ndarray, y: np.ndarray, what: str) -> np.ndarray:
    """Least squares with column scaling; refuses a fit that does not reproduce ``y``."""
    scale = np.abs(phi).max(axis=0)
    scale[scale == 0] = 1.0
    coef = np.linalg.lstsq(phi / scale, y, rcond=None)[0]
    # round-off residue (a quantity with no such term) to exact zero: denormal coefficients
    # make every later matrix product ~40x slower
    ymax = np.abs(y).max(axis=0)
    coef[np.abs(coef) <= 1e-12 * np.maximum(ymax, 1e-300)] = 0.0
    coef = coef / (scale[:, None] if coef.ndim == 2 else scale)
    err = np.abs(phi @ coef - y)
    tol = EXACT_RTOL * np.maximum(np.abs(y).max(axis=0), 1e-30) + 1e-30
    if np.any(err > tol):
        raise DecompositionError(
            f"the serving step model cannot reproduce {what} from analyze() (relative error "
            f"{float((err / np.maximum(np.abs(y), 1e-30)).max()):.2g}): its cost is no longer "
            "linear in perfscope/serving/features.py; extend the features")
    return coef


def _fit_phase(phase: str, runs: list[Analysis], phis: list[np.ndarray], hw: HardwareSpec,
               ceiling: str) -> PhaseModel:
    names = tuple(p.op.name for p in runs[0].points)
    for r in runs[1:]:
        if tuple(p.op.name for p in r.points) != names:
            raise DecompositionError(f"{phase}: the op list changes between steps; the serving "
                                     "step model needs one op list per phase")
    fit, check = slice(0, len(runs) - 1), len(runs) - 1
    phi = np.array(phis)
    ops = [p.op for p in runs[0].points]
    link = np.array([op.unit == "link" for op in ops])

    vec: dict[str, float] = {}

    def row(p) -> tuple[float, ...]:
        op = p.op
        if op.unit == "link":
            return (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, op.comm_bytes)
        kvb = op.kv_read_bytes + op.kv_write_bytes
        deq = 0.0
        if op.dequant_flops:
            v = vec.get(op.dtype)
            if v is None:
                v = vec[op.dtype] = hw.vector_flops(op.dtype)
            deq = op.dequant_flops / v
        extra = p.time_s - (p.compute_time_s if p.compute_time_s > p.memory_time_s
                            else p.memory_time_s)
        return (op.flops, p.bytes - kvb, kvb, op.act_in_bytes + op.act_out_bytes, deq,
                extra - deq, 0.0)

    # (runs, ops, quantities) in one pass over the points
    data = np.array([[row(p) for p in r.points] for r in runs], dtype=float)
    qnames = ("flops", "hbm", "kv", "io", "deq_s", "fixed", "msg")
    n_ops = len(names)
    y = data.reshape(len(runs), n_ops * len(qnames))
    coef = _lstsq(phi[fit], y[fit], phase)  # (F, ops x quantities), all in one solve
    got, want = phi[check] @ coef, y[check]
    if np.any(np.abs(got - want) > EXACT_RTOL * np.maximum(np.abs(want), 1.0)):
        j = int(np.argmax(np.abs(got - want)))
        raise DecompositionError(f"the serving step model does not reproduce {phase} "
                                 f"{qnames[j % len(qnames)]} of op {names[j // len(qnames)]} "
                                 "on a held-out step; extend perfscope/serving/features.py")
    coef3 = coef.reshape(phi.shape[1], n_ops, len(qnames))
    coefs = {q: coef3[:, :, k].T.copy() for k, q in enumerate(qnames)}  # (ops, F)
    fixed = coefs["fixed"]
    if np.abs(fixed[:, 1:]).max(initial=0.0) > 1e-12:
        raise DecompositionError(f"{phase}: the fixed per-kernel time varies with the step")
    p0 = runs[0].points
    peak = np.array([np.inf if p.op.unit == "link" else p.peak_flops_per_s for p in p0])
    bw = np.array([np.inf if p.op.unit == "link" else p.bandwidth_bytes_s for p in p0])
    curves = tuple(_comm_curve(p.op, hw, ceiling) if p.op.unit == "link" else None for p in p0)
    pm = PhaseModel(phase, names, tuple(op.kind for op in ops), tuple(op.unit for op in ops),
                    np.array([op.count for op in ops], float), link,
                    np.array([op.name.startswith("moe.experts") for op in ops]),
                    coefs["flops"], coefs["hbm"], coefs["kv"], coefs["io"], coefs["deq_s"],
                    fixed[:, 0], peak, bw, coefs["msg"], curves,
                    tuple(op.comm for op in ops))
    # the whole step, as analyze() totals it, on every probe
    sm_time = _phase_time(pm, phi)
    want_t = np.array([r.totals.time_s for r in runs])
    if np.any(np.abs(sm_time - want_t) > 1e-6 * want_t):
        raise DecompositionError(f"{phase}: step time differs from analyze() "
                                 f"({float(np.max(np.abs(sm_time / want_t - 1))):.2g})")
    return pm


def _phase_time(pm: PhaseModel, phi: np.ndarray) -> np.ndarray:
    flops = phi @ pm.flops.T
    nbytes = phi @ (pm.hbm + pm.kv).T
    t = np.maximum(flops / pm.peak, nbytes / pm.bw) + pm.fixed_s + phi @ pm.deq_s.T
    msg = phi @ pm.msg.T
    for i in np.flatnonzero(pm.link):
        curve = pm.curves[i]
        assert curve is not None
        t[..., i] = curve(msg[..., i])
    return t @ pm.instances


_GRID = tuple(float(x) for x in np.logspace(0, 11, 45))  # 1 B .. 100 GB per rank


_CURVES: dict[tuple, tuple[HardwareSpec, CommCurve]] = {}


def _comm_curve(op, hw: HardwareSpec, ceiling: str) -> CommCurve:
    """Tabulate the link model of ``perfscope.roofline`` for this collective (memoised per
    collective, group size and device: the curve does not depend on the message)."""
    key = (op.comm, op.ranks, op.name, id(hw), ceiling)
    hit = _CURVES.get(key)
    if hit is not None and hit[0] is hw:
        return hit[1]
    curve = _tabulate(op, hw, ceiling)
    if len(_CURVES) > 4096:
        _CURVES.clear()
    _CURVES[key] = (hw, curve)
    return curve


def _tabulate(op, hw: HardwareSpec, ceiling: str) -> CommCurve:
    def t(x: float) -> float:
        probe = op._replace(comm_bytes=x, shape={**(op.shape or {}), "bytes": int(x)})
        return roofline(OpGraph((probe,)), hw, ceiling)[0].time_s

    ys = [t(x) for x in _GRID]
    slope = (ys[-1] - ys[0]) / (_GRID[-1] - _GRID[0])
    base = ys[0] - slope * _GRID[0]
    affine = all(abs(base + slope * x - y) <= 1e-9 * y for x, y in zip(_GRID, ys, strict=True))
    if affine:
        return CommCurve(base, slope)
    return CommCurve(ys[0], None, _GRID, tuple(ys))
