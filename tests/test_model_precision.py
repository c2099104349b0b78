"""Checkpoint formats, fp8/int8 as storage formats, NVFP4 (issue 6, items 5 and 6, and fp4).

Byte counts are derived by hand from each format's published layout in the tests.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from perfscope import Scenario, analyze, load_hw, load_model
from perfscope.errors import InputError, UnsupportedDtypeError
from perfscope.specs.model import model_from_config, read_config

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "workloads" / "models"


def run(model, hw="h100-sxm", **kw):
    m = load_model(model) if isinstance(model, str) else model
    return analyze(m, load_hw(hw), Scenario(**kw))


def op(a, name):
    return next(p.op for p in a.points if p.op.name == name)


def with_quant(name: str, quant: dict):
    raw = read_config(MODELS / f"{name}.json") | {"quantization_config": quant}
    return model_from_config(raw, f"{name}-q")


# ---- checkpoint formats (item 6) ---------------------------------------------------------------

def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def _fp8_block(rows: int, cols: int) -> int:
    # e4m3 elements, one fp32 weight_scale_inv per 128 x 128 block (DeepSeek-V3 README_WEIGHTS)
    return rows * cols + _ceil(rows, 128) * _ceil(cols, 128) * 4


def test_deepseek_v3_runs_its_fp8_checkpoint_and_fits_on_8_h200():
    a = run("deepseek-v3", "h200-sxm", phase="decode", batch=1, context_len=4096, tp=8)
    p = a.precision
    assert (str(p.weight), p.act, p.compute, p.weight_source) == \
        ("fp8-b128x128", "fp8", "fp8", "checkpoint")
    assert "128x128 blocks" in p.checkpoint and p.scheme.startswith("W8A8 fp8")
    # per GPU at TP 8 (16 of 128 heads); q_a / kv_a replicated; experts whole (ep 1 splits
    # each expert 8 ways: 2048 / 8 = 256 wide); embeddings, router, norms in bf16
    H, h, E, bf = 16, 7168, 256, 2
    attn = (_fp8_block(1536, h) + 1536 * bf + _fp8_block(H * 192, 1536) + _fp8_block(576, h)
            + 512 * bf + _fp8_block(H * 256, 512) + _fp8_block(h, H * 128) + 2 * h * bf)
    dense = _fp8_block(2 * 2304, h) + _fp8_block(h, 2304)
    expert = _fp8_block(2 * 256, h) + _fp8_block(h, 256)
    moe = E * h * bf + E * bf + E * expert + expert  # router, its bias, 256 routed, 1 shared
    outside = 2 * _ceil(129280, 8) * h * bf + h * bf
    expect = 61 * attn + 3 * dense + 58 * moe + outside
    assert a.memory.weights_bytes == pytest.approx(expect, rel=1e-12)
    assert a.memory.fits  # 85.1 GB of the 0.9 x 141 GB an H200 leaves
    j = a.to_json()
    assert j["precision"]["weight_source"] == "checkpoint"
    assert j["scenario"]["weight_dtype"] == "fp8-b128x128"


def test_flags_override_the_checkpoint():
    a = run("deepseek-v3", "h200-sxm", phase="decode", batch=1, context_len=64, tp=8,
            weight_dtype="bf16")
    assert (str(a.precision.weight), a.precision.weight_source) == ("bf16", "weight_dtype")
    assert not a.memory.fits  # 671 B parameters at 2 bytes on 8 x 141 GB


def test_qwen3_235b_fp8_blocks_forbid_tp8_but_not_ep():
    m = load_model("qwen3-235b-a22b-fp8")
    assert m.params == load_model("qwen3-235b-a22b").params
    four = run(m, "h200-sxm", phase="decode", batch=8, context_len=1024, tp=4)
    assert str(four.precision.weight) == "fp8-b128x128" and four.memory.fits
    # tp 8 cuts each 1536-wide expert into 192-wide shards: not whole 128 blocks (vLLM refuses)
    with pytest.raises(InputError, match=r"tp 8: .*192-wide shards.*128-wide fp8 scale blocks"):
        run(m, "h200-sxm", phase="decode", batch=8, context_len=1024, tp=8)
    assert run(m, "h200-sxm", phase="decode", batch=8, context_len=1024, tp=8, ep=8).memory.fits


def test_awq_int4_groups_with_fp16_scales_and_4bit_zeros():
    m = with_quant("llama-3.1-8b", {"quant_method": "awq", "bits": 4, "group_size": 128,
                                    "zero_point": True, "version": "gemm"})
    a = run(m, phase="decode", batch=1, context_len=64)
    assert a.precision.scheme.startswith("W4A16 int4") and a.precision.act == "bf16"
    qkv = op(a, "attn.qkv_proj")
    # 4 bits per weight + per (row, group of 128): fp16 scale + packed 4-bit zero
    assert qkv.weight_bytes == 6144 * 4096 / 2 + 6144 * (4096 // 128) * (16 + 4) / 8
    assert qkv.dequant_flops == 2 * 6144 * 4096


def test_gptq_per_channel_and_compressed_tensors_formats():
    gptq = with_quant("llama-3.1-8b", {"quant_method": "gptq", "bits": 8, "group_size": -1,
                                       "desc_act": False, "sym": True})
    a = run(gptq, phase="decode", batch=1, context_len=64)
    assert str(a.precision.weight) == "int8" and a.precision.act == "bf16"
    assert op(a, "attn.o_proj").weight_bytes == 4096 * 4096 + 4096 * 2  # one fp16 per row
    ct = {"quant_method": "compressed-tensors", "format": "float-quantized",
          "config_groups": {"group_0": {
              "targets": ["Linear"],
              "weights": {"num_bits": 8, "type": "float", "strategy": "channel",
                          "symmetric": True, "dynamic": False},
              "input_activations": {"num_bits": 8, "type": "float", "strategy": "token",
                                    "dynamic": True}}},
          "ignore": ["lm_head"], "kv_cache_scheme": {"num_bits": 8, "type": "float"}}
    a = run(with_quant("llama-3.1-8b", ct), phase="decode", batch=1, context_len=64)
    assert (a.precision.act, a.precision.kv) == ("fp8", "fp8")  # W8A8, fp8 KV from the file
    w4a16 = {"quant_method": "compressed-tensors", "format": "pack-quantized",
             "config_groups": {"group_0": {"targets": ["Linear"], "input_activations": None,
                                           "weights": {"num_bits": 4, "type": "int",
                                                       "strategy": "group", "group_size": 128,
                                                       "symmetric": True}}}}
    a = run(with_quant("llama-3.1-8b", w4a16), phase="decode", batch=1, context_len=64)
    # symmetric: a 16-bit scale per group of 128, no zero points
    assert op(a, "attn.o_proj").weight_bytes == 4096 * 4096 / 2 + 4096 * 32 * 2


def test_unknown_checkpoint_format_asks_for_a_dtype():
    m = with_quant("llama-3.1-8b", {"quant_method": "bitsandbytes", "load_in_4bit": True})
    with pytest.raises(InputError, match=r"weight_dtype None: .*bitsandbytes.*\(--weight-dtype\)"):
        run(m, phase="decode", batch=1, context_len=64)
    assert run(m, phase="decode", batch=1, context_len=64, weight_dtype="int4").precision.act \
        == "bf16"


# ---- fp8 / int8 as storage formats (item 5) ------------------------------------------------

def test_fp8_weights_run_weight_only_on_ampere_and_say_so():
    a = run("llama-3.1-8b", "a100-sxm-80gb", phase="decode", batch=1, context_len=512,
            weight_dtype="fp8")
    p = a.precision
    assert (p.act, p.compute) == ("bf16", "bf16")
    assert "W8A16 fp8 weight-only" in p.scheme and "Marlin" in p.notes[0]
    gu = op(a, "mlp.gate_up_proj")
    assert gu.weight_bytes == 2 * 14336 * 4096 + 2 * 14336 * 2  # 1 byte + a row scale
    assert gu.dequant_flops == 2 * (2 * 14336 * 4096)  # scale and convert each weight
    assert gu.dtype == "bf16"
    h100 = run("llama-3.1-8b", "h100-sxm", phase="decode", batch=1, context_len=512,
               weight_dtype="fp8")
    assert h100.precision.scheme.startswith("W8A8 fp8")  # where fp8 math exists
    w8a16 = run("llama-3.1-8b", "h100-sxm", phase="decode", batch=1, context_len=512,
                weight_dtype="fp8", act_dtype="bf16")
    assert "weight-only" in w8a16.precision.scheme and a.to_json()["scenario"]["scheme"]


def test_only_missing_fp8_math_is_refused():
    with pytest.raises(UnsupportedDtypeError, match="act_dtype fp8"):
        run("llama-3.1-8b", "a100-sxm-80gb", weight_dtype="fp8", act_dtype="fp8")
    with pytest.raises(UnsupportedDtypeError, match=r"weight_dtype fp8: .*Marlin"):
        run("llama-2-7b", "v100-sxm2-32gb", weight_dtype="fp8")  # no fp8, no Marlin


def test_fp8_kv_cache_on_ampere_is_stored_at_one_byte_and_dequantized():
    B, C = 8, 4096
    a = run("llama-3.1-8b", "a100-sxm-80gb", phase="decode", batch=B, context_len=C,
            kv_dtype="fp8")
    core = op(a, "attn.core")
    elements = B * (C + 1) * 2 * 8 * 128  # K and V of 8 KV heads, cache incl. the new token
    assert core.kv_read_bytes == elements * 1
    assert core.dequant_flops == 2 * elements
    assert a.memory.kv_cache_bytes == 32 * elements
    assert a.precision.kv_dequant
    h100 = op(run("llama-3.1-8b", "h100-sxm", phase="decode", batch=B, context_len=C,
                  kv_dtype="fp8"), "attn.core")
    assert h100.dequant_flops == 0  # fp8 attention math (FlashAttention-3) reads it as is


# ---- NVFP4 ---------------------------------------------------------------------------------------

def test_nvfp4_weights_cost_4_5_bits_plus_a_tensor_scale():
    a = run("llama-3.1-8b", "h100-sxm", phase="decode", batch=1, context_len=64,
            weight_dtype="fp4")
    # e2m1 (4 bits) + one e4m3 scale per 16 elements (0.5 bit) + one fp32 per tensor
    assert op(a, "attn.o_proj").weight_bytes == 4096 * 4096 * 4.5 / 8 + 4
    assert a.precision.scheme.startswith("W4A16 NVFP4 weight-only")  # H100: no fp4 math


def test_nvfp4_runs_w4a4_where_the_spec_has_an_fp4_peak():
    B, S = 4, 1024
    # B200: NVFP4 tensor cores at 9 PFLOP/s dense (hw_specs/gpus/b200.toml, DS-054)
    a = run("llama-3.1-8b", "b200", phase="prefill", batch=B, seq_len=S, weight_dtype="fp4")
    assert (a.precision.act, a.precision.compute) == ("fp4", "fp4")
    gu = next(p for p in a.points if p.op.name == "mlp.gate_up_proj")
    assert gu.op.dtype == "fp4" and gu.peak_flops_per_s == pytest.approx(9000e12)
    assert gu.op.act_in_bytes == B * S * 4096 * 4.5 / 8  # NVFP4 activations with their scales
    assert gu.op.dequant_flops == 0
    # weight-only where the device has no fp4 math but engines dequantize it (Ampere+)
    a100 = run("llama-3.1-8b", "a100-sxm-80gb", phase="decode", batch=1, context_len=64,
               weight_dtype="fp4")
    assert a100.precision.act == "bf16"
    with pytest.raises(UnsupportedDtypeError, match="act_dtype fp4"):
        run("llama-3.1-8b", "h100-sxm", weight_dtype="fp4", act_dtype="fp4")
    with pytest.raises(InputError, match="group_size 32"):
        run("llama-3.1-8b", "h100-sxm", weight_dtype="fp4", group_size=32)
    assert a100.to_json()["precision"]["weights"] == "fp4-g16"
