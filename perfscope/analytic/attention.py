"""Attention sub-layer: projections, rotary, the attention itself (flash or unfused), output.

Conventions (per TP rank, B sequences, T new tokens each, C0 cached before the step):
- Query token i (0-based) of a sequence attends to min(C0 + i + 1, W) keys (causal, window W).
- Flash attention computes only the unmasked causal part and keeps scores on chip; K and V are
  read once per KV head (GQA shares them across the query heads of the group).
- The unfused (eager) path computes the full T x (C0 + T) score matrix, writes it to HBM,
  softmaxes it in a separate pass and reads it back for P @ V.
- Decode reads the cache once (the new token included) and writes only the new token's K/V.
- MLA: prefill up-projects the latent to per-head K/V (kv_b_proj) and runs ordinary attention;
  decode absorbs W_UK into the query and W_UV into the output (DeepSeek/vLLM), so attention runs
  over the cached latent (kv_lora_rank) plus the shared rotary key, like MQA.
"""

from __future__ import annotations

from perfscope.analytic.common import Ctx, Site, elementwise, gemm_part, linear, norm
from perfscope.analytic.ops import Op, make_op
from perfscope.analytic.parallel import all_reduce

SOFTMAX_FLOPS = 5  # max, subtract, exp, sum, divide (plus the mask add on the unfused path)


def attended_keys(new: int, cached: int, window: int | None) -> float:
    """Sum over the ``new`` tokens of the keys each attends to, with ``cached`` before them:
    sum_{j=cached+1}^{cached+new} min(j, window)."""
    a, b = cached + 1, cached + new
    if window is None or b <= window:
        return (a + b) * new / 2
    if a >= window:
        return float(window * new)
    return (a + window) * (window - a + 1) / 2 + (b - window) * window


def cached_tokens(tokens: int, window: int | None) -> int:
    """Tokens a sequence keeps in a layer's cache: a sliding window keeps the last ones."""
    return tokens if window is None else min(tokens, window)


def kv_tokens_read(new: int, cached: int, window: int | None) -> int:
    """Distinct cached tokens (new ones included) the ``new`` queries attend to: with a window
    W, query j sees tokens j-W+1..j, so the chunk needs the last W-1 cached tokens before it
    plus its own: min(cached + new, W - 1 + new) (decode: min(cached + 1, W))."""
    return cached + new if window is None else min(cached + new, window - 1 + new)


def attention_pre(c: Ctx, at: Site) -> list[Op]:
    """Projections before the attention core (the same for every window)."""
    m, sh = c.model, c.shard
    if m.mla is not None:
        return _mla_pre(c, at)
    heads, kv_heads, d, tokens = sh.heads, sh.kv_heads, m.head_dim, c.tokens
    ops = [linear(c, "attn.qkv_proj", tokens, at)]
    if m.qk_norm:
        ops.append(norm(c, "attn.qk_norm", tokens, (heads + kv_heads) * d, at, group=d))
    if m.positional == "rope" and m.rotary_dim:
        ops.append(_rotary(c, tokens, (heads + kv_heads) * m.rotary_dim, m.rotary_dim, at, d))
    return ops


def attention_core(c: Ctx, at: Site, window: int | None, tag: str = "") -> list[Op]:
    """The attention itself for layers with this window (None: full attention); ``tag``
    ends the op names where layers differ in their window (``attn.core@sliding``)."""
    m, sh = c.model, c.shard
    if m.mla is not None:
        return _mla_core(c, at, window, tag)
    kv_heads, d = sh.kv_heads, m.head_dim
    return _core(c, at, window, tag, sh.heads, kv_heads, d, d, kv_elems=2 * kv_heads * d,
                 kv_from_act_elems=2 * kv_heads * d)


def attention_post(c: Ctx, at: Site) -> list[Op]:
    """Output projection and the TP all-reduce that follows it."""
    m, sh = c.model, c.shard
    ops = []
    a = m.mla
    if a is not None and _absorb(c):
        # per head: the latent output (kv_lora) times W_UV (kv_lora -> v_head_dim)
        ops.append(gemm_part(c, "attn.v_up", "attn.kv_b_proj", c.tokens, a.v_head_dim,
                             a.kv_lora_rank, sh.heads, at))
    width = sh.heads * (a.v_head_dim if a else m.head_dim)
    if c.gemm_in_bytes < c.act_bytes:  # W8A8: the attention output is quantized for o_proj
        ops.append(elementwise(c, "attn.o_quant", c.tokens, width, at, flops_per=0, n_in=1,
                               feeds_gemm=True, impl={"op": "quant_per_token"}))
    ops.append(linear(c, "attn.o_proj", c.tokens, at))
    if sh.tp > 1:
        ops.append(all_reduce("tp.attn_allreduce", c.tokens * m.hidden * c.act_bytes, sh.tp,
                              at.count, at.layer))
    return ops


def _rotary(c: Ctx, tokens: float, width: int, rot: int, at: Site, head_dim: int) -> Op:
    # out = x * cos + rotate_half(x) * sin: 2 multiplies + 1 add per element, in place on q/k,
    # plus the cos/sin rows of each token; ``width`` counts the rotated elements only
    return elementwise(c, "attn.rotary", tokens, width, at, flops_per=3, n_in=1, n_out=1,
                       extra_read=tokens * rot * c.act_bytes,
                       impl={"rotary_dim": rot, "head_dim": head_dim})


def _core(c: Ctx, at: Site, window: int | None, tag: str, heads: int, kv_heads: int,
          dqk: int, dv: int, *, kv_elems: int, kv_from_act_elems: int) -> list[Op]:
    """The attention itself. ``kv_elems``: cached elements per token (per rank) that decode
    reads; ``kv_from_act_elems``: K/V elements per token read from activations in prefill."""
    batch, new, cached, tokens = c.batch, c.new_tokens, c.cached, c.tokens
    ab = c.act_bytes
    keys = attended_keys(new, cached, window)
    kv_len = kv_tokens_read(new, cached, window)
    kv_new = tokens * kv_elems * c.kv_bytes
    q_bytes = tokens * heads * dqk * ab
    out_bytes = tokens * heads * dv * ab
    if cached == 0:  # prefill: K/V of the prompt come straight from the projections
        kv_read, kv_act = 0.0, batch * new * kv_from_act_elems * ab
    else:  # decode / chunked prefill: the whole (window-capped) cache, new tokens included
        kv_read, kv_act = batch * kv_len * kv_elems * c.kv_bytes, 0.0
    shape = {"batch": batch, "q_len": new, "kv_len": kv_len, "heads": heads,
             "kv_heads": kv_heads, "head_dim_qk": dqk, "head_dim_v": dv, "causal": 1,
             "window": window or 0}
    impl = {"attention": c.scenario.attention, "softcap": c.model.logit_softcap,
            "latent": c.model.mla is not None and kv_heads == 1 and dqk != dv,
            "kv_dtype": c.precision.kv}
    # an 8-bit cache without 8-bit attention math: each element read is scaled and converted
    # to 16 bits (2 FLOPs) on the vector unit
    deq = 2.0 * kv_read / c.kv_bytes if c.precision.kv_dequant else 0.0
    if c.scenario.attention == "flash":
        flops = 2.0 * batch * heads * keys * (dqk + dv)  # QK^T and PV over unmasked keys only
        return [make_op("attn.core" + tag, "attention", at.layer, at.count, flops, 0.0,
                        q_bytes + kv_act, out_bytes, kv_read, kv_new, c.store_dtype, "tensor",
                        shape, deq, impl)]
    # unfused: the full T x K score matrix is computed, stored, softmaxed and read back
    K = kv_len if cached else cached + new
    scores = batch * heads * new * K
    ops = []
    if kv_heads < heads and c.model.mla is None:
        # eager GQA/MQA (transformers' repeat_kv): K and V are first copied out to every query
        # head; the attention GEMMs then read the expanded copies
        rep = make_op("attn.repeat_kv" + tag, "elementwise", at.layer, at.count, 0.0, 0.0,
                      kv_act, batch * K * heads * (dqk + dv) * ab, kv_read, 0.0,
                      c.store_dtype, "vector",
                      {"tokens": batch * K, "width": kv_heads * (dqk + dv)}, deq,
                      {"op": "repeat_kv", "n_rep": heads // kv_heads})
        ops.append(rep)
        kv_read = deq = 0.0
        kv_act = batch * K * heads * (dqk + dv) * ab
    half_kv_read, half_kv_act = kv_read * dqk / (dqk + dv), kv_act * dqk / (dqk + dv)
    return [
        *ops,
        Op("attn.score" + tag, "attention", at.layer, at.count, 2.0 * scores * dqk,
           act_in_bytes=q_bytes + half_kv_act, act_out_bytes=scores * ab,
           kv_read_bytes=half_kv_read, kv_write_bytes=kv_new, dtype=c.store_dtype,
           unit="tensor", shape=shape, dequant_flops=deq * dqk / (dqk + dv),
           impl={**impl, "part": "scores"}),
        Op("attn.softmax" + tag, "softmax", at.layer, at.count, scores * (SOFTMAX_FLOPS + 1),
           act_in_bytes=scores * ab, act_out_bytes=scores * ab, dtype=c.store_dtype,
           unit="vector", shape={"tokens": batch * heads * new, "width": K},
           impl={"op": "softmax", "mask": "causal", "q_len": new, "window": window or 0}),
        Op("attn.value" + tag, "attention", at.layer, at.count, 2.0 * scores * dv,
           act_in_bytes=scores * ab + kv_act - half_kv_act, act_out_bytes=out_bytes,
           kv_read_bytes=kv_read - half_kv_read, dtype=c.store_dtype, unit="tensor",
           shape=shape, dequant_flops=deq * dv / (dqk + dv), impl={**impl, "part": "values"}),
    ]


def _absorb(c: Ctx) -> bool:
    s = c.scenario
    return s.mla_absorb if s.mla_absorb is not None else s.phase == "decode"


def _mla_pre(c: Ctx, at: Site) -> list[Op]:
    m, sh = c.model, c.shard
    a = m.mla
    assert a is not None
    heads, tokens = sh.heads, c.tokens
    ops: list[Op] = []
    if a.q_lora_rank:
        ops += [linear(c, "attn.q_a_proj", tokens, at),
                norm(c, "attn.q_a_norm", tokens, a.q_lora_rank, at),
                linear(c, "attn.q_b_proj", tokens, at)]
    else:
        ops.append(linear(c, "attn.q_proj", tokens, at))
    ops += [linear(c, "attn.kv_a_proj", tokens, at),
            norm(c, "attn.kv_a_norm", tokens, a.kv_lora_rank, at),
            _rotary(c, tokens, (heads + 1) * a.qk_rope_head_dim, a.qk_rope_head_dim, at,
                    a.qk_rope_head_dim)]
    if _absorb(c):
        # per head: q_nope (qk_nope_head_dim) times W_UK -> the latent (kv_lora_rank)
        ops.append(gemm_part(c, "attn.q_absorb", "attn.kv_b_proj", tokens, a.kv_lora_rank,
                             a.qk_nope_head_dim, heads, at))
    else:
        # up-project every attended token's latent (the cached context too in chunked
        # prefill): the new tokens' latent leaves kv_a_norm at 16 bits, the context comes out
        # of the cache at its dtype; an fp8 GEMM (W8A8) or an 8-bit cache needs one pass
        # that quantizes (or casts) them to the GEMM's input first
        rows = c.batch * (c.cached + c.new_tokens)
        stored = (c.tokens * c.act_bytes + c.batch * c.cached * c.kv_bytes) * a.kv_lora_rank
        w8a8 = c.gemm_in_bytes < c.act_bytes
        if w8a8 or (c.cached and c.kv_bytes != c.act_bytes):
            ops.append(elementwise(c, "attn.kv_b_input", rows, a.kv_lora_rank, at,
                                   flops_per=0 if w8a8 else 1, n_in=0, extra_read=stored,
                                   feeds_gemm=True,
                                   impl={"op": "quant_per_token" if w8a8 else "cast"}))
        ops.append(linear(c, "attn.kv_b_proj", rows, at))
    return ops


def _mla_core(c: Ctx, at: Site, window: int | None, tag: str) -> list[Op]:
    a = c.model.mla
    assert a is not None
    heads = c.shard.heads
    latent = a.kv_lora_rank + a.qk_rope_head_dim
    if _absorb(c):
        return _core(c, at, window, tag, heads, 1, latent, a.kv_lora_rank, kv_elems=latent,
                     kv_from_act_elems=latent)
    kv_act = heads * (a.qk_head_dim + a.v_head_dim)
    core = _core(c, at, window, tag, heads, heads, a.qk_head_dim, a.v_head_dim,
                 kv_elems=latent, kv_from_act_elems=kv_act)
    if c.cached:  # K/V come from the up-projection, not the cache: re-price the reads
        rows = c.batch * (c.cached + c.new_tokens)
        core = [_from_act(op, rows * kv_act * c.act_bytes, rows * latent * c.kv_bytes)
                for op in core]
    return core


def _from_act(op: Op, act_bytes: float, cache_bytes: float) -> Op:
    if op.kind != "attention" or not op.kv_read_bytes:
        return op
    frac = op.kv_read_bytes / cache_bytes if cache_bytes else 0.0
    return op._replace(kv_read_bytes=0.0, dequant_flops=0.0,
                       act_in_bytes=op.act_in_bytes + act_bytes * frac)
