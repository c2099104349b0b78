"""The serving model: TTFT, TPOT and throughput of a closed-loop benchmark, in closed form.

A serving benchmark at concurrency ``c`` keeps ``c`` requests in flight (``isl`` prompt
tokens, ``osl`` output tokens each): the first ``c`` arrive together, and each client sends its
next request when the previous one ends. ``ttft`` and ``tpot`` are means over all requests of
the run; ``tpot = (e2e - ttft) / (osl - 1)``. Everything below is numpy over arrays of ``c``
(and lengths), so the recommender evaluates whole grids at once; ``predict`` calls it with
scalars. Per replica (``r`` requests running, ``d`` the decode step):

Memory. Weights, the activations of the largest step, and each running sequence's KV cache in
pages of ``kv_block_tokens`` (under attention DP each group holds its share of the sequences);
``r = min(c, what fits, max_num_seqs)``. Requests beyond ``r`` wait for a free slot: by
Little's law the mean wait is ``(c / r - 1) x cycle``.

Decode. All running sequences decode together; their contexts are spread over the output
(steady state) or move in lockstep (burst): either way the step's cost is linear in the summed
context, so the mean step is the step at the mean context (the integral over the growing
context, exactly, while no op crosses its ridge): decode step ``j = 1 .. osl - 1`` runs with
``isl + j - 1`` tokens cached, ``isl + osl / 2 - 1`` on average. Pipeline parallelism runs
``pp`` micro-batches of ``r / pp`` sequences; a token still crosses every stage.

Prefill. A step holds ``g = floor(budget / isl)`` whole prompts, or one prompt in chunks of
the budget (``chunked_prefill``; the budget of a mixed step counts its decode tokens too), or
one whole prompt however long (no chunking). Engines that mix batches run each prefill step
with the other sequences' decodes (the step grows, and its decodes are slowed: ``delta = p -
n_chunks x d``); SGLang's default prefills alone and pauses decoding (``delta = p``).

Time to first token, the closed loop (``Benchmark(kind="closed_loop")``). The first wave is a
burst: ``r`` prompts arrive together and queue their prefills; prompt ``i`` finishes at step
``ceil(i a)`` (``a`` = steps per prompt: ``isl / budget`` chunked, ``1 / g`` with ``g`` whole
prompts per step otherwise), ``a (r + 1) / 2 + max(0, 1 - a) / 2`` steps on average (exact when
``a`` or ``1 / a`` is whole; one prompt at a time: ``(r + 1) / 2`` prefill times). Each client
then sends its next request when its previous one ends. Those requests arrive one at a time:
however the first wave was grouped, the clients drift apart (benchmark tools vary the lengths
around ``isl``/``osl``, and completions spread over the decode steps), so a later request
waits for the step in flight (``d / 2``), for a prompt ahead of it in the prefill queue
(M/D/1 with the prefill busy a fraction ``rho = (r - 1) p / cycle`` of the time, the other
clients' prompts: ``rho p / (2 (1 - rho))``), then runs its own prefill ``p`` with the
others' decodes riding along: the steady-state TTFT. Over a run of ``R`` requests per client
the mean TTFT is ``(burst + (R - 1) steady) / R``; ``R`` is the benchmark's run length
(``Benchmark``, fitted with the engines: benchmark tools issue a fixed number of prompts per
client or per run).
``Benchmark(kind="cluster")`` is the empirical law the closed loop was compared with: every
request's prompt arrives in a cluster of ``scale x c ^ exponent``.

Which one ships (engines.toml ``[fit] choice``, 2026-11-30, 369 rows): the calibration fits
both and predicts each model and each system from the others, and keeps the lower held-out TTFT
error. TensorRT-LLM's batch waiting (``batch_wait``, set where the benchmark's server set it:
the Llama 1024/1024 rows below TP 8, whose ~0.1-0.3 s TTFT floor their 1024/8192 rows lack)
holds a lone prompt and a cluster alike. With it in both, the closed loop with ``R`` fitted
(9.0 requests per client) explains the rows better than the cluster law (TTFT 24.2% against
28.8% mean absolute error) and generalises a little better too (74.6% / 75.9% against 79.3% /
79.8% leaving one model / one system out; 4.3 +- 0.8 points paired over the held-out rows), so
the closed loop ships. Held out, both are dominated by what one model's rows cannot tell about
another's (the MoE rows' TTFT carries ~0.15 s more than the dense rows' at the same prompt
length), not by the arrival model.

Time to first token, the open loop (``Benchmark(kind="open")``, ``serve_rate``): requests
arrive at random at a rate ``lambda`` (Poisson), each alone: the step in flight (``d / 2``),
the M/D/1 prefill queue at the load the rate puts on it (``rho = lambda p``), its own prefill;
the requests in flight are what the rate sustains (Little's law, solved in ``serve_rate``).

TPOT. Over a cycle each other request's prefill lands in this request's decode window in
proportion to its length: with ``D = (osl - 1) d``, ``X = (osl - 1) tpot`` and ``delta`` the
time one prompt's prefill adds to the decode steps it rides in,
``X = D + (r - 1) delta X / (ttft + X)``, a quadratic in ``X``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from perfscope.serving.engines import Benchmark, EngineParams
from perfscope.serving.stepmodel import IDEAL, Efficiency, StepModel

BURST = Benchmark("closed_loop", requests_per_client=1.0)  # one wave: every prompt at once
RHO_MAX = 0.9  # the prefill load beyond which the closed loop throttles its own arrivals
OPEN_RHO_MAX = 0.999  # numerical guard only: an open loop at rho >= 1 is Overloaded


class Served(NamedTuple):
    """Arrays (broadcast over the inputs); times in seconds, per replica."""

    concurrency: np.ndarray
    running: np.ndarray  # sequences decoding together
    max_running: np.ndarray  # most sequences whose KV cache fits (paged)
    fits: np.ndarray  # at least one sequence fits
    prefill_load: np.ndarray  # rho: fraction of the time a later request's prefill is busy
    decode_step_s: np.ndarray  # mean decode step (host overhead included)
    prefill_s: np.ndarray  # one prompt's prefill steps, with their decode riders
    ttft_s: np.ndarray  # mean over the run (the benchmark's law)
    ttft_burst_s: np.ndarray  # the first wave: every prompt arriving at once
    ttft_steady_s: np.ndarray  # a later request: arrives alone, queues, its own prefill
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
        return Efficiency(1.0, 1.0, 1.0, eng.kernel_overhead_s, eng.collective_latency_s,
                          moe_all_experts=eng.moe_streams_all_experts)
    return Efficiency(eng.flops_efficiency, eng.bandwidth_efficiency,
                      eng.moe_bandwidth_efficiency, eng.kernel_overhead_s,
                      eng.collective_latency_s, eng.moe_flops_efficiency,
                      eng.moe_streams_all_experts)


def serve(sm: StepModel, eng: EngineParams, concurrency: Any, isl: Any, osl: Any, *,
          bench: Benchmark = BURST, kv_bits: Any = None, eff: Efficiency | None = None,
          capacity_bytes: float | None = None, rate: float | None = None) -> Served:
    """The serving model (module doc) for arrays of concurrency and lengths, one replica.
    ``kv_bits`` may be an array too (several KV dtypes at once, e.g. shape (K, 1) against a
    concurrency grid of shape (C,)); every field comes back broadcast to the common shape.
    ``bench.kind == "open"``: requests arrive at random at ``rate`` per second (see
    ``serve_rate``, which finds the concurrency that rate sustains)."""
    eff = eff if eff is not None else IDEAL
    c, isl, osl = np.broadcast_arrays(*(np.asarray(x, dtype=float)
                                        for x in (concurrency, isl, osl)))
    M = float(eng.max_num_tokens)
    o_s, o_t = eng.step_overhead_s, eng.ttft_overhead_s
    pp, dp = sm.scenario.pp, sm.attn_dp
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
    m = np.floor(np.maximum(budget, 0.0) / kv_seq) * dp  # each attention group its share
    m = np.minimum(m, eng.max_num_seqs)
    fits = m >= 1
    r = np.maximum(np.minimum(c, m), 1.0)

    # ---- decode ----------------------------------------------------------------------------
    # decode step j = 1 .. osl-1 runs with isl + j - 1 tokens cached: mean isl + osl/2 - 1
    ctx = isl + (osl - 2) / 2
    d = sm.decode_time(_decode_batch(r, pp), ctx, eff, kv_bits) + o_s

    # ---- one prompt's prefill, in chunks, with the other sequences' decodes riding along -----
    riders = np.where(eng.mixed_batches, r - 1, 0.0)
    p_own, n_ch = _prefill(sm, eng, eff, kv_bits, isl, riders, ctx, M)
    p_own = p_own + n_ch * o_s

    # ---- time to first token ---------------------------------------------------------------
    # later requests arrive one at a time (the clients' requests drift apart), wait for the
    # step in flight and for any prompt ahead of them (M/D/1: prefill busy a fraction rho of
    # the cycle), then run their own prefill with the others' decodes riding along
    # what one prompt's prefill adds to the decode steps it rides in (prefill alone, SGLang:
    # the whole of it)
    delta = np.where(eng.mixed_batches, np.maximum(p_own - n_ch * d, 0.0), p_own)
    cycle = p_own + (osl - 1) * d + (r - 1) * delta  # one request's life, queueing aside
    if bench.kind == "open":
        # Poisson arrivals at ``rate``: the prefill queue carries the load the rate puts on
        # it (not the closed loop's self-throttled one); serve_rate refuses rho >= 1
        if rate is None:
            raise ValueError("serve(bench=OPEN) needs rate=")
        rho = np.minimum(rate * p_own, OPEN_RHO_MAX)
        arrivals = rate * d  # per decode iteration
    else:
        # an arriving request meets the other r - 1 clients' prompts (the arrival theorem of
        # closed queues: it sees the system as it runs without itself), never its own
        rho = np.minimum((r - 1) * p_own / cycle, RHO_MAX)
        arrivals = r * d / cycle
    queued = rho / (2 * (1 - rho)) * p_own
    steady = np.where(r > 1, d / 2, 0.0) + queued + p_own + \
        batch_wait(eng, r, isl, arrivals) * d
    burst = _cluster_ttft(sm, eng, eff, kv_bits, r, r, isl, ctx, d, M)
    if bench.kind == "open":
        first = steady  # every request arrives alone
    elif bench.kind == "cluster":
        k = np.clip(bench.cluster_scale * c ** bench.cluster_exponent, 1.0, r)
        first = _cluster_ttft(sm, eng, eff, kv_bits, k, r, isl, ctx, d, M) + \
            batch_wait(eng, r, isl, arrivals, k) * d
    else:
        R = bench.runs(c)
        first = (burst + (R - 1) * steady) / R

    # ---- TPOT: the other prompts' prefills land in this request's decode window ------------
    D = (osl - 1) * d
    b = first - D - (r - 1) * delta
    X = (-b + np.sqrt(b * b + 4 * D * first)) / 2
    tpot = X / np.maximum(osl - 1, 1)

    # ---- requests beyond the KV capacity wait for a slot (Little's law) --------------------
    queue = np.maximum(c / r - 1, 0.0) * (first + X)
    ttft = o_t + first + queue
    e2e = ttft + (osl - 1) * tpot
    mem = sm.weights_bytes + np.ceil(r / dp - 1e-9) * kv_seq + act
    out = np.broadcast_arrays(c, r, m, fits, rho, d, p_own, ttft, o_t + burst + queue,
                              o_t + steady + queue, queue, tpot, e2e, c * osl / e2e, mem,
                              kv_seq)
    return Served(*out)


class Overloaded(Exception):
    """More requests per second than a replica serves (``serve_rate``)."""

    def __init__(self, rate: float, max_rate: float, why: str):
        super().__init__(f"{rate:.4g} requests/s is more than this configuration serves: at "
                         f"most {max_rate:.4g} per replica ({why})")
        self.rate, self.max_rate, self.why = rate, max_rate, why


OPEN = Benchmark("open", None)
CLOSED_STEADY = Benchmark("closed_loop", requests_per_client=1e9)  # later requests only


def serve_rate(sm: StepModel, eng: EngineParams, rate: float, isl: float, osl: float, *,
               kv_bits: Any = None, eff: Efficiency | None = None,
               capacity_bytes: float | None = None) -> Served:
    """Open loop, one replica: requests arrive at random, ``rate`` per second (Poisson).

    In steady state the mean number of requests in flight ``N`` satisfies Little's law,
    ``N = rate x e2e(N)``, where ``e2e(N)`` is the serving model with ``N`` sequences decoding
    and every request arriving alone (``OPEN``: waiting for the step in flight, an M/D/1
    prefill queue loaded ``rho = rate x prefill``, its own prefill). ``e2e`` grows more slowly
    than ``N`` once batching pays, so ``N - rate x e2e(N)`` changes sign once between light
    load and the KV capacity ``m``: bisection finds it (``e2e`` rises with ``N``: more riders
    lengthen the prefill, more sequences the decode step). Below one request in flight the
    replica mostly serves one at a time (``N = rate x e2e(1)``). No solution up to ``m``, or a
    prefill busy all the time at the solution (``rate x prefill >= 1``), means the queue grows
    without end: ``Overloaded``, with the most a replica serves (the closed loop's throughput
    at ``m`` sequences, later requests arriving alone; or one prefill per prefill time)."""
    def at(c: float) -> Served:
        return serve(sm, eng, c, isl, osl, bench=OPEN, rate=rate, kv_bits=kv_bits, eff=eff,
                     capacity_bytes=capacity_bytes)

    one = at(1.0)
    if not bool(one.fits):
        return one
    m = float(one.max_running)
    full = serve(sm, eng, m, isl, osl, bench=CLOSED_STEADY, kv_bits=kv_bits, eff=eff,
                 capacity_bytes=capacity_bytes)
    max_rate = m / float(full.e2e_s)
    if rate * float(at(m).e2e_s) > m:
        raise Overloaded(rate, max_rate, f"the KV cache holds {m:.0f} sequences")
    n1 = rate * float(one.e2e_s)
    if n1 <= 1.0:
        got = _with_concurrency(one, n1)
    else:
        lo, hi = 1.0, m
        for _ in range(60):
            mid = (lo + hi) / 2
            if rate * float(at(mid).e2e_s) > mid:
                lo = mid
            else:
                hi = mid
            if hi - lo < 1e-7 * hi:
                break
        got = at(hi)
    p = float(got.prefill_s)
    if rate * p >= 1.0:
        raise Overloaded(rate, min(max_rate, 1.0 / p), f"one prefill takes {p * 1e3:.3g} ms")
    return got


def _with_concurrency(s: Served, n: float) -> Served:
    """``s`` with its mean requests in flight set to ``n`` (below one: mostly alone)."""
    return s._replace(concurrency=np.asarray(n), output_tokens_per_s=np.asarray(
        float(s.output_tokens_per_s) * n))


def batch_wait(eng: EngineParams, r: np.ndarray, isl: np.ndarray, arrivals: np.ndarray,
               k: Any = 1.0) -> np.ndarray:
    """Mean decode iterations a prompt waits under TensorRT-LLM's batch waiting
    (``eng.batch_wait_iters`` T, ``eng.batch_wait_tokens_ratio``; 0 when off), for ``k``
    prompts arriving together (1: a lone prompt; the cluster law: a cluster).

    While ``r - k`` sequences decode, the waiting prompts open a window that closes after
    T iterations, or earlier once the waiting prompts and the decodes reach the ratio of the
    step budget (``n`` prompts: ``T_eff = min(T, (n - k) / lambda)``, none when ``k >= n``);
    every prompt in it is then prefilled together. Prompts arrive at ``arrivals`` (lambda) per
    iteration: the ``k`` that open the window wait ``T_eff``, the ``lambda T_eff`` that join it
    wait half of it on average, so the mean is ``T_eff (k + lambda T_eff / 2) / (k + lambda
    T_eff)``. The first wave finds nothing decoding and is not held (the executor waits only
    beside generation requests)."""
    if not eng.batch_wait_iters:
        return np.zeros_like(np.asarray(r, dtype=float))
    T = float(eng.batch_wait_iters)
    k = np.asarray(k, dtype=float)
    lam = np.maximum(np.asarray(arrivals, dtype=float), 1e-12)
    need = eng.batch_wait_tokens_ratio * eng.max_num_tokens - (r - k)
    n = np.where(eng.batch_wait_tokens_ratio > 0, np.ceil(np.maximum(need, 0.0) / isl), np.inf)
    t_eff = np.minimum(T, np.maximum(n - k, 0.0) / lam)
    wait = t_eff * (k + lam * t_eff / 2) / (k + lam * t_eff)
    return np.where(r > k, wait, 0.0)


def _cluster_ttft(sm: StepModel, eng: EngineParams, eff: Efficiency, kv_bits: Any,
                  k: np.ndarray, r: np.ndarray, isl: np.ndarray, ctx: np.ndarray,
                  d: np.ndarray, M: float) -> np.ndarray:
    """Mean server-side time to first token of ``k`` prompts arriving together while
    ``r - k`` other sequences decode (module doc); the prompts' own decodes join the steps
    once their prefill is done (``k / 2`` on average over a multi-step queue)."""
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
    dec = _decode_batch(riders, sm.scenario.pp, allow_zero=True)
    t_step = sm.mixed_time(dec, ctx, per_step, new, c0, eff, kv_bits) + eng.step_overhead_s
    wait = np.where(r > k, d / 2, 0.0)
    return wait + mean_step * t_step


def _decode_batch(seqs: np.ndarray, pp: int, allow_zero: bool = False) -> np.ndarray:
    """Sequences of one decode micro-batch: r / pp under pipeline parallelism (attention DP
    spreads them over its groups inside the step model)."""
    b = np.ceil(np.asarray(seqs, dtype=float) / pp - 1e-9) if pp > 1 else \
        np.asarray(seqs, dtype=float)
    return b if allow_zero else np.maximum(b, 1.0)


def _prefill(sm: StepModel, eng: EngineParams, eff: Efficiency, kv_bits: Any,
             isl: np.ndarray, riders: np.ndarray, ctx: np.ndarray,
             M: float) -> tuple[np.ndarray, np.ndarray]:
    """Time of one prompt's prefill steps (riders decoding in each) and the number of steps.

    The budget of a mixed step counts its decode tokens too (vLLM, TensorRT-LLM)."""
    pp = sm.scenario.pp
    dec = _decode_batch(riders, pp, allow_zero=True)
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
