"""StepModel: one structural configuration's step time on any (batch, context) grid, in numpy.

A structural configuration is (model, device, layout, weight format, ceilings). ``analyze()``
costs ~0.1-0.5 ms per step; the serving model and the recommender need thousands of steps. So
``fitting.fit_step_model`` calls ``analyze()`` at a few probe steps and writes every op's FLOPs, HBM
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
from typing import Any, NamedTuple

import numpy as np

from perfscope.errors import PerfscopeError
from perfscope.serving.features import FeatureSpace, experts_touched
from perfscope.specs.hardware import HardwareSpec
from perfscope.specs.model import ModelSpec
from perfscope.specs.scenario import Scenario

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
    moe_flops: float = 1.0  # grouped-GEMM expert kernels, on top of ``flops``


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


def roofs(pm: PhaseModel, eff: Efficiency) -> tuple[np.ndarray, np.ndarray]:
    """Each op's compute and bandwidth roof as the engine reaches them (FLOP/s, bytes/s)."""
    peak = pm.peak * np.where(pm.expert, eff.flops * eff.moe_flops, eff.flops)
    bw = pm.bw * np.where(pm.expert, eff.bandwidth * eff.moe_bandwidth, eff.bandwidth)
    return peak, bw


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
        peak, bw = roofs(pm, eff)
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
