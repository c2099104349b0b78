"""benchmarks/bench_decode_step.py measures what it says: its random-weight decoder computes the
same logits as transformers' LlamaForCausalLM given the same weights (prefill, then one decode
step through the KV cache), and its rows put the measurement beside perfscope's prediction."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from perfscope.specs.model import load_model  # noqa: E402
from tests.scripts import load_script  # noqa: E402

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_decode_step.py"
CFG = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64,
       "intermediate_size": 160, "num_attention_heads": 4, "num_key_value_heads": 2,
       "num_hidden_layers": 2, "vocab_size": 97, "max_position_embeddings": 256,
       "rms_norm_eps": 1e-5, "hidden_act": "silu", "tie_word_embeddings": False,
       "rope_theta": 10000.0}


@pytest.fixture(scope="module")
def bench():
    return load_script("bench_decode_step")


@pytest.fixture(scope="module")
def cfg_path(tmp_path_factory):
    p = tmp_path_factory.mktemp("cfg") / "config.json"
    p.write_text(json.dumps(CFG))
    return p


def test_decoder_matches_transformers_llama(bench, cfg_path):
    m = load_model(str(cfg_path))
    dec = bench.Decoder(m, torch.device("cpu"), torch.float32, max_batch=2, max_len=32)
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**CFG)).eval()
    h, kv, d = m.n_heads, m.n_kv_heads, m.head_dim
    with torch.no_grad():  # our [in, out] weights into nn.Linear's [out, in]
        hf.model.embed_tokens.weight.copy_(dec.embed)
        hf.lm_head.weight.copy_(dec.head.t())
        for L, layer in zip(dec.layers, hf.model.layers, strict=True):
            q, k, v = L["qkv"].split([h * d, kv * d, kv * d], dim=1)
            att = layer.self_attn
            att.q_proj.weight.copy_(q.t())
            att.k_proj.weight.copy_(k.t())
            att.v_proj.weight.copy_(v.t())
            att.o_proj.weight.copy_(L["o"].t())
            gate, up = L["gate_up"].chunk(2, dim=1)
            layer.mlp.gate_proj.weight.copy_(gate.t())
            layer.mlp.up_proj.weight.copy_(up.t())
            layer.mlp.down_proj.weight.copy_(L["down"].t())
            L["n1"].uniform_(0.5, 1.5)
            L["n2"].uniform_(0.5, 1.5)
            layer.input_layernorm.weight.copy_(L["n1"])
            layer.post_attention_layernorm.weight.copy_(L["n2"])
        dec.norm.uniform_(0.5, 1.5)
        hf.model.norm.weight.copy_(dec.norm)
        ids = torch.randint(0, CFG["vocab_size"], (2, 9))
        ref = hf(input_ids=ids).logits  # [2, 9, vocab]
        pre = dec.forward(ids[:, :8], 0)  # the prompt: logits of its last token
        step = dec.forward(ids[:, 8:], 8)  # one decode step over the 8 cached tokens
    torch.testing.assert_close(pre[:, 0], ref[:, 7], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(step[:, 0], ref[:, 8], rtol=1e-4, atol=1e-4)


def test_rows_beside_the_prediction(cfg_path, tmp_path):
    out = tmp_path / "rows.json"
    r = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--model", str(cfg_path),
                        "--hw", "h100-sxm", "--batches", "1,2", "--context-len", "16",
                        "--prefill", "16", "--runs", "2", "--json", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    j = json.loads(out.read_text())
    assert [(x["phase"], x["batch"]) for x in j["rows"]] == [("decode", 1), ("decode", 2),
                                                              ("prefill", 1)]
    for x in j["rows"]:
        assert x["measured_s"] > 0 and x["predicted_empirical_s"] > x["roofline_no_overhead_s"]
        # the fit: what the measurement leaves over the roofline, per kernel of the graph
        assert x["fitted_overhead_per_kernel_s"] == pytest.approx(
            (x["measured_s"] - x["roofline_no_overhead_s"]) / x["kernels"])


@pytest.mark.parametrize("model", ["mixtral-8x7b", "gemma-2b"])
def test_refuses_a_model_it_does_not_build(model):
    r = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--model",
                        model, "--batches", "1"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "not a plain Llama-family model" in r.stderr
    assert "Traceback" not in r.stderr
