"""The serving model: TTFT, TPOT and throughput of a closed-loop benchmark, in closed form.

A serving benchmark at concurrency ``c`` keeps ``c`` requests in flight (``isl`` prompt
tokens, ``osl`` output tokens each): the first ``c`` arrive together, and each user sends the
next request when the previous one ends. ``ttft`` and ``tpot`` are means over all requests of
the run; ``tpot = (e2e - ttft) / (osl - 1)``. Everything below is numpy over arrays of
``c`` (and lengths), so the recommender evaluates whole grids at once; ``predict`` calls it
with scalars. Per replica (``r`` requests running, ``d`` the decode step):

Memory. Weights, the activations of the largest step, and each running sequence's KV cache in
pages of ``kv_block_tokens``; ``r = min(c, what fits, max_num_seqs)``. Requests beyond ``r``
wait for a free slot: by Little's law the mean wait is ``(c / r - 1) x cycle``.

Decode. All running sequences decode together; their contexts are spread over the output
(steady state) or move in lockstep (burst): either way the step's cost is linear in the summed
context, so the mean step is the step at the mean context (the integral over the growing
context, exactly, while no op crosses its ridge): decode step ``j = 1 .. osl - 1`` runs with
``isl + j - 1`` tokens cached, ``isl + osl / 2 - 1`` on average. Pipeline parallelism runs
``pp`` micro-batches of ``r / pp`` sequences; a token still crosses every stage.

Prefill. One prompt in chunks of the step budget (``chunked_prefill``) or whole. Engines that
mix batches run each chunk in a step with the other sequences' decodes (the step grows, and
its decodes are slowed: ``delta = p - n_chunks x d``); SGLang's default prefills alone and
pauses decoding (``delta = p``).

Arrivals. The first ``c`` prompts arrive together (a burst); later ones arrive as earlier
requests end, in clusters. A cluster of ``k`` prompts queues its prefills: prompt ``i`` of it
finishes at step ``ceil(i a)`` (``a`` = steps per prompt: ``isl / budget`` chunked, ``1 / g``
with ``g`` whole prompts per step otherwise), ``a (k + 1) / 2 + max(0, 1 - a) / 2`` steps on
average (exact when ``a`` or ``1 / a`` is whole; one prompt at a time: ``(k + 1) / 2`` prefill
times), after waiting for the step in flight (``d / 2``) when others are decoding. Serving
benchmarks measure clusters of ``k = scale x c ^ exponent`` prompts on average (the benchmark
law fitted with the engines; ``scale = exponent = 1`` is the pure burst, reported as
``ttft_burst``).

TPOT. Over a cycle each of the ``r - 1`` other prompts lands in this request's decode window
in proportion to its length: with ``D = (osl - 1) d`` and ``X = (osl - 1) tpot``,
``X = D + (r - 1) delta X / (ttft + X)``, a quadratic in ``X``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from perfscope.serving.engines import EngineParams
from perfscope.serving.stepmodel import IDEAL, Efficiency, StepModel


class Served(NamedTuple):
    """Arrays (broadcast over the inputs); times in seconds, per replica."""

    concurrency: np.ndarray
    running: np.ndarray  # sequences decoding together
    max_running: np.ndarray  # most sequences whose KV cache fits (paged)
    fits: np.ndarray  # at least one sequence fits
    cluster: np.ndarray  # prompts arriving together (benchmark law)
    decode_step_s: np.ndarray  # mean decode step (host overhead included)
    prefill_s: np.ndarray  # one prompt's prefill steps, with their decode riders
    ttft_s: np.ndarray
    ttft_burst_s: np.ndarray  # all c prompts arriving at once
    queue_s: np.ndarray  # mean wait for a KV-cache slot (c beyond what fits)
    tpot_s: np.ndarray
    e2e_s: np.ndarray
    output_tokens_per_s: np.ndarray  # the replica's output tokens per second
    memory_per_gpu_bytes: np.ndarray
    kv_bytes_per_seq: np.ndarray


def efficiency(eng: EngineParams, ceiling: str) -> Efficiency:
    """The engine's kernels against the ceilings. Efficiencies were calibrated against the
    empirical ceilings, so the spec (datasheet) roofline keeps them at 1; the engine's fixed
    costs apply either way."""
    if ceiling == "spec":
        return Efficiency(1.0, 1.0, 1.0, eng.kernel_overhead_s, eng.collective_latency_s)
    return Efficiency(eng.flops_efficiency, eng.bandwidth_efficiency,
                      eng.moe_bandwidth_efficiency, eng.kernel_overhead_s,
                      eng.collective_latency_s, eng.moe_flops_efficiency)


def serve(sm: StepModel, eng: EngineParams, concurrency: Any, isl: Any, osl: Any, *,
          cluster_scale: float = 1.0, cluster_exponent: float = 1.0,
          kv_bits: Any = None, eff: Efficiency | None = None,
          capacity_bytes: float | None = None, burst: bool = True) -> Served:
    """The serving model (module doc) for arrays of concurrency and lengths, one replica.
    ``kv_bits`` may be an array too (several KV dtypes at once, e.g. shape (K, 1) against a
    concurrency grid of shape (C,)); every field comes back broadcast to the common shape.
    ``burst=False`` skips ``ttft_burst_s`` (NaN), which the recommender does not use."""
    eff = eff if eff is not None else IDEAL
    c, isl, osl = np.broadcast_arrays(*(np.asarray(x, dtype=float)
                                        for x in (concurrency, isl, osl)))
    M = float(eng.max_num_tokens)
    o_s, o_t = eng.step_overhead_s, eng.ttft_overhead_s
    pp = sm.scenario.pp
    cap = capacity_bytes if capacity_bytes is not None else sm.hw.memory_bytes

    # ---- memory: how many sequences fit -------------------------------------------------
    largest = np.where(eng.chunked_prefill, np.minimum(isl, M), np.maximum(isl, M))
    act = sm.activation_bytes(largest)
    # the tokens the scheduler holds per sequence: the whole request up front (TensorRT-LLM's
    # guaranteed-no-evict), or what it has so far, isl + osl / 2 on average (vLLM, SGLang)
    held = isl + osl if eng.kv_admission == "full" else isl + osl / 2
    kv_seq = sm.kv_bytes_per_seq(held, kv_bits, eng.kv_block_tokens)
    if eng.memory_policy == "total":
        budget = eng.memory_fraction * cap - sm.weights_bytes - act
    else:
        budget = eng.memory_fraction * (cap - sm.weights_bytes - act)
    m = np.floor(np.maximum(budget, 0.0) / kv_seq)
    m = np.minimum(m, eng.max_num_seqs)
    fits = m >= 1
    r = np.maximum(np.minimum(c, m), 1.0)

    # ---- decode ----------------------------------------------------------------------------
    # decode step j = 1 .. osl-1 runs with isl + j - 1 tokens cached: mean isl + osl/2 - 1
    ctx = isl + (osl - 2) / 2
    d = sm.decode_time(_decode_batch(sm, r, pp), ctx, eff, kv_bits) + o_s

    # ---- one prompt's prefill, in chunks, with the other sequences' decodes riding along -----
    riders = np.where(eng.mixed_batches, r - 1, 0.0)
    p_own, n_ch = _prefill(sm, eng, eff, kv_bits, isl, riders, ctx, M)
    p_own = p_own + n_ch * o_s
    delta = np.maximum(p_own - n_ch * d, 0.0) if eng.mixed_batches else p_own

    # ---- time to first token: a cluster of k prompts queues its prefills ------------------
    k = np.clip(cluster_scale * c ** cluster_exponent, 1.0, r)
    first = _cluster_ttft(sm, eng, eff, kv_bits, k, r, isl, ctx, d, M)
    first_burst = _cluster_ttft(sm, eng, eff, kv_bits, r, r, isl, ctx, d, M) if burst \
        else np.full_like(first, np.nan)

    # ---- TPOT: the other prompts' prefills land in this request's decode window ------------
    D = (osl - 1) * d
    b = first - D - (r - 1) * delta
    X = (-b + np.sqrt(b * b + 4 * D * first)) / 2
    tpot = X / np.maximum(osl - 1, 1)

    # ---- requests beyond the KV capacity wait for a slot (Little's law) --------------------
    queue = np.maximum(c / r - 1, 0.0) * (first + X)
    ttft = o_t + first + queue
    e2e = ttft + (osl - 1) * tpot
    mem = sm.weights_bytes + r * kv_seq + act
    out = np.broadcast_arrays(c, r, m, fits, k, d, p_own, ttft, o_t + first_burst + queue,
                              queue, tpot, e2e, c * osl / e2e, mem, kv_seq)
    return Served(*out)


def _cluster_ttft(sm: StepModel, eng: EngineParams, eff: Efficiency, kv_bits: Any,
                  k: np.ndarray, r: np.ndarray, isl: np.ndarray, ctx: np.ndarray,
                  d: np.ndarray, M: float) -> np.ndarray:
    """Mean server-side time to first token of ``k`` prompts arriving together while
    ``r - k`` other sequences decode (module doc)."""
    if eng.chunked_prefill:
        a = isl / M
        per_step = np.minimum(k, np.where(isl <= M, np.maximum(1.0, np.floor(M / isl)), 1.0))
        new = np.minimum(isl, M)
        c0 = np.where(isl > M, (isl - M) / 2, 0.0)
    else:
        g = np.maximum(1.0, np.floor(M / isl))
        a = 1.0 / g
        per_step, new, c0 = np.minimum(k, g), isl, np.zeros_like(isl)
    steps = np.ceil(k * a - 1e-9)
    mean_step = np.maximum(1.0, a * (k + 1) / 2 + np.maximum(0.0, 1 - a) / 2)
    riders = np.where(eng.mixed_batches, (r - k) + np.where(steps > 1, k / 2, 0.0), 0.0)
    dec = _decode_batch(sm, riders, sm.scenario.pp, allow_zero=True)
    t_step = sm.mixed_time(dec, ctx, per_step, new, c0, eff, kv_bits) + eng.step_overhead_s
    wait = np.where(r > k, d / 2, 0.0)
    return wait + mean_step * t_step


def _decode_batch(sm: StepModel, seqs: np.ndarray, pp: int,
                  allow_zero: bool = False) -> np.ndarray:
    """Sequences of one decode micro-batch: r / pp under pipeline parallelism, rounded up to
    a whole number per data-parallel attention group (the busiest group sets the step)."""
    b = np.ceil(np.asarray(seqs, dtype=float) / pp)
    if sm.attn_dp > 1:
        b = np.ceil(b / sm.attn_dp) * sm.attn_dp
    return b if allow_zero else np.maximum(b, 1.0)


def _prefill(sm: StepModel, eng: EngineParams, eff: Efficiency, kv_bits: Any,
             isl: np.ndarray, riders: np.ndarray, ctx: np.ndarray,
             M: float) -> tuple[np.ndarray, np.ndarray]:
    """Time of one prompt's prefill steps (riders decoding in each) and the number of steps.

    The budget of a mixed step counts its decode tokens too (vLLM, TensorRT-LLM)."""
    pp = sm.scenario.pp
    dec = _decode_batch(sm, riders, pp, allow_zero=True)
    if eng.chunked_prefill:
        budget = np.maximum(M - riders, 64.0)
        q = np.minimum(isl, budget)
    else:
        q = isl
    n = np.ceil(isl / q - 1e-9)
    t = sm.mixed_time(dec, ctx, 1, q, 0, eff, kv_bits)
    rest = isl - q
    if not np.any(rest > 0):
        return t, n
    n_rest = np.maximum(n - 1, 1.0)
    q_rest = rest / n_rest
    # the later chunks attend over the prefix before them: their mean prefix, exactly for
    # the linear part of the cost
    c0 = q + np.maximum(rest - q_rest, 0.0) / 2
    later = sm.mixed_time(dec, ctx, 1, np.maximum(q_rest, 1.0), c0, eff, kv_bits)
    t = t + np.where(rest > 0, n_rest * later, 0.0)
    return t, n
