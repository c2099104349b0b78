"""The numbers behind perfscope profile, against hand derivations written here."""

from __future__ import annotations

import math

import pytest

from perfscope.api import Scenario, analyze, load_hw, load_model
from perfscope.report.study import build_study, first_batch
from perfscope.report.summary import serving_summary
from perfscope.serving.engines import get_engine

H100_BF16 = 989.4e12  # dense tensor FLOP/s (NVIDIA datasheet, sparse figure / 2)
H100_BW = 3.35e12  # HBM3 bytes/s
# Llama-3.1-8B (config.json): 32 layers, hidden 4096, 32 heads, 8 KV heads x 128, MLP 14336,
# vocab 128256, untied; 8,030,261,248 parameters (HF safetensors)
L, H, KV, D, I, V, P = 32, 4096, 8, 128, 14336, 128256, 8_030_261_248


@pytest.fixture(scope="module")
def llama():
    return load_model("llama-3.1-8b")


@pytest.fixture(scope="module")
def h100():
    return load_hw("h100-sxm")


def kernels(a) -> int:
    """Compute-op instances of a step: each pays the engine's fixed cost per kernel."""
    return sum(p.op.count for p in a.points if p.op.unit != "link")


def test_decode_batch1_tpot_is_weights_and_cache_over_bandwidth(llama, h100):
    # batch 1 decode streams every weight once (the embedding table is a lookup: one row)
    # and reads the cache once: memory-bound
    s = serving_summary(llama, h100, Scenario(), batch=1, isl=2048, osl=2)
    ctx = 2048  # mean cached context over 2 outputs: 2048 + (2 - 1) // 2
    kv_read = 2 * L * KV * D * 2 * ctx  # K and V, bf16
    hand = (2 * (P - V * H) + kv_read) / H100_BW
    assert s.decode.scenario.context_len == ctx
    assert s.decode_step_s == pytest.approx(hand, rel=0.02)  # the roofline step
    assert s.decode.totals.bound == "memory"
    # the served TPOT of one request (nobody else's prefill in its decode window) is that
    # step plus the neutral engine's fixed cost per kernel and per scheduler step
    eng = get_engine("neutral")
    served = hand + kernels(s.decode) * eng.kernel_overhead_s + eng.step_overhead_s
    assert s.tpot_s == pytest.approx(served, rel=0.02)
    assert s.tokens_per_s_per_user == pytest.approx(1 / s.tpot_s)
    assert s.engine == "neutral" and s.prediction is not None


def test_prefill_ttft_is_the_flops_over_the_tensor_peak(llama, h100):
    s = serving_summary(llama, h100, Scenario(), batch=1, isl=2048, osl=16)
    S = 2048
    linear = P - 2 * V * H  # every weight but the embedding table and the LM head
    gemm = 2 * S * linear / H100_BF16
    lm_head = 2 * V * H / H100_BW  # on the last prompt token only: streams its weights
    attn = 2 * 2 * (S * S / 2) * 32 * D * L / H100_BF16  # QK^T and PV, causal half
    tk = s.prefill.totals.time_by_kind
    assert tk["gemm"] + tk["attention"] == pytest.approx(gemm + lm_head + attn, rel=0.01)
    assert s.prefill.totals.bound == "compute"
    # the rest (norms, rotary, the activation) is memory-bound and small
    assert gemm + attn < s.prefill_step_s < 1.15 * (gemm + lm_head + attn)
    # one request's TTFT: its prefill step, with the engine's fixed costs per kernel, per
    # step and per request (HTTP, tokenization)
    eng = get_engine("neutral")
    served = s.prefill_step_s + kernels(s.prefill) * eng.kernel_overhead_s + \
        eng.step_overhead_s + eng.ttft_overhead_s
    assert s.ttft_s == pytest.approx(served, rel=1e-6)
    assert s.e2e_s == pytest.approx(s.ttft_s + 15 * s.tpot_s)


def test_throughput_per_gpu_divides_by_the_group(llama, h100):
    s = serving_summary(llama, h100, Scenario(tp=2), batch=16, isl=1024, osl=128)
    assert s.gpus == 2
    # closed loop: 16 users each get 128 tokens per end-to-end latency, over 2 GPUs
    assert s.tokens_per_s_per_gpu == pytest.approx(16 * 128 / s.e2e_s / 2)
    assert s.decode.scenario.context_len == 1024 + 127 // 2
    assert s.final.scenario.context_len == 1024 + 127  # memory at the last token


def test_engine_changes_the_serving_figures_not_the_roofline(llama, h100):
    a = serving_summary(llama, h100, Scenario(), batch=8, isl=1024, osl=64)
    b = serving_summary(llama, h100, Scenario(), batch=8, isl=1024, osl=64, engine="sglang")
    assert b.engine == "sglang" and a.engine == "neutral"
    assert a.decode_step_s == b.decode_step_s and a.prefill_step_s == b.prefill_step_s
    assert a.ttft_s != b.ttft_s


def test_decode_gemms_turn_compute_bound_where_intensity_reaches_the_ridge(llama, h100):
    st = build_study(llama, [h100], Scenario(), batch=16, isl=2048, osl=256)
    h = st.hws[0]
    ridge = H100_BF16 / H100_BW

    def crossover(n: int, k: int) -> int:
        # m x n x k GEMM, bf16: 2mnk FLOPs over 2(nk + mk + mn) bytes >= ridge
        return math.ceil(ridge * n * k / (n * k - ridge * (n + k)))

    # the MLP's two GEMMs hold most of the GEMM time; the step's verdict sits between theirs
    lo, hi = sorted((crossover(2 * I, H), crossover(H, I)))
    assert lo <= h.gemm_compute_batch <= hi
    # the KV cache read grows with the batch as fast as the GEMM FLOPs: never compute-bound
    assert h.step_compute_batch is None


def test_largest_batch_that_fits_is_the_kv_cache_in_the_free_memory(llama, h100):
    st = build_study(llama, [h100], Scenario(), batch=16, isl=2048, osl=256)
    h = st.hws[0]
    usable = 0.9 * 80 * 2**30
    weights = 2 * P
    per_seq = 2 * L * KV * D * 2 * (2048 + 256)  # K and V at the last token, bf16
    hand = (usable - weights) / per_seq
    assert h.kv_limit_batch in (math.floor(hand), math.floor(hand) - 1)  # activations
    # beyond it, the sweep says it does not fit
    for p in h.sweep:
        assert p.spec.final.memory.fits == (p.batch <= h.kv_limit_batch)
    # the longest context at batch 16: the same budget over 16 sequences
    ctx = (usable - weights) / (16 * 2 * L * KV * D * 2)
    assert h.context_limit is not None and abs(h.context_limit - ctx) / ctx < 0.01


def test_first_batch_is_the_smallest_that_holds():
    assert first_batch(lambda b: b >= 300) == 300
    assert first_batch(lambda b: True) == 1
    assert first_batch(lambda b: False, hi=1024) is None


def test_spec_is_never_slower_than_empirical(llama, h100):
    st = build_study(llama, [h100, load_hw("a100-sxm-80gb")], Scenario(), batch=8, isl=512,
                     osl=64, batches=(1, 8, 64))
    for h in st.hws:
        for p in h.sweep:
            assert p.spec.tpot_s <= p.empirical.tpot_s
            assert p.spec.ttft_s <= p.empirical.ttft_s
        assert [p.batch for p in h.sweep] == [1, 8, 64]


def test_sweep_rows_equal_single_analyses(llama, h100):
    from perfscope.report.sweep import grid, run_sweep

    # Volta has no fp8 at all (not even as a storage format engines dequantize): refused
    rows = run_sweep({"model": ["llama-3.1-8b"], "hardware": ["h100-sxm", "v100-sxm2-32gb"],
                      "phase": ["decode"], "batch": [1, 64], "weight_dtype": ["fp16", "fp8"]},
                     {"context_len": 1024})
    assert len(rows) == 8 == len(grid({"a": [1, 2], "b": [1, 2], "c": [1, 2]}))
    bad = [r for r in rows if r["error"]]
    assert [(r["hardware"], r["weight_dtype"]) for r in bad] == [("v100-sxm2-32gb", "fp8")] * 2
    ok = next(r for r in rows if r["hardware"] == "h100-sxm" and r["batch"] == 64
              and r["weight_dtype"] == "fp8")
    a = analyze(llama, h100, Scenario(phase="decode", batch=64, context_len=1024,
                                      weight_dtype="fp8"))
    assert ok["time_s"] == a.totals.time_s and ok["max_batch"] == a.memory.max_batch
    assert ok["tokens_per_s_per_user"] == pytest.approx(1 / a.totals.time_s)
