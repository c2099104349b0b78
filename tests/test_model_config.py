"""Config files as users have them (issue 6, item 7), without transformers installed.

The transformers side (class defaults, attribute maps, configs it saves) is checked in
test_crosscheck_transformers.py; here, the refusals and the names perfscope accepts.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from perfscope.errors import SpecError
from perfscope.specs.model import load_model, model_from_config

ROOT = Path(__file__).resolve().parents[1]


def cfg(name: str) -> dict:
    return json.loads((ROOT / "workloads" / "models" / f"{name}.json").read_text())


def test_qwen3_moe_saved_by_transformers_5_names_its_experts_num_local_experts():
    raw = cfg("qwen3-30b-a3b")
    raw["num_local_experts"] = raw.pop("num_experts")  # Qwen3MoeConfig.attribute_map
    m = model_from_config(raw, "q")
    assert m.moe is not None and m.moe.n_experts == 128
    assert m.params == load_model("qwen3-30b-a3b").params


def test_deepseek_accepts_num_local_experts_too():
    raw = cfg("deepseek-v3")
    raw["num_local_experts"] = raw.pop("n_routed_experts")  # DeepseekV3Config.attribute_map
    assert model_from_config(raw, "d").moe.n_experts == 256


@pytest.mark.parametrize("field", ["intermediate_size", "hidden_size", "vocab_size",
                                   "num_hidden_layers"])
def test_a_top_level_config_without_a_size_is_refused_naming_it(field):
    raw = cfg("llama-3.1-8b")
    del raw[field]
    with pytest.raises(SpecError, match=f"{field}: missing required field"):
        model_from_config(raw, "x", "x.json")


def test_unknown_activation_is_refused_not_guessed():
    raw = cfg("llama-3.1-8b") | {"hidden_act": "squareplus"}
    with pytest.raises(SpecError, match="hidden_act: unknown activation 'squareplus'"):
        model_from_config(raw, "x", "x.json")


def test_left_out_context_length_is_the_model_types_default():
    # LlamaConfig.max_position_embeddings = 2048; MistralConfig = 4096 * 32 (transformers 5)
    llama = cfg("llama-3.1-8b")
    del llama["max_position_embeddings"]
    assert model_from_config(llama, "x").max_position == 2048
    mistral = cfg("mistral-7b")
    del mistral["max_position_embeddings"]
    assert model_from_config(mistral, "x").max_position == 131072


def test_gpt2_inner_width_defaults_to_four_times_hidden():
    raw = cfg("gpt2")
    raw.pop("n_inner", None)
    assert model_from_config(raw, "g").intermediate == 4 * 768  # GPT2Block's rule


def test_gemma_legacy_gelu_is_the_tanh_approximation():
    assert load_model("gemma-2b").activation == "gelu_pytorch_tanh"  # GemmaConfig post-init


def test_wrapper_with_an_unsupported_language_model_names_it():
    raw = {"model_type": "llama4", "text_config": {"model_type": "llama4_text"}}
    with pytest.raises(SpecError, match=r"text_config\.model_type: unsupported model_type "
                                        r"'llama4_text'"):
        model_from_config(raw, "x", "x.json")


def test_wrapper_text_config_takes_class_defaults():
    # llava-1.5: a text_config saved as the difference from LlamaConfig's defaults
    raw = {"model_type": "llava", "text_config": {"model_type": "llama", "vocab_size": 32064,
                                                  "max_position_embeddings": 4096}}
    m = model_from_config(raw, "llava")
    assert (m.n_layers, m.hidden, m.intermediate, m.n_heads, m.n_kv_heads) == \
        (32, 4096, 11008, 32, 32)
    assert m.text_of == "llava" and "language model of llava" in repr(m)


# ---- names users type: Hugging Face hub ids of the built-in configs ----------------------

@pytest.mark.parametrize(("hub_id", "builtin"), [
    ("Qwen/Qwen3-32B", "qwen3-32b"),
    ("qwen/qwen3-32b", "qwen3-32b"),  # hub ids are matched without regard to case
    ("meta-llama/Llama-3.1-8B-Instruct", "llama-3.1-8b"),  # same architecture as the base
    ("google/gemma-2-9b-it", "gemma-2-9b"),
    ("Qwen/Qwen3-235B-A22B-FP8", "qwen3-235b-a22b-fp8"),  # exact id beats the base model's
    ("deepseek-ai/DeepSeek-R1", "deepseek-v3"),  # documented as the same architecture
])
def test_a_hub_id_names_its_built_in_config(hub_id, builtin):
    m = load_model(hub_id)
    assert m.name == builtin
    assert m.params == load_model(builtin).params


def test_an_unknown_hub_id_is_refused_as_a_missing_file_naming_both_ways():
    from perfscope.errors import NotFoundError

    with pytest.raises(NotFoundError, match=r"'foo/bar': file does not exist.*hub id"):
        load_model("foo/bar")


def test_qwen3_32b_widths_are_its_published_shape():
    """Qwen3-32B (hub config): 64 layers, hidden 5120, 64 query heads and 8 KV heads of 128,
    MLP 25600, vocab 151936, untied. Parameters by hand: per layer q 5120x8192, k and v
    5120x1024 each, o 8192x5120, MLP 3 x 5120 x 25600, norms 2 x 5120 + q/k norms 2 x 128;
    plus embeddings and LM head 2 x 151936 x 5120 and the final norm."""
    h, q, kv, f, v, n = 5120, 64 * 128, 8 * 128, 25600, 151936, 64
    layer = h * q + 2 * h * kv + q * h + 3 * h * f + 2 * h + 2 * 128
    assert load_model("qwen3-32b").params == n * layer + 2 * v * h + h == 32_762_123_264
