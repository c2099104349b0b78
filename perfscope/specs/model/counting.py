"""The weight inventory: every weight tensor of a layer, once, with its shape on one GPU.

Parameter counts, memory (weight bytes per GPU) and the weight traffic of each GEMM are all
derived from these lists, so a new architecture is taught here and nowhere else. Shapes are
per rank: ``split`` says how tensor, expert and vocabulary parallelism cut each width (the
whole model is the split of one GPU, ``full_split``).
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple, Protocol

from perfscope.specs.model.types import ModelSpec

# how a tensor is stored (perfscope.analytic prices each kind)
LINEAR = "linear"  # a linear layer's weight: the checkpoint / --weight-dtype format
HEAD = "head"  # a matrix kept at 16 bits by quantized checkpoints: embeddings, LM head, router
NORM = "norm"  # a vector kept at 16 bits: norm weights (and their biases), buffers


class Weight(NamedTuple):
    """One weight tensor on one rank: ``rows x cols`` (a vector: ``cols == 0``)."""

    name: str  # the op that reads it ("attn.qkv_proj", "moe.experts_down", "attn.norm")
    rows: int  # output features (a vector: its length)
    cols: int  # input features; 0 for a vector
    kind: str  # LINEAR | HEAD | NORM
    bias: bool = False  # plus a bias of ``rows`` (LayerNorm: its beta)
    copies: int = 1  # instances on the rank (routed experts)
    param: bool = True  # False: a buffer, stored in the checkpoint but not a parameter

    @property
    def elements(self) -> int:
        """Elements of one copy, bias included."""
        return self.rows * (self.cols or 1) + (self.rows if self.bias else 0)


class Split(Protocol):
    """Per-rank widths (``perfscope.analytic.parallel.Shard`` is one)."""

    @property
    def heads(self) -> int: ...
    @property
    def kv_heads(self) -> int: ...
    @property
    def intermediate(self) -> int: ...
    @property
    def expert_intermediate(self) -> int: ...
    @property
    def experts(self) -> int: ...
    @property
    def shared_intermediate(self) -> int: ...
    @property
    def vocab(self) -> int: ...


class FullSplit(NamedTuple):
    heads: int
    kv_heads: int
    intermediate: int
    expert_intermediate: int
    experts: int
    shared_intermediate: int
    vocab: int


def full_split(m: ModelSpec) -> FullSplit:
    """The whole model on one GPU."""
    e = m.moe
    return FullSplit(m.n_heads, m.n_kv_heads, m.intermediate,
                     e.expert_intermediate if e else 0, e.n_experts if e else 0,
                     e.shared_intermediate if e else 0, m.vocab)


def _norm(m: ModelSpec, name: str, width: int) -> Weight:
    return Weight(name, width, 0, NORM, bias=m.norm == "layernorm")


def _mlp(m: ModelSpec, prefix: str, width: int, copies: int = 1, *,
         experts: bool = False) -> list[Weight]:
    # gated: gate and up stacked into one [2I, h] GEMM (vLLM's MergedColumnParallelLinear)
    n_in = 2 if m.gated_mlp else 1
    up = f"{prefix}_gate_up" if experts else \
        f"{prefix}.gate_up_proj" if m.gated_mlp else f"{prefix}.up_proj"
    down = f"{prefix}_down" if experts else f"{prefix}.down_proj"
    return [Weight(up, n_in * width, m.hidden, LINEAR, m.mlp_bias, copies),
            Weight(down, m.hidden, width, LINEAR, m.mlp_bias, copies)]


@lru_cache(maxsize=256)
def layer_weights(m: ModelSpec, moe: bool, split: Split) -> tuple[Weight, ...]:
    """The weights of one layer (MoE or dense feed-forward) on one rank, in execution order."""
    h = m.hidden
    out = [_norm(m, "attn.norm", h)]
    a = m.mla
    if a is not None:
        H = split.heads
        # q_a / kv_a are replicated on every TP rank (vLLM ReplicatedLinear)
        if a.q_lora_rank:
            out += [Weight("attn.q_a_proj", a.q_lora_rank, h, LINEAR),
                    Weight("attn.q_a_norm", a.q_lora_rank, 0, NORM),
                    Weight("attn.q_b_proj", H * a.qk_head_dim, a.q_lora_rank, LINEAR)]
        else:
            out.append(Weight("attn.q_proj", H * a.qk_head_dim, h, LINEAR))
        out += [Weight("attn.kv_a_proj", a.kv_lora_rank + a.qk_rope_head_dim, h, LINEAR),
                Weight("attn.kv_a_norm", a.kv_lora_rank, 0, NORM),
                Weight("attn.kv_b_proj", H * (a.qk_nope_head_dim + a.v_head_dim),
                       a.kv_lora_rank, LINEAR),
                Weight("attn.o_proj", h, H * a.v_head_dim, LINEAR)]
    else:
        H, KV, d = split.heads, split.kv_heads, m.head_dim
        out.append(Weight("attn.qkv_proj", (H + 2 * KV) * d, h, LINEAR, m.qkv_bias))
        if m.qk_norm:  # q_norm and k_norm: one head_dim vector each, shared by all heads
            out.append(Weight("attn.qk_norm", 2 * d, 0, NORM))
        out.append(Weight("attn.o_proj", h, H * d, LINEAR, m.o_bias))
    if m.norms_per_layer == 4:
        out.append(_norm(m, "attn.post_norm", h))
    out.append(_norm(m, "mlp.norm", h))
    if m.norms_per_layer == 4:
        out.append(_norm(m, "mlp.post_norm", h))
    e = m.moe
    if moe and e is not None:
        out.append(Weight("moe.router", e.n_experts, h, HEAD))
        if e.router_bias:  # deepseek's e_score_correction_bias: a buffer in the checkpoint
            out.append(Weight("moe.router_bias", e.n_experts, 0, NORM, param=False))
        out += _mlp(m, "moe.experts", split.expert_intermediate, split.experts, experts=True)
        if e.shared_intermediate:
            out += _mlp(m, "moe.shared", split.shared_intermediate)
            if e.shared_expert_gate:
                out.append(Weight("moe.shared_gate", 1, h, HEAD))
    else:
        out += _mlp(m, "mlp", split.intermediate)
    return tuple(out)


@lru_cache(maxsize=64)
def model_weights(m: ModelSpec, split: Split) -> tuple[Weight, ...]:
    """The weights outside the layers: embeddings, final norm, LM head (when not tied)."""
    h = m.hidden
    out = [Weight("embed", split.vocab, h, HEAD)]  # vocab-parallel: vocab / tp rows per rank
    if m.learned_pos_rows:
        out.append(Weight("pos_embed", m.learned_pos_rows, h, HEAD))
    if m.final_norm:
        out.append(_norm(m, "final_norm", h))
    # a tied LM head is the embedding: stored once, and no parameter of its own
    out.append(Weight("lm_head", split.vocab, h, HEAD, param=not m.tied_embeddings))
    return tuple(out)


def _params(weights: tuple[Weight, ...]) -> int:
    return sum(w.copies * w.elements for w in weights if w.param)


@lru_cache(maxsize=128)
def param_count(m: ModelSpec) -> int:
    """Unique parameters of the whole model (tied weights once)."""
    sp = full_split(m)
    total = _params(model_weights(m, sp))
    for moe, layers in m.ffn_groups:
        total += len(layers) * _params(layer_weights(m, moe, sp))
    return total


@lru_cache(maxsize=128)
def active_param_count(m: ModelSpec) -> int:
    """Parameters one token touches: top-k routed experts of each MoE layer, not all."""
    if m.moe is None:
        return param_count(m)
    sp = full_split(m)
    idle = m.moe.n_experts - m.moe.top_k
    expert = sum(w.elements for w in layer_weights(m, True, sp)
                 if w.name.startswith("moe.experts"))
    return param_count(m) - m.n_moe_layers * idle * expert
