"""Attention runners: the fused (flash) path through ``F.scaled_dot_product_attention``, and
the unfused (eager) path's two GEMMs, scores and values, and its repeat_kv copy (GQA/MQA).

Shapes follow the analytic op: ``batch`` sequences of ``q_len`` queries over ``kv_len`` keys
(a prefill longer than its sliding window attends ``q_len`` keys through the window mask),
``heads`` query heads sharing ``kv_heads`` K/V heads (GQA), head dims ``head_dim_qk`` and
``head_dim_v``. The mask is bottom-right aligned: query i sits at position keys - q_len + i.
MLA's absorbed decode (``latent``) attends over the cached latent: V is the first
``head_dim_v`` dims of the same cached K, one KV head for all query heads. The softmax scale
is 1/sqrt(head_dim_qk) (the cost does not depend on it).
"""

from __future__ import annotations

import math
from typing import Any

from perfscope.analytic.ops import Op
from perfscope.errors import MeasureError
from perfscope.measure.checks import random_tensor
from perfscope.measure.dtypes import torch_dtype
from perfscope.measure.runners.common import Runner, compare, need, no_kernel, shape

VERIFY_BATCH = 4  # sequences of each checked output compared with float64
VERIFY_QUERIES = 64  # last queries of each
SOFTCAP = 50.0  # Gemma-2's attn_logit_softcapping, where the op does not give a number


def attention_mask(q_len: int, kv_len: int, causal: bool, window: int, device: str) -> Any:
    """Boolean mask (True = attend), bottom-right aligned: query i sits at position
    kv_len - q_len + i and sees keys j <= pos, and j > pos - window with a window."""
    import torch

    pos = torch.arange(kv_len - q_len, kv_len, device=device)[:, None]
    j = torch.arange(kv_len, device=device)[None, :]
    m = torch.ones(q_len, kv_len, dtype=torch.bool, device=device)
    if causal:
        m &= j <= pos
    if window:
        m &= j > pos - window
    return m


def attention_runner(op: Op, device: str) -> Runner:
    import torch
    import torch.nn.functional as F

    impl = need(op, "attention")
    sh = shape(op, "batch", "q_len", "kv_len", "heads", "kv_heads", "head_dim_qk",
               "head_dim_v")
    B, T, H, KV = sh["batch"], sh["q_len"], sh["heads"], sh["kv_heads"]
    dqk, dv = sh["head_dim_qk"], sh["head_dim_v"]
    K = max(sh["kv_len"], T)  # a prefill past its window still attends all its keys
    causal, window = bool(sh.get("causal", 1)), int(sh.get("window", 0) or 0)
    latent = bool(impl.get("latent"))
    cap = impl.get("softcap")
    cap_value = float(cap) if isinstance(cap, (int, float)) and not isinstance(cap, bool) \
        else SOFTCAP
    if H % KV:
        raise no_kernel(op, f"{H} heads are not groups of {KV} KV heads")
    if latent and dv > dqk:
        raise no_kernel(op, f"latent attention with head_dim_v {dv} > head_dim_qk {dqk}")
    G = H // KV
    dt = torch_dtype(op.dtype)
    scale = 1.0 / math.sqrt(dqk)
    masked = T > 1 and (causal or window) and not (T == K and causal and not window)
    mask = attention_mask(T, K, causal, window, device) if masked else None
    is_causal = T > 1 and causal and not masked
    part = impl.get("part") if impl["attention"] == "unfused" else None
    if impl["attention"] not in ("flash", "unfused"):
        raise no_kernel(op, f"attention {impl['attention']!r} has no runner")
    if impl["attention"] == "unfused" and part not in ("scores", "values"):
        raise no_kernel(op, f"unfused attention part {part!r} has no runner")
    if impl["attention"] == "flash" and cap:
        raise no_kernel(op, "flash attention with logit soft-capping: torch's "
                            "scaled_dot_product_attention has no soft-cap, and an unfused "
                            "stand-in would not be the fused kernel the model runs")

    def inputs(seed: int) -> tuple[Any, Any, Any]:
        if part == "values":  # P @ V: P are probabilities over the keys
            p = torch.softmax(random_tensor((B, H, T, K), torch.float32, device, seed=seed),
                              -1).to(dt)
            return p, None, random_tensor((B, KV, K, dv), dt, device, seed=seed + 2)
        q = random_tensor((B, H, T, dqk), dt, device, seed=seed)
        k = random_tensor((B, KV, K, dqk), dt, device, seed=seed + 1)
        v = None if latent else random_tensor((B, KV, K, dv), dt, device, seed=seed + 2)
        return q, k, v

    def values(k: Any, v: Any) -> Any:
        return k[..., :dv] if latent else v  # latent: V is a view of the cached latent

    if part is None:
        def fn(qkv: tuple[Any, Any, Any], p: Any) -> Any:
            q, k, v = qkv
            return F.scaled_dot_product_attention(q, k, values(k, v), attn_mask=mask,
                                                  is_causal=is_causal, scale=scale,
                                                  enable_gqa=G > 1)
        desc = "F.scaled_dot_product_attention" + (" (GQA)" if G > 1 else "") + \
            (" over the MLA latent (V = K[..., :dv])" if latent else "")
    elif part == "scores":
        def fn(qkv: tuple[Any, Any, Any], p: Any) -> Any:
            q, k, _ = qkv  # (B, KV, G*T, d) @ (B, KV, d, K): GQA without expanding K
            s = (q.reshape(B, KV, G * T, dqk) @ k.transpose(-1, -2)).view(B, H, T, K) * scale
            return torch.tanh(s / cap_value) * cap_value if cap else s
        desc = "Q @ K^T * scale (eager scores)" + (" with logit soft-cap" if cap else "")
    else:
        def fn(qkv: tuple[Any, Any, Any], p: Any) -> Any:
            probs, _, v = qkv
            return (probs.reshape(B, KV, G * T, K) @ v).view(B, H, T, dv)
        desc = "P @ V (eager values)"

    def verify(args: tuple[Any, ...], out: Any) -> float:
        (q, k, v), _ = args
        bs = sorted({round(i * (B - 1) / max(1, VERIFY_BATCH - 1)) for i in
                     range(min(B, VERIFY_BATCH))})
        r = min(T, VERIFY_QUERIES)
        ref = reference(q, k, v, bs, r)
        return compare(out[bs][:, :, T - r:], ref, op.dtype, f"{op.name} {sh}")

    def reference(q: Any, k: Any, v: Any, bs: list[int], r: int) -> Any:
        """transformers' eager_attention_forward in float64 on sequences ``bs``, last r
        queries: repeat_kv, QK^T * scale, (soft-cap), + mask, softmax, @ V."""
        if part == "values":
            return q[bs][:, :, T - r:].double() @ v[bs].double().repeat_interleave(G, 1)
        q64 = q[bs][:, :, T - r:].double()
        k64 = k[bs].double().repeat_interleave(G, 1)
        s = q64 @ k64.transpose(-1, -2) * scale
        if cap:
            s = torch.tanh(s / cap_value) * cap_value
        if part == "scores":
            return s
        if T > 1 and (causal or window):
            allowed = attention_mask(T, K, causal, window, device)[T - r:]
            s = s.masked_fill(~allowed, float("-inf"))
        v64 = values(k, v)[bs].double().repeat_interleave(G, 1)
        return torch.softmax(s, -1) @ v64

    return Runner(desc, fn, inputs, lambda s: {}, verify)


def repeat_kv_runner(op: Op, device: str) -> Runner:
    """Eager GQA/MQA's copy of K and V out to every query head, transformers' ``repeat_kv``:
    x[:, :, None].expand(b, kv_heads, n_rep, s, d).reshape(b, kv_heads * n_rep, s, d), for K
    and for V. The op's ``tokens`` are batch x keys; its layout (``batch``, ``kv_heads``,
    head dims) comes from the attention op it feeds (``opcases.annotate``)."""
    import torch

    impl = need(op, "n_rep", "kv_heads", "head_dim_qk", "head_dim_v")
    sh = shape(op, "tokens", "width")
    n_rep, kv = int(impl["n_rep"]), int(impl["kv_heads"])
    dqk, dv = int(impl["head_dim_qk"]), int(impl["head_dim_v"])
    t, w = sh["tokens"], sh["width"]
    if w != kv * (dqk + dv):
        raise no_kernel(op, f"width {w} is not {kv} KV heads x ({dqk} + {dv})")
    if op.dequant_flops:
        raise no_kernel(op, "an 8-bit cache dequantized while it is copied has no runner")
    b = int(impl.get("batch") or 1)
    b = b if t % b == 0 else 1  # a CPU-scaled op keeps whole sequences only if it can
    s = t // b
    dt = torch_dtype(op.dtype)

    def rep(x: Any) -> Any:  # transformers' repeat_kv
        bb, h, ss, d = x.shape
        return x[:, :, None, :, :].expand(bb, h, n_rep, ss, d).reshape(bb, h * n_rep, ss, d)

    def verify(args: tuple[Any, ...], out: Any) -> float:
        (k, v), _ = args
        for got, src, name in ((out[0], k, "K"), (out[1], v, "V")):
            # head h of the copy is KV head h // n_rep, exactly (a copy does not round)
            if not torch.equal(got, src.repeat_interleave(n_rep, dim=1)):
                raise MeasureError(f"{op.name}: wrong {name} copy")
        return 0.0

    return Runner(f"repeat_kv (expand + reshape copy) of K and V, {kv} -> {kv * n_rep} heads",
                  lambda kvs, p: (rep(kvs[0]), rep(kvs[1])),
                  lambda seed: (random_tensor((b, kv, s, dqk), dt, device, seed=seed),
                                random_tensor((b, kv, s, dv), dt, device, seed=seed + 1)),
                  lambda seed: {}, verify)
