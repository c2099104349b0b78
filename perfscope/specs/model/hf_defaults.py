"""What transformers does with a config.json's field names and with fields it leaves out.

``ALIASES`` are the config classes' ``attribute_map``s: both names set the same attribute, so a
config saved by transformers 5 (``num_local_experts`` for qwen3_moe) and one written by hand
(``num_experts``) mean the same. ``DEFAULTS`` are the config classes' defaults for the fields
perfscope reads. Both are transcribed from transformers 5.24
(``transformers/models/<type>/configuration_<type>.py``; tests/test_crosscheck_transformers.py
checks them against the installed transformers). perfscope needs no transformers at run time.

Defaults apply as transformers applies them: a field absent from the file takes the class
default (an explicit ``null`` stays None). At the top level of a config.json the structural
sizes (``STRUCTURAL``) are required all the same: ``save_pretrained`` always writes them, so a
file without them is not a model's config. Inside a multimodal wrapper's ``text_config``,
configs saved by transformers 4.x keep only the values that differ from the class defaults
(llava-1.5's text_config has no ``hidden_size``), so there every default applies.
"""

from __future__ import annotations

from typing import Any

ALIASES: dict[str, dict[str, str]] = {
    "gpt2": {"hidden_size": "n_embd", "max_position_embeddings": "n_positions",
             "num_attention_heads": "n_head", "num_hidden_layers": "n_layer"},
    "mixtral": {"num_experts": "num_local_experts"},
    "qwen3_moe": {"num_experts": "num_local_experts"},
    "deepseek_v3": {"num_local_experts": "n_routed_experts",
                    "num_mtp_layers": "num_nextn_predict_layers"},
}

# sizes a top-level config.json must state (save_pretrained always writes them)
STRUCTURAL = frozenset({
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
    "num_attention_heads", "moe_intermediate_size", "num_experts", "num_local_experts",
    "n_routed_experts", "num_experts_per_tok", "kv_lora_rank", "qk_nope_head_dim",
    "qk_rope_head_dim", "v_head_dim", "ffn_dim", "n_embd", "n_layer", "n_head",
})

_LLAMA_SIZES = dict(vocab_size=32000, hidden_size=4096, num_hidden_layers=32,
                    num_attention_heads=32)
_QWEN_WINDOW = dict(use_sliding_window=False, sliding_window=4096, max_window_layers=28)

DEFAULTS: dict[str, dict[str, Any]] = {
    # num_key_value_heads / head_dim None: the class derives them (heads, hidden // heads)
    "llama": dict(_LLAMA_SIZES, intermediate_size=11008, num_key_value_heads=None,
                  head_dim=None, hidden_act="silu", max_position_embeddings=2048,
                  tie_word_embeddings=False, attention_bias=False, mlp_bias=False),
    "mistral": dict(_LLAMA_SIZES, intermediate_size=14336, num_key_value_heads=8,
                    head_dim=None, hidden_act="silu", max_position_embeddings=4096 * 32,
                    tie_word_embeddings=False, sliding_window=4096),
    "mixtral": dict(_LLAMA_SIZES, intermediate_size=14336, num_key_value_heads=8,
                    head_dim=None, hidden_act="silu", max_position_embeddings=4096 * 32,
                    tie_word_embeddings=False, sliding_window=None, num_local_experts=8,
                    num_experts_per_tok=2),
    "qwen2": dict(vocab_size=151936, hidden_size=4096, intermediate_size=22016,
                  num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                  hidden_act="silu", max_position_embeddings=32768,
                  tie_word_embeddings=False, **_QWEN_WINDOW),
    "qwen3": dict(vocab_size=151936, hidden_size=4096, intermediate_size=22016,
                  num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                  head_dim=128, hidden_act="silu", max_position_embeddings=32768,
                  tie_word_embeddings=False, attention_bias=False, **_QWEN_WINDOW),
    "qwen2_moe": dict(vocab_size=151936, hidden_size=2048, intermediate_size=5632,
                      num_hidden_layers=24, num_attention_heads=16, num_key_value_heads=16,
                      hidden_act="silu", max_position_embeddings=32768,
                      tie_word_embeddings=False, decoder_sparse_step=1,
                      moe_intermediate_size=1408, shared_expert_intermediate_size=5632,
                      num_experts_per_tok=4, num_experts=60, mlp_only_layers=None,
                      qkv_bias=True, **_QWEN_WINDOW),
    "qwen3_moe": dict(vocab_size=151936, hidden_size=2048, intermediate_size=6144,
                      num_hidden_layers=24, num_attention_heads=32, num_key_value_heads=4,
                      hidden_act="silu", max_position_embeddings=32768,
                      tie_word_embeddings=False, attention_bias=False,
                      use_sliding_window=False, sliding_window=4096, decoder_sparse_step=1,
                      moe_intermediate_size=768, num_experts_per_tok=8,
                      num_local_experts=128, mlp_only_layers=None),
    "gemma": dict(vocab_size=256000, hidden_size=3072, intermediate_size=24576,
                  num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=16,
                  head_dim=256, hidden_act="gelu_pytorch_tanh", max_position_embeddings=8192,
                  tie_word_embeddings=True, attention_bias=False),
    "gemma2": dict(vocab_size=256000, hidden_size=2304, intermediate_size=9216,
                   num_hidden_layers=26, num_attention_heads=8, num_key_value_heads=4,
                   head_dim=256, hidden_activation="gelu_pytorch_tanh",
                   max_position_embeddings=8192, tie_word_embeddings=True,
                   attention_bias=False, sliding_window=4096),
    "gemma3_text": dict(vocab_size=262208, hidden_size=2304, intermediate_size=9216,
                        num_hidden_layers=26, num_attention_heads=8, num_key_value_heads=4,
                        head_dim=256, hidden_activation="gelu_pytorch_tanh",
                        max_position_embeddings=131072, tie_word_embeddings=True,
                        attention_bias=False, sliding_window=4096, layer_types=None,
                        attn_logit_softcapping=None, use_bidirectional_attention=False),
    "phi3": dict(vocab_size=32064, hidden_size=3072, intermediate_size=8192,
                 num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=None,
                 hidden_act="silu", max_position_embeddings=4096, tie_word_embeddings=False,
                 sliding_window=None),
    "gpt2": dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12,
                 n_inner=None, activation_function="gelu_new", tie_word_embeddings=True),
    "opt": dict(vocab_size=50272, hidden_size=768, num_hidden_layers=12, ffn_dim=3072,
                max_position_embeddings=2048, do_layer_norm_before=True,
                _remove_final_layer_norm=False, word_embed_proj_dim=None,
                num_attention_heads=12, activation_function="relu", enable_bias=True,
                tie_word_embeddings=True),
    "deepseek_v3": dict(vocab_size=129280, hidden_size=7168, intermediate_size=18432,
                        moe_intermediate_size=2048, num_hidden_layers=61,
                        num_attention_heads=128, num_key_value_heads=128,
                        n_shared_experts=1, n_routed_experts=256, kv_lora_rank=512,
                        q_lora_rank=1536, qk_rope_head_dim=64, v_head_dim=128,
                        qk_nope_head_dim=128, num_experts_per_tok=8, first_k_dense_replace=3,
                        hidden_act="silu", max_position_embeddings=4096,
                        tie_word_embeddings=False, attention_bias=False),
}
