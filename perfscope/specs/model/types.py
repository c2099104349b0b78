"""The model records: ModelSpec and its MoE / MLA / checkpoint parts (frozen, hashable).

Counts (parameters, active parameters) are derived from the weight inventory in
``perfscope.specs.model.counting``; nothing here holds mutable state.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields


@dataclass(frozen=True, slots=True)
class MoESpec:
    n_experts: int
    top_k: int
    expert_intermediate: int
    shared_intermediate: int = 0  # all shared experts together (0: none)
    shared_expert_gate: bool = False  # qwen2_moe: sigmoid gate Linear(hidden, 1)
    router_bias: bool = False  # deepseek-v3: e_score_correction_bias (n_experts)
    dense_layers: frozenset[int] = frozenset()  # layers with a dense MLP instead
    # routing, as transformers' config names it: renormalize the top-k weights to sum to 1
    # (Mixtral always; Qwen-MoE and DeepSeek-V3 by norm_topk_prob); DeepSeek-V3 picks experts
    # within the topk_group best of n_group expert groups and scales the weights by
    # routed_scaling_factor (1 group and a factor of 1 elsewhere: plain top-k)
    norm_topk_prob: bool = True
    n_group: int = 1
    topk_group: int = 1
    routed_scaling_factor: float = 1.0


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
class CheckpointQuant:
    """How the checkpoint's linear weights are stored, from ``quantization_config``.

    ``weight``/``act`` are perfscope dtypes (``act`` None: weight-only); ``block`` the
    (rows, cols) of one scale block (DeepSeek-V3 fp8: 128 x 128), ``group_size`` the input
    elements sharing one scale (AWQ/GPTQ int4: 128; NVFP4: 16).
    """

    method: str  # quant_method as written: fp8, compressed-tensors, awq, gptq, modelopt
    weight: str
    act: str | None
    group_size: int | None = None
    block: tuple[int, int] | None = None
    zero_point: bool = False  # asymmetric int4 (AWQ, GPTQ): a 4-bit zero per group
    per_channel: bool = False  # one scale per output channel (else per tensor, for fp8)
    kv: str | None = None  # the KV-cache dtype the checkpoint was calibrated for
    summary: str = ""  # "fp8 e4m3, 128x128 blocks, dynamic activations"


# layer groups: ((is_moe, window), (layer indices...)) in order
LayerGroups = tuple[tuple[tuple[bool, int | None], tuple[int, ...]], ...]


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A transformer's shape, as its Hugging Face config describes it.

    ``params`` and ``active_params`` count what ``model.parameters()`` sums to in the
    reference implementation (tied weights once). Hashable and immutable: derived figures
    are cached on pure functions keyed by it, never stored on it.
    """

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
    quant: CheckpointQuant | None = None  # the checkpoint's own weight format
    text_of: str | None = None  # multimodal wrapper whose language model (text_config) this is
    source: str = ""
    # derived in __post_init__ (not arguments): layers grouped by structure, in order
    layer_groups: LayerGroups = field(default=(), init=False, compare=False)
    # the same layers grouped by attention window alone and by feed-forward kind alone
    window_groups: tuple[tuple[int | None, tuple[int, ...]], ...] = field(
        default=(), init=False, compare=False)
    ffn_groups: tuple[tuple[bool, tuple[int, ...]], ...] = field(
        default=(), init=False, compare=False)
    all_layers: tuple[int, ...] = field(default=(), init=False, compare=False)
    _hash: int = field(default=0, init=False, compare=False)

    def __post_init__(self) -> None:
        groups: dict[tuple[bool, int | None], list[int]] = {}
        wins: dict[int | None, list[int]] = {}
        ffns: dict[bool, list[int]] = {}
        for i in range(self.n_layers):
            moe, win = self.is_moe_layer(i), self.window(i)
            groups.setdefault((moe, win), []).append(i)
            wins.setdefault(win, []).append(i)
            ffns.setdefault(moe, []).append(i)
        object.__setattr__(self, "layer_groups", tuple((k, tuple(v)) for k, v in groups.items()))
        object.__setattr__(self, "window_groups", tuple((k, tuple(v)) for k, v in wins.items()))
        object.__setattr__(self, "ffn_groups", tuple((k, tuple(v)) for k, v in ffns.items()))
        object.__setattr__(self, "all_layers", tuple(range(self.n_layers)))
        # the record is a cache key on every analysis: hash its fields once
        object.__setattr__(self, "_hash", hash(tuple(getattr(self, f.name) for f in fields(self)
                                                     if f.compare)))

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        attn = "MLA" if self.mla else ("MHA" if self.n_kv_heads == self.n_heads else
                                       f"GQA {self.n_heads}/{self.n_kv_heads}")
        moe = f", MoE {self.moe.n_experts}x top-{self.moe.top_k}" if self.moe else ""
        quant = f", checkpoint {self.quant.weight}" if self.quant else ""
        text = f", language model of {self.text_of}" if self.text_of else ""
        return (f"ModelSpec({self.name!r}: {self.model_type}, {self.params / 1e9:.2f}B params, "
                f"{self.n_layers} layers x {self.hidden}, {attn}{moe}{quant}{text})")

    # ---- layer structure ----------------------------------------------------------
    def is_moe_layer(self, i: int) -> bool:
        return self.moe is not None and i not in self.moe.dense_layers

    def window(self, i: int) -> int | None:
        return self.sliding_window if i in self.sliding_layers else None

    @property
    def n_moe_layers(self) -> int:
        return sum(len(layers) for moe, layers in self.ffn_groups if moe)

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

    # ---- parameters (derived from the weight inventory) ---------------------------
    @property
    def params(self) -> int:
        """Unique parameters, tied weights once (what ``model.parameters()`` sums to)."""
        from perfscope.specs.model.counting import param_count

        return param_count(self)

    @property
    def active_params(self) -> int:
        """Parameters one token touches: top-k (plus shared) experts instead of all."""
        from perfscope.specs.model.counting import active_param_count

        return active_param_count(self)
