"""The serving step model reproduces analyze() op by op on random steps.

The decomposition (perfscope/serving/stepmodel.py) writes every op's FLOPs, bytes and comm
message as a linear combination of step features; the independent count it is checked against
is analyze() itself, at steps the fit never saw: dense GQA, weight-only and W8A8, fp8 block and
fp4 (NVFP4), fp8 weight-only on Ampere, MLA, MoE with expert parallelism and with attention data
parallelism (all-to-all and all-gather/reduce-scatter), sliding windows, TP, PP, a PCIe device
and a group spanning nodes.

Tolerances, stated: 1e-9 relative where the model is exact (everything but the busiest EP
rank's load above 256 routed tokens; comm times come from perfscope.collectives' own function,
tabulated at whole bytes where it is exact); TABULATED_RTOL = 1% where a step routes more than
``tables.EXACT_TOKENS`` tokens over EP > 1 (the expert-load table interpolates in log space
there: tests/test_serving_tables.py measures it at under 1e-5).
"""

from __future__ import annotations

import numpy as np
import pytest

from perfscope import Scenario, analyze, load_hw, load_model
from perfscope.analytic.attention import attended_keys, cached_tokens, kv_tokens_read
from perfscope.analytic.moe import expected_experts
from perfscope.serving.features import cached, experts_touched, keys_sum, kv_read
from perfscope.serving.fitting import fit_step_model
from perfscope.serving.stepmodel import Efficiency
from perfscope.serving.tables import EXACT_TOKENS

EXACT_RTOL = 1e-9
TABULATED_RTOL = 1e-2

CASES = [
    ("llama-3.1-70b", "h100-sxm", dict(tp=4, weight_dtype="fp8")),
    ("llama-3.1-8b", "a100-sxm-80gb", dict(weight_dtype="int4")),
    ("llama-3.1-8b", "a100-sxm-80gb", dict(weight_dtype="fp8")),  # W8A16 fp8 on Ampere
    ("llama-3.1-70b", "b200", dict(tp=2, weight_dtype="fp4")),
    ("deepseek-v3", "h200-sxm", dict(tp=8, ep=8, weight_dtype="fp8")),
    ("deepseek-v3", "h200-sxm", dict(tp=1, attn_dp=8, ep=8)),
    ("deepseek-v3", "h200-sxm", dict(tp=2, attn_dp=8, ep=16)),  # 16 GPUs: over InfiniBand
    ("qwen3-235b-a22b-fp8", "h200-sxm", dict(tp=2, attn_dp=2, ep=4,
                                              moe_comm="allgather_reducescatter")),
    ("qwen3-235b-a22b-fp8", "h200-sxm", dict(tp=1, attn_dp=4)),
    ("gemma-2-9b", "h100-sxm", dict(tp=2, weight_dtype="int8", act_dtype="int8")),
    ("mixtral-8x7b", "h100-sxm", dict(tp=2, pp=2, ep=2)),
    ("qwen3-30b-a3b", "l40s", dict(tp=2)),
]


def ids(c):
    return f"{c[0]}-" + "-".join(f"{k}{v}" for k, v in c[2].items())


@pytest.fixture(scope="module", params=CASES, ids=[ids(c) for c in CASES])
def case(request):
    name, hw_name, kw = request.param
    m, hw = load_model(name), load_hw(hw_name)
    kw = dict(kw, ceiling="empirical")
    return m, hw, kw, fit_step_model(m, hw, Scenario(**kw))


def rtol(kw: dict, batch: int, tokens: int) -> float:
    """Exact unless the busiest EP rank's load is read from its log-space table."""
    return TABULATED_RTOL if kw.get("ep", 1) > 1 and batch * tokens > EXACT_TOKENS \
        else EXACT_RTOL


def test_keys_and_cache_features_match_the_scalar_formulas():
    rng = np.random.default_rng(1)
    for _ in range(300):
        T, C0 = int(rng.integers(1, 5000)), int(rng.integers(0, 9000))
        W = [None, 4096, 128][int(rng.integers(0, 3))]
        assert keys_sum(T, C0, W) == pytest.approx(attended_keys(T, C0, W), rel=1e-15)
        assert cached(C0 + T, W) == cached_tokens(C0 + T, W)
        assert kv_read(T, C0, W) == kv_tokens_read(T, C0, W)
    for n in (0, 1, 3, 64, 4096):
        assert experts_touched(256, 8, n) == pytest.approx(expected_experts(256, 8, n),
                                                           rel=1e-12)


def test_decode_and_fill_match_analyze_at_random_steps(case):
    m, hw, kw, sm = case
    rng = np.random.default_rng(7)
    for _ in range(10):
        b, c = int(rng.integers(1, 400)), int(rng.integers(1, m.max_position - 2))
        a = analyze(m, hw, Scenario(phase="decode", batch=b, context_len=c, **kw))
        assert float(sm.decode_time(b, c)) == pytest.approx(a.totals.time_s, rel=rtol(kw, b, 1))
        b = int(rng.integers(1, 20))
        t = int(rng.integers(1, m.max_position // 4))
        c0 = int(rng.integers(0, m.max_position // 2)) if rng.random() < 0.6 else 0
        phase = "prefill" if c0 == 0 else "chunked_prefill"
        a = analyze(m, hw, Scenario(phase=phase, batch=b, seq_len=t, context_len=c0, **kw))
        assert float(sm.fill_time(b, t, c0)) == pytest.approx(a.totals.time_s,
                                                              rel=rtol(kw, b, t))


def test_small_steps_are_exact(case):
    """Every step routing at most EXACT_TOKENS tokens reproduces analyze() to 1e-9, expert
    parallelism and attention DP included (odd batches: uneven attention groups)."""
    m, hw, kw, sm = case
    for b, c in ((1, 5), (3, 700), (13, 2000), (37, 90), (200, 15)):
        a = analyze(m, hw, Scenario(phase="decode", batch=b, context_len=c, **kw))
        assert float(sm.decode_time(b, c)) == pytest.approx(a.totals.time_s, rel=EXACT_RTOL)
    for b, t, c0 in ((1, 1, 0), (2, 100, 0), (5, 17, 300), (1, 250, 4000)):
        phase = "prefill" if c0 == 0 else "chunked_prefill"
        a = analyze(m, hw, Scenario(phase=phase, batch=b, seq_len=t, context_len=c0, **kw))
        assert float(sm.fill_time(b, t, c0)) == pytest.approx(a.totals.time_s, rel=EXACT_RTOL)


def test_every_op_matches_analyze(case):
    """Not only the sum: each op's time, so no error hides in a compensating one."""
    m, hw, kw, sm = case
    a = analyze(m, hw, Scenario(phase="decode", batch=37, context_len=3001, **kw))
    got = sm.op_times(sm.decode, sm.decode_features(37, 3001))
    want = np.array([p.time_s for p in a.points])
    assert sm.decode.names == tuple(p.op.name for p in a.points)
    np.testing.assert_allclose(got, want, rtol=EXACT_RTOL)  # comm ops included


def test_vectorised_grid_equals_pointwise(case):
    sm = case[3]
    B = np.array([1, 8, 64, 250])[:, None]
    C = np.array([10, 1000, 7000])[None, :]
    grid = sm.decode_time(B, C)
    assert grid.shape == (4, 3)
    for i in range(4):
        for j in range(3):
            assert grid[i, j] == pytest.approx(float(sm.decode_time(B[i, 0], C[0, j])),
                                               rel=1e-12)


def test_kv_dtype_rescale_matches_analyze_with_that_kv_dtype(case):
    m, hw, kw, sm = case
    if not hw.has_dtype("fp8"):
        pytest.skip("no fp8 KV cache on this device in this core")
    a = analyze(m, hw, Scenario(phase="decode", batch=48, context_len=4000,
                                **dict(kw, kv_dtype="fp8")))
    assert float(sm.decode_time(48, 4000, kv_bits=8)) == pytest.approx(a.totals.time_s,
                                                                       rel=rtol(kw, 48, 1))
    group = -(-48 // kw.get("attn_dp", 1))  # the busiest attention group's sequences
    assert float(sm.kv_bytes_per_seq(4001, kv_bits=8)) * group == pytest.approx(
        a.memory.kv_cache_bytes, rel=1e-9)


def test_memory_matches_analyze(case):
    m, hw, kw, sm = case
    a = analyze(m, hw, Scenario(phase="decode", batch=20, context_len=5000, **kw))
    assert sm.weights_bytes == a.memory.weights_bytes
    # the busiest attention group holds ceil(20 / attn_dp) of the sequences
    group = -(-20 // kw.get("attn_dp", 1))
    assert group * float(sm.kv_bytes_per_seq(5001)) == pytest.approx(
        a.memory.kv_cache_bytes, rel=1e-9)
    p = analyze(m, hw, Scenario(phase="prefill", batch=1, seq_len=3000, **kw))
    assert float(sm.activation_bytes(3000)) == pytest.approx(p.memory.activation_peak_bytes,
                                                             rel=1e-6)


def test_paged_kv_rounds_up_to_whole_blocks(case):
    m, sm = case[0], case[3]
    one = float(sm.kv_bytes_per_seq(1))
    if m.sliding_window:
        pytest.skip("windowed layers cap the cache")
    # 17 tokens in 16-token pages take two pages: 32 tokens' worth
    assert float(sm.kv_bytes_per_seq(17, block=16)) == pytest.approx(32 * one, rel=1e-12)
    assert float(sm.kv_bytes_per_seq(32, block=16)) == pytest.approx(32 * one, rel=1e-12)


def test_mixed_step_reduces_to_its_parts(case):
    sm = case[3]
    assert float(sm.mixed_time(40, 2000, 0, 1, 0)) == pytest.approx(
        float(sm.decode_time(40, 2000)), rel=1e-12)
    assert float(sm.mixed_time(0, 2000, 2, 700, 300)) == pytest.approx(
        float(sm.fill_time(2, 700, 300)), rel=1e-12)
    both = float(sm.mixed_time(40, 2000, 1, 1024, 0))
    # one kernel per token-wise op: cheaper than running the two steps back to back,
    # dearer than either alone
    assert max(float(sm.decode_time(40, 2000)), float(sm.fill_time(1, 1024, 0))) < both
    assert both < float(sm.decode_time(40, 2000)) + float(sm.fill_time(1, 1024, 0))


def test_efficiency_scales_the_roofs():
    m, hw = load_model("llama-3.1-8b"), load_hw("h100-sxm")
    sm = fit_step_model(m, hw, Scenario(ceiling="spec"))
    # spec ceilings have no fixed kernel cost: halving bandwidth doubles a memory-bound step
    # whose comm is absent (TP1)
    base = float(sm.decode_time(1, 100))
    slow = float(sm.decode_time(1, 100, Efficiency(1.0, 0.5, 1.0, None, None)))
    assert slow == pytest.approx(2 * base, rel=1e-9)
    # a fixed cost per kernel adds count x cost
    n = float(sm.decode.instances[~sm.decode.link].sum())
    fixed = float(sm.decode_time(1, 100, Efficiency(1.0, 1.0, 1.0, 3e-6, None)))
    assert fixed == pytest.approx(base + n * 3e-6, rel=1e-9)


def test_an_engine_streaming_every_expert_reads_all_expert_weights_at_any_batch():
    """Qwen3-30B-A3B bf16 on one H100, spec roofline: 48 MoE layers of 128 experts, each
    expert gate_up 2 x 768 x 2048 and down 2048 x 768 weights at 2 bytes. Streaming every
    expert reads 48 x 128 x 3 x 768 x 2048 x 2 = 57.98 GB per step at 3.35 TB/s (17.3 ms),
    at batch 1 and at batch 16 alike; touching only the routed experts reads 8 of 128 at
    batch 1 (top-8 of one token)."""
    m, hw = load_model("qwen3-30b-a3b"), load_hw("h100-sxm")
    sm = fit_step_model(m, hw, Scenario(ceiling="spec"))
    weights = 48 * 128 * 3 * 768 * 2048 * 2
    every = Efficiency(moe_all_experts=("bf16",))

    def experts_s(batch, eff):
        return float(sm.breakdown(sm.decode, sm.decode_features(batch, 1000), eff)
                     ["experts.memory"])

    for batch in (1, 16):  # + the tokens' activations, under 0.1% here
        assert experts_s(batch, every) == pytest.approx(weights / 3.35e12, rel=2e-3)
    assert experts_s(1, Efficiency()) == pytest.approx(weights / 16 / 3.35e12, rel=2e-3)
    # the flag moves only the expert weights: the rest of the step is the same
    rest = float(sm.decode_time(16, 1000, every)) - experts_s(16, every)
    assert rest == pytest.approx(float(sm.decode_time(16, 1000)) - experts_s(16, Efficiency()),
                                 rel=1e-9)
    # an engine that streams every expert only for fp8 weights touches the routed ones here
    assert experts_s(1, Efficiency(moe_all_experts=("fp8",))) == experts_s(1, Efficiency())


def test_breakdown_parts_sum_to_the_step(case):
    """The residual report's breakdown splits a step without losing or double counting."""
    sm = case[3]
    eff = Efficiency(0.7, 0.8, 0.6, 5e-6, 20e-6, 0.5)
    for pm, phi in ((sm.decode, sm.decode_features(37, 3001)),
                    (sm.fill, sm.fill_features(3, 900, 0))):
        parts = sm.breakdown(pm, phi, eff)
        assert all(float(v) >= 0 for v in parts.values())
        total = sum(float(v) for v in parts.values())
        assert total == pytest.approx(float(sm.time(pm, phi, eff)), rel=1e-12)


@pytest.mark.parametrize("name,hw_name,kw", [
    ("phi-3-mini", "a100-sxm-80gb", dict(kv_dtype="fp8")),  # KV dequantized on Ampere
    ("gemma-2-9b", "l40s", dict(weight_dtype="int4")),  # weight-only dequantization
])
def test_spec_ceilings_with_dequantization_fit(name, hw_name, kw):
    """Under spec ceilings no fixed per-kernel cost applies; the dequantization time must not
    leave round-off residue that the fit reads as a varying fixed cost (profile and predict
    --ceiling spec refused these configurations)."""
    m, hw = load_model(name), load_hw(hw_name)
    sm = fit_step_model(m, hw, Scenario(ceiling="spec", **kw))
    for b, c in ((1, 100), (9, 3000)):
        a = analyze(m, hw, Scenario(phase="decode", batch=b, context_len=c, ceiling="spec",
                                    attention="flash", **kw))
        assert float(sm.decode_time(b, c)) == pytest.approx(a.totals.time_s, rel=EXACT_RTOL)
    a = analyze(m, hw, Scenario(phase="prefill", batch=2, seq_len=700, ceiling="spec",
                                attention="flash", **kw))
    assert float(sm.fill_time(2, 700, 0)) == pytest.approx(a.totals.time_s, rel=EXACT_RTOL)
