"""Build the op graph of one step: embedding, the layers (grouped by type), LM head, comm.

Layers with the same structure (dense or MoE feed-forward, sliding or global attention) are
built once from their first layer and carry the number of such layers as ``count``.
"""

from __future__ import annotations

from perfscope.analytic.attention import attention_core, attention_post, attention_pre
from perfscope.analytic.common import Ctx, elementwise, gemm, make_ctx, norm, residual
from perfscope.analytic.moe import mlp_ops, moe_ops
from perfscope.analytic.ops import Op, OpGraph, make_op
from perfscope.analytic.parallel import all_gather, all_reduce, p2p, shard
from perfscope.specs.model import ModelSpec
from perfscope.specs.scenario import Precision, Scenario

_new = tuple.__new__


def _with_reps(c: Ctx, reps: int) -> Ctx:
    """``c._replace(reps=reps)`` without NamedTuple._replace's overhead (reps is last)."""
    return _new(Ctx, (*c[:-1], reps))


def _layer_ops(c: Ctx, m: ModelSpec) -> tuple[list[Op], list[tuple[int, ...]]]:
    """The ops of all layers and the layer indices each stands for.

    Layers differ only in their attention window (sliding vs global) and their feed-forward
    (dense MLP vs MoE): those parts are built once per variant, everything else once for all
    layers. With more than one window, the window-specific ops carry a tag in their name
    (``attn.core@sliding``).
    """
    h, fused = m.hidden, c.s.fused_norm
    windows, ffns = m.window_groups, m.ffn_groups
    every = windows[0][1] if len(windows) == 1 else ffns[0][1] if len(ffns) == 1 else \
        tuple(range(m.n_layers))
    call = _with_reps(c, m.n_layers)
    ops: list[Op] = []
    sets: list[tuple[int, ...]] = []

    def add(new: list[Op], layers: tuple[int, ...]) -> None:
        ops.extend(new)
        sets.extend([layers] * len(new))

    add([norm(call, "attn.norm", c.N, h, 0, fused_add=fused, feeds_gemm=True),
         *attention_pre(call, 0)], every)
    for win, lt in windows:
        core = attention_core(_with_reps(c, len(lt)), lt[0], win)
        if len(windows) > 1:
            tag = "@sliding" if win else "@global"
            core = [_new(Op, (op[0] + tag, *op[1:])) for op in core]
        add(core, lt)
    tail = attention_post(call, 0)
    if m.norms_per_layer == 4:
        tail.append(norm(call, "attn.post_norm", c.N, h, 0))
    if not fused:
        tail.append(residual(call, "attn.residual", 0))
    tail.append(norm(call, "mlp.norm", c.N, h, 0, fused_add=fused, feeds_gemm=True))
    add(tail, every)
    for moe, lt in ffns:
        cg = _with_reps(c, len(lt))
        add(moe_ops(cg, lt[0]) if moe else mlp_ops(cg, lt[0]), lt)
    tail = []
    if c.sh.tp > 1:
        tail.append(all_reduce("tp.mlp_allreduce", c.N * h * c.ab, c.sh.tp, m.n_layers, 0))
    if m.norms_per_layer == 4:
        tail.append(norm(call, "mlp.post_norm", c.N, h, 0))
    if not fused:
        tail.append(residual(call, "mlp.residual", 0))
    add(tail, every)
    return ops, sets


def _head_ops(c: Ctx) -> list[Op]:
    m, sh, h = c.m, c.sh, c.m.hidden
    ops = []
    # vocab-parallel embedding: each rank gathers the rows it owns (~1/tp of the tokens)
    ops.append(make_op("embed", "embedding", None, 1, c.N * h if m.embed_scale else 0.0,
                       c.N * h * c.h_bpe / sh.tp, 0.0, c.N * h * c.ab, 0.0, 0.0,
                       c.store, "vector", {"tokens": c.N, "width": h, "vocab": sh.vocab}, 0.0,
                       {"op": "embedding", "scale": m.embed_scale}))
    if sh.tp > 1:
        ops.append(all_reduce("tp.embed_allreduce", c.N * h * c.ab, sh.tp, 1, None))
    if m.positional == "learned":
        ops.append(elementwise(c, "pos_embed", c.N, h, None, flops_per=1, n_in=2,
                               impl={"op": "add"}))
    return ops


def _tail_ops(c: Ctx) -> list[Op]:
    m, sh, h = c.m, c.sh, c.m.hidden
    ops = []
    if m.final_norm:
        ops.append(norm(c, "final_norm", c.N, h, None, fused_add=c.s.fused_norm))
    elif c.s.fused_norm:
        ops.append(residual(c, "final_residual", None))
    # serving engines compute logits for the last token of each sequence only
    ops.append(gemm(c, "lm_head", c.B, sh.vocab, h, None, head=True))
    if sh.tp > 1:
        ops.append(all_gather("tp.logits_gather", c.B * m.vocab * c.ab, sh.tp, 1, None))
    return ops


def build_graph(m: ModelSpec, s: Scenario, p: Precision) -> tuple[OpGraph, Ctx]:
    """The ops of one step on one GPU, and the context they were built in."""
    c = make_ctx(m, s, p, shard(m, s))
    layer_ops, layer_sets = _layer_ops(c, m)
    head, tail = _head_ops(c), _tail_ops(c)
    ops_all = head + layer_ops + tail
    sets: list[tuple[int, ...] | None] = [None] * len(head)
    sets += layer_sets
    sets += [None] * len(tail)
    if s.pp > 1:
        ops_all.append(p2p("pp.send", c.N * m.hidden * c.ab, s.pp - 1))
        sets.append(None)
    graph = OpGraph(tuple(ops_all), tuple(sets))
    return graph, c
