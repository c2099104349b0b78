"""Adapters: a Hugging Face ``config.json`` mapping -> ModelSpec, one small function per
``model_type``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from perfscope.errors import SpecError
from perfscope.specs.model.types import MLASpec, ModelSpec, MoESpec

# ---- adapters: HF config.json -> ModelSpec ------------------------------------------------

class _Cfg:
    """Config access that names the file and field in errors."""

    def __init__(self, d: Mapping[str, Any], file: str):
        self.d, self.file = d, file

    def req(self, *keys: str) -> Any:
        for k in keys:
            if k in self.d and self.d[k] is not None:
                return self.d[k]
        raise SpecError(self.file, keys[0], "missing required field",
                        "use the model's full Hugging Face config.json")

    def int(self, *keys: str) -> int:
        v = self.req(*keys)
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise SpecError(self.file, keys[0], f"expected a positive integer, got {v!r}")
        return v

    def opt(self, key: str, default: Any = None) -> Any:
        v = self.d.get(key)
        return default if v is None else v


def _layer_types_sliding(c: _Cfg, n_layers: int, default: Callable[[int], bool]) -> frozenset:
    lt = c.opt("layer_types")
    if isinstance(lt, list) and len(lt) == n_layers:
        return frozenset(i for i, t in enumerate(lt) if t == "sliding_attention")
    return frozenset(i for i in range(n_layers) if default(i))


def _base(c: _Cfg, name: str, **kw: Any) -> dict[str, Any]:
    n_layers = c.int("num_hidden_layers", "n_layer")
    hidden = c.int("hidden_size", "n_embd")
    heads = c.int("num_attention_heads", "n_head")
    kv = c.opt("num_key_value_heads") or heads
    head_dim = c.opt("head_dim") or hidden // heads
    d = dict(
        name=name, model_type=c.req("model_type"), n_layers=n_layers, hidden=hidden,
        n_heads=heads, n_kv_heads=kv, head_dim=head_dim,
        intermediate=c.opt("intermediate_size", 4 * hidden),
        vocab=c.int("vocab_size"),
        max_position=c.opt("max_position_embeddings") or c.opt("n_positions") or 2048,
        activation=c.opt("hidden_act", "silu"),
        tied_embeddings=bool(c.opt("tie_word_embeddings", False)),
        rotary_dim=int(head_dim * float(c.opt("partial_rotary_factor", 1.0))),
        source=c.file,
    )
    d.update(kw)
    return d


def _llama(c: _Cfg, name: str) -> ModelSpec:
    # llama, mistral, qwen2, qwen3: same skeleton, different biases / windows / qk-norm
    mt = c.req("model_type")
    kw: dict[str, Any] = {}
    if mt == "llama":
        kw["qkv_bias"] = kw["o_bias"] = bool(c.opt("attention_bias", False))
        kw["mlp_bias"] = bool(c.opt("mlp_bias", False))
    elif mt == "qwen2":
        kw["qkv_bias"] = True
    elif mt == "qwen3":
        kw["qkv_bias"] = kw["o_bias"] = bool(c.opt("attention_bias", False))
        kw["qk_norm"] = True
    spec = _base(c, name, **kw)
    n = spec["n_layers"]
    win = c.opt("sliding_window")
    use = c.opt("use_sliding_window", mt == "mistral")
    if win and use:
        if mt in ("qwen2", "qwen3"):
            # qwen: layers >= max_window_layers use the window
            mwl = c.opt("max_window_layers", n)
            layers = _layer_types_sliding(c, n, lambda i: i >= mwl)
        else:
            layers = frozenset(range(n))
        if layers:
            spec.update(sliding_window=int(win), sliding_layers=layers)
    return ModelSpec(**spec)


def _mixtral(c: _Cfg, name: str) -> ModelSpec:
    spec = _base(c, name)
    spec["moe"] = MoESpec(n_experts=c.int("num_local_experts"), top_k=c.int("num_experts_per_tok"),
                          expert_intermediate=spec["intermediate"])
    win = c.opt("sliding_window")
    if win:
        spec.update(sliding_window=int(win), sliding_layers=frozenset(range(spec["n_layers"])))
    return ModelSpec(**spec)


def _qwen_moe(c: _Cfg, name: str) -> ModelSpec:
    spec = _base(c, name, qk_norm=c.req("model_type") == "qwen3_moe",
                 qkv_bias=c.req("model_type") == "qwen2_moe")
    n = spec["n_layers"]
    step = c.opt("decoder_sparse_step", 1)
    only = set(c.opt("mlp_only_layers", []))
    dense = frozenset(i for i in range(n) if i in only or (i + 1) % step != 0)
    shared = c.opt("shared_expert_intermediate_size", 0)
    spec["moe"] = MoESpec(n_experts=c.int("num_experts"), top_k=c.int("num_experts_per_tok"),
                          expert_intermediate=c.int("moe_intermediate_size"),
                          shared_intermediate=shared, shared_expert_gate=bool(shared),
                          dense_layers=dense)
    return ModelSpec(**spec)


def _gemma(c: _Cfg, name: str) -> ModelSpec:
    mt = c.req("model_type")
    act = c.opt("hidden_activation") or c.opt("hidden_act", "gelu_pytorch_tanh")
    spec = _base(c, name, activation=act, embed_scale=True,
                 tied_embeddings=bool(c.opt("tie_word_embeddings", True)),
                 qkv_bias=bool(c.opt("attention_bias", False)),
                 o_bias=bool(c.opt("attention_bias", False)))
    if mt == "gemma2":
        n = spec["n_layers"]
        spec.update(norms_per_layer=4, logit_softcap=True,
                    sliding_window=c.opt("sliding_window"),
                    sliding_layers=_layer_types_sliding(c, n, lambda i: i % 2 == 0))
        if not spec["sliding_window"]:
            spec["sliding_layers"] = frozenset()
    return ModelSpec(**spec)


def _phi3(c: _Cfg, name: str) -> ModelSpec:
    spec = _base(c, name, fused_qkv=True, fused_gate_up=True)
    win = c.opt("sliding_window")
    if win:
        spec.update(sliding_window=int(win), sliding_layers=frozenset(range(spec["n_layers"])))
    return ModelSpec(**spec)


def _gpt2(c: _Cfg, name: str) -> ModelSpec:
    hidden = c.int("n_embd", "hidden_size")
    inner = c.opt("n_inner") or 4 * hidden
    spec = _base(c, name, intermediate=inner, gated_mlp=False,
                 activation=c.opt("activation_function", "gelu_new"), norm="layernorm",
                 tied_embeddings=bool(c.opt("tie_word_embeddings", True)),
                 qkv_bias=True, o_bias=True, mlp_bias=True, fused_qkv=True,
                 positional="learned", learned_pos_rows=c.int("n_positions"), rotary_dim=0,
                 max_position=c.int("n_positions"))
    return ModelSpec(**spec)


def _opt(c: _Cfg, name: str) -> ModelSpec:
    if c.opt("word_embed_proj_dim", c.int("hidden_size")) != c.int("hidden_size"):
        raise SpecError(c.file, "word_embed_proj_dim", "OPT variants with project_in/out "
                        "(opt-350m) are not modelled", "use a config with "
                        "word_embed_proj_dim == hidden_size")
    if not c.opt("do_layer_norm_before", True):
        raise SpecError(c.file, "do_layer_norm_before", "post-norm OPT (opt-350m) is not "
                        "modelled", None)
    spec = _base(c, name, intermediate=c.int("ffn_dim"), gated_mlp=False,
                 activation=c.opt("activation_function", "relu"), norm="layernorm",
                 tied_embeddings=bool(c.opt("tie_word_embeddings", True)),
                 qkv_bias=bool(c.opt("enable_bias", True)), o_bias=bool(c.opt("enable_bias", True)),
                 mlp_bias=bool(c.opt("enable_bias", True)), positional="learned",
                 learned_pos_rows=c.int("max_position_embeddings") + 2, rotary_dim=0,
                 final_norm=not c.opt("_remove_final_layer_norm", False))
    return ModelSpec(**spec)


def _deepseek_v3(c: _Cfg, name: str) -> ModelSpec:
    n = c.int("num_hidden_layers")
    mla = MLASpec(q_lora_rank=c.opt("q_lora_rank"), kv_lora_rank=c.int("kv_lora_rank"),
                  qk_nope_head_dim=c.int("qk_nope_head_dim"),
                  qk_rope_head_dim=c.int("qk_rope_head_dim"), v_head_dim=c.int("v_head_dim"))
    k_dense = c.opt("first_k_dense_replace", 0)
    freq = c.opt("moe_layer_freq", 1)
    dense = frozenset(i for i in range(n) if i < k_dense or i % freq != 0)
    n_shared = c.opt("n_shared_experts", 0) or 0
    moe_i = c.int("moe_intermediate_size")
    spec = _base(c, name, head_dim=mla.v_head_dim, rotary_dim=mla.qk_rope_head_dim)
    spec.update(
        n_kv_heads=spec["n_heads"], mla=mla,
        moe=MoESpec(n_experts=c.int("n_routed_experts"), top_k=c.int("num_experts_per_tok"),
                    expert_intermediate=moe_i, shared_intermediate=n_shared * moe_i,
                    router_bias=c.opt("topk_method", "noaux_tc") == "noaux_tc",
                    dense_layers=dense))
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
    "phi3": _phi3,
    "gpt2": _gpt2,
    "opt": _opt,
    "deepseek_v3": _deepseek_v3,
}


def model_from_config(config: Mapping[str, Any], name: str, file: str = "<config>") -> ModelSpec:
    """Build a ModelSpec from a parsed config.json mapping."""
    if not isinstance(config, Mapping):
        raise SpecError(file, None, "expected a JSON object", "pass a config.json file")
    c = _Cfg(config, file)
    mt = c.req("model_type")
    adapter = ADAPTERS.get(mt)
    if adapter is None:
        raise SpecError(file, "model_type", f"unsupported model_type {mt!r}",
                        f"supported: {', '.join(sorted(ADAPTERS))}")
    spec = adapter(c, name)
    return _check(spec, file)


def _check(s: ModelSpec, file: str) -> ModelSpec:
    if s.n_heads % s.n_kv_heads:
        raise SpecError(file, "num_key_value_heads", f"{s.n_kv_heads} does not divide "
                        f"{s.n_heads} attention heads", None)
    if s.moe and not 1 <= s.moe.top_k <= s.moe.n_experts:
        raise SpecError(file, "num_experts_per_tok", f"top-k {s.moe.top_k} not in "
                        f"1..{s.moe.n_experts}", None)
    return s


