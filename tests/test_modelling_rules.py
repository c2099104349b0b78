"""ARCHITECTURE.md's "modelling rules peers get wrong", one test (or more) each.

Expected values are derived by hand in each test from the model's published shape, not taken
from perfscope's own output.
"""

from __future__ import annotations

import pytest

from perfscope.analytic.moe import expected_experts
from perfscope.api import Scenario, analyze, load_hw, load_model
from perfscope.errors import InputError, UnsupportedDtypeError

BF16 = 2


def run(model: str, hw: str = "h100-sxm", **kw):
    return analyze(load_model(model), load_hw(hw), Scenario(**kw))


def op(a, name: str):
    return next(p.op for p in a.points if p.op.name == name)


def point(a, name: str):
    return next(p for p in a.points if p.op.name == name)


# ---- GQA / MQA ------------------------------------------------------------------------------

def test_gqa_qkv_and_o_use_query_heads_kv_use_kv_heads():
    # Llama-3.1-8B: hidden 4096, 32 query heads, 8 KV heads, head_dim 128
    B, S = 2, 512
    a = run("llama-3.1-8b", phase="prefill", batch=B, seq_len=S)
    N = B * S
    qkv = op(a, "attn.qkv_proj")
    assert qkv.flops == 2 * N * 4096 * (32 * 128 + 2 * 8 * 128)  # K, V: 1024 wide, not 4096
    assert qkv.weight_bytes == 4096 * 6144 * BF16
    o = op(a, "attn.o_proj")
    assert o.flops == 2 * N * (32 * 128) * 4096
    # KV written by the step: 8 heads of K and V per token, not 32
    core = op(a, "attn.core")
    assert core.kv_write_bytes == N * 2 * 8 * 128 * BF16


def test_mqa_decode_reads_one_kv_head():
    # Gemma-2B: 8 query heads, 1 KV head (MQA), head_dim 256, 18 layers
    B, C = 4, 1000
    a = run("gemma-2b", phase="decode", batch=B, context_len=C)
    core = op(a, "attn.core")
    assert core.kv_read_bytes == B * (C + 1) * 2 * 1 * 256 * BF16
    assert core.flops == 2 * B * 8 * (C + 1) * (256 + 256)  # all 8 query heads attend


# ---- gated MLP ---------------------------------------------------------------------------------

def test_gated_mlp_activation_sized_by_intermediate():
    # Llama-3.1-8B intermediate 14336: silu(gate) * up reads 2 x N x 14336, writes N x 14336
    B, S = 1, 1024
    act = op(run("llama-3.1-8b", phase="prefill", batch=B, seq_len=S), "mlp.act")
    N = B * S
    assert act.act_in_bytes == 2 * N * 14336 * BF16
    assert act.act_out_bytes == N * 14336 * BF16
    assert act.flops == N * 14336 * (4 + 1)  # silu 4 ops + the gating multiply
    gate_up = op(run("llama-3.1-8b", phase="prefill", batch=B, seq_len=S), "mlp.gate_up_proj")
    assert gate_up.flops == 2 * N * 4096 * 2 * 14336


# ---- flash attention ---------------------------------------------------------------------------

def test_flash_keeps_scores_on_chip_and_does_half_the_causal_work():
    B, S = 1, 4096
    a = run("llama-3.1-8b", phase="prefill", batch=B, seq_len=S)
    core = op(a, "attn.core")
    H, KV, d = 32, 8, 128
    # no S x S term: Q in, K and V once per KV head, O out
    assert core.act_in_bytes == B * S * (H * d + 2 * KV * d) * BF16
    assert core.act_out_bytes == B * S * H * d * BF16
    # causal: query i attends to i + 1 keys -> S (S + 1) / 2 dot products per head
    assert core.flops == 2 * B * H * (S * (S + 1) / 2) * (d + d)
    unfused = run("llama-3.1-8b", phase="prefill", batch=B, seq_len=S, attention="unfused")
    scores = B * H * S * S
    assert op(unfused, "attn.score").act_out_bytes == scores * BF16
    assert op(unfused, "attn.softmax").act_in_bytes == scores * BF16
    full = op(unfused, "attn.score").flops + op(unfused, "attn.value").flops
    assert full == 2 * scores * (d + d)
    assert core.flops / full == pytest.approx(0.5, rel=1e-3)


# ---- decode and the KV cache ------------------------------------------------------------------

def test_decode_reads_cache_once_and_writes_one_token():
    B, C = 8, 2048
    a = run("llama-3.1-8b", phase="decode", batch=B, context_len=C)
    core = op(a, "attn.core")
    per_token = 2 * 8 * 128 * BF16  # K and V, 8 KV heads
    assert core.kv_read_bytes == B * (C + 1) * per_token
    assert core.kv_write_bytes == B * 1 * per_token  # not B x (C + 1)
    assert a.memory.kv_cache_bytes == 32 * B * (C + 1) * per_token


def test_batch1_decode_bytes_are_weights_plus_kv_plus_small_activations():
    C = 4096
    a = run("llama-3.1-8b", phase="decode", batch=1, context_len=C)
    m = load_model("llama-3.1-8b")
    # every weight is read once, except the embedding table: one row per token
    weights = (m.params - m.vocab * m.hidden + m.hidden) * BF16
    kv = 32 * (C + 1) * 2 * 8 * 128 * BF16
    total = a.totals.bytes
    assert total >= weights + kv
    assert (total - weights - kv) / total < 0.002


def test_prefill_cache_holds_the_prompt():
    B, S = 3, 1000
    a = run("qwen2.5-7b", phase="prefill", batch=B, seq_len=S)
    # Qwen2.5-7B: 28 layers, 4 KV heads of 128
    assert a.memory.kv_cache_bytes == 28 * B * S * 2 * 4 * 128 * BF16


def test_chunked_prefill_attends_to_cache_and_chunk():
    T, C = 512, 3000
    a = run("llama-3.1-8b", phase="chunked_prefill", batch=1, seq_len=T, context_len=C)
    core = op(a, "attn.core")
    keys = T * C + T * (T + 1) / 2
    assert core.flops == 2 * 32 * keys * 256
    assert core.kv_read_bytes == (C + T) * 2 * 8 * 128 * BF16
    assert a.memory.kv_cache_bytes == 32 * (C + T) * 2 * 8 * 128 * BF16


# ---- LM head and embeddings ----------------------------------------------------------------------

def test_lm_head_only_on_last_prompt_token():
    B, S = 4, 2048
    lm = op(run("llama-3.1-8b", phase="prefill", batch=B, seq_len=S), "lm_head")
    assert lm.flops == 2 * B * 4096 * 128256
    assert lm.shape["m"] == B


@pytest.mark.parametrize(("name", "tied"), [("llama-3.1-8b", False), ("gpt2", True),
                                             ("qwen2.5-0.5b", True)])
def test_embeddings_and_lm_head_in_memory_tied_once(name, tied):
    m = load_model(name)
    a = run(name, phase="decode", batch=1, context_len=16)
    assert m.tied_embeddings is tied
    assert a.memory.weights_bytes == m.params * BF16  # params count a tied matrix once


# ---- MoE -----------------------------------------------------------------------------------------

def test_expected_distinct_experts_formula():
    # 1 token touches exactly top_k; many tokens approach all experts; hand values
    assert expected_experts(128, 8, 1) == pytest.approx(8)
    assert expected_experts(128, 8, 64) == pytest.approx(128 * (1 - (120 / 128) ** 64))
    assert expected_experts(8, 2, 10_000) == pytest.approx(8)


@pytest.mark.parametrize("batch", [1, 16, 256])
def test_moe_decode_reads_only_touched_experts(batch):
    # Qwen3-30B-A3B: 128 experts, top-8, expert width 768, hidden 2048
    a = run("qwen3-30b-a3b", phase="decode", batch=batch, context_len=1024)
    gate_up = op(a, "moe.experts_gate_up")
    one_expert = 2 * 768 * 2048 * BF16
    touched = 128 * (1 - (1 - 8 / 128) ** batch)
    assert gate_up.weight_bytes == pytest.approx(touched * one_expert, rel=1e-12)
    assert gate_up.flops == 2 * batch * 8 * 2 * 768 * 2048  # top-k assignments
    assert 8 <= touched < 128  # neither all experts nor only top-k (for batch > 1)


def test_mixtral_prefill_touches_all_experts():
    a = run("mixtral-8x7b", "h200-sxm", phase="prefill", batch=1, seq_len=512)
    down = op(a, "moe.experts_down")
    assert down.weight_bytes == pytest.approx(8 * 14336 * 4096 * BF16, rel=1e-9)


# ---- parallelism -------------------------------------------------------------------------------

def test_tp_adds_two_allreduces_per_layer_timed_by_the_link():
    B, C, tp = 8, 1024, 4
    a = run("llama-3.1-70b", phase="decode", batch=B, context_len=C, tp=tp)
    hw = load_hw("h100-sxm")
    link = hw.gpu_link
    assert link is not None and link.name == "nvlink4"
    for name in ("tp.attn_allreduce", "tp.mlp_allreduce"):
        p = point(a, name)
        assert p.op.kind == "comm" and p.op.count == 80 and p.bound == "comm"
        assert p.link == "nvlink4" and p.algorithm == "ring/LL"
        msg = B * 8192 * BF16  # 128 KiB
        # NCCL's tuner (tuning.cc): ring/LL latency baseLat 6.6 + 2(p-1) steps x 0.6 us; LL
        # moves 1/4 of the 450 GB/s bus rate, capped at Hopper's llMaxBw 87.7 GB/s; algorithm
        # bandwidth = bus x p / (2(p-1)). LL128 (14 + 6 x 1.9 us) and Simple (8.4 + 6 x 3.4 us)
        # already cost more in latency than LL's whole time.
        expect = (6.6 + 2 * (tp - 1) * 0.6) * 1e-6 + msg / (min(450e9 / 4, 87.7e9) * tp /
                                                           (2 * (tp - 1)))
        assert p.time_s == pytest.approx(expect, rel=1e-12)
    # the same step over PCIe (L40S has no NVLink) pays more per all-reduce
    pcie = run("llama-3.1-8b", "l40s", phase="decode", batch=B, context_len=C, tp=2)
    nvl = run("llama-3.1-8b", "h100-sxm", phase="decode", batch=B, context_len=C, tp=2)
    assert point(pcie, "tp.attn_allreduce").time_s > point(nvl, "tp.attn_allreduce").time_s
    assert point(pcie, "tp.attn_allreduce").link == "pcie4-x16"


def test_tp_shards_weights_and_kv_heads():
    one = run("llama-3.1-70b", "h200-sxm", phase="decode", batch=4, context_len=512)
    four = run("llama-3.1-70b", "h200-sxm", phase="decode", batch=4, context_len=512, tp=4)
    assert four.memory.kv_cache_bytes == one.memory.kv_cache_bytes / 4  # 8 KV heads / 4
    norms = (2 * 80 + 1) * 8192 * BF16  # RMSNorm weights are replicated on every rank
    assert four.memory.weights_bytes == (one.memory.weights_bytes - norms) / 4 + norms
    # TP beyond the KV heads replicates them: 8 KV heads on 16 ranks keep 1 each
    sixteen = run("llama-3.1-70b", "h200-sxm", phase="decode", batch=4, context_len=512, tp=16)
    assert sixteen.memory.kv_cache_bytes == one.memory.kv_cache_bytes / 8


def test_pipeline_latency_is_the_sum_of_stages_plus_transfers():
    kw = dict(phase="decode", batch=8, context_len=1024)
    one = run("llama-3.1-70b", "h200-sxm", **kw)
    two = run("llama-3.1-70b", "h200-sxm", pp=2, **kw)
    send = point(two, "pp.send")
    assert send.op.comm_bytes == 8 * 8192 * BF16
    # one send of 128 KiB (above NCCL's 16 KiB LL threshold: Simple): ring/Simple baseLat 8.4 us
    # + one NVLink step 3.4 us + bytes at 450 GB/s
    assert send.time_s == pytest.approx((8.4 + 3.4) * 1e-6 + 8 * 8192 * BF16 / 450e9)
    # latency does not divide: two stages run one after the other, plus the hand-off
    assert two.totals.time_s == pytest.approx(one.totals.time_s + send.time_s, rel=1e-9)
    # per-GPU work and memory do: the busiest stage holds half the layers
    assert two.totals.flops < 0.6 * one.totals.flops
    assert two.memory.kv_cache_bytes == one.memory.kv_cache_bytes / 2


def test_tp_degree_must_divide_heads():
    with pytest.raises(InputError, match=r"tp 3: .*\(--tp\)"):
        run("llama-3.1-8b", tp=3)


# ---- memory fit ----------------------------------------------------------------------------------

def test_memory_fit_and_largest_batch():
    big = run("llama-3.1-70b", phase="decode", batch=1, context_len=1024)
    assert big.memory.weights_bytes > 70e9 * BF16 * 0.99
    assert not big.memory.fits and big.memory.max_batch == 0  # 141 GB of weights on 80 GiB
    a = run("llama-3.1-8b", phase="decode", batch=1, context_len=8192)
    mb = a.memory.max_batch
    assert mb > 1
    usable = 81559 * 2**20 * 0.9  # what the driver exposes on an H100 80GB, less the reserve
    assert a.memory.usable_bytes == pytest.approx(usable)
    at = run("llama-3.1-8b", phase="decode", batch=mb, context_len=8192)
    over = run("llama-3.1-8b", phase="decode", batch=mb + 1, context_len=8192)
    assert at.memory.fits and not over.memory.fits


# ---- sliding window -----------------------------------------------------------------------------

def test_sliding_window_caps_attended_and_cached_tokens():
    # Mistral-7B v0.1: window 4096, 32 layers, 8 KV heads of 128
    B, C = 2, 10_000
    with pytest.raises(InputError):  # beyond its 32768 context
        run("mistral-7b", phase="decode", batch=B, context_len=40_000)
    a = run("mistral-7b", phase="decode", batch=B, context_len=C)
    core = op(a, "attn.core")
    assert core.kv_read_bytes == B * 4096 * 2 * 8 * 128 * BF16
    assert core.flops == 2 * B * 32 * 4096 * 256
    assert a.memory.kv_cache_bytes == 32 * B * 4096 * 2 * 8 * 128 * BF16
    # prefill past the window: query i attends to min(i + 1, W) keys
    S, W = 6000, 4096
    p = op(run("mistral-7b", phase="prefill", batch=1, seq_len=S), "attn.core")
    keys = W * (W + 1) / 2 + (S - W) * W
    assert p.flops == 2 * 32 * keys * 256


def test_gemma2_alternates_sliding_and_global_layers():
    a = run("gemma-2-9b", phase="decode", batch=1, context_len=8000)
    sliding = op(a, "attn.core@sliding")
    glob = op(a, "attn.core@global")
    assert sliding.count == glob.count == 21  # 42 layers, every other one sliding
    assert sliding.kv_read_bytes == 4096 * 2 * 8 * 256 * BF16
    assert glob.kv_read_bytes == 8001 * 2 * 8 * 256 * BF16


# ---- MLA ----------------------------------------------------------------------------------------

def test_mla_cache_is_latent_plus_rotary_key_and_not_split_by_tp():
    B, C = 4, 2000
    a = run("deepseek-v3", "h200-sxm", phase="decode", batch=B, context_len=C, tp=8)
    assert a.memory.kv_cache_bytes == 61 * B * (C + 1) * (512 + 64) * BF16
    core = op(a, "attn.core")
    # absorbed decode: 128 / 8 heads per rank score against the 576-wide latent+rope key and
    # sum the 512-wide latent values
    assert core.flops == 2 * B * 16 * (C + 1) * (576 + 512)
    assert core.kv_read_bytes == B * (C + 1) * 576 * BF16


# ---- dtypes and quantization ---------------------------------------------------------------------

def test_roofline_uses_dense_not_sparse_peaks():
    a = run("llama-3.1-8b", phase="prefill", batch=8, seq_len=2048)
    gemm = point(a, "mlp.gate_up_proj")
    assert gemm.bound == "compute"
    assert gemm.peak_flops_per_s == pytest.approx(989.4e12)  # H100 SXM bf16 dense, not 1979


def test_int4_weights_carry_group_scales_and_dequant_work():
    a = run("llama-3.1-8b", phase="decode", batch=1, context_len=128, weight_dtype="int4",
            group_size=128)
    q = op(a, "attn.qkv_proj")
    # 4 bits + (fp16 scale + fp16 zero) / 128 per weight
    assert q.weight_bytes == 6144 * 4096 * (4 + 32 / 128) / 8
    assert q.dequant_flops == 2 * 6144 * 4096
    assert q.dtype == "bf16"  # weight-only: the tensor cores run bf16


def test_devices_refuse_dtypes_they_lack():
    # fp8 tensor math is what an A100 lacks; fp8 storage (W8A16, KV) is tested in
    # test_model_precision.py
    with pytest.raises(UnsupportedDtypeError, match=r"act_dtype fp8: .*no fp8 tensor math"):
        run("llama-3.1-8b", "a100-sxm-80gb", weight_dtype="fp8", act_dtype="fp8")
    with pytest.raises(UnsupportedDtypeError):
        run("llama-3.1-8b", "v100-sxm2-32gb", weight_dtype="bf16")
    v100 = run("llama-2-7b", "v100-sxm2-32gb", phase="decode", batch=1, context_len=64)
    assert v100.precision.act == "fp16"  # the default falls back where bf16 is missing
    fp8 = run("llama-3.1-8b", "h100-sxm", phase="prefill", batch=4, seq_len=2048,
              weight_dtype="fp8")
    assert point(fp8, "mlp.gate_up_proj").peak_flops_per_s == pytest.approx(1978.9e12)


# ---- ceilings ----------------------------------------------------------------------------------

def test_empirical_ceilings_use_measured_rates_and_fixed_kernel_costs():
    kw = dict(phase="decode", batch=1, context_len=512)
    spec = run("llama-3.1-8b", "a100-sxm-80gb", **kw)
    emp = run("llama-3.1-8b", "a100-sxm-80gb", ceiling="empirical", **kw)
    hw = load_hw("a100-sxm-80gb")
    assert hw.empirical is not None and hw.empirical.memory_bandwidth_bytes_s is not None
    bw = hw.empirical.memory_bandwidth_bytes_s
    fixed = 6.5e-6  # fitted on this part (LLM-001), in its spec file
    assert hw.kernel_overhead("empirical") == (fixed, "measured")
    for s, e in zip(spec.points, emp.points, strict=True):
        assert s.ceiling == "spec"
        if e.bound == "memory":
            assert e.ceiling == "measured"
            # the measured bandwidth, plus the fixed cost every kernel pays
            assert e.time_s == pytest.approx(e.bytes / bw + fixed)
            assert s.time_s == pytest.approx(s.bytes / 2039e9)  # spec: the pure roofline


def test_w8a8_quantizes_gemm_inputs_where_they_are_produced():
    B, S = 1, 1024
    a = run("llama-3.1-8b", phase="prefill", batch=B, seq_len=S, weight_dtype="fp8")
    N = B * S
    assert a.precision.act == "fp8" and a.precision.compute == "fp8"
    # fused add + RMSNorm + per-token quant: the residual out at 2 bytes, the GEMM input at 1
    assert op(a, "attn.norm").act_out_bytes == N * 4096 * (2 + 1)
    assert op(a, "attn.qkv_proj").act_in_bytes == N * 4096 * 1
    assert op(a, "mlp.act").act_out_bytes == N * 14336 * 1
    quant = op(a, "attn.o_quant")  # attention output -> fp8 for o_proj, its own kernel
    assert (quant.act_in_bytes, quant.act_out_bytes) == (N * 4096 * 2, N * 4096 * 1)
    bf16 = run("llama-3.1-8b", phase="prefill", batch=B, seq_len=S)
    assert not any(p.op.name == "attn.o_quant" for p in bf16.points)


def test_package_exposes_the_api_lazily():
    import subprocess
    import sys

    code = ("import sys, perfscope; assert 'perfscope.analysis' not in sys.modules; "
            "from perfscope import analyze, Scenario, load_hw, load_model; "
            "a = analyze(load_model('gpt2'), load_hw('l40s'), Scenario(phase='prefill', "
            "batch=1, seq_len=16)); print(a.model.params)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "124439808"  # GPT-2 small, HF's published 124M


# ---- issue 6, item 8: smaller modelling errors, each derived by hand ----------------------

def test_mla_unabsorbed_w8a8_reads_the_16_bit_latent_then_quantizes_it():
    # DeepSeek-V3 chunk of 512 at 2000 cached, W8A8 fp8 (its checkpoint), bf16 KV cache,
    # no absorption: kv_b_proj up-projects all 2512 latents (kv_lora_rank 512)
    T, C = 512, 2000
    a = run("deepseek-v3", "h200-sxm", phase="chunked_prefill", batch=1, seq_len=T,
            context_len=C, tp=8, mla_absorb=False)
    assert a.precision.act == "fp8" and a.precision.kv == "bf16"
    q = op(a, "attn.kv_b_input")
    # new tokens from kv_a_norm (bf16) + cached latents from the bf16 cache, out at 1 byte
    assert q.act_in_bytes == (T * 2 + C * 2) * 512
    assert q.act_out_bytes == (T + C) * 512 * 1
    assert op(a, "attn.kv_b_proj").act_in_bytes == (T + C) * 512 * 1
    bf16 = run("deepseek-v3", "h200-sxm", phase="chunked_prefill", batch=1, seq_len=T,
               context_len=C, tp=8, mla_absorb=False, weight_dtype="bf16")
    assert op(bf16, "attn.kv_b_proj").act_in_bytes == (T + C) * 512 * 2
    assert not any(p.op.name == "attn.kv_b_input" for p in bf16.points)


def test_chunk_longer_than_the_window_reads_window_minus_one_plus_the_chunk():
    # Mistral-7B (window 4096): an 8000-token chunk at 8000 cached. Its first query needs the
    # 4095 tokens before it, its last one the chunk itself: 4095 + 8000 = 12095 tokens
    T = C = 8000
    a = run("mistral-7b", "h200-sxm", phase="chunked_prefill", batch=1, seq_len=T,
            context_len=C)
    core = op(a, "attn.core")
    assert core.kv_read_bytes == 12095 * 2 * 8 * 128 * BF16
    assert core.shape["kv_len"] == 12095
    assert core.flops == 2 * 32 * (4096 * T) * 256  # every query still sees 4096 keys
    # a chunk inside the window reads the whole cache, as before
    small = op(run("mistral-7b", "h200-sxm", phase="chunked_prefill", batch=1, seq_len=512,
                   context_len=1000), "attn.core")
    assert small.kv_read_bytes == 1512 * 2 * 8 * 128 * BF16


def test_unfused_gqa_copies_kv_out_to_every_query_head():
    # Llama-3.1-8B eager decode: repeat_kv expands 8 KV heads to 32 before the two bmm's
    B, C, d = 2, 1000, 128
    a = run("llama-3.1-8b", phase="decode", batch=B, context_len=C, attention="unfused")
    rep = op(a, "attn.repeat_kv")
    K = C + 1
    assert rep.kv_read_bytes == B * K * 2 * 8 * d * BF16
    assert rep.act_out_bytes == B * K * 2 * 32 * d * BF16
    assert rep.flops == 0
    score = op(a, "attn.score")
    assert score.kv_read_bytes == 0
    assert score.act_in_bytes == B * 32 * d * BF16 + B * K * 32 * d * BF16  # q + expanded K
    value = op(a, "attn.value")
    assert value.act_in_bytes == B * 32 * K * BF16 + B * K * 32 * d * BF16  # probs + exp. V
    # multi-head attention has nothing to expand
    mha = run("llama-2-7b", phase="decode", batch=B, context_len=C, attention="unfused")
    assert not any(p.op.name == "attn.repeat_kv" for p in mha.points)


def test_group_size_wider_than_a_gemm_input_is_refused():
    with pytest.raises(InputError, match=r"group_size 8192: wider than the 4096-element input"):
        run("llama-3.1-8b", weight_dtype="int4", group_size=8192)
    # 4096 fits qkv (4096 wide) but not down_proj (14336 = 3.5 x 4096)
    with pytest.raises(InputError, match=r"group_size 4096: does not divide the 14336"):
        run("llama-3.1-8b", weight_dtype="int4", group_size=4096)
    run("llama-3.1-8b", weight_dtype="int4", group_size=256)


def test_per_head_qk_norm_reads_its_head_dim_weights_once():
    # Qwen3-8B: q_norm and k_norm are one head_dim (128) vector each, shared by all heads
    B, S = 1, 1000
    a = run("qwen3-8b", phase="prefill", batch=B, seq_len=S)
    n = op(a, "attn.qk_norm")
    assert n.weight_bytes == 2 * 128 * BF16  # not (32 + 8) x 128
    assert n.act_in_bytes == B * S * (32 + 8) * 128 * BF16  # every head's q and k is normed
