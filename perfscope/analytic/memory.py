"""GPU memory of a step: weights, KV cache, activation peak; fit and the largest batch.

All figures are per GPU, for the busiest pipeline stage. Linear layers are stored in the
weight format (int4 with its group scales); embeddings, LM head, router and norms stay at 16
bits, as quantized checkpoints served by vLLM keep them.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from perfscope.analytic.attention import cached_tokens
from perfscope.analytic.common import Ctx
from perfscope.units import QuantFormat


class MemoryReport(NamedTuple):
    weights_bytes: float
    kv_cache_bytes: float
    activation_peak_bytes: float
    capacity_bytes: float
    reserve_fraction: float
    max_batch: int  # largest batch that fits at these lengths (0: not even one sequence)

    @property
    def total_bytes(self) -> float:
        return self.weights_bytes + self.kv_cache_bytes + self.activation_peak_bytes

    @property
    def usable_bytes(self) -> float:
        return self.capacity_bytes * (1 - self.reserve_fraction)

    @property
    def fits(self) -> bool:
        return self.total_bytes <= self.usable_bytes


def _linear(w: QuantFormat, out: int, inp: int, bias: bool, ab: float) -> float:
    return w.bytes_for(out, inp) + (out * ab if bias else 0.0)


def layer_weight_bytes(c: Ctx, layer: int) -> float:
    m, sh, w, hb = c.m, c.sh, c.wfmt, c.h_bpe
    h = m.hidden
    norm_w = h * (2 if m.norm == "layernorm" else 1) * hb
    total = m.norms_per_layer * norm_w
    H = sh.heads
    if m.mla:
        a = m.mla
        lat = a.kv_lora_rank + a.qk_rope_head_dim
        if a.q_lora_rank:
            total += w.bytes_for(a.q_lora_rank, h) + a.q_lora_rank * hb \
                + w.bytes_for(H * a.qk_head_dim, a.q_lora_rank)
        else:
            total += w.bytes_for(H * a.qk_head_dim, h)
        total += w.bytes_for(lat, h) + a.kv_lora_rank * hb \
            + w.bytes_for(H * (a.qk_nope_head_dim + a.v_head_dim), a.kv_lora_rank) \
            + w.bytes_for(h, H * a.v_head_dim)
    else:
        d, KV = m.head_dim, sh.kv_heads
        total += _linear(w, (H + 2 * KV) * d, h, m.qkv_bias, hb) + \
            _linear(w, h, H * d, m.o_bias, hb)
        if m.qk_norm:
            total += 2 * d * hb
    n_in = 2 if m.gated_mlp else 1
    if m.is_moe_layer(layer):
        e = m.moe
        assert e is not None
        I = sh.expert_intermediate
        total += e.n_experts * h * hb + (e.n_experts * hb if e.router_bias else 0.0)
        total += sh.experts * (_linear(w, n_in * I, h, m.mlp_bias, hb)
                               + _linear(w, h, I, m.mlp_bias, hb))
        if e.shared_intermediate:
            S = sh.shared_intermediate
            total += _linear(w, n_in * S, h, m.mlp_bias, hb) + _linear(w, h, S, m.mlp_bias, hb)
            if e.shared_expert_gate:
                total += h * hb
    else:
        I = sh.intermediate
        total += _linear(w, n_in * I, h, m.mlp_bias, hb) + _linear(w, h, I, m.mlp_bias, hb)
    return total


def _layer_weight_bytes_memo(c: Ctx, layer: int) -> float:
    sh, w = c.sh, c.wfmt
    key = ("layer_weight_bytes", c.m.is_moe_layer(layer), sh.heads, sh.kv_heads,
           sh.intermediate, sh.expert_intermediate, sh.experts, sh.shared_intermediate,
           w.dtype, w.group_size, c.hfmt.dtype)
    v = c.m.memo.get(key)
    if v is None:
        v = c.m.memo[key] = layer_weight_bytes(c, layer)
    return v


def kv_bytes_per_token(c: Ctx, layer: int) -> float:
    """Cached bytes per token of one sequence in one layer on one rank."""
    if c.m.mla:  # the latent and rotary key, shared by all heads: every TP rank holds it all
        return c.m.kv_elements_per_token(layer) * c.kvb
    return 2 * c.sh.kv_heads * c.m.head_dim * c.kvb


def memory(c: Ctx, largest_op_io: float, capacity: float, reserve: float) -> MemoryReport:
    """``largest_op_io``: the largest inputs + outputs of one op (roofline.Sums)."""
    m, sh = c.m, c.sh
    tokens = c.s.tokens_after
    per_layer = [(_layer_weight_bytes_memo(c, layers[0]),
                  c.B * cached_tokens(tokens, win) * kv_bytes_per_token(c, layers[0]), layers)
                 for (_, win), layers in m.layer_groups]
    best = None
    for si, stage in enumerate(sh.stages):
        w = kv = 0.0
        for lw, lkv, layers in per_layer:
            n = len(layers) if sh.pp == 1 else sum(1 for i in layers if i in stage)
            w += lw * n
            kv += lkv * n
        hb = c.h_bpe
        if si == 0:
            w += sh.vocab * m.hidden * hb + m.learned_pos_rows * m.hidden * hb
        if si == len(sh.stages) - 1:
            w += m.hidden * (2 if m.norm == "layernorm" else 1) * hb if m.final_norm else 0
            if not m.tied_embeddings or sh.pp > 1:
                w += sh.vocab * m.hidden * hb
        if best is None or w + kv > best[0] + best[1]:
            best = (w, kv)
    assert best is not None
    weights, kv = best
    # live activations: the largest op's inputs and outputs plus the residual stream
    act = largest_op_io + c.N * m.hidden * c.ab
    usable = capacity * (1 - reserve)
    per_seq = (kv + act) / c.B
    max_batch = max(0, math.floor((usable - weights) / per_seq)) if per_seq > 0 else 0
    return MemoryReport(weights, kv, act, capacity, reserve, max_batch)
