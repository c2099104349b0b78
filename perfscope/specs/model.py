"""ModelSpec: a transformer's shape, built offline from a Hugging Face ``config.json``.

One small adapter per ``model_type`` maps the config's field names onto ModelSpec. Parameter
counts follow the reference (transformers) implementation exactly: every weight, bias and norm
vector, tied embeddings counted once, no multi-token-prediction head for DeepSeek-V3.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perfscope.errors import NotFoundError, SpecError


@dataclass(frozen=True, slots=True)
class MoESpec:
    n_experts: int
    top_k: int
    expert_intermediate: int
    shared_intermediate: int = 0  # all shared experts together (0: none)
    shared_expert_gate: bool = False  # qwen2_moe: sigmoid gate Linear(hidden, 1)
    router_bias: bool = False  # deepseek-v3: e_score_correction_bias (n_experts)
    dense_layers: frozenset[int] = frozenset()  # layers with a dense MLP instead


@dataclass(frozen=True, slots=True)
class MLASpec:
    """DeepSeek multi-head latent attention ranks."""

    q_lora_rank: int | None
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    model_type: str
    n_layers: int
    hidden: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    intermediate: int  # dense MLP width
    vocab: int
    max_position: int
    gated_mlp: bool = True  # SwiGLU/GeGLU: gate and up projections
    activation: str = "silu"
    norm: str = "rmsnorm"  # rmsnorm | layernorm (layernorm has a bias)
    norms_per_layer: int = 2  # gemma2: 4 (pre/post attention and feed-forward)
    qk_norm: bool = False  # qwen3: per-head RMSNorm on q and k
    tied_embeddings: bool = False
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    fused_qkv: bool = False  # one QKV GEMM (phi3, gpt2)
    fused_gate_up: bool = False  # phi3
    positional: str = "rope"  # rope | learned
    learned_pos_rows: int = 0  # rows of the learned position table
    rotary_dim: int = 0  # per head; 0 with learned positions
    sliding_window: int | None = None
    sliding_layers: frozenset[int] = frozenset()  # layers that use the window
    embed_scale: bool = False  # gemma multiplies embeddings by sqrt(hidden)
    logit_softcap: bool = False  # gemma2 attention/final logit soft-capping
    final_norm: bool = True
    moe: MoESpec | None = None
    mla: MLASpec | None = None
    source: str = ""
    # derived: layers grouped by structure, ((is_moe, window), (layer indices...)), in order
    layer_groups: tuple[tuple[tuple[bool, int | None], tuple[int, ...]], ...] = field(
        default=(), init=False, compare=False, repr=False)
    # the same layers grouped by attention window alone and by feed-forward kind alone
    window_groups: tuple[tuple[int | None, tuple[int, ...]], ...] = field(
        default=(), init=False, compare=False, repr=False)
    ffn_groups: tuple[tuple[bool, tuple[int, ...]], ...] = field(
        default=(), init=False, compare=False, repr=False)
    # memo of pure derived figures (per-rank weight bytes of a layer type, ...), filled lazily
    memo: dict = field(default_factory=dict, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        groups: dict[tuple[bool, int | None], list[int]] = {}
        for i in range(self.n_layers):
            groups.setdefault((self.is_moe_layer(i), self.window(i)), []).append(i)
        object.__setattr__(self, "layer_groups",
                           tuple((k, tuple(v)) for k, v in groups.items()))
        wins: dict[int | None, list[int]] = {}
        ffns: dict[bool, list[int]] = {}
        for i in range(self.n_layers):
            wins.setdefault(self.window(i), []).append(i)
            ffns.setdefault(self.is_moe_layer(i), []).append(i)
        object.__setattr__(self, "window_groups", tuple((k, tuple(v)) for k, v in wins.items()))
        object.__setattr__(self, "ffn_groups", tuple((k, tuple(v)) for k, v in ffns.items()))

    # ---- layer structure ----------------------------------------------------------
    def is_moe_layer(self, i: int) -> bool:
        return self.moe is not None and i not in self.moe.dense_layers

    def window(self, i: int) -> int | None:
        return self.sliding_window if i in self.sliding_layers else None

    @property
    def q_dim(self) -> int:
        return self.n_heads * (self.mla.qk_head_dim if self.mla else self.head_dim)

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    def kv_elements_per_token(self, i: int) -> int:
        """Cached elements per token in layer ``i`` (MLA: latent plus rotary key)."""
        if self.mla:
            return self.mla.kv_lora_rank + self.mla.qk_rope_head_dim
        return 2 * self.n_kv_heads * self.head_dim

    # ---- parameters -----------------------------------------------------------------
    def _norm_params(self) -> int:
        return self.hidden * (2 if self.norm == "layernorm" else 1)

    def attention_params(self) -> int:
        h = self.hidden
        if self.mla:
            m, nh = self.mla, self.n_heads
            if m.q_lora_rank:
                q = h * m.q_lora_rank + m.q_lora_rank + m.q_lora_rank * nh * m.qk_head_dim
            else:
                q = h * nh * m.qk_head_dim
            kv = h * (m.kv_lora_rank + m.qk_rope_head_dim) + m.kv_lora_rank \
                + m.kv_lora_rank * nh * (m.qk_nope_head_dim + m.v_head_dim)
            return q + kv + nh * m.v_head_dim * h
        qkv_out = self.q_dim + 2 * self.kv_dim
        p = h * qkv_out + self.q_dim * h
        if self.qkv_bias:
            p += qkv_out
        if self.o_bias:
            p += h
        if self.qk_norm:
            p += 2 * self.head_dim
        return p

    def mlp_params(self, width: int | None = None) -> int:
        h, i = self.hidden, width or self.intermediate
        n_in = 2 if self.gated_mlp else 1
        p = (n_in + 1) * h * i
        if self.mlp_bias:
            p += n_in * i + h
        return p

    def expert_params(self) -> int:
        assert self.moe is not None
        return self.mlp_params(self.moe.expert_intermediate)

    def moe_params(self) -> int:
        assert self.moe is not None
        m = self.moe
        # deepseek's e_score_correction_bias is a buffer in the reference implementation:
        # stored in the checkpoint (memory counts it) but not a parameter
        p = self.hidden * m.n_experts + m.n_experts * self.expert_params()
        if m.shared_intermediate:
            p += self.mlp_params(m.shared_intermediate)
            if m.shared_expert_gate:
                p += self.hidden
        return p

    def layer_params(self, i: int) -> int:
        ffn = self.moe_params() if self.is_moe_layer(i) else self.mlp_params()
        return self.attention_params() + ffn + self.norms_per_layer * self._norm_params()

    def embedding_params(self) -> int:
        """Token embedding plus learned positions (the LM head is separate)."""
        return self.vocab * self.hidden + self.learned_pos_rows * self.hidden

    def lm_head_params(self) -> int:
        return 0 if self.tied_embeddings else self.vocab * self.hidden

    @property
    def params(self) -> int:
        """Unique parameters, tied weights once (what ``model.parameters()`` sums to)."""
        n_moe = sum(1 for i in range(self.n_layers) if self.is_moe_layer(i))
        n_dense = self.n_layers - n_moe
        total = self.embedding_params() + self.lm_head_params()
        total += (self.final_norm and self._norm_params()) or 0
        total += n_dense * self.layer_params(self._first(False))
        if n_moe:
            total += n_moe * self.layer_params(self._first(True))
        return total

    @property
    def active_params(self) -> int:
        """Parameters one token touches: top-k (plus shared) experts instead of all."""
        if self.moe is None:
            return self.params
        n_moe = sum(1 for i in range(self.n_layers) if self.is_moe_layer(i))
        idle = (self.moe.n_experts - self.moe.top_k) * self.expert_params()
        return self.params - n_moe * idle

    def _first(self, moe: bool) -> int:
        return next((i for i in range(self.n_layers) if self.is_moe_layer(i) == moe), 0)


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
    act = "gelu_pytorch_tanh" if act == "gelu" else act  # transformers: legacy "gelu" = tanh
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


def read_config(path: Path) -> dict[str, Any]:
    from perfscope.specs._toml import read_text

    text = read_text(path, "a config.json file")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise SpecError(str(path), None, f"invalid JSON at line {e.lineno} column {e.colno}",
                        "fix the syntax") from None
    if not isinstance(data, dict):
        raise SpecError(str(path), None, "expected a JSON object", "pass a config.json file")
    return data


def model_dirs() -> list[Path]:
    import os

    here = Path(__file__).resolve().parent.parent
    dirs = [d for d in (here / "workloads" / "models", here.parent / "workloads" / "models")
            if d.is_dir()][:1]
    extra = os.environ.get("PERFSCOPE_SPEC_PATH", "")
    dirs += [Path(p) for p in extra.split(os.pathsep) if p]
    return dirs


def model_files() -> list[Path]:
    return [p for d in model_dirs() for p in sorted(d.glob("*.json"))]


def load_model(name: str) -> ModelSpec:
    """A built-in model by name (``llama-3.1-8b``), or a path to a config.json."""
    p = Path(name)
    if name.endswith(".json") or p.is_dir() or "/" in name:
        if p.is_dir():
            if not (p / "config.json").is_file():
                raise NotFoundError(f"--model {name}: the folder has no config.json; pass the "
                                    "config.json of a Hugging Face model")
            p = p / "config.json"
        if not p.is_file():
            raise NotFoundError(f"--model {name}: file does not exist; check the path or use "
                                "a built-in name (perfscope models list)")
        stem = p.parent.name if p.name == "config.json" else p.stem
        return model_from_config(read_config(p), stem, str(p))
    key = name.lower().replace("_", "-")
    for f in model_files():
        if f.stem.lower() == key:
            return model_from_config(read_config(f), f.stem, str(f))
    names = ", ".join(f.stem for f in model_files())
    raise NotFoundError(f"--model {name!r} is not built in; choose one of {names} "
                        "or pass a config.json path")
