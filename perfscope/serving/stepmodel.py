"""StepModel: one structural configuration's step time on any (batch, context) grid, in numpy.

A structural configuration is (model, device, layout, weight format, ceilings). ``analyze()``
costs ~0.1-0.5 ms per step; the serving model and the recommender need thousands of steps. So
``fit_step_model`` calls ``analyze()`` at a few probe steps and writes every op's FLOPs, HBM
bytes, KV-cache bytes, activation bytes, dequantization time and comm message size as a linear
combination of the step features (``features.FeatureSpace``). Those quantities *are* linear in
the features (flash attention), so the fit is exact: the decode model reproduces ``analyze()``
to rounding, which ``fit_step_model`` checks on a step it did not fit, and tests check at random
steps. Step time is then, as in ``perfscope.roofline``, per op

    max(FLOPs / peak, bytes / bandwidth) + fixed kernel cost + dequantization   (compute ops)
    the link's latency-bandwidth time of the message                            (comm ops)

times the op's count, summed. Two models per configuration: ``decode`` (one new token per
sequence) and ``fill`` (prefill from an empty cache and chunked prefill over a cached prefix).
A mixed step (a prefill chunk riding along with decodes, as vLLM and TensorRT-LLM schedule
them) runs each token-wise op once over all its tokens and each attention kernel per part.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from perfscope.analysis import Analysis, analyze
from perfscope.analytic.ops import OpGraph
from perfscope.errors import PerfscopeError
from perfscope.roofline import roofline
from perfscope.serving.features import FeatureSpace, experts_touched
from perfscope.specs.hardware import HardwareSpec
from perfscope.specs.model import ModelSpec
from perfscope.specs.scenario import Scenario
from perfscope.units import DTYPE_BITS

# relative error above which a fitted quantity no longer reproduces analyze()
EXACT_RTOL = 1e-7


class DecompositionError(PerfscopeError):
    """An op's cost is no longer linear in the step features (the analytic core changed)."""


class Efficiency(NamedTuple):
    """How close an engine's kernels come to the ceilings (1 = at the roofline).

    ``kernel_overhead_s`` replaces the fixed per-kernel cost of the ceilings when not None;
    ``collective_latency_s`` the fixed (latency) part of each all-reduce: engines run their
    own one-shot kernels for the small messages of decode."""

    flops: float = 1.0
    bandwidth: float = 1.0
    moe_bandwidth: float = 1.0  # grouped-GEMM expert kernels, on top of ``bandwidth``
    kernel_overhead_s: float | None = None
    collective_latency_s: float | None = None


IDEAL = Efficiency()


class CommCurve(NamedTuple):
    """Time of a collective as a function of its message size (bytes per rank).

    Exact when the link model is affine in the message (``slope`` set); otherwise a table on a
    log grid, interpolated linearly in log-log (``xs``, ``ys``)."""

    base_s: float
    slope_s_per_byte: float | None
    xs: tuple[float, ...] = ()
    ys: tuple[float, ...] = ()

    def __call__(self, msg: np.ndarray, base_s: float | None = None) -> np.ndarray:
        """Time of messages ``msg``; ``base_s`` replaces the fixed part (affine curves)."""
        if self.slope_s_per_byte is not None:
            b = self.base_s if base_s is None else base_s
            return np.where(msg > 0, b + self.slope_s_per_byte * msg, 0.0)
        lx, ly = np.log(self.xs), np.log(self.ys)
        m = np.maximum(msg, self.xs[0])
        return np.where(msg > 0, np.exp(np.interp(np.log(m), lx, ly)), 0.0)


class PhaseModel(NamedTuple):
    """Per-op linear coefficients of one phase; arrays are (ops,) or (ops, features)."""

    phase: str  # decode | fill
    names: tuple[str, ...]
    kinds: tuple[str, ...]
    units: tuple[str, ...]
    instances: np.ndarray  # the op's count (instances per step)
    link: np.ndarray  # bool: comm op
    expert: np.ndarray  # bool: routed-expert GEMM (moe.experts_*)
    flops: np.ndarray
    hbm: np.ndarray  # HBM bytes other than the KV cache
    kv: np.ndarray  # KV-cache bytes read and written, at the fitted KV dtype
    io: np.ndarray  # activation inputs + outputs (live activations)
    deq_s: np.ndarray  # weight-only dequantization time
    fixed_s: np.ndarray  # fixed time per kernel under these ceilings
    peak: np.ndarray  # FLOP/s ceiling of each op (inf for comm)
    bw: np.ndarray  # bytes/s ceiling (inf for comm)
    msg: np.ndarray  # comm message bytes per rank
    curves: tuple[CommCurve | None, ...]
    collectives: tuple[str | None, ...]  # all_reduce, all_gather, p2p (comm ops)


@dataclasses.dataclass(frozen=True)
class StepModel:
    """Vectorised step time and memory of one structural configuration (see module doc)."""

    model: ModelSpec
    hw: HardwareSpec
    scenario: Scenario  # the layout, dtypes and ceiling this was fitted for (batch unused)
    fs: FeatureSpace
    decode: PhaseModel
    fill: PhaseModel
    weight_dtype: str
    act_dtype: str
    kv_dtype: str
    compute_dtype: str
    kv_bits_fit: int
    weights_bytes: float  # per GPU, busiest stage
    kv_bytes_per_token: np.ndarray  # (windows,) per cached token of one sequence, per GPU
    act_bytes_per_token: float  # residual stream kept live beside the largest op
    gpus: int  # GPUs of one replica (tp x pp x attention-DP)
    attn_dp: int

    # ---- time -----------------------------------------------------------------------------
    def kv_scale(self, kv_bits: Any) -> np.ndarray | float:
        """KV bytes at ``kv_bits`` over those fitted (an array broadcasts over the grid)."""
        if kv_bits is None:
            return 1.0
        return np.asarray(kv_bits, dtype=float) / self.kv_bits_fit

    def op_times(self, pm: PhaseModel, phi: np.ndarray, eff: Efficiency = IDEAL,
                 kv_bits: Any = None) -> np.ndarray:
        """Per-instance time of every op at features ``phi`` (..., F) -> (..., ops).
        ``kv_bits``: the KV-cache dtype's bits, a number or an array broadcasting against
        ``phi``'s leading axes (several KV dtypes in one call)."""
        scale = self.kv_scale(kv_bits)
        flops = phi @ pm.flops.T
        nbytes = phi @ pm.hbm.T
        if isinstance(scale, np.ndarray):
            nbytes = nbytes + scale[..., None] * (phi @ pm.kv.T)
        elif scale == 1.0:
            nbytes = nbytes + phi @ pm.kv.T
        else:
            nbytes = nbytes + scale * (phi @ pm.kv.T)
        peak = pm.peak * eff.flops
        bw = pm.bw * np.where(pm.expert, eff.bandwidth * eff.moe_bandwidth, eff.bandwidth)
        fixed = pm.fixed_s if eff.kernel_overhead_s is None else \
            np.where(pm.link, 0.0, eff.kernel_overhead_s)
        t = np.maximum(flops / peak, nbytes / bw) + fixed + phi @ pm.deq_s.T
        if pm.link.any():
            msg = phi @ pm.msg.T
            for i in np.flatnonzero(pm.link):
                curve = pm.curves[i]
                assert curve is not None
                base = eff.collective_latency_s if pm.collectives[i] == "all_reduce" else None
                t[..., i] = curve(msg[..., i], base)
        return t

    def time(self, pm: PhaseModel, phi: np.ndarray, eff: Efficiency = IDEAL,
             kv_bits: Any = None, mask: np.ndarray | None = None) -> np.ndarray:
        """Step time (s): sum over ops of count x time; ``mask`` (ops,) keeps a subset."""
        w = pm.instances if mask is None else pm.instances * mask
        return self.op_times(pm, phi, eff, kv_bits) @ w

    def decode_features(self, seqs: Any, context: Any) -> np.ndarray:
        """Decode: ``seqs`` sequences, each with ``context`` tokens cached before the step.
        With data-parallel attention the fit holds where ``seqs`` is a multiple of attn_dp
        (each group then attends over seqs / attn_dp); callers round up to one."""
        return self.fs.build(seqs, 1, context)

    def fill_features(self, seqs: Any, new: Any, cached_before: Any) -> np.ndarray:
        """Prefill (``cached_before`` 0) or chunked prefill: ``new`` tokens per sequence."""
        return self.fs.build(seqs, new, cached_before)

    def decode_time(self, seqs: Any, context: Any, eff: Efficiency = IDEAL,
                    kv_bits: Any = None) -> np.ndarray:
        """Wall time (s) of one decode step; exact against ``analyze()`` at IDEAL."""
        return self.time(self.decode, self.decode_features(seqs, context), eff, kv_bits)

    def fill_time(self, seqs: Any, new: Any, cached_before: Any, eff: Efficiency = IDEAL,
                  kv_bits: Any = None) -> np.ndarray:
        """Wall time (s) of one prefill / chunked-prefill step; exact against ``analyze()``."""
        return self.time(self.fill, self.fill_features(seqs, new, cached_before), eff, kv_bits)

    def mixed_time(self, dec_seqs: Any, dec_context: Any, fill_seqs: Any, fill_new: Any,
                   fill_cached: Any, eff: Efficiency = IDEAL,
                   kv_bits: Any = None) -> np.ndarray:
        """One step carrying ``dec_seqs`` decodes and a prefill part together.

        Token-wise ops (projections, norms, MoE, comm) run once over all tokens of the step;
        attention and the phase-specific MLA ops run per part. Equals ``decode_time`` with no
        prefill part and ``fill_time`` with no decodes.
        """
        d_seqs, d_ctx, f_seqs, f_new, f_c0 = np.broadcast_arrays(
            *(np.asarray(x, dtype=float) for x in (dec_seqs, dec_context, fill_seqs, fill_new,
                                                    fill_cached)))
        shared, dec_only, fill_only = self._split()
        phi_f = self.fill_features(f_seqs, f_new, f_c0)
        tokens = d_seqs + f_seqs * f_new
        # shared ops see every sequence and token of the step (and one MoE pass over all of
        # them); their other columns are those of the prefill part, where they have no weight
        phi_s = phi_f.copy()
        phi_s[..., 1] = d_seqs + f_seqs
        phi_s[..., 2] = tokens
        if self.fs.moe is not None:
            phi_s[..., -1] = experts_touched(*self.fs.moe, tokens)
        t = self.time(self.fill, phi_s, eff, kv_bits, shared)
        t = t + np.where(f_seqs > 0, self.time(self.fill, phi_f, eff, kv_bits, fill_only), 0.0)
        t = t + np.where(d_seqs > 0, self.time(self.decode, self.decode_features(d_seqs, d_ctx),
                                               eff, kv_bits, dec_only), 0.0)
        return t

    def _split(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks over the fill ops (shared, fill-only) and the decode ops (decode-only)."""
        dnames = set(self.decode.names)
        fnames = set(self.fill.names)
        shared = np.array([n in dnames and k != "attention"
                           for n, k in zip(self.fill.names, self.fill.kinds, strict=True)], float)
        fill_only = 1.0 - shared
        dec_only = np.array([n not in fnames or k == "attention"
                             for n, k in zip(self.decode.names, self.decode.kinds, strict=True)],
                            float)
        return shared, dec_only, fill_only

    # ---- memory ---------------------------------------------------------------------------
    def kv_bytes_per_seq(self, tokens: Any, kv_bits: Any = None,
                         block: int = 1) -> np.ndarray:
        """KV-cache bytes per GPU of one sequence holding ``tokens`` tokens, allocated in
        pages of ``block`` tokens (vLLM's default 16): ceil(tokens / block) x block."""
        t = np.asarray(tokens, dtype=float)
        if block > 1:
            t = np.ceil(t / block) * block
        return (self.fs.kv_tokens(1, t) @ self.kv_bytes_per_token) * self.kv_scale(kv_bits)

    def activation_bytes(self, tokens: Any) -> np.ndarray:
        """Live activations of a step of ``tokens`` prompt tokens (largest op + residual)."""
        t = np.asarray(tokens, dtype=float)
        phi = self.fill_features(1, t, 0)
        io = phi @ self.fill.io.T
        return io.max(axis=-1) + self.act_bytes_per_token * t


# ---- fitting ------------------------------------------------------------------------------

def layout_scenario(base: Scenario, **changes: Any) -> Scenario:
    """``base`` with ``changes``, dropping fields this version of Scenario lacks (attn_dp)."""
    names = {f.name for f in dataclasses.fields(Scenario)}
    return dataclasses.replace(base, **{k: v for k, v in changes.items() if k in names})


def attn_dp_of(s: Scenario) -> int:
    return int(getattr(s, "attn_dp", 1) or 1)


def _probes(max_pos: int, windows, dp: int, n_fill: int) -> tuple[
        list[tuple[int, int]], list[tuple[int, int, int]]]:
    """Probe steps spread so every feature column varies; lengths fit the context."""
    L = max(64, max_pos - 2)
    big = max((w for w in windows if w), default=0)
    span = min(L, max(8192, 2 * big + 64))

    def ln(x: float) -> int:
        return max(1, min(L - 1, int(x)))

    dec = [(1 * dp, ln(17)), (3 * dp, ln(0.04 * span)), (8 * dp, ln(0.21 * span)),
           (21 * dp, ln(0.011 * span)), (64 * dp, ln(0.9 * span)), (13 * dp, ln(0.55 * span))]
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


def fit_step_model(model: ModelSpec, hw: HardwareSpec, scenario: Scenario) -> StepModel:
    """Fit the decode and fill models of ``scenario``'s configuration from ``analyze()`` probes
    (about 15 calls), and check each on a probe it did not fit. Batch and lengths of ``scenario``
    are ignored; attention runs flash (as every serving engine does)."""
    base = layout_scenario(scenario, attention="flash", batch=1)
    dp = attn_dp_of(base)
    fs = FeatureSpace([w for w, _ in model.window_groups],
                      (model.moe.n_experts, model.moe.top_k) if model.moe else None)
    # two probes more than the fill model has columns, then one to check the fit
    dec_pts, fill_pts = _probes(model.max_position, fs.windows, dp, min(12, fs.size + 2))
    dec_runs = [analyze(model, hw, layout_scenario(base, phase="decode", batch=b,
                                                   context_len=c, seq_len=1))
                for b, c in dec_pts]
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


def as_dict(sm: StepModel) -> Mapping[str, Any]:
    """What the step model was fitted for (for JSON output)."""
    s = sm.scenario
    return {"tp": s.tp, "pp": s.pp, "ep": s.ep, "attn_dp": sm.attn_dp, "gpus": sm.gpus,
            "weight_dtype": sm.weight_dtype, "act_dtype": sm.act_dtype, "kv_dtype": sm.kv_dtype,
            "ceiling": s.ceiling}
