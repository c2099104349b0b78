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

from perfscope.analytic.common import Ctx, elementwise, gemm, norm
from perfscope.analytic.ops import Op, make_op
from perfscope.analytic.parallel import all_reduce

SOFTMAX_FLOPS = 5  # max, subtract, exp, sum, divide (plus the mask add on the unfused path)


def attended_keys(T: int, C0: int, W: int | None) -> float:
    """Sum over the T new tokens of the keys each attends to: sum_{j=C0+1}^{C0+T} min(j, W)."""
    a, b = C0 + 1, C0 + T
    if W is None or b <= W:
        return (a + b) * T / 2
    if a >= W:
        return float(W * T)
    return (a + W) * (W - a + 1) / 2 + (b - W) * W


def cached_tokens(tokens: int, W: int | None) -> int:
    """Tokens a sequence keeps in a layer's cache: a sliding window keeps the last W."""
    return tokens if W is None else min(tokens, W)


def attention_pre(c: Ctx, layer: int) -> list[Op]:
    """Projections before the attention core (the same for every window)."""
    m, sh = c.m, c.sh
    if m.mla is not None:
        return _mla_pre(c, layer)
    H, KV, d, h, N = sh.heads, sh.kv_heads, m.head_dim, m.hidden, c.N
    ops = [gemm(c, "attn.qkv_proj", N, (H + 2 * KV) * d, h, layer, bias=m.qkv_bias)]
    if m.qk_norm:
        ops.append(norm(c, "attn.qk_norm", N, (H + KV) * d, layer, group=d))
    if m.positional == "rope" and m.rotary_dim:
        ops.append(_rotary(c, N, (H + KV) * m.rotary_dim, m.rotary_dim, layer, d))
    return ops


def attention_core(c: Ctx, layer: int, window: int | None) -> list[Op]:
    """The attention itself for layers with this window (None: full attention)."""
    m, sh = c.m, c.sh
    if m.mla is not None:
        return _mla_core(c, layer, window)
    KV, d = sh.kv_heads, m.head_dim
    return _core(c, layer, window, sh.heads, KV, d, d, kv_elems=2 * KV * d,
                 kv_from_act_elems=2 * KV * d)


def attention_post(c: Ctx, layer: int) -> list[Op]:
    """Output projection and the TP all-reduce that follows it."""
    m, sh = c.m, c.sh
    ops = []
    a = m.mla
    if a is not None and _absorb(c):
        ops.append(gemm(c, "attn.v_up", c.N, a.v_head_dim, a.kv_lora_rank, layer,
                        groups=sh.heads, tokens=c.N * sh.heads))
    width = sh.heads * (a.v_head_dim if a else m.head_dim)
    if c.gb < c.ab:  # W8A8: the attention output is quantized for o_proj by its own kernel
        ops.append(elementwise(c, "attn.o_quant", c.N, width, layer, flops_per=0, n_in=1,
                               feeds_gemm=True, impl={"op": "quant_per_token"}))
    ops.append(gemm(c, "attn.o_proj", c.N, m.hidden, width, layer,
                    bias=m.o_bias and a is None))
    if sh.tp > 1:
        ops.append(all_reduce("tp.attn_allreduce", c.N * m.hidden * c.ab, sh.tp, c.reps, layer))
    return ops


def _rotary(c: Ctx, tokens: float, width: int, rot: int, layer: int, head_dim: int) -> Op:
    # out = x * cos + rotate_half(x) * sin: 2 multiplies + 1 add per element, in place on q/k,
    # plus the cos/sin rows of each token; ``width`` counts the rotated elements only
    return elementwise(c, "attn.rotary", tokens, width, layer, flops_per=3, n_in=1, n_out=1,
                       extra_read=tokens * rot * c.ab,
                       impl={"rotary_dim": rot, "head_dim": head_dim})


def _core(c: Ctx, layer: int, W: int | None, H: int, KV: int, dqk: int, dv: int, *,
          kv_elems: int, kv_from_act_elems: int) -> list[Op]:
    """The attention itself. ``kv_elems``: cached elements per token (per rank) that decode
    reads; ``kv_from_act_elems``: K/V elements per token read from activations in prefill."""
    B, T, C0, N = c.B, c.T, c.C0, c.N
    keys = attended_keys(T, C0, W)
    kv_new = N * kv_elems * c.kvb
    q_bytes = N * H * dqk * c.ab
    out_bytes = N * H * dv * c.ab
    if C0 == 0:  # prefill: K/V of the prompt come straight from the projections
        kv_read, kv_act = 0.0, B * T * kv_from_act_elems * c.ab
    else:  # decode / chunked prefill: the whole (window-capped) cache, new tokens included
        kv_read, kv_act = B * cached_tokens(C0 + T, W) * kv_elems * c.kvb, 0.0
    shape = {"batch": B, "q_len": T, "kv_len": cached_tokens(C0 + T, W), "heads": H,
             "kv_heads": KV, "head_dim_qk": dqk, "head_dim_v": dv, "causal": 1,
             "window": W or 0}
    impl = {"attention": c.s.attention, "softcap": c.m.logit_softcap,
            "latent": c.m.mla is not None and KV == 1 and dqk != dv}
    if c.s.attention == "flash":
        flops = 2.0 * B * H * keys * (dqk + dv)  # QK^T and PV over the unmasked keys only
        return [make_op("attn.core", "attention", layer, c.reps, flops, 0.0, q_bytes + kv_act,
                        out_bytes, kv_read, kv_new, c.store, "tensor", shape, 0.0, impl)]
    # unfused: the full T x K score matrix is computed, stored, softmaxed and read back
    K = shape["kv_len"] if C0 else C0 + T
    scores = B * H * T * K
    half_kv_read, half_kv_act = kv_read * dqk / (dqk + dv), kv_act * dqk / (dqk + dv)
    return [
        Op("attn.score", "attention", layer, c.reps, 2.0 * scores * dqk,
           act_in_bytes=q_bytes + half_kv_act, act_out_bytes=scores * c.ab,
           kv_read_bytes=half_kv_read, kv_write_bytes=kv_new, dtype=c.store, unit="tensor",
           shape=shape, impl={**impl, "part": "scores"}),
        Op("attn.softmax", "softmax", layer, c.reps, scores * (SOFTMAX_FLOPS + 1),
           act_in_bytes=scores * c.ab, act_out_bytes=scores * c.ab, dtype=c.store,
           unit="vector", shape={"tokens": B * H * T, "width": K},
           impl={"op": "softmax", "mask": "causal", "q_len": T, "window": W or 0}),
        Op("attn.value", "attention", layer, c.reps, 2.0 * scores * dv,
           act_in_bytes=scores * c.ab + kv_act - half_kv_act, act_out_bytes=out_bytes,
           kv_read_bytes=kv_read - half_kv_read, dtype=c.store, unit="tensor", shape=shape,
           impl={**impl, "part": "values"}),
    ]


def _absorb(c: Ctx) -> bool:
    return c.s.mla_absorb if c.s.mla_absorb is not None else c.s.phase == "decode"


def _mla_pre(c: Ctx, layer: int) -> list[Op]:
    m, sh = c.m, c.sh
    a = m.mla
    assert a is not None
    H, h, N = sh.heads, m.hidden, c.N
    latent = a.kv_lora_rank + a.qk_rope_head_dim
    ops: list[Op] = []
    if a.q_lora_rank:
        # q_a / kv_a are replicated on every TP rank (vLLM ReplicatedLinear)
        ops += [gemm(c, "attn.q_a_proj", N, a.q_lora_rank, h, layer),
                norm(c, "attn.q_a_norm", N, a.q_lora_rank, layer),
                gemm(c, "attn.q_b_proj", N, H * a.qk_head_dim, a.q_lora_rank, layer)]
    else:
        ops.append(gemm(c, "attn.q_proj", N, H * a.qk_head_dim, h, layer))
    ops += [gemm(c, "attn.kv_a_proj", N, latent, h, layer),
            norm(c, "attn.kv_a_norm", N, a.kv_lora_rank, layer),
            _rotary(c, N, (H + 1) * a.qk_rope_head_dim, a.qk_rope_head_dim, layer,
                    a.qk_rope_head_dim)]
    if _absorb(c):
        # q_nope (H x 128) -> latent (H x 512) per head: attention then runs on the latent
        ops.append(gemm(c, "attn.q_absorb", N, a.kv_lora_rank, a.qk_nope_head_dim, layer,
                        groups=H, tokens=N * H))
    else:
        # up-project every attended token's latent (the cached context too in chunked prefill)
        ops.append(gemm(c, "attn.kv_b_proj", c.B * (c.C0 + c.T),
                        H * (a.qk_nope_head_dim + a.v_head_dim), a.kv_lora_rank, layer))
    return ops


def _mla_core(c: Ctx, layer: int, W: int | None) -> list[Op]:
    a = c.m.mla
    assert a is not None
    H = c.sh.heads
    latent = a.kv_lora_rank + a.qk_rope_head_dim
    if _absorb(c):
        return _core(c, layer, W, H, 1, latent, a.kv_lora_rank, kv_elems=latent,
                     kv_from_act_elems=latent)
    kv_act = H * (a.qk_head_dim + a.v_head_dim)
    core = _core(c, layer, W, H, H, a.qk_head_dim, a.v_head_dim, kv_elems=latent,
                 kv_from_act_elems=kv_act)
    if c.C0:  # K/V come from the up-projection, not the cache: re-price the reads
        rows = c.B * (c.C0 + c.T)
        core = [_from_act(op, c, rows * kv_act * c.ab, rows * latent * c.kvb) for op in core]
    return core


def _from_act(op: Op, c: Ctx, act_bytes: float, cache_bytes: float) -> Op:
    if op.kind != "attention" or not op.kv_read_bytes:
        return op
    frac = op.kv_read_bytes / cache_bytes if cache_bytes else 0.0
    return op._replace(kv_read_bytes=0.0, act_in_bytes=op.act_in_bytes + act_bytes * frac)
