"""What a measured op runs is what the model computes.

For each model, the analytic graph of a tiny config of the same ``model_type`` is built, each
op's runner (chosen by ``Op.impl``) is run on random data, and its output is compared with the
transformers module (random weights, the runner's weights copied in) that computes the same
thing in the reference implementation: GPT-2's LayerNorm, Conv1D and gelu_new, Gemma's GeGLU
(gelu_pytorch_tanh), (1 + w) RMSNorm and scaled embedding, Qwen3's per-head q/k norm and
rotary over the head, Qwen3-MoE's softmax top-k router, experts GEMM and weighted combine, each
MoE model's router (DeepSeek-V3's sigmoid group routing with its config's group counts,
Qwen2-MoE's and Mixtral's top-k with and without renormalization), eager GQA's repeat_kv, and
the per-token int8/fp8 quantization of a GEMM's input.
"""

from __future__ import annotations

import json
import math
import types

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from perfscope.analytic.ops import Op  # noqa: E402
from perfscope.api import Scenario, analyze, load_hw  # noqa: E402
from perfscope.measure.opcases import annotate, convert_dtype  # noqa: E402
from perfscope.measure.runners import build_runner  # noqa: E402
from perfscope.measure.skips import Skip  # noqa: E402
from perfscope.specs.model import load_model, model_from_config  # noqa: E402

TOL = {"rtol": 1e-5, "atol": 1e-5}


def tiny(model: str, **over) -> tuple[dict, object]:
    """The shipped config of ``model`` with tiny widths, and its ModelSpec."""
    with open(load_model(model).source) as f:
        cfg = json.load(f)
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_")} | over
    return cfg, model_from_config(cfg, f"{model}-tiny")


def ops_of(spec, *, phase="prefill", batch=2, seq=8, ctx=0, fp32=True, hw="h100-sxm",
           **kw) -> dict[str, Op]:
    """The graph's ops by name as the ops bench sees them (``annotate``), in fp32 (the CPU
    runs fp32 at speed; counts converted)."""
    a = analyze(spec, load_hw(hw),
                Scenario(phase=phase, batch=batch, seq_len=seq, context_len=ctx, **kw))
    return {op.name: convert_dtype(op, "fp32") if fp32 else op
            for op in annotate(a.graph.ops)}


def run(op: Op):
    r = build_runner(op, "cpu")
    inputs, params = r.inputs(1), r.params(2)
    out = r.fn(inputs, params)
    assert r.verify((inputs, params), out) < 1e-4  # and its own float64 check agrees
    return r, inputs, params, out


def hf_config(cfg: dict):
    return transformers.AutoConfig.for_model(cfg["model_type"],
                                             **{k: v for k, v in cfg.items()
                                                if k != "model_type"})


def causal_additive(T: int, K: int) -> torch.Tensor:
    """transformers' 4-d additive mask: 0 where query i (at K - T + i) may see key j."""
    pos = torch.arange(K - T, K)[:, None]
    return torch.where(torch.arange(K)[None] <= pos, 0.0, float("-inf"))[None, None]


def eager_attention(q, k, v, T, K):
    """transformers' llama eager_attention_forward (repeat_kv, QK^T*s + mask, softmax, @V)."""
    from transformers.models.llama.modeling_llama import eager_attention_forward

    mod = types.SimpleNamespace(num_key_value_groups=q.shape[1] // k.shape[1], training=False)
    out, _ = eager_attention_forward(mod, q, k, v, causal_additive(T, K) if T > 1 else None,
                                     scaling=1.0 / math.sqrt(q.shape[-1]))
    return out.transpose(1, 2)  # back to (B, H, T, d)


# ---- GPT-2: LayerNorm (+ residual), Conv1D with bias, gelu_new, learned positions ---------

GPT2 = {"n_embd": 64, "n_head": 4, "n_layer": 1, "n_positions": 64, "vocab_size": 128}


@pytest.fixture(scope="module")
def gpt2():
    cfg, spec = tiny("gpt2", **GPT2)
    block = transformers.GPT2Model(hf_config(cfg)).h[0].eval()
    return ops_of(spec), block


def test_gpt2_norm_is_layernorm_after_the_residual_add(gpt2):
    ops, block = gpt2
    assert ops["attn.norm"].impl["norm"] == "layernorm"
    r, (x, res), p, (out, h) = run(ops["attn.norm"])
    with torch.no_grad():
        block.ln_1.weight.copy_(p["w"])
        block.ln_1.bias.copy_(p["b"])
        torch.testing.assert_close(out, block.ln_1(x + res), **TOL)
    torch.testing.assert_close(h, x + res)
    assert "layer_norm" in r.impl


def test_gpt2_activation_is_gelu_new(gpt2):
    ops, block = gpt2
    assert ops["mlp.act"].impl == {"activation": "gelu_new", "gated": False}
    _, x, _, out = run(ops["mlp.act"])
    torch.testing.assert_close(out, block.mlp.act(x), **TOL)
    # and it is not the erf gelu: the two differ by ~1e-3 on unit-scale data
    assert (out - torch.nn.functional.gelu(x)).abs().max() > 1e-4


def test_gpt2_qkv_projection_with_bias_matches_conv1d(gpt2):
    ops, block = gpt2
    _, x, p, out = run(ops["attn.qkv_proj"])
    with torch.no_grad():
        block.attn.c_attn.weight.copy_(p["w"].t())  # Conv1D stores W as (in, out)
        block.attn.c_attn.bias.copy_(p["b"])
        torch.testing.assert_close(out, block.attn.c_attn(x), **TOL)


def test_gpt2_attention_is_causal_mha(gpt2):
    ops, _ = gpt2
    _, (q, k, v), _, out = run(ops["attn.core"])
    T = q.shape[2]
    torch.testing.assert_close(out, eager_attention(q, k, v, T, T), **TOL)


def test_gpt2_embedding_and_position_add(gpt2):
    ops, _ = gpt2
    _, ids, p, out = run(ops["embed"])
    emb = torch.nn.Embedding.from_pretrained(p["table"])
    torch.testing.assert_close(out, emb(ids))
    assert ops["pos_embed"].impl == {"op": "add"}
    _, (a, b), _, out = run(ops["pos_embed"])
    torch.testing.assert_close(out, a + b)


# ---- Gemma: GeGLU with gelu_pytorch_tanh, (1 + w) RMSNorm, embedding * sqrt(hidden) -------

GEMMA = {"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 1,
         "head_dim": 16, "intermediate_size": 128, "num_hidden_layers": 1, "vocab_size": 128}


@pytest.fixture(scope="module")
def gemma():
    cfg, spec = tiny("gemma-2b", **GEMMA)
    model = transformers.GemmaModel(hf_config(cfg)).eval()
    return ops_of(spec), model


def test_gemma_mlp_is_geglu_with_tanh_gelu(gemma):
    ops, model = gemma
    # gemma-2b's config says "gelu", which transformers (and vLLM) run as the tanh gelu
    assert ops["mlp.act"].impl == {"activation": "gelu_pytorch_tanh", "gated": True}
    mlp = model.layers[0].mlp
    _, x, _, out = run(ops["mlp.act"])
    w = x.shape[1] // 2
    torch.testing.assert_close(out, mlp.act_fn(x[:, :w]) * x[:, w:], **TOL)


def test_gemma_rmsnorm_with_unit_offset(gemma):
    ops, model = gemma
    _, (x, res), p, (out, _) = run(ops["attn.norm"])
    norm = model.layers[0].input_layernorm
    with torch.no_grad():
        norm.weight.copy_(p["w"] - 1.0)  # Gemma scales by (1 + w): the runner's w is 1 + w
        torch.testing.assert_close(out, norm(x + res), **TOL)


def test_gemma_embedding_is_scaled_by_sqrt_hidden(gemma):
    ops, model = gemma
    assert ops["embed"].impl["scale"]
    _, ids, p, out = run(ops["embed"])
    with torch.no_grad():  # GemmaTextScaledWordEmbedding: the gather times sqrt(hidden)
        model.embed_tokens.weight.copy_(p["table"])
        torch.testing.assert_close(out, model.embed_tokens(ids))
    unscaled = torch.nn.functional.embedding(ids, p["table"])
    torch.testing.assert_close(out, unscaled * 8.0)  # sqrt(64), by hand


# ---- Qwen3: per-head q/k RMSNorm, rotary over the whole 128-dim head, GQA ------------------

QWEN3 = {"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
         "head_dim": 32, "intermediate_size": 128, "num_hidden_layers": 1, "vocab_size": 128,
         "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}}


@pytest.fixture(scope="module")
def qwen3():
    cfg, spec = tiny("qwen3-8b", **QWEN3)
    model = transformers.Qwen3Model(hf_config(cfg)).eval()
    return ops_of(spec), model


def test_qwen3_full_size_rotary_is_the_whole_128_dim_head():
    ops = ops_of(load_model("qwen3-8b"), seq=16)
    assert ops["attn.rotary"].impl == {"rotary_dim": 128, "head_dim": 128}
    r = build_runner(ops["attn.rotary"], "cpu")
    assert "over 128 of 128 dims, 40 heads" in r.impl  # 32 q + 8 k heads


def test_qwen3_qk_norm_is_rmsnorm_per_head(qwen3):
    ops, model = qwen3
    op = ops["attn.qk_norm"]
    assert op.impl["group"] == 32 and op.shape["width"] == (4 + 2) * 32
    _, (x,), p, out = run(op)
    attn = model.layers[0].self_attn
    t = x.shape[0]
    with torch.no_grad():
        attn.q_norm.weight.copy_(p["w"])
        attn.k_norm.weight.copy_(p["w"])
        q = attn.q_norm(x[:, :4 * 32].view(t, 4, 32)).reshape(t, -1)
        k = attn.k_norm(x[:, 4 * 32:].view(t, 2, 32)).reshape(t, -1)
    torch.testing.assert_close(out, torch.cat([q, k], dim=1), **TOL)


def test_qwen3_rotary_matches_apply_rotary_pos_emb(qwen3):
    from transformers.models.qwen3.modeling_qwen3 import apply_rotary_pos_emb

    ops, model = qwen3
    _, x, p, out = run(ops["attn.rotary"])  # x: (tokens, 6 heads, 32)
    t = x.shape[0]
    # the runner's cos/sin tables are transformers' at the same positions and base
    cos, sin = model.rotary_emb(x, torch.arange(p["offset"], p["offset"] + t)[None])
    torch.testing.assert_close(p["cos"], cos[0], **TOL)
    torch.testing.assert_close(p["sin"], sin[0], **TOL)
    q, k = x[:, :4].transpose(0, 1)[None], x[:, 4:].transpose(0, 1)[None]  # (1, H, t, d)
    qr, kr = apply_rotary_pos_emb(q, k, p["cos"][None], p["sin"][None])
    want = torch.cat([qr[0].transpose(0, 1), kr[0].transpose(0, 1)], dim=1)
    torch.testing.assert_close(out, want, **TOL)


def test_qwen3_gqa_attention_prefill_and_decode():
    _, spec = tiny("qwen3-8b", **QWEN3)
    for phase, ctx in (("prefill", 0), ("decode", 12)):
        op = ops_of(spec, phase=phase, ctx=ctx)["attn.core"]
        _, (q, k, v), _, out = run(op)
        T, K = q.shape[2], k.shape[2]
        torch.testing.assert_close(out, eager_attention(q, k, v, T, K), **TOL)


def test_qwen3_mlp_is_swiglu(qwen3):
    ops, model = qwen3
    _, x, _, out = run(ops["mlp.act"])
    w = x.shape[1] // 2
    torch.testing.assert_close(out, model.layers[0].mlp.act_fn(x[:, :w]) * x[:, w:], **TOL)


def test_qwen3_eager_gqa_repeat_kv_matches_transformers():
    from transformers.models.qwen3.modeling_qwen3 import repeat_kv

    _, spec = tiny("qwen3-8b", **QWEN3)
    for phase, ctx in (("prefill", 0), ("decode", 12)):
        ops = ops_of(spec, phase=phase, ctx=ctx, attention="unfused")
        op = ops["attn.repeat_kv"]
        # the layout of the scores GEMM it feeds: 2 sequences, 2 KV heads of 32 dims
        assert op.impl == {"op": "repeat_kv", "n_rep": 2, "batch": 2, "kv_heads": 2,
                           "head_dim_qk": 32, "head_dim_v": 32}
        _, (k, v), _, (k_rep, v_rep) = run(op)
        keys = ops["attn.score"].shape["kv_len"]
        assert tuple(k.shape) == (2, 2, keys, 32) and op.shape["tokens"] == 2 * keys
        assert torch.equal(k_rep, repeat_kv(k, 2)) and torch.equal(v_rep, repeat_kv(v, 2))
    wrong = op._replace(impl={**op.impl, "kv_heads": 3})
    with pytest.raises(Skip, match="is not 3 KV heads"):
        build_runner(wrong, "cpu")


# ---- a MoE model (Qwen3-MoE): softmax top-k router, expert GEMMs, weighted combine --------

MOE = {"hidden_size": 16, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 8,
       "intermediate_size": 32, "moe_intermediate_size": 8, "num_experts": 16,
       "num_experts_per_tok": 4, "num_hidden_layers": 1, "vocab_size": 64}


@pytest.fixture(scope="module")
def moe():
    cfg, spec = tiny("qwen3-30b-a3b", **MOE)
    return ops_of(spec, seq=6), hf_config(cfg)


def test_moe_routing_is_softmax_topk_renormalized(moe):
    from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeTopKRouter

    ops, config = moe
    op = ops["moe.topk"]
    assert op.impl["routing"] == "softmax_topk" and op.impl["top_k"] == 4
    _, logits, _, (w, ids) = run(op)
    router = Qwen3MoeTopKRouter(config)  # hidden 16 = experts 16: identity weight
    with torch.no_grad():
        router.weight.copy_(torch.eye(16))
        _, w_ref, ids_ref = router(logits)
    order, ref_order = ids.argsort(-1), ids_ref.argsort(-1)
    torch.testing.assert_close(ids.gather(-1, order), ids_ref.gather(-1, ref_order))
    torch.testing.assert_close(w.gather(-1, order), w_ref.gather(-1, ref_order), **TOL)


def test_moe_expert_gemm_and_combine_match_the_experts_module(moe):
    from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeExperts

    ops, config = moe
    experts = Qwen3MoeExperts(config)
    with torch.no_grad():
        experts.gate_up_proj.normal_(0, 0.3)
        experts.down_proj.normal_(0, 0.3)
    t, k = 6 * 2, 4
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(t, 16, generator=g)
    ids = torch.stack([torch.randperm(16, generator=g)[:k] for _ in range(t)])
    w = torch.softmax(torch.randn(t, k, generator=g), -1)
    with torch.no_grad():
        want = experts(hidden, ids, w)
        # each token's k expert outputs, computed by the module's own weights and activation
        y = torch.stack([torch.stack([
            torch.nn.functional.linear(
                experts.act_fn(torch.nn.functional.linear(hidden[i], experts.gate_up_proj[e])
                               .chunk(2)[0])
                * torch.nn.functional.linear(hidden[i], experts.gate_up_proj[e]).chunk(2)[1],
                experts.down_proj[e]) for e in ids[i].tolist()]) for i in range(t)])
    combine = build_runner(ops["moe.combine"]._replace(shape={"tokens": t, "width": 16}), "cpu")
    torch.testing.assert_close(combine.fn((y, w), {}), want, **TOL)
    # the grouped expert GEMM is each expert's own F.linear
    gemm = build_runner(ops["moe.experts_gate_up"], "cpu")
    x, p = gemm.inputs(1), gemm.params(2)
    out = gemm.fn(x, p)
    for e in range(x.shape[0]):
        torch.testing.assert_close(out[e], torch.nn.functional.linear(x[e], p["w"][e]), **TOL)


def test_moe_expert_activation_is_swiglu(moe):
    ops, config = moe
    _, x, _, out = run(ops["moe.experts_act"])
    act = transformers.activations.ACT2FN[config.hidden_act]
    w = x.shape[1] // 2
    torch.testing.assert_close(out, act(x[:, :w]) * x[:, w:], **TOL)


# ---- routing per model: the runner against each model's transformers router ---------------

def _same_routing(w, ids, w_ref, ids_ref):
    order, ref_order = ids.argsort(-1), ids_ref.argsort(-1)
    torch.testing.assert_close(ids.gather(-1, order), ids_ref.gather(-1, ref_order))
    torch.testing.assert_close(w.gather(-1, order), w_ref.gather(-1, ref_order), **TOL)


def _route_with(router, logits, E, bias=None):
    """The transformers router on hidden = logits (identity router weight, hidden = E)."""
    with torch.no_grad():
        router.weight.copy_(torch.eye(E))
        if bias is not None:
            router.e_score_correction_bias.copy_(bias)
        _, w_ref, ids_ref = router(logits)
    return w_ref, ids_ref


DSV3 = {"hidden_size": 32, "n_routed_experts": 32, "num_experts_per_tok": 4, "n_group": 8,
        "topk_group": 3, "moe_intermediate_size": 8, "intermediate_size": 32,
        "num_hidden_layers": 2, "first_k_dense_replace": 1, "num_attention_heads": 2,
        "num_key_value_heads": 2, "q_lora_rank": 16, "kv_lora_rank": 8,
        "qk_nope_head_dim": 8, "qk_rope_head_dim": 4, "v_head_dim": 8, "vocab_size": 64,
        "n_shared_experts": 1}


def test_deepseek_v3_group_routing_matches_its_router():
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3TopkRouter

    cfg, spec = tiny("deepseek-v3", **DSV3)
    op = ops_of(spec, seq=5)["moe.topk"]
    # the config's group counts reach the op (routed_scaling_factor 2.5, norm_topk_prob
    # true: the shipped config's)
    assert op.impl == {"routing": "sigmoid_group_topk", "top_k": 4, "experts": 32,
                       "norm_topk_prob": True, "n_group": 8, "topk_group": 3,
                       "routed_scaling_factor": 2.5}
    r, logits, p, (w, ids) = run(op)
    assert "top-3 of 8 expert groups" in r.impl
    w_ref, ids_ref = _route_with(DeepseekV3TopkRouter(hf_config(cfg)), logits, 32, p["bias"])
    _same_routing(w, ids, w_ref, ids_ref)


def test_deepseek_v3_routing_without_renormalization():
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3TopkRouter

    cfg, spec = tiny("deepseek-v3", **DSV3, norm_topk_prob=False, routed_scaling_factor=1.0)
    op = ops_of(spec, seq=5)["moe.topk"]
    assert op.impl["norm_topk_prob"] is False and op.impl["routed_scaling_factor"] == 1.0
    _, logits, p, (w, ids) = run(op)
    w_ref, ids_ref = _route_with(DeepseekV3TopkRouter(hf_config(cfg)), logits, 32, p["bias"])
    _same_routing(w, ids, w_ref, ids_ref)


def test_qwen2_moe_routing_is_not_renormalized_by_default():
    from transformers.models.qwen2_moe.modeling_qwen2_moe import Qwen2MoeTopKRouter

    config = transformers.Qwen2MoeConfig(
        hidden_size=16, num_experts=16, num_experts_per_tok=4, moe_intermediate_size=8,
        shared_expert_intermediate_size=8, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, vocab_size=64)
    assert config.norm_topk_prob is False  # transformers' default
    raw = {k: v for k, v in config.to_dict().items() if k != "norm_topk_prob"}
    op = ops_of(model_from_config(raw, "qwen2-moe-tiny"), seq=6)["moe.topk"]
    assert op.impl["norm_topk_prob"] is False
    _, logits, _, (w, ids) = run(op)
    assert not torch.allclose(w.sum(-1), torch.ones(12))  # top-4 of 16 do not sum to one
    _same_routing(w, ids, *_route_with(Qwen2MoeTopKRouter(config), logits, 16))


def test_mixtral_routing_is_renormalized():
    from transformers.models.mixtral.modeling_mixtral import MixtralTopKRouter

    cfg, spec = tiny("mixtral-8x7b", hidden_size=8, num_local_experts=8,
                     num_experts_per_tok=2, intermediate_size=16, num_hidden_layers=1,
                     num_attention_heads=2, num_key_value_heads=1, head_dim=4,
                     vocab_size=64)
    op = ops_of(spec, seq=6)["moe.topk"]
    assert op.impl["norm_topk_prob"] is True and op.impl["routing"] == "softmax_topk"
    _, logits, _, (w, ids) = run(op)
    _same_routing(w, ids, *_route_with(MixtralTopKRouter(hf_config(cfg)), logits, 8))


def test_routing_fields_default_as_transformers_does():
    """A config that leaves the routing fields out gets the config class's defaults."""
    from perfscope.specs.model import load_model

    for model, cls in (("deepseek-v3", transformers.DeepseekV3Config),
                       ("qwen3-30b-a3b", transformers.Qwen3MoeConfig)):
        with open(load_model(model).source) as f:
            cfg = json.load(f)
        for key in ("n_group", "topk_group", "routed_scaling_factor", "norm_topk_prob"):
            cfg.pop(key, None)
        moe = model_from_config(cfg, model).moe
        want = cls()
        assert moe.norm_topk_prob == bool(want.norm_topk_prob)
        if model == "deepseek-v3":
            assert (moe.n_group, moe.topk_group, moe.routed_scaling_factor) == \
                (want.n_group, want.topk_group, want.routed_scaling_factor)


# ---- dispatch is by Op.impl, never by name ---------------------------------------------

def _row(name: str, impl: dict | None, width: int = 64) -> Op:
    return Op(name, "elementwise", 0, 1, 0.0, act_in_bytes=4 * 8 * width, dtype="fp32",
              unit="vector", shape={"tokens": 8, "width": width}, impl=impl)


def test_dispatch_follows_impl_not_the_name():
    # a name that says "act" with rotary attributes runs rotary, and vice versa
    assert build_runner(_row("mlp.act", {"rotary_dim": 16, "head_dim": 16}), "cpu") \
        .impl.startswith("rotary")
    assert build_runner(_row("attn.rotary", {"activation": "relu", "gated": False}), "cpu") \
        .impl == "relu"
    assert build_runner(_row("moe.topk", {"op": "add"}), "cpu").impl == "x + y"


@pytest.mark.parametrize("impl,match", [
    (None, "no implementation attributes"),
    ({"activation": "mish", "gated": False}, "mish"),
    ({"routing": "hash", "top_k": 2}, "hash"),
    ({"something": 1}, "no runner for"),
])
def test_ops_without_a_faithful_kernel_are_skipped_with_the_reason(impl, match):
    with pytest.raises(Skip, match=match):
        build_runner(_row("x", impl), "cpu")


def test_softcapped_flash_attention_is_skipped_not_stood_in_for():
    op = ops_of(load_model("gemma-2-9b"), seq=16)["attn.core@global"]
    assert op.impl["softcap"]
    with pytest.raises(Skip, match="soft-cap"):
        build_runner(op, "cpu")


def test_weight_only_quantized_gemm_is_skipped():
    from perfscope.measure.opcases import make_case
    from perfscope.measure.ops import time_case

    op = ops_of(load_model("qwen2.5-0.5b"), seq=16, weight_dtype="int4",
                fp32=False)["mlp.down_proj"]
    # int4 with group 128: 4 bits + (fp16 scale + fp16 zero) / 128 = 4.25 bits per weight
    with pytest.raises(Skip, match=r"weight-only quantized GEMM \(4.25 bits"):
        build_runner(op, "cpu")
    # also once converted to fp32 for a CPU, where the counts no longer show it
    case = make_case(op, device="cpu", target_s=None, flops_per_s=1, bytes_per_s=1,
                     have=["fp32"])
    with pytest.raises(Skip, match="weight-only"):
        time_case(case, "cpu", budget_s=0.01)


def test_unfused_softmax_masks_like_eager_attention():
    _, spec = tiny("qwen3-8b", **QWEN3)
    for phase, ctx in (("prefill", 0), ("chunked_prefill", 5)):
        ops = ops_of(spec, phase=phase, ctx=ctx, attention="unfused")
        sm = ops["attn.softmax"]
        T = sm.impl["q_len"]
        _, x, _, out = run(sm)
        K = x.shape[1]
        mask = causal_additive(T, K)[0, 0]
        want = torch.softmax(x.view(-1, T, K) + mask, -1, dtype=torch.float32).view(-1, K)
        torch.testing.assert_close(out, want, **TOL)
        # the scores and values GEMMs around it are eager attention's
        _, (q, k, _), _, scores = run(ops["attn.score"])
        s_ref = (q @ k.repeat_interleave(q.shape[1] // k.shape[1], 1).transpose(-1, -2)) \
            / math.sqrt(q.shape[-1])
        torch.testing.assert_close(scores, s_ref, **TOL)


# ---- per-token quantization of a GEMM's input follows the GEMM's dtype ----------------------

def test_w8a8_quantization_follows_the_gemm_input_dtype():
    _, spec = tiny("qwen3-8b", **QWEN3)
    for dt in ("int8", "fp8"):
        ops = ops_of(spec, weight_dtype=dt, act_dtype=dt)
        for name in ("attn.norm", "mlp.act"):
            op = ops[name]
            assert op.impl["quant_out"] and op.impl["quant_dtype"] == dt
            r, *_ = run(op)  # run() checks the output against the float64 reference
            assert r.impl.endswith(f"then per-token {dt} quant")
        # the standalone quant before o_proj, against the formula by hand:
        # scale = max|x| / qmax per token, q = x / scale rounded to the dtype
        r, x, _, (q, scale) = run(ops["attn.o_quant"])
        qmax = 127.0 if dt == "int8" else 448.0
        want_scale = x.abs().amax(-1, keepdim=True) / qmax
        torch.testing.assert_close(scale, want_scale, **TOL)
        if dt == "int8":
            assert q.dtype == torch.int8
            assert torch.equal(q, torch.round(x / want_scale).to(torch.int8))
        else:
            assert q.dtype == torch.float8_e4m3fn
            torch.testing.assert_close(q.float(), (x / want_scale).to(torch.float8_e4m3fn).float())


def test_fp8_quantization_check_catches_a_wrong_scale():
    from perfscope.errors import MeasureError
    from perfscope.measure.runners.common import check_quant, quant_per_token

    x = torch.randn(8, 64, dtype=torch.float64)
    q, s = quant_per_token(x.float(), "fp8")
    assert check_quant(q, s, x, "q", "fp8") < 1e-6
    with pytest.raises(MeasureError, match="fp8 quantization"):
        check_quant(q, s * 1.1, x, "q", "fp8")
    q8, s8 = quant_per_token(x.float(), "int8")
    with pytest.raises(MeasureError, match="fp8 values"):
        check_quant(q8, s8, x, "q", "fp8")


def test_nvfp4_quantization_and_the_latent_cast_are_clear_skips():
    _, spec = tiny("qwen3-8b", **QWEN3)
    ops = ops_of(spec, weight_dtype="fp4", act_dtype="fp4", hw="b200")
    assert ops["attn.norm"].impl["quant_dtype"] == "fp4"
    with pytest.raises(Skip, match="per-token fp4 quantization"):
        build_runner(ops["attn.norm"], "cpu")
    cast = Op("attn.kv_b_input", "elementwise", 0, 1, 0.0, dtype="fp32", unit="vector",
              shape={"tokens": 8, "width": 64}, impl={"op": "cast"})
    with pytest.raises(Skip, match="cache dtype"):
        build_runner(cast, "cpu")
