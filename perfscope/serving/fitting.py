"""Fit a StepModel from analyze() probes (see ``perfscope.serving.stepmodel``).

``fit_step_model`` calls ``analyze()`` at a handful of steps chosen so every feature column
varies independently, solves one least-squares system per phase for all ops and quantities at
once, and checks the result on a step it did not fit: an op whose cost stops being linear in
the features (a change in the analytic core) raises DecompositionError naming it, instead of
silently mispredicting. Comm ops keep only their message size from the fit; their time comes
from the core's collective model (``tables.comm_table``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from perfscope.analysis import Analysis, analyze
from perfscope.errors import PerfscopeError
from perfscope.serving.features import FeatureSpace, MoeLayout
from perfscope.serving.stepmodel import (
    EXACT_RTOL,
    DecompositionError,
    PhaseModel,
    StepModel,
    comm_groups,
    phase_time,
    stack,
)
from perfscope.serving.tables import comm_table
from perfscope.specs.hardware import HardwareSpec
from perfscope.specs.model import ModelSpec
from perfscope.specs.scenario import Scenario
from perfscope.units import DTYPE_BITS


def layout_scenario(base: Scenario, **changes: Any) -> Scenario:
    """``base`` with ``changes`` (Scenario validates them)."""
    from dataclasses import replace

    return replace(base, **changes)


# Probe steps: (sequences, context fraction) for decode; (sequences, new-token fraction,
# cached fraction) for fill. Sequence counts are small primes and odd numbers, so that under
# attention DP ceil(B / attn_dp) and ceil(N_g / tp) vary apart from B and N_g; lengths are
# fractions of a span covering the longest window. The last of each list checks the fit.
_DECODE = ((1, 17), (67, 0.9), (9, 0.21), (3, 0.04), (23, 0.011), (5, 0.7), (41, 0.3),
           (13, 0.15), (2, 0.45), (30, 0.8), (7, 0.06), (101, 0.5), (19, 0.33), (4, 0.65),
           (11, 0.55))
_FILL = ((1, 2, 0), (1, 3, 0.15), (2, 0.09, 0), (1, 0.05, 0.3), (4, 0.02, 0),
         (2, 0.004, 0.85), (3, 0.8, 0), (5, 0.03, 0.08), (1, 0.37, 0), (1, 0.2, 0.6),
         (3, 0.12, 0.02), (1, 64, 0), (7, 0.01, 0.4), (6, 0.06, 0), (9, 0.004, 0.2),
         (2, 0.3, 0.1), (11, 0.002, 0), (2, 0.1, 0.45))


def _probes(max_pos: int, windows, dp: int, n_dec: int, n_fill: int) -> tuple[
        list[tuple[int, int]], list[tuple[int, int, int]]]:
    """``n_dec`` decode and ``n_fill`` fill probes plus one check each, inside the context."""
    L = max(64, max_pos - 2)
    big = max((w for w in windows if w), default=0)
    span = min(L, max(8192, 2 * big + 64))

    def ln(x: float) -> int:  # whole numbers are tokens, fractions are of the span
        return max(1, min(L - 1, int(x if isinstance(x, int) else x * span)))

    def seqs(b: int, i: int) -> int:
        # under attention DP the probes take turns: b sequences (a few groups busy), b full
        # groups (the all-to-all then carries the busiest EP rank's assignments), b groups
        # less a remainder (the busiest group's share, the tokens routed and the expert
        # loads vary apart)
        if dp == 1 or i % 3 == 0:
            return b
        return b * dp if i % 3 == 1 else max(1, b * dp - 1 - i % dp)

    dec_all = [(seqs(b, i), ln(c)) for i, (b, c) in enumerate(_DECODE)]
    fill_all = [(seqs(b, i), ln(t), 0 if c == 0 else ln(c)) for i, (b, t, c) in
                enumerate(_FILL)]
    if n_dec + 1 > len(dec_all) or n_fill + 1 > len(fill_all):
        raise DecompositionError("the serving step model needs more probe steps than "
                                 "perfscope/serving/fitting.py defines; add some")
    dec = [*dec_all[:n_dec], dec_all[-1]]
    fill = [*fill_all[:n_fill], fill_all[-1]]
    # keep every probe inside the context window
    fill = [(b, t, c0 if t + c0 <= L else max(0, L - t)) for b, t, c0 in fill]
    return dec, fill


class WeightsDoNotFit(PerfscopeError):
    """The weights alone exceed the memory the caller allows (``fit_step_model``)."""

    def __init__(self, weights_bytes: float, usable_bytes: float):
        super().__init__(f"the weights need {weights_bytes / 2**30:.1f} GiB per GPU, more than "
                         f"the {usable_bytes / 2**30:.1f} GiB usable")
        self.weights_bytes, self.usable_bytes = weights_bytes, usable_bytes


def feature_space(model: ModelSpec, s: Scenario) -> FeatureSpace:
    """The feature columns of ``model`` under the layout of ``s``."""
    moe = None
    if model.moe is not None:
        stage = s.tp * s.attn_dp
        moe = MoeLayout(model.moe.n_experts, model.moe.top_k, s.ep, stage // s.ep,
                        s.moe_comm == "all_to_all")
    return FeatureSpace([w for w, _ in model.window_groups], moe, s.tp, s.attn_dp)


def fit_step_model(model: ModelSpec, hw: HardwareSpec, scenario: Scenario,
                   usable_bytes: float | None = None) -> StepModel:
    """Fit the decode and fill models of ``scenario``'s configuration from ``analyze()`` probes
    (13 calls for a dense model with full attention), and check each on a probe it did not
    fit. Batch and lengths of ``scenario`` are ignored; attention runs flash (as every serving
    engine does). With ``usable_bytes``, stops after the first probe with WeightsDoNotFit
    when the weights per GPU alone exceed it."""
    base = layout_scenario(scenario, attention="flash", batch=1)
    dp = base.attn_dp
    fs = feature_space(model, base)
    dec_cols = fs.decode_columns()
    # one probe per independent column and a spare (the least-squares residual then shows a
    # non-linear op at fit time too; attention DP's ceilings and maxima need three), then
    # one to check
    spare = 1 if dp == 1 else 3
    dec_pts, fill_pts = _probes(model.max_position, fs.windows, dp, len(dec_cols) + spare,
                                fs.size + spare)
    first = analyze(model, hw, layout_scenario(base, phase="decode", batch=dec_pts[0][0],
                                               context_len=dec_pts[0][1], seq_len=1))
    if usable_bytes is not None and first.memory.weights_bytes >= usable_bytes:
        raise WeightsDoNotFit(first.memory.weights_bytes, usable_bytes)
    dec_runs = [first] + [analyze(model, hw, layout_scenario(
        base, phase="decode", batch=b, context_len=c, seq_len=1)) for b, c in dec_pts[1:]]
    fill_runs = [analyze(model, hw, layout_scenario(
        base, phase="prefill" if c0 == 0 else "chunked_prefill", batch=b, seq_len=t,
        context_len=c0)) for b, t, c0 in fill_pts]
    dphi = np.array([fs.build(b, 1, c, exact=True) for b, c in dec_pts])
    fphi = np.array([fs.build(b, t, c0, exact=True) for b, t, c0 in fill_pts])
    decode = _fit_phase("decode", dec_runs, dphi, dec_cols, hw, base.ceiling)
    fill = _fit_phase("fill", fill_runs, fphi, np.arange(fs.size), hw, base.ceiling)
    a0 = dec_runs[0]
    # memory: weights constant; KV linear in the busiest group's cached tokens per window;
    # activations = the largest op's inputs + outputs plus the residual stream (one hidden
    # row per token)
    kv_cols = np.array([fs.kv_tokens(fs.group_seqs(np.asarray(float(b))), c + 1)
                        for b, c in dec_pts])
    kv_per_tok = _lstsq(kv_cols, np.array([r.memory.kv_cache_bytes for r in dec_runs]),
                        "memory.kv_cache_bytes")
    resid = [r.memory.activation_peak_bytes - max(p.op.act_in_bytes + p.op.act_out_bytes
                                                 for p in r.points)
             for r in fill_runs]
    ntok = np.array([float(fs.group_seqs(np.asarray(float(b)))) * t for b, t, _ in fill_pts])
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


def fine_grained_experts(model: ModelSpec) -> bool:
    """Whether the engines' MoE efficiencies apply to ``model``'s routed experts: experts
    narrower than the hidden size (DeepSeek-V3 2,048 on 7,168, Qwen3-235B 1,536 on 4,096, the
    models they were calibrated on). Coarse experts (Mixtral: 14,336 on 4,096) are dense
    GEMMs of a dense model's size and run at the dense efficiencies: gpt-fast's Mixtral-8x7B
    batch-1 decode (LLM-025, 8 x A100) sits within 3% of the dense empirical roofline, where
    the fine-grained MoE efficiency would make it 45% slow."""
    return model.moe is not None and model.moe.expert_intermediate < model.hidden


def _fit_phase(phase: str, runs: list[Analysis], phi: np.ndarray, cols: np.ndarray,
               hw: HardwareSpec, ceiling: str) -> PhaseModel:
    names = tuple(p.op.name for p in runs[0].points)
    for r in runs[1:]:
        if tuple(p.op.name for p in r.points) != names:
            raise DecompositionError(f"{phase}: the op list changes between steps; the serving "
                                     "step model needs one op list per phase")
    fit, check = slice(0, len(runs) - 1), len(runs) - 1
    sub = phi[fit][:, cols]
    if np.linalg.matrix_rank(sub / np.maximum(np.abs(sub).max(axis=0), 1e-300)) < len(cols):
        raise DecompositionError(f"{phase}: the probe steps do not vary every feature apart; "
                                 "add probes in perfscope/serving/fitting.py")
    ops = [p.op for p in runs[0].points]
    link = np.array([op.unit == "link" for op in ops])
    fine = fine_grained_experts(runs[0].model)

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
        # the fixed per-kernel cost as the core put it in time_s (not time_s less the roof
        # and the dequantization: that difference leaves round-off residue where the fixed
        # cost is zero, which no feature can fit)
        return (op.flops, p.bytes - kvb, kvb, op.act_in_bytes + op.act_out_bytes, deq,
                p.overhead_s, 0.0)

    # (runs, ops, quantities) in one pass over the points
    data = np.array([[row(p) for p in r.points] for r in runs], dtype=float)
    qnames = ("flops", "hbm", "kv", "io", "deq_s", "fixed", "msg")
    n_ops = len(names)
    y = data.reshape(len(runs), n_ops * len(qnames))
    sub_coef = _lstsq(sub, y[fit], phase)  # (cols, ops x quantities), all in one solve
    coef = np.zeros((phi.shape[1], y.shape[1]))
    coef[cols] = sub_coef
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
    tables = tuple(comm_table(hw.topology, op.comm or "p2p", op.ranks,
                              int((op.impl or {}).get("stride", 1)), ceiling)
                   if op.unit == "link" else None for op in ops)
    pm = PhaseModel(phase, names, tuple(op.kind for op in ops), tuple(op.unit for op in ops),
                    np.array([op.count for op in ops], float), link,
                    np.array([op.name.startswith("moe.experts") and fine for op in ops]),
                    coefs["flops"], coefs["hbm"], coefs["kv"], coefs["io"], coefs["deq_s"],
                    fixed[:, 0], peak, bw, coefs["msg"], tables,
                    tuple(op.comm for op in ops), comm_groups(link, tables, coefs["msg"]))
    pm = stack(pm)
    # the whole step, as analyze() totals it, on every probe (comm times from the tables)
    sm_time = phase_time(pm, phi)
    want_t = np.array([r.totals.time_s for r in runs])
    if np.any(np.abs(sm_time - want_t) > 1e-9 * want_t):
        raise DecompositionError(f"{phase}: step time differs from analyze() "
                                 f"({float(np.max(np.abs(sm_time / want_t - 1))):.2g})")
    return pm
