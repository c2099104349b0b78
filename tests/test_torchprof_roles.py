"""Module roles and op classification (pure: module trees written out by hand, no torch).

The trees below are the module names transformers builds for each architecture (its
modeling_*.py attribute names), so each role is checked against the architecture, not
against perfscope's own output."""

from __future__ import annotations

import pytest

from perfscope.measure.torchprof.ops import normalize, op_class
from perfscope.measure.torchprof.roles import ArchInfo, classify, module_roles


def _tree(layer: dict[str, str], top: dict[str, str] | None = None) -> list[tuple[str, str]]:
    mods = [("", "ForCausalLM"), ("model", "Model"), ("model.embed_tokens", "Embedding"),
            ("model.layers", "ModuleList"), ("model.layers.0", "DecoderLayer")]
    mods += [(f"model.layers.0.{k}", v) for k, v in layer.items()]
    mods += list((top or {"model.norm": "RMSNorm", "model.rotary_emb": "Rotary",
                          "lm_head": "Linear"}).items())
    return mods


LLAMA = _tree({"self_attn": "Attn", "self_attn.q_proj": "Linear", "self_attn.k_proj": "Linear",
               "self_attn.v_proj": "Linear", "self_attn.o_proj": "Linear", "mlp": "MLP",
               "mlp.gate_proj": "Linear", "mlp.up_proj": "Linear", "mlp.down_proj": "Linear",
               "mlp.act_fn": "SiLU", "input_layernorm": "RMSNorm",
               "post_attention_layernorm": "RMSNorm"})
INFO = ArchInfo(hidden=512)


def test_llama_leaf_modules():
    r = module_roles(LLAMA, INFO)
    want = {"model.embed_tokens": "embed", "model.layers.0.self_attn.q_proj": "attn.qkv_proj",
            "model.layers.0.self_attn.v_proj": "attn.qkv_proj",
            "model.layers.0.self_attn.o_proj": "attn.o_proj",
            "model.layers.0.mlp.gate_proj": "mlp.gate_up_proj",
            "model.layers.0.mlp.up_proj": "mlp.gate_up_proj",
            "model.layers.0.mlp.down_proj": "mlp.down_proj",
            "model.layers.0.mlp.act_fn": "mlp.act",
            "model.layers.0.input_layernorm": "attn.norm",
            "model.layers.0.post_attention_layernorm": "mlp.norm",  # llama: pre-MLP norm
            "model.norm": "final_norm", "lm_head": "lm_head",
            "model.rotary_emb": "framework.rotary_tables"}
    assert {k: r[k].role for k in want} == want
    assert r["model.layers.0.self_attn"].container == "attention"
    assert r["model.layers.0"].container == "layer" and r["model.layers.0"].layer == 0


def test_gemma2_post_attention_norm_is_a_post_norm():
    tree = _tree({"self_attn": "A", "mlp": "M", "input_layernorm": "N",
                  "post_attention_layernorm": "N", "pre_feedforward_layernorm": "N",
                  "post_feedforward_layernorm": "N"})
    r = module_roles(tree, INFO)
    assert r["model.layers.0.post_attention_layernorm"].role == "attn.post_norm"
    assert r["model.layers.0.pre_feedforward_layernorm"].role == "mlp.norm"
    assert r["model.layers.0.post_feedforward_layernorm"].role == "mlp.post_norm"


def test_moe_block_router_experts_shared():
    tree = _tree({"mlp": "SparseMoe", "mlp.gate": "TopKRouter", "mlp.experts": "Experts",
                  "mlp.experts.act_fn": "SiLU", "mlp.shared_expert": "MLP",
                  "mlp.shared_expert.gate_proj": "Linear",
                  "mlp.shared_expert.down_proj": "Linear",
                  "mlp.shared_expert_gate": "Linear"})
    info = ArchInfo(hidden=128)
    r = module_roles(tree, info)
    assert r["model.layers.0.mlp"].container == "moe"
    assert r["model.layers.0.mlp.gate"].container == "router"
    assert r["model.layers.0.mlp.experts.act_fn"].role == "moe.experts_act"
    assert r["model.layers.0.mlp.shared_expert.gate_proj"].role == "moe.shared.gate_up_proj"
    assert r["model.layers.0.mlp.shared_expert.down_proj"].role == "moe.shared.down_proj"
    assert r["model.layers.0.mlp.shared_expert_gate"].role == "moe.shared_gate"
    router, experts = r["model.layers.0.mlp.gate"], r["model.layers.0.mlp.experts"]
    assert classify(router, None, "linear", 0, 128, info) == "moe.router"
    assert classify(router, None, "topk", 0, 4, info) == "moe.topk"
    # grouped expert GEMMs: the input's width tells the projection (hidden in: gate/up)
    assert classify(experts, None, "_grouped_mm", 0, 128, info) == "moe.experts_gate_up"
    assert classify(experts, None, "_grouped_mm", 1, 96, info) == "moe.experts_down"
    assert classify(experts, None, "mul", 0, 128, info) == "moe.combine"
    assert classify(experts, None, "histc", 0, None, info) == "framework.moe_dispatch"


def test_mla_projections():
    tree = _tree({"self_attn": "A", "self_attn.q_a_proj": "L", "self_attn.q_a_layernorm": "N",
                  "self_attn.q_b_proj": "L", "self_attn.kv_a_proj_with_mqa": "L",
                  "self_attn.kv_a_layernorm": "N", "self_attn.kv_b_proj": "L",
                  "self_attn.o_proj": "L"})
    r = module_roles(tree, ArchInfo(hidden=512, mla=True))
    got = {k.rsplit(".", 1)[1]: v.role for k, v in r.items() if ".self_attn." in k}
    assert got == {"q_a_proj": "attn.q_a_proj", "q_a_layernorm": "attn.q_a_norm",
                   "q_b_proj": "attn.q_b_proj", "kv_a_proj_with_mqa": "attn.kv_a_proj",
                   "kv_a_layernorm": "attn.kv_a_norm", "kv_b_proj": "attn.kv_b_proj",
                   "o_proj": "attn.o_proj"}


@pytest.mark.parametrize(("tag", "op", "index", "unfused", "want"), [
    ("rotary", "cat", 0, False, "attn.rotary"),
    (None, "scaled_dot_product_attention", 0, False, "attn.core"),
    ("attention", "matmul", 0, True, "attn.score"),  # eager: QK^T first ...
    ("attention", "softmax", 0, True, "attn.softmax"),
    ("attention", "matmul", 1, True, "attn.value"),  # ... then P V
    ("attention", "transpose", 0, True, "framework.layout"),
    ("attention", "contiguous", 0, True, "framework.copy"),
    # eager GQA's K/V expansion is an analytic op (attn.repeat_kv); elsewhere a copy
    ("repeat_kv", "reshape", 0, True, "attn.repeat_kv"),
    ("repeat_kv", "reshape", 0, False, "framework.copy"),
    ("kv_cache", "cat", 0, False, "framework.kv_cache"),
    (None, "view", 0, False, "framework.layout"),
])
def test_attention_container_ops(tag, op, index, unfused, want):
    r = module_roles(LLAMA, INFO)
    info = ArchInfo(hidden=512, unfused_attention=unfused)
    assert classify(r["model.layers.0.self_attn"], tag, op, index, 64, info) == want


def test_sliding_window_layers_are_tagged():
    info = ArchInfo(hidden=512, sliding_layers=frozenset({0}), tag_windows=True)
    r = module_roles([*LLAMA, ("model.layers.1", "L"), ("model.layers.1.self_attn", "A")],
                     info)
    assert classify(r["model.layers.0.self_attn"], None, "scaled_dot_product_attention", 0,
                    32, info) == "attn.core@sliding"
    assert classify(r["model.layers.1.self_attn"], None, "scaled_dot_product_attention", 0,
                    32, info) == "attn.core@global"


def test_layer_and_model_glue():
    r = module_roles(LLAMA, INFO)
    layer = r["model.layers.0"]
    assert classify(layer, None, "add", 0, 512, INFO) == "attn.residual"
    assert classify(layer, None, "add", 1, 512, INFO) == "mlp.residual"
    assert classify(r["model"], "mask", "where", 0, None, INFO) == "framework.mask"
    assert classify(r["model"], None, "arange", 0, None, INFO) == "framework.inputs"
    assert classify(r["model.layers.0.mlp"], None, "mul", 0, 1408, INFO) == "mlp.act"
    assert classify(None, None, "mm", 0, 4, INFO) == "framework.other"


@pytest.mark.parametrize(("raw", "norm"), [
    ("aten::linear", "linear"), ("aten.mm.default", "mm"), ("aten::add.Tensor", "add"),
    ("__iadd__", "add_"), ("__radd__", "add"), ("__matmul__", "matmul"),
    ("__getitem__", "getitem"), ("softmax", "softmax")])
def test_op_names_meet_in_one_vocabulary(raw, norm):
    assert normalize(raw) == norm


def test_op_classes():
    assert op_class("linear") == op_class("bmm") == op_class("_grouped_mm") == "flop"
    assert op_class("scaled_dot_product_attention") == "flop"
    assert op_class("add") == op_class("add_") == "add"
    assert op_class("mul") == "mul"
