"""Build the op graph of one step: embedding, the layers (grouped by type), LM head, comm.

Layers with the same structure (dense or MoE feed-forward, sliding or global attention) are
built once from their first layer and carry the number of such layers as ``count``.
"""

from __future__ import annotations

from perfscope.analytic.attention import attention_ops
from perfscope.analytic.common import Ctx, elementwise, gemm, make_ctx, norm, residual
from perfscope.analytic.moe import mlp_ops, moe_ops
from perfscope.analytic.ops import Op, OpGraph
from perfscope.analytic.parallel import all_gather, all_reduce, p2p, shard
from perfscope.specs.model import ModelSpec
from perfscope.specs.scenario import Precision, Scenario


def layer_ops(c: Ctx, layer: int) -> list[Op]:
    m, h = c.m, c.m.hidden
    fused = c.s.fused_norm
    ops = [norm(c, "attn.norm", c.N, h, layer, fused_add=fused)]
    ops += attention_ops(c, layer, m.window(layer))
    if m.norms_per_layer == 4:
        ops.append(norm(c, "attn.post_norm", c.N, h, layer))
    if not fused:
        ops.append(residual(c, "attn.residual", layer))
    ops.append(norm(c, "mlp.norm", c.N, h, layer, fused_add=fused))
    ops += moe_ops(c, layer) if m.is_moe_layer(layer) else mlp_ops(c, layer)
    if m.norms_per_layer == 4:
        ops.append(norm(c, "mlp.post_norm", c.N, h, layer))
    if not fused:
        ops.append(residual(c, "mlp.residual", layer))
    return ops


def _head_ops(c: Ctx) -> list[Op]:
    m, sh, h = c.m, c.sh, c.m.hidden
    ops = []
    # vocab-parallel embedding: each rank gathers the rows it owns (~1/tp of the tokens)
    ops.append(Op("embed", "embedding", None, 1, flops=c.N * h if m.embed_scale else 0.0,
                  weight_bytes=c.N * h * c.hfmt.bits / 8 / sh.tp, act_out_bytes=c.N * h * c.ab,
                  dtype=c.store, unit="vector", shape={"tokens": c.N, "width": h,
                                                       "vocab": sh.vocab}))
    if sh.tp > 1:
        ops.append(all_reduce("tp.embed_allreduce", c.N * h * c.ab, sh.tp, 1, None))
    if m.positional == "learned":
        ops.append(elementwise(c, "pos_embed", c.N, h, None, flops_per=1, n_in=2))
    return ops


def _tail_ops(c: Ctx) -> list[Op]:
    m, sh, h = c.m, c.sh, c.m.hidden
    ops = []
    if m.final_norm:
        ops.append(norm(c, "final_norm", c.N, h, None, fused_add=c.s.fused_norm))
    elif c.s.fused_norm:
        ops.append(residual(c, "final_residual", None))
    # serving engines compute logits for the last token of each sequence only
    ops.append(gemm(c, "lm_head", c.B, sh.vocab, h, None, weights=c.hfmt))
    if sh.tp > 1:
        ops.append(all_gather("tp.logits_gather", c.B * m.vocab * c.ab, sh.tp, 1, None))
    return ops


def _same(a: Op, b: Op) -> bool:
    return (a.flops, a.bytes, a.shape) == (b.flops, b.bytes, b.shape)


def build_graph(m: ModelSpec, s: Scenario, p: Precision) -> tuple[OpGraph, Ctx]:
    """The ops of one step on one GPU, and the context they were built in."""
    c = make_ctx(m, s, p, shard(m, s))
    groups = m.layer_groups
    if len(groups) == 1:
        layers = groups[0][1]
        merged = layer_ops(c._replace(reps=len(layers)), layers[0])
        layer_sets = [layers] * len(merged)
    else:
        built = [(layers, layer_ops(c._replace(reps=len(layers)), layers[0]))
                 for _, layers in groups]
        merged, layer_sets = _merge(built, [k for k, _ in groups])

    head, tail = _head_ops(c), _tail_ops(c)
    ops_all = head + merged + tail
    sets: list[tuple[int, ...] | None] = [None] * len(head) + list(layer_sets) + \
        [None] * len(tail)
    if s.pp > 1:
        ops_all.append(p2p("pp.send", c.N * m.hidden * c.ab, s.pp - 1))
        sets.append(None)
    graph = OpGraph(tuple(ops_all), stage_layers=tuple(len(r) for r in c.sh.stages),
                    op_layers=tuple(sets))
    return graph, c


def _merge(built, keys) -> tuple[list[Op], list[tuple[int, ...]]]:
    """Ops identical across groups merge (counts add up); ops of the same name that differ
    (sliding vs global attention) get the group's tag: ``attn.core@sliding``."""
    windows = {k[1] for k in keys}
    moes = {k[0] for k in keys}

    def tag(key: tuple[bool, int | None]) -> str:
        parts = []
        if len(moes) > 1:
            parts.append("moe" if key[0] else "dense")
        if len(windows) > 1:
            parts.append("sliding" if key[1] else "global")
        return "-".join(parts)

    first: dict[str, Op] = {}
    clash: set[str] = set()
    for _, ops in built:
        for op in ops:
            f = first.setdefault(op.name, op)
            if f is not op and not _same(f, op):
                clash.add(op.name)
    out: dict[str, list] = {}  # name -> [op, layers]
    for (layers, ops), key in zip(built, keys, strict=True):
        for op in ops:
            if op.name in clash:
                op = op._replace(name=f"{op.name}@{tag(key)}")
            slot = out.get(op.name)
            if slot is None:
                out[op.name] = [op, layers]
            else:
                slot[1] = slot[1] + layers
    merged, sets = [], []
    for op, ls in out.values():
        if len(ls) != op.count:
            op = op._replace(count=len(ls), layer=min(ls))
        merged.append(op)
        sets.append(ls)
    return merged, sets
