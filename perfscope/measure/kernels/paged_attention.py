"""Decode attention over a paged KV cache, against a contiguous cache, and what paging saves.

Paged layout (vLLM's): K and V each live in a pool of fixed-size blocks
``[num_blocks, block_size, kv_heads, head_dim]``; sequence b's token t sits in block
``block_table[b, t // block_size]`` at slot ``t % block_size``; ``seq_lens[b]`` tokens are
valid. Blocks of one sequence are scattered over the pool and interleaved with other
sequences'. Contiguous layout: ``[batch, kv_heads, max_len, head_dim]`` padded to the longest.

Decode: one query token per sequence, q ``[batch, heads, head_dim]`` with GQA (``heads`` a
multiple of ``kv_heads``; head h reads KV head ``h // (heads // kv_heads)``).

- ``paged_attention_torch``: any device; loops over chunks of blocks, vectorised over batch and
  heads, with an online softmax (the paged-attention v1 / flash-decoding recurrence), so it
  never materialises the padded cache. The Triton kernel is ``triton_kernels``.
- ``decode_splits``: how many KV splits the Triton split-KV (flash-decoding) path uses.
- ``contiguous_attention_torch``: masked softmax over the padded cache.
- ``attention_reference``: float64, sequence by sequence, head by head, on the CPU.
- ``paged_kv_memory``: bytes of a paged cache against reserving ``max_len`` per sequence.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from perfscope.errors import InputError
from perfscope.measure.kernels import KernelCounts

BLOCK_SIZE = 16  # tokens per KV block (vLLM's default)


# ---- memory: paged vs reserve-the-maximum -------------------------------------------------

@dataclass(frozen=True, slots=True)
class KVMemory:
    """KV cache bytes of one batch under paging and under a max-length reservation."""

    tokens: int  # cached tokens, sum of seq_lens
    blocks: int  # blocks allocated: sum of ceil(len / block_size)
    used_bytes: float  # the tokens themselves
    paged_bytes: float  # whole blocks: used + the unused tail of each sequence's last block
    reserved_bytes: float  # batch * max_len tokens, what a contiguous cache must hold
    block_table_bytes: float  # int32 block ids, batch * ceil(max_len / block_size)

    @property
    def fragmentation_bytes(self) -> float:
        """Internal fragmentation: allocated but unused slots in last blocks (< 1 block/seq)."""
        return self.paged_bytes - self.used_bytes

    @property
    def saved_bytes(self) -> float:
        return self.reserved_bytes - self.paged_bytes

    @property
    def saved_fraction(self) -> float:
        return self.saved_bytes / self.reserved_bytes if self.reserved_bytes else 0.0


def paged_kv_memory(seq_lens: Sequence[int], *, block_size: int, max_len: int, kv_heads: int,
                    head_dim: int, dtype_bytes: float, layers: int = 1) -> KVMemory:
    """KV bytes for ``seq_lens`` paged in ``block_size`` blocks vs reserved to ``max_len``.

    Bytes per token = 2 (K and V) * layers * kv_heads * head_dim * dtype_bytes.
    """
    if block_size < 1 or max_len < 1:
        raise InputError(f"block_size {block_size} and max_len {max_len} must be >= 1")
    if any(n < 0 or n > max_len for n in seq_lens):
        raise InputError(f"seq_lens must lie in [0, max_len={max_len}]: got {list(seq_lens)}")
    per_token = 2.0 * layers * kv_heads * head_dim * dtype_bytes
    tokens = int(sum(seq_lens))
    blocks = sum(-(-n // block_size) for n in seq_lens)
    return KVMemory(tokens=tokens, blocks=blocks, used_bytes=tokens * per_token,
                    paged_bytes=blocks * block_size * per_token,
                    reserved_bytes=len(seq_lens) * max_len * per_token,
                    block_table_bytes=4.0 * len(seq_lens) * -(-max_len // block_size))


# ---- analytic counts ----------------------------------------------------------------------

def attention_decode_counts(seq_lens: Sequence[int], *, heads: int, kv_heads: int,
                            head_dim: int, act_bytes: float, kv_bytes: float | None = None,
                            block_size: int | None = None) -> KernelCounts:
    """FLOPs and minimal bytes of one decode attention step (paged when ``block_size`` given).

    FLOPs per head and cached token: q.k 2*D, p.v 2*D, softmax 5 (scale, max, subtract, exp,
    sum) -> heads * sum(L) * (4D + 5), plus heads * D per sequence for the final 1/l.
    Bytes: read q (B*H*D) and the valid K and V tokens once per KV head
    (2 * sum(L) * kv_heads * D) -- GQA heads of a group share the read -- write o (B*H*D);
    paged also reads its block ids (4 bytes per used block) and seq_lens (4 per sequence).
    """
    kvb = act_bytes if kv_bytes is None else kv_bytes
    b, n = len(seq_lens), float(sum(seq_lens))
    flops = heads * n * (4.0 * head_dim + 5.0) + float(b) * heads * head_dim
    read = b * heads * head_dim * act_bytes + 2.0 * n * kv_heads * head_dim * kvb
    if block_size is not None:
        read += 4.0 * sum(-(-n_ // block_size) for n_ in seq_lens) + 4.0 * b
    return KernelCounts(flops=flops, bytes_read=read,
                        bytes_written=float(b) * heads * head_dim * act_bytes)


# ---- the Triton decode kernel's launch and its split-KV (flash-decoding) heuristic --------

@dataclass(frozen=True, slots=True)
class DecodeLaunch:
    """How the Triton decode kernels run: ``block_n`` tokens per loop iteration (a power of
    two, independent of the page size: a tile longer than a page gathers one block id per
    token), ``mma`` the scores and the output on tl.dot (tensor cores; the GQA group padded to
    16 rows) or as fp32 broadcast products, Triton's ``num_warps`` and ``num_stages`` (None:
    Triton's default).

    The default was the fastest of 9 launches in 5 of 8 cases of a sweep on one H200 and
    within 3% in 2 more (benchmarks/tune_decode_attention.py; Llama-3-8B attention, bf16,
    pages of 16; reports/measured/decode-attn-tune-NVIDIA-H200-20261130.json); the eighth,
    batch 1 at 4,096 tokens, took 44 us against 41 us in tiles of 16. At batch 128 x 8,192
    tokens it took 964 us, 4.46 TB/s of KV, where the fp32-product kernel with a page a tile
    took 6,626 us (650 GB/s) and tiles of 16 on tl.dot 1,200 us.
    """

    block_n: int = 64
    mma: bool = True
    num_warps: int = 4
    num_stages: int | None = None


DECODE_LAUNCH = DecodeLaunch()

# Programs per SM the split count fills, rounding down (more would start a partly filled
# wave). H200 sweeps of DECODE_LAUNCH, reports/measured/decode-attn-*-NVIDIA-H200-20261130.json:
# with every sequence as long (10 cases, batch 1-128, 4,096-32,768 tokens) the fastest count
# gave 4-8 programs per SM, and more cost a little (batch 64 x 8 KV heads at 4,096 tokens:
# 1 split 259 us, 8 splits 283 us); with lengths spread as in serving (8 cases, each uniform
# in [longest / 32, longest]) it gave 16-62 per SM, the longest sequences' programs making the
# tail (batch 128 at up to 8,192 tokens: 1 split 689 us, 2 splits 629 us, 8 splits 613 us).
# 16 per SM with splits of at least 8 tiles came within 6% of the fastest count in every case
# of both sweeps, 2.7% and 2.1% on average; 4 per SM was 1.2% and 10.7%, up to 18% ragged
# (a count the sweeps skipped is timed between its swept neighbours, on a log scale). Swept
# again with this rule (decode-attn-{uniform,ragged}-*), the default took at most 3.2% longer
# than the fastest swept count on the ragged cases and up to 9% on the uniform ones, except
# batch 1 at 4,096 tokens, a 55-100 us call whose two timings of the default read 1.15x and
# 1.72x the fastest.
SPLIT_PROGRAMS_PER_SM = 16
MIN_SPLIT_BLOCKS = 8  # tiles a split keeps at least: fewer spend too much on fp32 partials
MAX_SPLITS = 64  # the combine holds one (b, head)'s splits x head_dim partials in registers


def decode_splits(max_len: int, block_n: int, batch: int, kv_heads: int,
                  sm_count: int) -> int:
    """KV splits per sequence for split-KV decode attention (1: the one-pass kernel).

    One program per (sequence, KV head, split). As many splits as keep the programs within
    ``SPLIT_PROGRAMS_PER_SM * sm_count`` (rounded down), but each split of the longest sequence
    keeps at least ``MIN_SPLIT_BLOCKS`` tiles of ``block_n`` tokens (so never more splits than
    it has tiles), at most ``MAX_SPLITS``, at least 1. E.g. 132 SMs -> 2112 programs: batch
    128 x 8 KV heads (1024 programs), 8192 tokens in tiles of 64 -> 2 splits.
    """
    if min(max_len, block_n, batch, kv_heads, sm_count) < 1:
        raise InputError(f"decode_splits needs positive sizes: max_len {max_len}, block_n "
                         f"{block_n}, batch {batch}, kv_heads {kv_heads}, SMs {sm_count}")
    want = SPLIT_PROGRAMS_PER_SM * sm_count // (batch * kv_heads)
    by_length = -(-max_len // block_n) // MIN_SPLIT_BLOCKS
    return max(1, min(want, by_length, MAX_SPLITS))


# ---- test data: a scattered block pool ----------------------------------------------------

@dataclass(frozen=True, slots=True)
class PagedKV:
    k_pool: Any  # [num_blocks, block_size, kv_heads, head_dim]
    v_pool: Any  # [num_blocks, block_size, kv_heads, head_dim]
    block_table: Any  # [batch, max_blocks] int32; entries past a sequence's blocks are 0
    seq_lens: Any  # [batch] int32

    @property
    def block_size(self) -> int:
        return int(self.k_pool.shape[1])


def make_paged_kv(seq_lens: Sequence[int], *, kv_heads: int, head_dim: int,
                  block_size: int = BLOCK_SIZE, dtype: Any = None, device: str = "cpu",
                  seed: int = 0, spare_blocks: int = 3) -> PagedKV:
    """Random K/V pools with each sequence's blocks scattered by a random permutation.

    Every slot, used or not, holds random data (never zeros), so a kernel that reads past
    ``seq_lens`` or follows the wrong block gives a wrong answer instead of a lucky one.
    """
    import torch

    if not seq_lens or min(seq_lens) < 1:
        raise InputError(f"seq_lens must be >= 1 for decode: got {list(seq_lens)}")
    dtype = dtype or torch.float32
    gen = torch.Generator().manual_seed(seed)
    # the pools are drawn where they live: GBs of host random numbers would take a minute
    dev_gen = torch.Generator(device=device).manual_seed(seed)
    need = [-(-n // block_size) for n in seq_lens]
    num_blocks = sum(need) + spare_blocks
    shape = (num_blocks, block_size, kv_heads, head_dim)
    k_pool = torch.randn(shape, generator=dev_gen, device=device).to(dtype)
    v_pool = torch.randn(shape, generator=dev_gen, device=device).to(dtype)
    perm = torch.randperm(num_blocks, generator=gen)
    table = torch.zeros((len(seq_lens), max(need)), dtype=torch.int32)
    used = 0
    for b, nb in enumerate(need):
        table[b, :nb] = perm[used:used + nb].to(torch.int32)
        used += nb
    lens = torch.tensor(list(seq_lens), dtype=torch.int32)
    return PagedKV(k_pool, v_pool, table.to(device), lens.to(device))


def sequence_kv(kv: PagedKV, b: int) -> tuple[Any, Any]:
    """(k, v) of sequence b as [len, kv_heads, head_dim]: its blocks in table order."""
    n, bs = int(kv.seq_lens[b]), kv.block_size
    ids = kv.block_table[b, :-(-n // bs)].long()
    _, _, kvh, d = kv.k_pool.shape
    return kv.k_pool[ids].reshape(-1, kvh, d)[:n], kv.v_pool[ids].reshape(-1, kvh, d)[:n]


def to_contiguous(kv: PagedKV, max_len: int | None = None, seed: int = 1) -> tuple[Any, Any]:
    """Copy the paged cache into padded [batch, kv_heads, max_len, head_dim] K and V.

    Padding holds random values, not zeros: a missing mask shows up as an error.
    """
    import torch

    lens = [int(n) for n in kv.seq_lens.tolist()]
    max_len = max_len or max(lens)
    _, _, kvh, d = kv.k_pool.shape
    dev = kv.k_pool.device
    gen = torch.Generator(device=dev).manual_seed(seed)
    shape = (len(lens), kvh, max_len, d)
    k = (torch.randn(shape, generator=gen, device=dev) * 3).to(kv.k_pool.dtype)
    v = (torch.randn(shape, generator=gen, device=dev) * 3).to(kv.v_pool.dtype)
    for b, n in enumerate(lens):
        kb, vb = sequence_kv(kv, b)
        k[b, :, :n] = kb.transpose(0, 1)
        v[b, :, :n] = vb.transpose(0, 1)
    return k, v


def _check_gqa(heads: int, kv_heads: int) -> int:
    if kv_heads < 1 or heads % kv_heads:
        raise InputError(f"heads {heads} must be a multiple of kv_heads {kv_heads}")
    return heads // kv_heads


# ---- float64 reference --------------------------------------------------------------------

def attention_reference(q: Any, seqs: Sequence[tuple[Any, Any]],
                        scale: float | None = None) -> Any:
    """Decode attention in float64: for each sequence and head, softmax(q.K^T * scale) V.

    ``seqs[b]`` is (k, v) of sequence b, each [len, kv_heads, head_dim].
    """
    import torch

    bsz, heads, d = q.shape
    kvh = seqs[0][0].shape[1]
    group = _check_gqa(heads, kvh)
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    q64 = q.detach().to("cpu", torch.float64)
    out = torch.empty((bsz, heads, d), dtype=torch.float64)
    for b, (k, v) in enumerate(seqs):
        k64, v64 = k.to("cpu", torch.float64), v.to("cpu", torch.float64)
        for h in range(heads):
            s = k64[:, h // group] @ q64[b, h] * scale  # [len]
            p = torch.exp(s - s.max())
            out[b, h] = (p / p.sum()) @ v64[:, h // group]
    return out


# ---- torch implementations ----------------------------------------------------------------

def contiguous_attention_torch(q: Any, k_cache: Any, v_cache: Any, seq_lens: Any,
                               scale: float | None = None) -> Any:
    """Decode attention over a padded cache [B, kv_heads, max_len, D]; returns [B, heads, D]."""
    import torch

    bsz, heads, d = q.shape
    _, kvh, max_len, _ = k_cache.shape
    group = _check_gqa(heads, kvh)
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    acc = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
    qg = q.view(bsz, kvh, group, d).to(acc)  # (B, KVH, G, D)
    s = torch.matmul(qg, k_cache.to(acc).transpose(-1, -2)) * scale  # (B, KVH, G, L)
    pos = torch.arange(max_len, device=q.device)
    s = s.masked_fill(pos[None, None, None, :] >= seq_lens.to(q.device)[:, None, None, None],
                      float("-inf"))
    p = torch.softmax(s, dim=-1)
    return torch.matmul(p, v_cache.to(acc)).view(bsz, heads, d).to(q.dtype)  # (B, H, D)


def paged_attention_torch(q: Any, k_pool: Any, v_pool: Any, block_table: Any, seq_lens: Any,
                          scale: float | None = None, tokens_per_step: int = 256) -> Any:
    """Decode attention reading K/V through ``block_table``; returns [B, heads, D].

    Steps over chunks of ``tokens_per_step // block_size`` blocks; each step gathers those
    blocks of every sequence, masks positions >= seq_len and folds them into a running max
    ``m``, normaliser ``l`` and accumulator (online softmax), as the GPU kernel does.
    """
    import torch

    bsz, heads, d = q.shape
    _, bs, kvh, _ = k_pool.shape
    group = _check_gqa(heads, kvh)
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    acc_t = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
    lens = seq_lens.to(q.device).long()
    table = block_table.to(q.device).long()
    n_blocks = int(-(-int(lens.max()) // bs))
    step = max(1, tokens_per_step // bs)
    # KV heads lead: one row gather lands K in (KVH, B, tokens, D) and the batched matmuls
    # need no transposing copy
    qg = (q.view(bsz, kvh, group, d).transpose(0, 1).to(acc_t) * scale)  # (KVH, B, G, D)
    kf, vf = k_pool.reshape(-1, d), v_pool.reshape(-1, d)  # row (blk*bs + slot)*KVH + kvh
    slots_in_block = torch.arange(bs, device=q.device)
    kv_rows = torch.arange(kvh, device=q.device)[:, None, None]
    m = torch.full((kvh, bsz, group, 1), float("-inf"), dtype=acc_t, device=q.device)
    l_sum = torch.zeros_like(m)
    acc = torch.zeros((kvh, bsz, group, d), dtype=acc_t, device=q.device)
    for j0 in range(0, n_blocks, step):
        ids = table[:, j0:j0 + step]  # (B, C)
        c = ids.shape[1]
        slots = (ids[:, :, None] * bs + slots_in_block).reshape(bsz, c * bs)  # (B, C*bs)
        rows = (slots[None] * kvh + kv_rows).reshape(-1)  # (KVH*B*C*bs,) whole rows of D
        k = kf.index_select(0, rows).view(kvh, bsz, c * bs, d).to(acc_t)  # (KVH, B, C*bs, D)
        v = vf.index_select(0, rows).view(kvh, bsz, c * bs, d).to(acc_t)
        s = torch.matmul(qg, k.transpose(-1, -2))  # (KVH, B, G, C*bs)
        pos = j0 * bs + torch.arange(c * bs, device=q.device)
        s = s.masked_fill(pos[None, None, None, :] >= lens[None, :, None, None], float("-inf"))
        m_new = torch.maximum(m, s.amax(dim=-1, keepdim=True))
        # a sequence already past its end in this chunk keeps m finite (its first chunk had
        # token 0), so exp(-inf - m) = 0 and nothing changes for it
        alpha = torch.exp(m - m_new)
        p = torch.exp(s - m_new)
        l_sum = l_sum * alpha + p.sum(dim=-1, keepdim=True)
        acc = acc * alpha + torch.matmul(p, v)  # (KVH, B, G, D)
        m = m_new
    return (acc / l_sum).transpose(0, 1).reshape(bsz, heads, d).to(q.dtype)
