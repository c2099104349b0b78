"""Triton versions of the reference kernels (CUDA only).

This module imports triton and torch when it loads, so the JIT sees its kernels' globals; it
is itself imported lazily, only by ``get_impl("triton")`` and the benchmarks once
``triton_unavailable_reason`` (in the package init) says Triton can run. Nothing else imports it.

- add + RMSNorm: one program per row holds the whole row in registers (BLOCK = next power of
  two >= hidden): the fused kernel reads x and r once and writes h and out; the unfused pair
  is an element-wise add kernel and the same row kernel without the add.
- Decode attention, two paths chosen by ``num_splits``. One pass (``num_splits=1``): one
  program per (sequence, KV head) serving the head's GQA group of query heads, looping over
  the whole sequence a tile of ``block_n`` tokens at a time with an online softmax (vLLM
  paged-attention v1 style). Split-KV (``num_splits > 1``; flash-decoding, vLLM v2 style):
  sequence b's ``ceil(len_b / block_n)`` tiles are cut into ``num_splits`` chunks of whole
  tiles, one program per (sequence, KV head, split) writes its chunk's fp32 partial (running
  max m, sum l, un-normalised acc; an empty chunk writes m = -inf, l = 0, acc = 0), then a
  combine kernel, one program per (sequence, query head), rescales the partials by
  exp(m_s - max m) and writes acc / l. ``num_splits=None`` asks
  ``paged_attention.decode_splits``: as many splits as keep the programs within 16 per SM
  (the CUDA device's SM count; ``ASSUMED_SM_COUNT`` under the interpreter), each split of the
  longest sequence (bounded by the block table's width or the cache's length, so no device
  sync) at least 8 tiles, at most 64 splits, at least 1; 1 takes the one-pass kernel.
  ``paged_attention.DecodeLaunch`` sets the tile, tl.dot (MMA) or fp32 broadcast products,
  warps and stages. PAGED=True reads token t of sequence b from pool block
  ``block_table[b, t // PAGE]`` at slot ``t % PAGE``: a tile no longer than a page reads one
  block id, a longer one gathers an id per token. PAGED=False reads the padded contiguous
  cache with the same loop. The loop body is one ``@triton.jit`` helper; under triton < 3.8's
  interpreter the loops over the sequence are while loops (that interpreter cannot run
  ``range`` over a loaded length), everywhere else, compiled kernels included, they are
  ``for`` loops. The interpreter's tl.dot reads bf16 as raw bits, so there (UPCAST) the
  operands go to fp32 first.
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any

import torch
import triton
import triton.language as tl

from perfscope.errors import MeasureError
from perfscope.measure.kernels import paged_attention as pa

MAX_ROW = 65536  # elements of one norm row held in registers by one program
ASSUMED_SM_COUNT = 132  # H100/H200 SXM: the split heuristic's device under the interpreter


# ---- add + RMSNorm ------------------------------------------------------------------------

@triton.jit
def _add_kernel(x_ptr, r_ptr, h_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask).to(tl.float32)
    r = tl.load(r_ptr + offs, mask=mask).to(tl.float32)
    tl.store(h_ptr + offs, (x + r).to(h_ptr.dtype.element_ty), mask=mask)  # as the fused one


@triton.jit
def _rmsnorm_row_kernel(x_ptr, r_ptr, w_ptr, h_ptr, o_ptr, n_cols, eps,
                        ADD: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    offs = row * n_cols + cols
    h = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if ADD:
        h += tl.load(r_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        h_st = h.to(h_ptr.dtype.element_ty)
        tl.store(h_ptr + offs, h_st, mask=mask)
        h = h_st.to(tl.float32)  # normalise the stored (rounded) h, as the unfused pair does
    ms = tl.sum(h * h, axis=0) / n_cols
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    out = h * (1.0 / tl.sqrt(ms + eps)) * w
    tl.store(o_ptr + offs, out.to(o_ptr.dtype.element_ty), mask=mask)


def _on_device(t: Any) -> bool:
    # TRITON_INTERPRET=1 runs the kernels on CPU tensors (numpy), which is how they are
    # checked on a machine without a GPU
    return bool(t.is_cuda) or os.environ.get("TRITON_INTERPRET") == "1"


def _check_rows(*tensors: Any) -> tuple[int, int, int]:
    x = tensors[0]
    for t in tensors:
        if not _on_device(t) or not t.is_contiguous():
            raise MeasureError("Triton add+RMSNorm takes contiguous CUDA tensors")
    rows, cols = x.numel() // x.shape[-1], x.shape[-1]
    if cols > MAX_ROW:
        raise MeasureError(f"hidden {cols} > {MAX_ROW}: one row no longer fits one program")
    block = triton.next_power_of_2(cols)
    return rows, cols, block


def _warps(block: int) -> int:
    return 4 if block <= 2048 else 8 if block <= 8192 else 16


def add_rmsnorm_fused_triton(x: Any, residual: Any, weight: Any, eps: float, h: Any,
                             out: Any) -> None:
    """One pass: h = x + residual, out = rmsnorm(h) * weight, one program per row."""
    rows, cols, block = _check_rows(x, residual, weight, h, out)
    _rmsnorm_row_kernel[(rows,)](x, residual, weight, h, out, cols, eps, ADD=True,
                                 BLOCK=block, num_warps=_warps(block))


def add_rmsnorm_unfused_triton(x: Any, residual: Any, weight: Any, eps: float, h: Any,
                               out: Any) -> None:
    """Two passes: an element-wise add kernel, then the row norm kernel reading h back."""
    rows, cols, block = _check_rows(x, residual, weight, h, out)
    n = x.numel()
    _add_kernel[(triton.cdiv(n, 1024),)](x, residual, h, n, BLOCK=1024, num_warps=4)
    _rmsnorm_row_kernel[(rows,)](h, h, weight, h, out, cols, eps, ADD=False,
                                 BLOCK=block, num_warps=_warps(block))


# ---- decode attention ---------------------------------------------------------------------

@triton.jit
def _mma(a, b, acc, UPCAST: tl.constexpr):
    """acc + a @ b on tl.dot in fp32. UPCAST (the interpreter, whose tl.dot reads bf16 as its
    raw uint16 bits) takes the product of the operands' fp32 values instead: the same sums,
    with any rounding to the operands' dtype already done by the caller."""
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    return tl.dot(a, b, acc, input_precision="ieee")


@triton.jit
def _attend_block(q, m, l_sum, acc, start, seq_len, b, kvh, k_ptr, v_ptr, table_ptr, scale,
                  stride_kb, stride_kt, stride_kh, stride_vb, stride_vt, stride_vh, stride_tb,
                  n, d, HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, PAGE: tl.constexpr,
                  PAGED: tl.constexpr, MMA: tl.constexpr, UPCAST: tl.constexpr):
    """Fold tokens [start, start + BLOCK_N) of sequence b into the online softmax (m, l, acc).

    ``start`` is a multiple of BLOCK_N. Paged: a tile no longer than a page lies in one page
    (both powers of two), so one block id serves it; a longer tile gathers one id per token.
    MMA: q . k and p . v on tl.dot (q and K/V in their own dtype, p cast to V's, fp32
    accumulation), the score scaled after the dot; else broadcast products in fp32 with q
    already scaled."""
    tok = start + n
    valid = tok < seq_len
    if PAGED:
        if BLOCK_N <= PAGE:
            blk = tl.load(table_ptr + b * stride_tb + start // PAGE).to(tl.int64)
        else:
            blk = tl.load(table_ptr + b * stride_tb + tok // PAGE, mask=valid,
                          other=0).to(tl.int64)
        k_rows = k_ptr + blk * stride_kb + (tok % PAGE) * stride_kt  # (N,)
        v_rows = v_ptr + blk * stride_vb + (tok % PAGE) * stride_vt
    else:
        k_rows = k_ptr + b * stride_kb + tok * stride_kt
        v_rows = v_ptr + b * stride_vb + tok * stride_vt
    nd_mask = valid[:, None] & (d[None, :] < HEAD_DIM)
    k = tl.load(k_rows[:, None] + kvh * stride_kh + d[None, :], mask=nd_mask, other=0.0)
    if MMA:
        s = _mma(q, tl.trans(k), tl.zeros([q.shape[0], BLOCK_N], tl.float32), UPCAST) * scale
    else:
        s = tl.sum(q[:, None, :] * k.to(tl.float32)[None, :, :], axis=2)  # (G, N)
    s = tl.where(valid[None, :], s, float("-inf"))
    # token `start` is valid in every iteration, so m_new is finite and exp(-inf) = 0
    m_new = tl.maximum(m, tl.max(s, axis=1))
    alpha = tl.exp(m - m_new)
    p = tl.exp(s - m_new[:, None])
    l_sum = l_sum * alpha + tl.sum(p, axis=1)
    v = tl.load(v_rows[:, None] + kvh * stride_vh + d[None, :], mask=nd_mask, other=0.0)
    if MMA:
        acc = _mma(p.to(v.dtype), v, acc * alpha[:, None], UPCAST)
    else:
        acc = acc * alpha[:, None] + tl.sum(p[:, :, None] * v.to(tl.float32)[None, :, :],
                                            axis=1)  # (G, D)
    return m_new, l_sum, acc


@triton.jit
def _attend_range(q_ptr, k_ptr, v_ptr, table_ptr, scale, b, kvh, seq_len, lo, hi,
                  stride_qb, stride_qh, stride_kb, stride_kt, stride_kh, stride_vb, stride_vt,
                  stride_vh, stride_tb, GROUP: tl.constexpr, GROUP_P2: tl.constexpr,
                  HEAD_DIM: tl.constexpr, D_P2: tl.constexpr, BLOCK_N: tl.constexpr,
                  PAGE: tl.constexpr, PAGED: tl.constexpr, MMA: tl.constexpr,
                  UPCAST: tl.constexpr, WHILE_LOOP: tl.constexpr):
    """Online softmax of KV head ``kvh``'s GROUP query heads of sequence ``b`` over tokens
    ``lo .. hi`` (``lo`` a multiple of BLOCK_N, before ``seq_len``; none when ``lo >= hi``):
    the heads, their mask, and the running max, sum and un-normalised output. The GROUP_P2
    rows past GROUP load zeros and are never stored."""
    g = tl.arange(0, GROUP_P2)
    d = tl.arange(0, D_P2)
    n = tl.arange(0, BLOCK_N)
    gd_mask = (g[:, None] < GROUP) & (d[None, :] < HEAD_DIM)
    heads = kvh * GROUP + g
    q = tl.load(q_ptr + b * stride_qb + heads[:, None] * stride_qh + d[None, :],
                mask=gd_mask, other=0.0)  # (G, D)
    if not MMA:
        q = q.to(tl.float32) * scale
    m = tl.full([GROUP_P2], float("-inf"), tl.float32)
    l_sum = tl.zeros([GROUP_P2], tl.float32)
    acc = tl.zeros([GROUP_P2, D_P2], tl.float32)
    if WHILE_LOOP:
        # triton < 3.8's interpreter cannot take range() over a loaded scalar; compiled
        # kernels never take this branch (it is a constexpr), so they keep the for loop
        start = lo
        while start < hi:
            m, l_sum, acc = _attend_block(q, m, l_sum, acc, start, seq_len, b, kvh, k_ptr,
                                          v_ptr, table_ptr, scale, stride_kb, stride_kt,
                                          stride_kh, stride_vb, stride_vt, stride_vh,
                                          stride_tb, n, d, HEAD_DIM, BLOCK_N, PAGE, PAGED,
                                          MMA, UPCAST)
            start += BLOCK_N
    else:
        for start in range(lo, hi, BLOCK_N):
            m, l_sum, acc = _attend_block(q, m, l_sum, acc, start, seq_len, b, kvh, k_ptr,
                                          v_ptr, table_ptr, scale, stride_kb, stride_kt,
                                          stride_kh, stride_vb, stride_vt, stride_vh,
                                          stride_tb, n, d, HEAD_DIM, BLOCK_N, PAGE, PAGED,
                                          MMA, UPCAST)
    return heads, gd_mask, d, m, l_sum, acc


@triton.jit
def _decode_attention_kernel(
        q_ptr, k_ptr, v_ptr, o_ptr, table_ptr, lens_ptr, scale,
        stride_qb, stride_qh, stride_ob, stride_oh,
        stride_kb, stride_kt, stride_kh, stride_vb, stride_vt, stride_vh, stride_tb,
        GROUP: tl.constexpr, GROUP_P2: tl.constexpr, HEAD_DIM: tl.constexpr,
        D_P2: tl.constexpr, BLOCK_N: tl.constexpr, PAGE: tl.constexpr, PAGED: tl.constexpr,
        MMA: tl.constexpr, UPCAST: tl.constexpr, WHILE_LOOP: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    kvh = tl.program_id(1).to(tl.int64)
    seq_len = tl.load(lens_ptr + b)
    heads, gd_mask, d, _m, l_sum, acc = _attend_range(
        q_ptr, k_ptr, v_ptr, table_ptr, scale, b, kvh, seq_len, 0, seq_len, stride_qb,
        stride_qh, stride_kb, stride_kt, stride_kh, stride_vb, stride_vt, stride_vh, stride_tb,
        GROUP, GROUP_P2, HEAD_DIM, D_P2, BLOCK_N, PAGE, PAGED, MMA, UPCAST, WHILE_LOOP)
    out = acc / l_sum[:, None]
    tl.store(o_ptr + b * stride_ob + heads[:, None] * stride_oh + d[None, :],
             out.to(o_ptr.dtype.element_ty), mask=gd_mask)


@triton.jit
def _decode_split_kernel(
        q_ptr, k_ptr, v_ptr, table_ptr, lens_ptr, m_ptr, l_ptr, acc_ptr, scale,
        stride_qb, stride_qh,
        stride_kb, stride_kt, stride_kh, stride_vb, stride_vt, stride_vh, stride_tb,
        GROUP: tl.constexpr, GROUP_P2: tl.constexpr, HEAD_DIM: tl.constexpr,
        D_P2: tl.constexpr, BLOCK_N: tl.constexpr, PAGE: tl.constexpr, PAGED: tl.constexpr,
        MMA: tl.constexpr, UPCAST: tl.constexpr, WHILE_LOOP: tl.constexpr):
    """Partial (m, l, acc) of split program_id(2)'s chunk of sequence b for KV head kvh's
    GROUP query heads, into rows ((b * heads + head) * num_splits + split) of the partials."""
    b = tl.program_id(0).to(tl.int64)
    kvh = tl.program_id(1).to(tl.int64)
    split = tl.program_id(2)
    num_splits = tl.num_programs(2)
    seq_len = tl.load(lens_ptr + b)
    # chunks of whole blocks, so each starts on a block; the trailing splits of a sequence
    # with fewer blocks than splits are empty (lo >= hi) and keep the initial m, l, acc
    chunk = tl.cdiv(tl.cdiv(seq_len, BLOCK_N), num_splits) * BLOCK_N
    lo = split * chunk
    hi = tl.minimum(lo + chunk, seq_len)
    heads, gd_mask, d, m, l_sum, acc = _attend_range(
        q_ptr, k_ptr, v_ptr, table_ptr, scale, b, kvh, seq_len, lo, hi, stride_qb,
        stride_qh, stride_kb, stride_kt, stride_kh, stride_vb, stride_vt, stride_vh, stride_tb,
        GROUP, GROUP_P2, HEAD_DIM, D_P2, BLOCK_N, PAGE, PAGED, MMA, UPCAST, WHILE_LOOP)
    g_mask = heads < (kvh + 1) * GROUP
    rows = (b * tl.num_programs(1) * GROUP + heads) * num_splits + split  # (G,)
    tl.store(m_ptr + rows, m, mask=g_mask)
    tl.store(l_ptr + rows, l_sum, mask=g_mask)
    tl.store(acc_ptr + rows[:, None] * HEAD_DIM + d[None, :], acc, mask=gd_mask)


@triton.jit
def _decode_combine_kernel(m_ptr, l_ptr, acc_ptr, o_ptr, stride_ob, stride_oh, num_splits,
                           HEAD_DIM: tl.constexpr, D_P2: tl.constexpr, S_P2: tl.constexpr):
    """out[b, h] = sum_s exp(m_s - M) acc_s / sum_s exp(m_s - M) l_s, M = max_s m_s."""
    b = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1).to(tl.int64)
    s = tl.arange(0, S_P2)
    d = tl.arange(0, D_P2)
    s_mask = s < num_splits
    rows = (b * tl.num_programs(1) + h) * num_splits + s  # (S,)
    m = tl.load(m_ptr + rows, mask=s_mask, other=float("-inf"))
    l_sum = tl.load(l_ptr + rows, mask=s_mask, other=0.0)
    # split 0 holds token 0, so the max is finite and an empty split's weight exp(-inf) is 0
    w = tl.exp(m - tl.max(m, axis=0))
    acc = tl.load(acc_ptr + rows[:, None] * HEAD_DIM + d[None, :],
                  mask=s_mask[:, None] & (d[None, :] < HEAD_DIM), other=0.0)  # (S, D)
    out = tl.sum(acc * w[:, None], axis=0) / tl.sum(l_sum * w, axis=0)
    tl.store(o_ptr + b * stride_ob + h * stride_oh + d, out.to(o_ptr.dtype.element_ty),
             mask=d < HEAD_DIM)


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def interpreter_needs_while_loop(version: str | None = None,
                                 interpret: bool | None = None) -> bool:
    """True under TRITON_INTERPRET=1 with triton older than 3.8, whose interpreter fails on
    ``range(0, seq_len, BLOCK_N)`` over a loaded scalar (a 1-element array, not a 0-d one)."""
    if interpret is None:
        interpret = _interpreting()
    if not interpret:
        return False
    major, minor = (int(x) for x in (version or triton.__version__).split(".")[:2])
    return (major, minor) < (3, 8)


@functools.cache
def _sm_count(index: int) -> int:
    """SMs of CUDA device ``index``, asked once per device rather than on every launch (a
    short decode launch waits for the host)."""
    return int(torch.cuda.get_device_properties(index).multi_processor_count)


def decode_num_splits(q: Any, max_len: int, block_n: int, kv_heads: int,
                      num_splits: int | None = None) -> int:
    """The splits a decode launch uses: ``num_splits`` checked, or for None the heuristic
    ``paged_attention.decode_splits`` on this device's SM count (``ASSUMED_SM_COUNT`` off
    CUDA) and ``max_len``, the longest a sequence can be, in tiles of ``block_n`` tokens."""
    if num_splits is None:
        if q.is_cuda:
            index = q.device.index
            sms = _sm_count(torch.cuda.current_device() if index is None else index)
        else:
            sms = ASSUMED_SM_COUNT
        return pa.decode_splits(max(1, max_len), block_n, q.shape[0], kv_heads, sms)
    if not 1 <= num_splits <= pa.MAX_SPLITS:
        raise MeasureError(f"num_splits {num_splits}: must lie in [1, {pa.MAX_SPLITS}]")
    return num_splits


def check_launch(launch: pa.DecodeLaunch, head_dim: int) -> None:
    """Refuse a tile Triton cannot build: a power of two, and >= 16 for tl.dot's shapes."""
    n = launch.block_n
    if n < 1 or n & (n - 1):
        raise MeasureError(f"block_n {n}: tokens per tile must be a power of two")
    if launch.mma and (n < 16 or head_dim < 16):
        raise MeasureError(f"block_n {n}, head_dim {head_dim}: tl.dot needs both >= 16 "
                           "(use mma=False)")


def _launch_decode(q: Any, k: Any, v: Any, table: Any, lens: Any, scale: float | None,
                   k_strides: tuple[int, int, int], v_strides: tuple[int, int, int],
                   kv_heads: int, page: int, paged: bool, max_len: int,
                   num_splits: int | None, launch: pa.DecodeLaunch | None) -> Any:
    bsz, heads, d = q.shape
    launch = launch or pa.DECODE_LAUNCH
    check_launch(launch, d)
    if heads % kv_heads:
        raise MeasureError(f"heads {heads} must be a multiple of kv_heads {kv_heads}")
    if q.stride(-1) != 1 or k.stride(-1) != 1 or v.stride(-1) != 1:
        raise MeasureError("Triton attention needs head_dim contiguous (stride 1)")
    splits = decode_num_splits(q, max_len, launch.block_n, kv_heads, num_splits)
    group = heads // kv_heads
    out = torch.empty_like(q)
    lens32 = lens.to(device=q.device, dtype=torch.int32).contiguous()
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    # tl.dot takes at least 16 rows: a GQA group of 4-8 heads is padded with zero rows
    rows = triton.next_power_of_2(group)
    shapes = {"GROUP": group, "GROUP_P2": max(16 if launch.mma else 2, rows), "HEAD_DIM": d,
              "D_P2": triton.next_power_of_2(d), "BLOCK_N": launch.block_n, "PAGE": page,
              "PAGED": paged, "MMA": launch.mma, "UPCAST": _interpreting(),
              "WHILE_LOOP": interpreter_needs_while_loop(),
              "num_warps": launch.num_warps}
    if launch.num_stages is not None:
        shapes["num_stages"] = launch.num_stages
    if splits == 1:
        _decode_attention_kernel[(bsz, kv_heads)](
            q, k, v, out, table, lens32, scale, q.stride(0), q.stride(1), out.stride(0),
            out.stride(1), *k_strides, *v_strides, table.stride(0), **shapes)
        return out
    # fp32 partials, row (b * heads + head) * splits + split; every row is written
    m = torch.empty((bsz, heads, splits), dtype=torch.float32, device=q.device)
    l_sum = torch.empty_like(m)
    acc = torch.empty((bsz, heads, splits, d), dtype=torch.float32, device=q.device)
    _decode_split_kernel[(bsz, kv_heads, splits)](
        q, k, v, table, lens32, m, l_sum, acc, scale, q.stride(0), q.stride(1), *k_strides,
        *v_strides, table.stride(0), **shapes)
    s_p2 = triton.next_power_of_2(splits)
    d_p2 = triton.next_power_of_2(d)
    _decode_combine_kernel[(bsz, heads)](
        m, l_sum, acc, out, out.stride(0), out.stride(1), splits, HEAD_DIM=d, D_P2=d_p2,
        S_P2=s_p2, num_warps=4 if s_p2 * d_p2 <= 4096 else 8)
    return out


def paged_attention_triton(q: Any, k_pool: Any, v_pool: Any, block_table: Any, seq_lens: Any,
                           scale: float | None = None, *, num_splits: int | None = None,
                           launch: pa.DecodeLaunch | None = None) -> Any:
    """Decode attention through the block table; pools [num_blocks, block_size, KVH, D].

    ``num_splits``: 1 the one-pass kernel, > 1 split-KV, None the heuristic (module doc).
    ``launch``: tile, tl.dot or not, warps and stages (``paged_attention.DECODE_LAUNCH``)."""
    _, bs, kvh, _ = k_pool.shape
    if bs & (bs - 1):
        raise MeasureError(f"block_size {bs}: the Triton kernel needs a power of two")
    table = block_table.to(dtype=torch.int32).contiguous()
    return _launch_decode(q, k_pool, v_pool, table, seq_lens, scale,
                          (k_pool.stride(0), k_pool.stride(1), k_pool.stride(2)),
                          (v_pool.stride(0), v_pool.stride(1), v_pool.stride(2)),
                          kvh, bs, True, table.shape[1] * bs, num_splits, launch)


def contiguous_attention_triton(q: Any, k_cache: Any, v_cache: Any, seq_lens: Any,
                                scale: float | None = None, *, num_splits: int | None = None,
                                launch: pa.DecodeLaunch | None = None) -> Any:
    """Decode attention over a padded cache [B, KVH, max_len, D], same loops as the paged one;
    ``num_splits`` and ``launch`` as there."""
    kvh = k_cache.shape[1]
    table = torch.zeros((1, 1), dtype=torch.int32, device=q.device)  # unused when not paged
    tile = (launch or pa.DECODE_LAUNCH).block_n
    return _launch_decode(q, k_cache, v_cache, table, seq_lens, scale,
                          (k_cache.stride(0), k_cache.stride(2), k_cache.stride(1)),
                          (v_cache.stride(0), v_cache.stride(2), v_cache.stride(1)),
                          kvh, tile, False, k_cache.shape[2], num_splits, launch)
