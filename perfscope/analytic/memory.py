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


def kv_bytes_per_token(c: Ctx, layer: int) -> float:
    """Cached bytes per token of one sequence in one layer on one rank."""
    m = c.model
    if m.mla:  # the latent and rotary key, shared by all heads: every TP rank holds it all
        return m.kv_elements_per_token(layer) * c.kv_bytes
    return 2 * c.shard.kv_heads * m.head_dim * c.kv_bytes


def memory(c: Ctx, largest_op_io: float, capacity: float, reserve: float) -> MemoryReport:
    """``largest_op_io``: the largest inputs + outputs of one op (roofline.Sums)."""
    m, sh = c.model, c.shard
    tokens = c.scenario.tokens_after
    per_layer = [(c.layer_weight_bytes[moe],
                  c.batch * cached_tokens(tokens, win) * kv_bytes_per_token(c, layers[0]),
                  layers)
                 for (moe, win), layers in m.layer_groups]
    weights = kv = -1.0  # of the busiest stage
    for si, stage in enumerate(sh.stages):
        w = k = 0.0
        for layer_w, layer_kv, layers in per_layer:
            n = len(layers) if sh.pp == 1 else sum(1 for i in layers if i in stage)
            w += layer_w * n
            k += layer_kv * n
        # outside the layers: embeddings on the first stage, final norm and LM head on the
        # last (a tied LM head is the embedding, unless the two sit on different stages)
        if si == 0:
            w += c.weights["embed"].bytes + \
                (c.weights["pos_embed"].bytes if m.learned_pos_rows else 0.0)
        if si == len(sh.stages) - 1:
            w += c.weights["final_norm"].bytes if m.final_norm else 0.0
            if not m.tied_embeddings or sh.pp > 1:
                w += c.weights["lm_head"].bytes
        if w + k > weights + kv:
            weights, kv = w, k
    # live activations: the largest op's inputs and outputs plus the residual stream
    act = largest_op_io + c.tokens * m.hidden * c.act_bytes
    usable = capacity * (1 - reserve)
    per_seq = (kv + act) / c.batch
    # per attention-DP group; the step's batch spreads over attn_dp groups
    max_batch = max(0, math.floor((usable - weights) / per_seq)) * c.shard.attn_dp \
        if per_seq > 0 else 0
    return MemoryReport(weights, kv, act, capacity, reserve, max_batch)
