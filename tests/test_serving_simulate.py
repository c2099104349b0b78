"""The serving model against hand derivations from analyze() (perfscope/serving/simulate.py).

An engine with no overheads and efficiency 1 makes every step exactly an analyze() step, so
TTFT and TPOT can be derived by hand: a burst of c equal prompts served one prefill at a time
waits (c + 1) / 2 prefill times on average; served g at a time, the mean of ceil(i / g) steps;
a later request of a closed loop waits half a decode step and its group's prefill step; over
R requests per client the mean is (burst + (R - 1) steady) / R. TPOT of a lone request is the
mean decode step over its growing context, which for a memory-bound decode is linear in the
context, so the trapezoid of the two end steps.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from perfscope import Scenario, analyze, load_hw, load_model
from perfscope.serving.engines import Benchmark, EngineParams
from perfscope.serving.fitting import fit_step_model
from perfscope.serving.simulate import serve

BARE = EngineParams(name="bare", display_name="bare", notes="", max_num_tokens=8192,
                    chunked_prefill=False, mixed_batches=False, max_num_seqs=4096,
                    kv_block_tokens=1, memory_fraction=0.9, memory_policy="total",
                    kv_admission="full", kernel_overhead_s=None, collective_latency_s=None)
BURST = {"bench": Benchmark("closed_loop", 1.0)}  # one request per client: one burst


@pytest.fixture(scope="module")
def setup():
    m, hw = load_model("llama-3.1-8b"), load_hw("h100-sxm")
    sc = Scenario(ceiling="empirical")
    return m, hw, sc, fit_step_model(m, hw, sc)


def prefill(m, hw, sc, batch: int, isl: int) -> float:
    return analyze(m, hw, dataclasses.replace(sc, phase="prefill", batch=batch,
                                              seq_len=isl)).totals.time_s


def decode(m, hw, sc, batch: int, context: int) -> float:
    return analyze(m, hw, dataclasses.replace(sc, phase="decode", batch=batch,
                                              context_len=context)).totals.time_s


@pytest.mark.parametrize("c", [1, 2, 5, 16])
def test_burst_served_one_prefill_at_a_time(setup, c):
    m, hw, sc, sm = setup
    isl = 6000  # > half the 8192-token budget: one prompt per step
    s = serve(sm, BARE, c, isl, 64, **BURST)
    p = prefill(m, hw, sc, 1, isl)
    # prompt i (1-based) gets its first token after i prefills: mean (c + 1) / 2 prefills
    assert float(s.ttft_s) == pytest.approx((c + 1) / 2 * p, rel=1e-9)
    assert float(s.ttft_burst_s) == pytest.approx((c + 1) / 2 * p, rel=1e-9)


@pytest.mark.parametrize("c", [4, 8, 12])
def test_burst_with_batched_prefill(setup, c):
    m, hw, sc, sm = setup
    isl = 2048  # four prompts fill an 8192-token step
    s = serve(sm, BARE, c, isl, 64, **BURST)
    step = prefill(m, hw, sc, 4, isl)
    # prompt i finishes in step ceil(i / 4): mean over i = 1..c, each step the time of 4
    mean_steps = np.mean([np.ceil(i / 4) for i in range(1, c + 1)])
    assert float(s.ttft_s) == pytest.approx(mean_steps * step, rel=1e-9)


def test_tpot_of_one_request_integrates_the_growing_context(setup):
    m, hw, sc, sm = setup
    isl, osl = 3000, 2002
    s = serve(sm, BARE, 1, isl, osl, **BURST)
    # decode step j = 1 .. osl-1 runs with isl + j - 1 cached; batch-1 decode is memory-bound
    # and linear in the context, so the mean of the steps is the mean of the end steps
    first, last = decode(m, hw, sc, 1, isl), decode(m, hw, sc, 1, isl + osl - 2)
    mid = decode(m, hw, sc, 1, isl + (osl - 2) // 2)
    assert mid == pytest.approx((first + last) / 2, rel=1e-9)  # linear: the premise holds
    assert float(s.tpot_s) == pytest.approx((first + last) / 2, rel=1e-9)
    assert float(s.e2e_s) == pytest.approx(float(s.ttft_s) + (osl - 1) * float(s.tpot_s))


def test_overheads_add_where_they_occur(setup):
    sm = setup[3]
    eng = dataclasses.replace(BARE, ttft_overhead_s=0.05, step_overhead_s=0.002)
    a = serve(sm, BARE, 1, 1000, 100, **BURST)
    b = serve(sm, eng, 1, 1000, 100, **BURST)
    # one request: the first token pays the request overhead and one prefill step's
    # overhead; every decode step pays the step overhead
    assert float(b.ttft_s - a.ttft_s) == pytest.approx(0.05 + 0.002, rel=1e-9)
    assert float(b.tpot_s - a.tpot_s) == pytest.approx(0.002, rel=1e-6)


def test_kv_capacity_queues_the_rest(setup):
    sm = setup[3]
    isl, osl = 4000, 4000
    kv = float(sm.kv_bytes_per_seq(isl + osl))
    # a device whose free memory holds exactly 5 sequences
    cap = (sm.weights_bytes + float(sm.activation_bytes(8192)) + 5.5 * kv) / 0.9
    s = serve(sm, BARE, 20, isl, osl, capacity_bytes=cap, **BURST)
    assert int(s.max_running) == 5 and int(s.running) == 5
    first = float(s.ttft_s - s.queue_s)
    cycle = first + (osl - 1) * float(s.tpot_s)
    # Little's law: 20 users through 5 slots wait (20 / 5 - 1) cycles on average
    assert float(s.queue_s) == pytest.approx(3 * cycle, rel=1e-9)
    assert float(s.memory_per_gpu_bytes) <= 0.9 * cap


def test_prefill_of_others_lands_in_the_decode_window(setup):
    """Steady state: with r running, r - 1 other prompts prefill during one request's decode
    window; with long prompts and short outputs TPOT rises well above the decode step."""
    sm = setup[3]
    s = serve(sm, BARE, 32, 8000, 100, bench=Benchmark("cluster", None, None, 1.0, 0.5))
    assert float(s.tpot_s) > 2 * float(s.decode_step_s)
    # the quadratic's root satisfies its own equation
    X = (100 - 1) * float(s.tpot_s)
    D = (100 - 1) * float(s.decode_step_s)
    first = float(s.ttft_s)
    assert pytest.approx(D + 31 * float(s.prefill_s) * X / (first + X), rel=1e-9) == X


def test_vectorised_over_concurrency_equals_scalar_calls(setup):
    sm = setup[3]
    cs = np.arange(1, 200, 7)
    bench = Benchmark("closed_loop", 7.0)
    grid = serve(sm, BARE, cs, 1500, 700, bench=bench)
    for i, c in enumerate(cs):
        one = serve(sm, BARE, int(c), 1500, 700, bench=bench)
        for f in ("ttft_s", "tpot_s", "e2e_s", "memory_per_gpu_bytes"):
            assert getattr(grid, f)[i] == pytest.approx(float(getattr(one, f)), rel=1e-12)


@pytest.mark.parametrize("c, R", [(6, 1.0), (6, 4.0), (16, 10.0)])
def test_closed_loop_ttft_one_prompt_per_step(setup, c, R):
    """Long prompts (one per step): the first wave queues (c + 1) / 2 prefills; each later
    request arrives alone, waits half a decode step of the c others, then for a prompt ahead
    of it (M/D/1: the prefill busy with the other clients' prompts rho = (c - 1) p / cycle of
    the time, cycle = p + (osl - 1) d + (c - 1) p when prefills pause decoding), then its own
    prefill; the run's mean weighs burst and steady state 1 : R - 1."""
    m, hw, sc, sm = setup
    isl, osl = 6000, 64
    s = serve(sm, BARE, c, isl, osl, bench=Benchmark("closed_loop", R))
    p = prefill(m, hw, sc, 1, isl)
    d = decode(m, hw, sc, c, isl + (osl - 2) // 2)  # the mean decode step: c sequences
    rho = min((c - 1) * p / (p + (osl - 1) * d + (c - 1) * p), 0.9)
    burst, steady = (c + 1) / 2 * p, d / 2 + rho / (2 * (1 - rho)) * p + p
    assert float(s.ttft_burst_s) == pytest.approx(burst, rel=1e-9)
    assert float(s.ttft_steady_s) == pytest.approx(steady, rel=1e-9)
    assert float(s.ttft_s) == pytest.approx((burst + (R - 1) * steady) / R, rel=1e-9)


def test_a_lone_client_never_queues_behind_itself(setup):
    """One client: each request follows the previous one's end, so no prompt is ever ahead of
    it; every later request's TTFT is its own prefill."""
    m, hw, sc, sm = setup
    s = serve(sm, BARE, 1, 2048, 16, bench=Benchmark("closed_loop", 1e9))
    assert float(s.prefill_load) == 0.0
    assert float(s.ttft_steady_s) == pytest.approx(prefill(m, hw, sc, 1, 2048), rel=1e-9)


def test_closed_loop_later_requests_arrive_alone(setup):
    """Short prompts: four fit one step, yet later requests arrive one at a time (the clients
    drift apart), so their prefill is one prompt's, not a group's."""
    m, hw, sc, sm = setup
    isl, osl, c = 2048, 130, 12
    s = serve(sm, BARE, c, isl, osl, bench=Benchmark("closed_loop", 1e9))
    p = prefill(m, hw, sc, 1, isl)
    d = decode(m, hw, sc, c, isl + (osl - 2) // 2)
    rho = (c - 1) * p / (p + (osl - 1) * d + (c - 1) * p)  # the other clients' prompts
    steady = d / 2 + rho / (2 * (1 - rho)) * p + p
    assert float(s.ttft_steady_s) == pytest.approx(steady, rel=1e-9)
    assert float(s.ttft_s) == pytest.approx(steady, rel=1e-6)  # R -> infinity
    assert float(s.ttft_burst_s) > 2 * steady  # the first wave queues three steps of four


def test_run_length_in_requests_per_run(setup):
    """A run of N requests over c clients is N / c requests each (at least one)."""
    sm = setup[3]
    a = serve(sm, BARE, 20, 3000, 200, bench=Benchmark("closed_loop", None, 100.0))
    b = serve(sm, BARE, 20, 3000, 200, bench=Benchmark("closed_loop", 5.0))
    assert float(a.ttft_s) == pytest.approx(float(b.ttft_s), rel=1e-12)
    one = serve(sm, BARE, 200, 3000, 200, bench=Benchmark("closed_loop", None, 100.0))
    assert float(one.ttft_s) == pytest.approx(float(one.ttft_burst_s), rel=1e-12)


def test_batch_wait_by_hand():
    """TensorRT-LLM batch waiting: the prompt that opens the window waits T_eff iterations,
    the lambda T_eff that join it half that, T_eff = min(T, (n - 1) / lambda) with n prompts
    filling the token ratio; off (0) by default, and nothing waits with nothing decoding."""
    from perfscope.serving.simulate import batch_wait

    off = batch_wait(BARE, np.array([5.0]), np.array([1024.0]), np.array([0.5]))
    assert float(off[0]) == 0.0
    eng = dataclasses.replace(BARE, batch_wait_iters=4)  # no token ratio: T alone
    got = batch_wait(eng, np.array([1.0, 5.0]), np.array([1024.0, 1024.0]),
                     np.array([0.5, 0.5]))
    assert float(got[0]) == 0.0  # the first wave meets no decode and is not held
    assert float(got[1]) == pytest.approx(4 * (1 + 0.5 * 4 / 2) / (1 + 0.5 * 4))  # 8/3
    # ratio 0.5 of 8192 tokens with 4 decodes: 4092 prompt tokens, n = ceil(4092/1024) = 4
    eng = dataclasses.replace(BARE, batch_wait_iters=4, batch_wait_tokens_ratio=0.5)
    got = batch_wait(eng, np.array([5.0, 5.0]), np.array([1024.0, 1024.0]),
                     np.array([1.0, 0.5]))
    assert float(got[0]) == pytest.approx(3 * (1 + 1.5) / (1 + 3))  # T_eff = 3 / 1 = 3 < 4
    assert float(got[1]) == pytest.approx(4 * (1 + 1.0) / (1 + 2))  # T_eff = min(4, 6)


def test_batch_wait_of_a_cluster_by_hand():
    """k prompts arriving together open the window: T_eff = min(T, (n - k) / lambda), the k
    wait T_eff, the lambda T_eff joiners half of it; none when k fill the ratio, or when the
    cluster is everything running (nothing decodes beside it)."""
    from perfscope.serving.simulate import batch_wait

    eng = dataclasses.replace(BARE, batch_wait_iters=4)
    got = batch_wait(eng, np.array([5.0, 2.0]), np.array([1024.0, 1024.0]),
                     np.array([0.5, 0.5]), np.array([2.0, 2.0]))
    assert float(got[0]) == pytest.approx(4 * (2 + 0.5 * 4 / 2) / (2 + 0.5 * 4))  # 3
    assert float(got[1]) == 0.0
    # ratio 0.5 of 8192 with 5 - 2 decodes: 4093 prompt tokens, n = 4, n - k = 2 at 1 per
    # iteration: T_eff = 2; a cluster of 4 already fills it
    eng = dataclasses.replace(BARE, batch_wait_iters=4, batch_wait_tokens_ratio=0.5)
    got = batch_wait(eng, np.array([5.0, 5.0]), np.array([1024.0, 1024.0]),
                     np.array([1.0, 1.0]), np.array([2.0, 4.0]))
    assert float(got[0]) == pytest.approx(2 * (2 + 1.0) / (2 + 2))  # 1.5
    assert float(got[1]) == 0.0


def test_cluster_ttft_carries_the_batch_wait(setup):
    """Under the cluster law a cluster is held like a lone prompt: the TTFT grows by the
    cluster's wait times the decode step, and by nothing with batch waiting off."""
    from perfscope.serving.engines import Benchmark
    from perfscope.serving.simulate import batch_wait

    sm = setup[3]
    bench = Benchmark("cluster", cluster_scale=1.0, cluster_exponent=0.5)
    off = serve(sm, BARE, 16, 1024, 256, bench=bench)
    eng = dataclasses.replace(BARE, batch_wait_iters=20)
    on = serve(sm, eng, 16, 1024, 256, bench=bench)
    k, r = 4.0, float(off.running)  # 1.0 x 16 ** 0.5
    p, d = float(off.prefill_s), float(off.decode_step_s)
    arrivals = r * d / (p + 255 * d + (r - 1) * p)  # unmixed: each prefill pauses the others
    assert r == 16.0
    wait = float(batch_wait(eng, np.array([r]), np.array([1024.0]), np.array([arrivals]),
                            np.array([k]))[0])
    assert 15.0 < wait < 20.0  # few join: the window runs its 20 steps, joiners wait less
    assert float(on.ttft_s) - float(off.ttft_s) == pytest.approx(wait * d, rel=1e-9)


def test_open_loop_ttft_by_hand(setup):
    """Poisson arrivals at a rate: every request arrives alone, waits half a decode step of
    the c others, then for a prompt ahead of it (M/D/1 loaded rho = rate x p, the rate's load
    rather than the closed loop's), then its own prefill."""
    from perfscope.serving.simulate import OPEN

    m, hw, sc, sm = setup
    isl, osl, c, rate = 2048, 130, 12, 3.0
    s = serve(sm, BARE, c, isl, osl, bench=OPEN, rate=rate)
    p = prefill(m, hw, sc, 1, isl)
    d = decode(m, hw, sc, c, isl + (osl - 2) // 2)
    rho = rate * p
    assert float(s.ttft_s) == pytest.approx(d / 2 + rho / (2 * (1 - rho)) * p + p, rel=1e-9)


def test_open_loop_rate_sustains_littles_law(setup):
    """serve_rate finds the requests in flight N = rate x e2e(N); the output rate is then the
    arrival rate times the output length. Light load: fewer than one in flight."""
    from perfscope.serving.simulate import Overloaded, serve_rate

    sm = setup[3]
    for rate in (0.5, 4.0, 20.0):
        s = serve_rate(sm, BARE, rate, 1024, 256)
        n = float(s.concurrency)
        assert n == pytest.approx(rate * float(s.e2e_s), rel=1e-5)
        assert float(s.output_tokens_per_s) == pytest.approx(rate * 256, rel=1e-5)
    light = serve_rate(sm, BARE, 0.01, 1024, 256)
    assert float(light.concurrency) == pytest.approx(0.01 * float(light.e2e_s), rel=1e-9)
    assert float(light.concurrency) < 1
    # more than one prefill per prefill time can never be served
    p = float(serve(sm, BARE, 1, 1024, 256).prefill_s)
    with pytest.raises(Overloaded) as e:
        serve_rate(sm, BARE, 1.5 / p, 1024, 256)
    assert 0 < e.value.max_rate < 1.5 / p
