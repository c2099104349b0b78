"""StepModel: one structural configuration's step time on any (batch, context) grid, in numpy.

A structural configuration is (model, device, layout, weight format, ceilings). ``analyze()``
costs ~0.1-0.5 ms per step; the serving model and the recommender need thousands of steps. So
``fitting.fit_step_model`` calls ``analyze()`` at a few probe steps and writes every op's FLOPs, HBM
bytes, KV-cache bytes, activation bytes, dequantization time and comm message size as a linear
combination of the step features (``features.FeatureSpace``). Those quantities *are* linear in
the features (flash attention; the busiest EP rank's expert load and the attention-DP token
counts are features themselves), so the fit is exact, which ``fit_step_model`` checks on a
step it did not fit, and tests check at random steps. Step time is then, as in
``perfscope.roofline``, per op

    max(FLOPs / peak, bytes / bandwidth) + fixed kernel cost + dequantization   (compute ops)
    perfscope.collectives' NCCL model at the op's message size                  (comm ops)

times the op's count, summed. The collective time is piecewise in the message size (NCCL's
protocol and algorithm choice), so it is read from ``tables.comm_table`` (the core's function
tabulated at whole bytes, exact there). Two models per configuration: ``decode`` (one new token
per sequence) and ``fill`` (prefill from an empty cache and chunked prefill over a cached
prefix). A mixed step (a prefill chunk riding along with decodes, as vLLM and TensorRT-LLM
schedule them) runs each token-wise op once over all its tokens and each attention kernel per
part.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from perfscope.errors import PerfscopeError
from perfscope.serving.features import FeatureSpace, Parts
from perfscope.serving.tables import CommTable
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
    ``collective_latency_s``, when not None, is the fixed cost of the engine's own all-reduce
    kernel inside a node (vLLM's and SGLang's custom all-reduce, TensorRT-LLM's one-/two-shot
    kernels): an all-reduce then takes the lesser of NCCL's time and that latency plus the
    ring's bytes at the group's bus rate."""

    flops: float = 1.0
    bandwidth: float = 1.0
    moe_bandwidth: float = 1.0  # grouped-GEMM expert kernels, on top of ``bandwidth``
    kernel_overhead_s: float | None = None
    collective_latency_s: float | None = None
    moe_flops: float = 1.0  # grouped-GEMM expert kernels, on top of ``flops``
    # weight dtypes whose expert kernels stream every expert of the rank each step, touched or
    # not (EngineParams.moe_streams_all_experts): the expert-weight feature is the rank's count
    moe_all_experts: tuple[str, ...] = ()


IDEAL = Efficiency()


class CalibrationArrays(NamedTuple):
    """A ``perfscope.calibration/1`` file resolved against one phase's ops."""

    scale: np.ndarray  # (ops,) the kind's scale on the roofline time (comm, missing: 1)
    fixed_s: np.ndarray  # (ops,) the kind's fixed cost x framework calls per instance
    instances: np.ndarray  # (ops,) 1 for compute ops (the framework term counts them)
    fw_scale: float
    fw_fixed_s: float


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
    tables: tuple[CommTable | None, ...]  # comm ops: the collective's time over its bytes
    collectives: tuple[str | None, ...]  # all_reduce, all_gather, p2p (comm ops)
    # comm ops sharing a table and a message (the attention and MLP all-reduces): (first op,
    # all of them), timed once
    comm_groups: tuple[tuple[int, np.ndarray], ...] = ()
    # (F, 5 x ops): flops, hbm, kv, deq_s and msg side by side, so one matrix product prices
    # them all (benchmarks/bench_recommend.py: about twice as fast as five)
    stacked: np.ndarray | None = None


def stack(pm: PhaseModel) -> PhaseModel:
    """``pm`` with its coefficient matrices stacked for ``op_times``."""
    return pm._replace(stacked=np.ascontiguousarray(
        np.concatenate([pm.flops, pm.hbm, pm.kv, pm.deq_s, pm.msg]).T))


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
    # a measured calibration applied on top of the roofline, per phase (serving.calibrated)
    calibration: Mapping[str, CalibrationArrays] | None = None
    # per (phase, op mask): the restricted phase model (not copied by dataclasses.replace)
    _subsets: dict = dataclasses.field(default_factory=dict, init=False, repr=False,
                                       compare=False)

    @property
    def weight_base(self) -> str:
        """The weights' element dtype without its scale layout (``fp8`` of ``fp8-b128x128``)."""
        return self.weight_dtype.split("-")[0]

    def streams_all_experts(self, dtypes: tuple[str, ...]) -> bool:
        """Whether an engine whose MoE kernels stream every expert for ``dtypes``
        (EngineParams.moe_streams_all_experts) does so for this configuration."""
        return self.fs.moe is not None and self.weight_base in dtypes

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
        n = len(pm.names)
        if pm.stacked is None:
            pm = stack(pm)
        assert pm.stacked is not None
        q = self._engine_features(phi, eff) @ pm.stacked
        flops, nbytes, kv = q[..., :n], q[..., n:2 * n], q[..., 2 * n:3 * n]
        if isinstance(scale, np.ndarray):
            nbytes = nbytes + scale[..., None] * kv
        elif scale == 1.0:
            nbytes = nbytes + kv
        else:
            nbytes = nbytes + scale * kv
        peak, bw = roofs(pm, eff)
        fixed = pm.fixed_s if eff.kernel_overhead_s is None else \
            np.where(pm.link, 0.0, eff.kernel_overhead_s)
        t = np.maximum(flops / peak, nbytes / bw)
        t += fixed
        t += q[..., 3 * n:4 * n]
        if pm.link.any():
            msg = q[..., 4 * n:]
            for i, same in pm.comm_groups:  # ops with one table and one message: once
                t[..., same] = comm_time(pm, i, msg[..., i], eff)[..., None]
        return t

    def _engine_features(self, phi: np.ndarray, eff: Efficiency) -> np.ndarray:
        """``phi`` as the engine's kernels see it: where ``eff.moe_all_experts`` names this
        configuration's weight dtype, every expert of the busiest EP rank is streamed, whatever
        the tokens touch (the weights and their dequantization scale with the ``experts``
        column; FLOPs follow the assignments)."""
        moe = self.fs.moe
        if moe is None or not self.streams_all_experts(eff.moe_all_experts):
            return phi
        out = np.array(phi, dtype=float, copy=True)
        out[..., self.fs.index["experts"]] = moe.n_experts / moe.ep
        return out

    def time(self, pm: PhaseModel, phi: np.ndarray, eff: Efficiency = IDEAL,
             kv_bits: Any = None, mask: np.ndarray | None = None) -> np.ndarray:
        """Step time (s): sum over ops of count x time; ``mask`` (ops,) keeps a subset.
        With a calibration: each op's calibrated time plus the framework's per-step term
        (``perfscope.calibration.calibrated_times``, vectorised)."""
        cal = self.calibration.get(pm.phase) if self.calibration else None
        if mask is not None:  # price only the ops kept (mixed steps split the op list)
            pm, cal = self._subset(pm, cal, mask)
        w = pm.instances
        t = self.op_times(pm, phi, eff, kv_bits)
        if cal is None:
            return t @ w
        # per instance: scale x roofline time + fixed x calls; framework: scale x the step's
        # roofline time + fixed x op instances (comm ops keep their time, count no instance)
        step = t @ w
        return (t * cal.scale + cal.fixed_s) @ w + cal.fw_scale * step + \
            cal.fw_fixed_s * (w @ cal.instances)

    def breakdown(self, pm: PhaseModel, phi: np.ndarray, eff: Efficiency = IDEAL,
                  kv_bits: Any = None) -> dict[str, np.ndarray]:
        """Where a step's time goes (s, arrays over ``phi``'s leading axes; no calibration):
        each compute op's roofline time ``max(FLOPs / peak, bytes / bandwidth)`` under
        ``<class>.compute`` or ``<class>.memory`` (class: ``gemm`` dense projections,
        ``experts`` routed-expert GEMMs, ``attention``, ``vector`` the rest), its fixed
        kernel cost under ``fixed``, weight dequantization under ``dequant``, collectives
        under ``comm``. The parts sum to ``time(pm, phi, eff, kv_bits)``."""
        n = len(pm.names)
        if pm.stacked is None:
            pm = stack(pm)
        assert pm.stacked is not None
        q = self._engine_features(phi, eff) @ pm.stacked
        scale = self.kv_scale(kv_bits)
        flops = q[..., :n]
        nbytes = q[..., n:2 * n] + np.asarray(scale)[..., None] * q[..., 2 * n:3 * n] \
            if isinstance(scale, np.ndarray) else q[..., n:2 * n] + scale * q[..., 2 * n:3 * n]
        peak, bw = roofs(pm, eff)
        tc, tm = flops / peak, nbytes / bw
        roof = np.maximum(tc, tm)
        w = pm.instances
        fixed = pm.fixed_s if eff.kernel_overhead_s is None else \
            np.where(pm.link, 0.0, eff.kernel_overhead_s)
        out: dict[str, np.ndarray] = {}
        cls = np.array(["experts" if pm.expert[i] else
                        "attention" if pm.kinds[i] == "attention" else
                        "gemm" if pm.kinds[i] == "gemm" else "vector" for i in range(n)])
        comp = tc >= tm
        for c in ("gemm", "experts", "attention", "vector"):
            sel = (cls == c) & ~pm.link
            out[f"{c}.compute"] = (roof * (comp & sel)) @ w
            out[f"{c}.memory"] = (roof * (~comp & sel)) @ w
        out["fixed"] = np.broadcast_to(float(fixed @ w), roof.shape[:-1]).copy()
        out["dequant"] = q[..., 3 * n:4 * n] @ w
        full = self.op_times(pm, phi, eff, kv_bits)
        out["comm"] = (full * pm.link) @ w
        return out

    def _subset(self, pm: PhaseModel, cal: CalibrationArrays | None, mask: np.ndarray
                ) -> tuple[PhaseModel, CalibrationArrays | None]:
        """``pm`` (and its calibration) restricted to the ops ``mask`` keeps, memoised."""
        key = (pm.phase, mask.tobytes())
        hit = self._subsets.get(key)
        if hit is None:
            keep = np.flatnonzero(mask)
            arrays = {f: getattr(pm, f)[keep] for f in
                      ("instances", "link", "expert", "flops", "hbm", "kv", "io", "deq_s",
                       "fixed_s", "peak", "bw", "msg")}
            names = tuple(pm.names[i] for i in keep)
            tables = tuple(pm.tables[i] for i in keep)
            sub = pm._replace(names=names, kinds=tuple(pm.kinds[i] for i in keep),
                              units=tuple(pm.units[i] for i in keep), tables=tables,
                              collectives=tuple(pm.collectives[i] for i in keep),
                              comm_groups=comm_groups(arrays["link"], tables, arrays["msg"]),
                              **arrays)
            sub_cal = None if cal is None else cal._replace(
                scale=cal.scale[keep], fixed_s=cal.fixed_s[keep],
                instances=cal.instances[keep])
            hit = self._subsets[key] = (stack(sub), sub_cal)
        return hit

    def decode_features(self, seqs: Any, context: Any) -> np.ndarray:
        """Decode: ``seqs`` sequences, each with ``context`` tokens cached before the step
        (under attention DP, the busiest group runs ceil(seqs / attn_dp) of them)."""
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
        fs = self.fs
        pf = fs.parts(f_seqs, f_new, f_c0)
        # shared ops see every sequence and token of the step (the busiest attention group:
        # its share of the decodes and of the prompts) and one MoE pass over all of them;
        # their other columns are those of the prefill part, where they have no weight
        dg = fs.group_seqs(d_seqs)
        ps = Parts(dg + pf.seqs, dg + pf.tokens, pf.fresh, pf.keys, pf.read,
                   d_seqs + f_seqs * f_new)
        t = self.time(self.fill, fs.assemble(ps), eff, kv_bits, shared)
        t = t + np.where(f_seqs > 0, self.time(self.fill, fs.assemble(pf), eff, kv_bits,
                                               fill_only), 0.0)
        t = t + np.where(d_seqs > 0, self.time(self.decode, self.decode_features(d_seqs, d_ctx),
                                               eff, kv_bits, dec_only), 0.0)
        return t

    def _split(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks over the fill ops (shared, fill-only) and the decode ops (decode-only)."""
        hit = self._subsets.get("split")
        if hit is not None:
            return hit
        dnames = set(self.decode.names)
        fnames = set(self.fill.names)
        shared = np.array([n in dnames and k != "attention"
                           for n, k in zip(self.fill.names, self.fill.kinds, strict=True)], float)
        fill_only = 1.0 - shared
        dec_only = np.array([n not in fnames or k == "attention"
                             for n, k in zip(self.decode.names, self.decode.kinds, strict=True)],
                            float)
        self._subsets["split"] = (shared, dec_only, fill_only)
        return shared, dec_only, fill_only

    # ---- memory ---------------------------------------------------------------------------
    def kv_bytes_per_seq(self, tokens: Any, kv_bits: Any = None,
                         block: int = 1) -> np.ndarray:
        """KV-cache bytes of one sequence holding ``tokens`` tokens on each GPU of its
        attention group, allocated in pages of ``block`` tokens (vLLM's default 16):
        ceil(tokens / block) x block."""
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


def comm_time(pm: PhaseModel, i: int, msg: np.ndarray, eff: Efficiency = IDEAL) -> np.ndarray:
    """Time of one instance of comm op ``i`` at message sizes ``msg`` (bytes per rank)."""
    table = pm.tables[i]
    assert table is not None
    t = table(msg)
    lat = eff.collective_latency_s
    if lat is not None and pm.collectives[i] == "all_reduce" and table.one_node:
        p = table.ranks
        own = lat + 2 * (p - 1) / p * msg / table.bus_bytes_s
        t = np.where(msg > 0, np.minimum(t, own), 0.0)
    return t


def phase_time(pm: PhaseModel, phi: np.ndarray, eff: Efficiency = IDEAL) -> np.ndarray:
    """Step time of ``pm`` at features ``phi`` on the ceilings alone (no KV rescale): the
    quantity ``fit_step_model`` compares with analyze() on its probes."""
    flops = phi @ pm.flops.T
    nbytes = phi @ (pm.hbm + pm.kv).T
    t = np.maximum(flops / pm.peak, nbytes / pm.bw) + pm.fixed_s + phi @ pm.deq_s.T
    msg = phi @ pm.msg.T
    for i in np.flatnonzero(pm.link):
        t[..., i] = comm_time(pm, int(i), msg[..., i], eff)
    return t @ pm.instances


def comm_groups(link: np.ndarray, tables: tuple[CommTable | None, ...],
                msg: np.ndarray) -> tuple[tuple[int, np.ndarray], ...]:
    """Group the comm ops whose table and message coefficients coincide."""
    groups: dict[tuple, list[int]] = {}
    for i in np.flatnonzero(link):
        groups.setdefault((id(tables[i]), msg[i].tobytes()), []).append(int(i))
    return tuple((ix[0], np.array(ix)) for ix in groups.values())
