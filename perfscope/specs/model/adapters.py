"""Adapters: a Hugging Face ``config.json`` mapping -> ModelSpec, one small function per
``model_type``.

Field names and defaults follow transformers (``hf_defaults``): every name its config class
accepts (``attribute_map`` aliases included) is read, and a field left out takes the default
transformers applies for that model type, never a guess. A multimodal wrapper (llava,
mistral3, ...) is read through its ``text_config``: the language model is analysed and the
ModelSpec says so (``text_of``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from perfscope.errors import SpecError
from perfscope.specs.model.activations import ACT_FLOPS
from perfscope.specs.model.checkpoint import checkpoint_quant
from perfscope.specs.model.hf_defaults import ALIASES, DEFAULTS, STRUCTURAL
from perfscope.specs.model.types import MLASpec, ModelSpec, MoESpec

_ABSENT = object()


class _Cfg:
    """Config access that applies transformers' aliases and defaults and names the file and
    field in errors. ``nested``: a wrapper's ``text_config`` (every class default applies)."""

    def __init__(self, d: Mapping[str, Any], file: str, model_type: str, *,
                 prefix: str = "", nested: bool = False):
        self.file, self.model_type, self.prefix, self.nested = file, model_type, prefix, nested
        aliases = ALIASES.get(model_type, {})
        # both names of an alias pair set one attribute: fill whichever the file left out
        self.partner = {**aliases, **{v: k for k, v in aliases.items()}}
        defaults = dict(DEFAULTS.get(model_type, {}))
        data = dict(d)
        for a, b in self.partner.items():
            if a in data and b not in data:
                data[b] = data[a]
            if a in defaults and b not in defaults:
                defaults[b] = defaults[a]
        self.d, self.defaults = data, defaults

    def _get(self, key: str) -> Any:
        if key in self.d:
            return self.d[key]
        if key in self.defaults and (self.nested or key not in STRUCTURAL):
            return self.defaults[key]
        return _ABSENT

    def req(self, key: str) -> Any:
        v = self._get(key)
        if v is _ABSENT or v is None:
            raise SpecError(self.file, self.prefix + key, "missing required field",
                            "use the model's full Hugging Face config.json")
        return v

    def int(self, key: str) -> int:
        v = self.req(key)
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise SpecError(self.file, self.prefix + key,
                            f"expected a positive integer, got {v!r}")
        return v

    def opt(self, key: str, default: Any = None) -> Any:
        """The file's value, else transformers' class default, else ``default``; an
        explicit null in the file stays None."""
        v = self._get(key)
        return default if v is _ABSENT else v

    def activation(self, key: str) -> str:
        act = self.req(key)
        if act not in ACT_FLOPS:
            raise SpecError(self.file, self.prefix + key, f"unknown activation {act!r}",
                            f"use one of transformers' activations: {', '.join(ACT_FLOPS)}")
        return act


def _layer_types_sliding(c: _Cfg, n_layers: int, default: Callable[[int], bool]) -> frozenset:
    lt = c.opt("layer_types")
    if isinstance(lt, list) and len(lt) == n_layers:
        return frozenset(i for i, t in enumerate(lt) if t == "sliding_attention")
    return frozenset(i for i in range(n_layers) if default(i))


def _rotary_fraction(c: _Cfg) -> float:
    # transformers 5 keeps it in rope_parameters; earlier configs at the top level
    rp = c.opt("rope_parameters")
    if isinstance(rp, Mapping) and rp.get("partial_rotary_factor") is not None:
        return float(rp["partial_rotary_factor"])
    return float(c.opt("partial_rotary_factor", 1.0))


def _base(c: _Cfg, name: str, **kw: Any) -> dict[str, Any]:
    n_layers = c.int("num_hidden_layers")
    hidden = c.int("hidden_size")
    heads = c.int("num_attention_heads")
    # class default None: the config class derives it (LlamaConfig.__post_init__ and kin)
    kv = c.opt("num_key_value_heads") or heads
    head_dim = c.opt("head_dim") or hidden // heads
    d = dict(
        name=name, model_type=c.model_type, n_layers=n_layers, hidden=hidden,
        n_heads=heads, n_kv_heads=kv, head_dim=head_dim,
        intermediate=c.int("intermediate_size") if "intermediate" not in kw else None,
        vocab=c.int("vocab_size"),
        max_position=c.int("max_position_embeddings"),
        activation=c.activation("hidden_act") if "activation" not in kw else None,
        tied_embeddings=bool(c.opt("tie_word_embeddings", False)),
        rotary_dim=int(head_dim * _rotary_fraction(c)),
        source=c.file,
    )
    d.update(kw)
    return d


def _llama(c: _Cfg, name: str) -> ModelSpec:
    # llama, mistral, qwen2, qwen3: same skeleton, different biases / windows / qk-norm
    mt = c.model_type
    kw: dict[str, Any] = {}
    if mt == "llama":
        kw["qkv_bias"] = kw["o_bias"] = bool(c.opt("attention_bias", False))
        kw["mlp_bias"] = bool(c.opt("mlp_bias", False))
    elif mt == "qwen2":
        kw["qkv_bias"] = True  # Qwen2Attention: q/k/v always have a bias, o_proj none
    elif mt == "qwen3":
        kw["qkv_bias"] = kw["o_bias"] = bool(c.opt("attention_bias", False))
        kw["qk_norm"] = True
    spec = _base(c, name, **kw)
    n = spec["n_layers"]
    win = c.opt("sliding_window")
    if mt == "mistral":  # MistralConfig: the window applies to every layer when set
        layers = frozenset(range(n)) if win else frozenset()
    elif mt in ("qwen2", "qwen3") and win and c.opt("use_sliding_window", False):
        # Qwen2Config.__post_init__: layers >= max_window_layers use the window
        mwl = c.opt("max_window_layers", n)
        layers = _layer_types_sliding(c, n, lambda i: i >= mwl)
    else:
        layers = frozenset()
    if layers:
        spec.update(sliding_window=int(win), sliding_layers=layers)
    return ModelSpec(**spec)


def _mixtral(c: _Cfg, name: str) -> ModelSpec:
    spec = _base(c, name)
    spec["moe"] = MoESpec(n_experts=c.int("num_local_experts"),
                          top_k=c.int("num_experts_per_tok"),
                          expert_intermediate=spec["intermediate"])
    win = c.opt("sliding_window")
    if win:
        spec.update(sliding_window=int(win), sliding_layers=frozenset(range(spec["n_layers"])))
    return ModelSpec(**spec)


def _qwen_moe(c: _Cfg, name: str) -> ModelSpec:
    mt = c.model_type
    if mt == "qwen3_moe":
        spec = _base(c, name, qk_norm=True, qkv_bias=bool(c.opt("attention_bias", False)),
                     o_bias=bool(c.opt("attention_bias", False)))
        experts, shared = c.int("num_local_experts"), 0
    else:
        spec = _base(c, name, qkv_bias=bool(c.opt("qkv_bias", True)))
        experts, shared = c.int("num_experts"), c.opt("shared_expert_intermediate_size") or 0
    n = spec["n_layers"]
    step = c.opt("decoder_sparse_step", 1)
    only = set(c.opt("mlp_only_layers") or [])
    # Qwen2MoeDecoderLayer: sparse where not mlp-only and (i + 1) % decoder_sparse_step == 0
    dense = frozenset(i for i in range(n) if i in only or (i + 1) % step != 0)
    spec["moe"] = MoESpec(n_experts=experts, top_k=c.int("num_experts_per_tok"),
                          expert_intermediate=c.int("moe_intermediate_size"),
                          shared_intermediate=shared, shared_expert_gate=bool(shared),
                          dense_layers=dense,
                          # Qwen2MoeConfig / Qwen3MoeConfig: norm_topk_prob defaults to False
                          norm_topk_prob=bool(c.opt("norm_topk_prob", False)))
    win = c.opt("sliding_window")
    if win and c.opt("use_sliding_window", False):
        if mt == "qwen2_moe":  # Qwen2MoeConfig: odd-numbered layers below max_window_layers
            mwl = c.opt("max_window_layers", n)
            layers = _layer_types_sliding(c, n, lambda i: (i + 1) % 2 == 1 and i < mwl)
        else:
            layers = frozenset(range(n))
        if layers:
            spec.update(sliding_window=int(win), sliding_layers=layers)
    return ModelSpec(**spec)


def _gemma(c: _Cfg, name: str) -> ModelSpec:
    mt = c.model_type
    if mt == "gemma3_text":
        return _gemma3(c, name)
    if mt == "gemma2":
        act = c.activation("hidden_activation")
    else:
        # GemmaConfig.__post_init__: the legacy "gelu" of the released configs means the
        # tanh approximation
        act = c.opt("hidden_act")
        act = "gelu_pytorch_tanh" if act == "gelu" else c.activation("hidden_act")
    bias = bool(c.opt("attention_bias", False))
    spec = _base(c, name, activation=act, embed_scale=True, qkv_bias=bias, o_bias=bias)
    if mt == "gemma2":
        n = spec["n_layers"]
        spec.update(norms_per_layer=4, logit_softcap=True,
                    sliding_window=c.opt("sliding_window"),
                    sliding_layers=_layer_types_sliding(c, n, lambda i: i % 2 == 0))
        if not spec["sliding_window"]:
            spec["sliding_layers"] = frozenset()
    return ModelSpec(**spec)


def _gemma3(c: _Cfg, name: str) -> ModelSpec:
    """Gemma 3's language model (``gemma3_text``; the multimodal ``gemma3`` wraps it in
    ``text_config``): Gemma 2's four norms per layer and scaled embeddings, plus per-head q/k
    RMSNorm, five sliding-window layers to one global (``layer_types``, or the legacy
    ``sliding_window_pattern`` of 6: Gemma3TextConfig.__post_init__), and soft-capping only
    where the config sets it (the released models set none)."""
    if c.opt("use_bidirectional_attention", False):
        raise SpecError(c.file, c.prefix + "use_bidirectional_attention", "a bidirectional "
                        "Gemma 3 (an embedding model) is not a causal language model",
                        "use a causal Gemma 3 config")
    bias = bool(c.opt("attention_bias", False))
    spec = _base(c, name, activation=c.activation("hidden_activation"), embed_scale=True,
                 qkv_bias=bias, o_bias=bias, qk_norm=True, norms_per_layer=4,
                 logit_softcap=c.opt("attn_logit_softcapping") is not None)
    n = spec["n_layers"]
    pattern = _positive(c, "sliding_window_pattern", 6)
    win = c.opt("sliding_window")
    layers = _layer_types_sliding(c, n, lambda i: (i + 1) % pattern != 0) if win else \
        frozenset()
    if layers:
        spec.update(sliding_window=int(win), sliding_layers=layers)
    return ModelSpec(**spec)


def _phi3(c: _Cfg, name: str) -> ModelSpec:
    spec = _base(c, name, fused_qkv=True, fused_gate_up=True)
    win = c.opt("sliding_window")
    if win:
        spec.update(sliding_window=int(win), sliding_layers=frozenset(range(spec["n_layers"])))
    return ModelSpec(**spec)


def _gpt2(c: _Cfg, name: str) -> ModelSpec:
    hidden = c.int("n_embd")
    # GPT2Block: inner_dim = n_inner if not None else 4 * hidden_size
    inner = c.opt("n_inner") or 4 * hidden
    spec = _base(c, name, intermediate=inner, gated_mlp=False,
                 activation=c.activation("activation_function"), norm="layernorm",
                 qkv_bias=True, o_bias=True, mlp_bias=True, fused_qkv=True,
                 positional="learned", learned_pos_rows=c.int("n_positions"), rotary_dim=0)
    return ModelSpec(**spec)


def _opt(c: _Cfg, name: str) -> ModelSpec:
    hidden = c.int("hidden_size")
    if (c.opt("word_embed_proj_dim") or hidden) != hidden:
        raise SpecError(c.file, c.prefix + "word_embed_proj_dim", "OPT variants with "
                        "project_in/out (opt-350m) are not modelled", "use a config with "
                        "word_embed_proj_dim == hidden_size")
    if not c.opt("do_layer_norm_before", True):
        raise SpecError(c.file, c.prefix + "do_layer_norm_before", "post-norm OPT (opt-350m) "
                        "is not modelled", None)
    bias = bool(c.opt("enable_bias", True))
    spec = _base(c, name, intermediate=c.int("ffn_dim"), gated_mlp=False,
                 activation=c.activation("activation_function"), norm="layernorm",
                 qkv_bias=bias, o_bias=bias, mlp_bias=bias, positional="learned",
                 # OPTLearnedPositionalEmbedding: 2 extra rows (the offset of fairseq's pad)
                 learned_pos_rows=c.int("max_position_embeddings") + 2, rotary_dim=0,
                 final_norm=not c.opt("_remove_final_layer_norm", False))
    return ModelSpec(**spec)


def _positive(c: _Cfg, key: str, default: int) -> int:
    """An optional positive integer field (transformers' default when absent or null)."""
    v = c.opt(key, default)
    v = default if v is None else v
    if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
        raise SpecError(c.file, c.prefix + key, f"expected a positive integer, got {v!r}")
    return v


def _deepseek_v3(c: _Cfg, name: str) -> ModelSpec:
    n = c.int("num_hidden_layers")
    mla = MLASpec(q_lora_rank=c.opt("q_lora_rank"), kv_lora_rank=c.int("kv_lora_rank"),
                  qk_nope_head_dim=c.int("qk_nope_head_dim"),
                  qk_rope_head_dim=c.int("qk_rope_head_dim"), v_head_dim=c.int("v_head_dim"))
    k_dense = c.opt("first_k_dense_replace", 0) or 0
    # transformers has no moe_layer_freq (every layer from first_k_dense_replace on is MoE);
    # vLLM and DeepSeek's own code also require layer % moe_layer_freq == 0
    freq = c.opt("moe_layer_freq", 1) or 1
    dense = frozenset(i for i in range(n) if i < k_dense or i % freq != 0)
    n_shared = c.opt("n_shared_experts", 0) or 0
    moe_i = c.int("moe_intermediate_size")
    spec = _base(c, name, head_dim=mla.v_head_dim, rotary_dim=mla.qk_rope_head_dim)
    spec.update(
        n_kv_heads=spec["n_heads"], mla=mla,
        moe=MoESpec(n_experts=c.int("n_routed_experts"), top_k=c.int("num_experts_per_tok"),
                    expert_intermediate=moe_i, shared_intermediate=n_shared * moe_i,
                    router_bias=c.opt("topk_method", "noaux_tc") == "noaux_tc",
                    dense_layers=dense,
                    # DeepseekV3Config's defaults: 8 groups, the best 4, x2.5, renormalized
                    norm_topk_prob=bool(c.opt("norm_topk_prob", True)),
                    n_group=_positive(c, "n_group", 8), topk_group=_positive(c, "topk_group", 4),
                    routed_scaling_factor=float(c.opt("routed_scaling_factor", 2.5))))
    return ModelSpec(**spec)


ADAPTERS: dict[str, Callable[[_Cfg, str], ModelSpec]] = {
    "llama": _llama,
    "mistral": _llama,
    "qwen2": _llama,
    "qwen3": _llama,
    "qwen2_moe": _qwen_moe,
    "qwen3_moe": _qwen_moe,
    "mixtral": _mixtral,
    "gemma": _gemma,
    "gemma2": _gemma,
    "gemma3_text": _gemma,
    "phi3": _phi3,
    "gpt2": _gpt2,
    "opt": _opt,
    "deepseek_v3": _deepseek_v3,
}


def model_from_config(config: Mapping[str, Any], name: str, file: str = "<config>") -> ModelSpec:
    """Build a ModelSpec from a parsed config.json mapping. A multimodal wrapper whose
    ``text_config`` holds a supported language model is analysed as that language model."""
    if not isinstance(config, Mapping):
        raise SpecError(file, None, "expected a JSON object", "pass a config.json file")
    mt = config.get("model_type")
    if not isinstance(mt, str):
        raise SpecError(file, "model_type", "missing required field",
                        "use the model's full Hugging Face config.json")
    wrapper = None
    text = config.get("text_config")
    if mt not in ADAPTERS and isinstance(text, Mapping):
        wrapper, mt, prefix = mt, text.get("model_type"), "text_config."
        if not isinstance(mt, str):
            raise SpecError(file, "text_config.model_type", "missing required field",
                            "a wrapper's text_config must name its model_type")
        c = _Cfg(text, file, mt, prefix=prefix, nested=True)
    else:
        c = _Cfg(config, file, mt)
    adapter = ADAPTERS.get(mt)
    if adapter is None:
        field = "text_config.model_type" if wrapper else "model_type"
        raise SpecError(file, field, f"unsupported model_type {mt!r}",
                        f"supported: {', '.join(sorted(ADAPTERS))}")
    spec = adapter(c, name)
    quant = checkpoint_quant(config.get("quantization_config"), file)
    if wrapper is not None or quant is not None:
        spec = replace(spec, text_of=wrapper, quant=quant)
    return _check(spec, file)


def _check(s: ModelSpec, file: str) -> ModelSpec:
    if s.n_heads % s.n_kv_heads:
        raise SpecError(file, "num_key_value_heads", f"{s.n_kv_heads} does not divide "
                        f"{s.n_heads} attention heads", None)
    if s.moe and not 1 <= s.moe.top_k <= s.moe.n_experts:
        raise SpecError(file, "num_experts_per_tok", f"top-k {s.moe.top_k} not in "
                        f"1..{s.moe.n_experts}", None)
    e = s.moe
    if e and e.n_group > 1:  # group routing picks top_k within topk_group whole groups
        if e.n_experts % e.n_group:
            raise SpecError(file, "n_group", f"{e.n_experts} experts are not {e.n_group} "
                            "equal groups", None)
        if e.topk_group > e.n_group or e.top_k > e.topk_group * (e.n_experts // e.n_group):
            raise SpecError(file, "topk_group", f"top-{e.top_k} within {e.topk_group} of "
                            f"{e.n_group} groups of {e.n_experts // e.n_group} experts is "
                            "impossible", None)
    return s
