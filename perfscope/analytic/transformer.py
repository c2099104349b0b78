"""Build the op graph of one step: embedding, the layers (grouped by type), LM head, comm.

Layers with the same structure (dense or MoE feed-forward, sliding or global attention) are
built once from their first layer and carry the number of such layers as ``count``.
"""

from __future__ import annotations

from perfscope.analytic.attention import attention_core, attention_post, attention_pre
from perfscope.analytic.common import (
    OUTSIDE,
    Ctx,
    Site,
    elementwise,
    linear,
    make_ctx,
    norm,
    residual,
)
from perfscope.analytic.moe import mlp_ops, moe_ops
from perfscope.analytic.ops import Op, OpGraph, make_op
from perfscope.analytic.parallel import all_gather, all_reduce, p2p, shard
from perfscope.specs.model import ModelSpec
from perfscope.specs.precision import Precision
from perfscope.specs.scenario import Scenario


def _layer_ops(c: Ctx) -> tuple[list[Op], list[tuple[int, ...]]]:
    """The ops of all layers and the layer indices each stands for.

    Layers differ only in their attention window (sliding vs global) and their feed-forward
    (dense MLP vs MoE): those parts are built once per variant, everything else once for all
    layers. With more than one window, the window-specific ops carry a tag in their name
    (``attn.core@sliding``).
    """
    m = c.model
    h, fused, tokens = m.hidden, c.scenario.fused_norm, c.tokens
    windows, ffns = m.window_groups, m.ffn_groups
    every = m.all_layers  # the layers the shared ops stand for
    each = Site(0, m.n_layers)
    ops: list[Op] = []
    sets: list[tuple[int, ...]] = []

    def add(new: list[Op], layers: tuple[int, ...]) -> None:
        ops.extend(new)
        sets.extend([layers] * len(new))

    add([norm(c, "attn.norm", tokens, h, each, fused_add=fused, feeds_gemm=True),
         *attention_pre(c, each)], every)
    for win, layers in windows:
        tag = ("@sliding" if win else "@global") if len(windows) > 1 else ""
        add(attention_core(c, Site(layers[0], len(layers)), win, tag), layers)
    tail = attention_post(c, each)
    if m.norms_per_layer == 4:
        tail.append(norm(c, "attn.post_norm", tokens, h, each))
    if not fused:
        tail.append(residual(c, "attn.residual", each))
    tail.append(norm(c, "mlp.norm", tokens, h, each, fused_add=fused, feeds_gemm=True))
    add(tail, every)
    for moe, layers in ffns:
        at = Site(layers[0], len(layers))
        add(moe_ops(c, at) if moe else mlp_ops(c, at), layers)
    tail = []
    if c.shard.tp > 1:
        tail.append(all_reduce("tp.mlp_allreduce", tokens * h * c.act_bytes, c.shard.tp,
                               m.n_layers, 0))
    if m.norms_per_layer == 4:
        tail.append(norm(c, "mlp.post_norm", tokens, h, each))
    if not fused:
        tail.append(residual(c, "mlp.residual", each))
    add(tail, every)
    return ops, sets


def _head_ops(c: Ctx) -> list[Op]:
    m, sh, h, tokens = c.model, c.shard, c.model.hidden, c.tokens
    ops = []
    # vocab-parallel embedding: each rank gathers the rows it owns (~1/tp of the tokens)
    ops.append(make_op("embed", "embedding", None, 1, tokens * h if m.embed_scale else 0.0,
                       tokens * h * c.head_bytes / sh.tp, 0.0, tokens * h * c.act_bytes, 0.0,
                       0.0, c.store_dtype, "vector",
                       {"tokens": tokens, "width": h, "vocab": sh.vocab}, 0.0,
                       {"op": "embedding", "scale": m.embed_scale}))
    if sh.tp > 1:
        ops.append(all_reduce("tp.embed_allreduce", tokens * h * c.act_bytes, sh.tp, 1, None))
    if m.positional == "learned":
        ops.append(elementwise(c, "pos_embed", tokens, h, OUTSIDE, flops_per=1, n_in=2,
                               impl={"op": "add"}))
    return ops


def _tail_ops(c: Ctx) -> list[Op]:
    m, sh = c.model, c.shard
    ops = []
    if m.final_norm:
        ops.append(norm(c, "final_norm", c.tokens, m.hidden, OUTSIDE,
                        fused_add=c.scenario.fused_norm))
    elif c.scenario.fused_norm:
        ops.append(residual(c, "final_residual", OUTSIDE))
    # serving engines compute logits for the last token of each sequence only
    ops.append(linear(c, "lm_head", c.batch, OUTSIDE))
    if sh.tp > 1:
        ops.append(all_gather("tp.logits_gather", c.batch * m.vocab * c.act_bytes, sh.tp, 1,
                              None))
    return ops


def build_graph(m: ModelSpec, s: Scenario, p: Precision) -> tuple[OpGraph, Ctx]:
    """The ops of one step on one GPU, and the context they were built in."""
    c = make_ctx(m, s, p, shard(m, s))
    layer_ops, layer_sets = _layer_ops(c)
    head, tail = _head_ops(c), _tail_ops(c)
    ops_all = head + layer_ops + tail
    sets: list[tuple[int, ...] | None] = [None] * len(head)
    sets += layer_sets
    sets += [None] * len(tail)
    if s.pp > 1:  # each GPU hands its activations to its peer in the next stage
        ops_all.append(p2p("pp.send", c.tokens * m.hidden * c.act_bytes, s.pp - 1,
                           group="pp", stride=s.tp * s.attn_dp))
        sets.append(None)
    return OpGraph(tuple(ops_all), tuple(sets)), c
