"""Reference kernels: every implementation against a plain float64 reference on random,
ragged inputs; analytic counts against hand numbers and torch's FlopCounterMode."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from perfscope.errors import InputError, MeasureError  # noqa: E402
from perfscope.measure.kernels import add_rmsnorm as an  # noqa: E402
from perfscope.measure.kernels import bench  # noqa: E402
from perfscope.measure.kernels import paged_attention as pa  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HAS_TRITON_GPU = torch.cuda.is_available() and importlib.util.find_spec("triton") is not None
gpu = pytest.mark.skipif(not HAS_TRITON_GPU, reason="needs CUDA and triton")


def _rand(*shape, dtype=torch.float32, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g).to(device=device, dtype=dtype)


def test_import_is_cheap():
    code = ("import sys, perfscope.measure.kernels, perfscope.measure.kernels.add_rmsnorm, "
            "perfscope.measure.kernels.paged_attention, perfscope.measure.kernels.bench; "
            "print('torch' in sys.modules, 'triton' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    assert out.stdout.split() == ["False", "False"]


# ---- add + RMSNorm ------------------------------------------------------------------------

def test_add_rmsnorm_counts_by_hand():
    # 2 tokens x 4 hidden x 2 bytes: N = 16 bytes per tensor, weight W = 8 bytes
    u = an.add_rmsnorm_counts(2, 4, 2, fused=False)
    f = an.add_rmsnorm_counts(2, 4, 2, fused=True)
    assert (u.bytes_read, u.bytes_written) == (3 * 16 + 8, 2 * 16)
    assert (f.bytes_read, f.bytes_written) == (2 * 16 + 8, 2 * 16)
    assert u.flops == f.flops == 5 * 8 + 3 * 2
    big_u = an.add_rmsnorm_counts(8192, 4096, 2, fused=False)
    big_f = an.add_rmsnorm_counts(8192, 4096, 2, fused=True)
    assert big_f.bytes / big_u.bytes == pytest.approx(0.8, abs=1e-4)  # 4 passes vs 5, not 1/2
    e = an.add_rmsnorm_counts(2, 4, 2, fused=False, eager=True)
    # add 2N+N, pow N+N, mean N, * rsqrt N+N, * weight N+W+N
    assert (e.bytes_read, e.bytes_written) == (6 * 16 + 8, 4 * 16)
    big_e = an.add_rmsnorm_counts(8192, 4096, 2, fused=False, eager=True)
    assert big_f.bytes / big_e.bytes == pytest.approx(0.4, abs=1e-4)  # vs op-by-op: 4 vs 10


def test_eager_baseline_matches_reference():
    x, r, w = _rand(8, 64, seed=3), _rand(8, 64, seed=4), _rand(64, seed=5)
    h_ref, o_ref = an.add_rmsnorm_reference(x, r, w, an.EPS)
    h, out = torch.empty_like(x), torch.empty_like(x)
    an.add_rmsnorm_eager(x, r, w, an.EPS, h, out)
    assert torch.allclose(h.double(), h_ref, rtol=1e-5, atol=1e-6)
    assert torch.allclose(out.double(), o_ref, rtol=1e-4, atol=1e-5)


def _check_impl(impl, dtype, tokens, hidden, seed, rtol, atol):
    x = _rand(tokens, hidden, dtype=dtype, seed=seed)
    r = _rand(tokens, hidden, dtype=dtype, seed=seed + 1)
    w = _rand(hidden, dtype=dtype, seed=seed + 2)
    h_ref, o_ref = an.add_rmsnorm_reference(x, r, w, an.EPS)
    for fn in (impl.unfused, impl.fused):
        h, out = torch.empty_like(x), torch.empty_like(x)
        fn(x, r, w, an.EPS, h, out)
        torch.testing.assert_close(h.double(), h_ref, rtol=rtol, atol=atol)
        torch.testing.assert_close(out.double(), o_ref, rtol=rtol, atol=atol)


@pytest.mark.parametrize("tokens,hidden", [(1, 8), (7, 33), (37, 256), (130, 1000)])
def test_torch_add_rmsnorm_matches_float64(tokens, hidden, monkeypatch):
    # tiles of a few rows, so several tiles and a ragged last tile are exercised
    monkeypatch.setattr(an, "TILE_BYTES", 3 * hidden * 4)
    impl = an.get_impl("torch")
    _check_impl(impl, torch.float32, tokens, hidden, seed=tokens, rtol=1e-5, atol=1e-5)
    _check_impl(impl, torch.bfloat16, tokens, hidden, seed=tokens, rtol=2e-2, atol=3e-2)


def test_torch_tiles_really_split_rows():
    x, r, w = _rand(10, 16), _rand(10, 16, seed=1), _rand(16, seed=2)
    h, out = torch.empty_like(x), torch.empty_like(x)
    an.add_rmsnorm_torch(x, r, w, an.EPS, h, out, tile_bytes=3 * 16 * 4)  # tiles 3,3,3,1
    _, o_ref = an.add_rmsnorm_reference(x, r, w)
    torch.testing.assert_close(out.double(), o_ref, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(bool(an.impl_status("cpu")["c"]), reason="no working C compiler")
@pytest.mark.parametrize("tokens,hidden", [(1, 8), (5, 33), (64, 4096), (129, 1000)])
def test_c_add_rmsnorm_matches_float64(tokens, hidden):
    _check_impl(an.get_impl("c"), torch.float32, tokens, hidden, seed=3 * tokens,
                rtol=1e-5, atol=1e-5)


def test_c_rejects_what_it_cannot_run():
    x = _rand(4, 8, dtype=torch.bfloat16)
    w = _rand(8, dtype=torch.bfloat16)
    with pytest.raises(MeasureError, match="float32"):
        an.get_impl("c").fused(x, x, w, an.EPS, torch.empty_like(x), torch.empty_like(x))
    assert an.impl_status("cpu", "bf16")["c"]
    assert an.impl_status("cpu")["triton"]
    with pytest.raises(MeasureError, match="torch, c or triton"):
        an.get_impl("cuda-magic")


# ---- paged attention ----------------------------------------------------------------------

RAGGED = [
    # (seq_lens, heads, kv_heads, head_dim, block_size): lengths 1, block multiples, +1
    ([1, 16, 17, 100, 33, 5], 8, 2, 32, 16),
    ([64, 3, 250], 4, 4, 16, 16),  # MHA
    ([9, 1, 40, 41], 8, 1, 64, 8),  # MQA
    ([23, 7, 70], 6, 3, 24, 5),  # block size not a power of two (torch only)
]


def _case(seq_lens, heads, kv_heads, head_dim, block_size, dtype=torch.float32, seed=0):
    kv = pa.make_paged_kv(seq_lens, kv_heads=kv_heads, head_dim=head_dim,
                          block_size=block_size, dtype=dtype, seed=seed)
    q = _rand(len(seq_lens), heads, head_dim, dtype=dtype, seed=seed + 10)
    ref = pa.attention_reference(q, [pa.sequence_kv(kv, b) for b in range(len(seq_lens))])
    return kv, q, ref


@pytest.mark.parametrize("case", RAGGED)
@pytest.mark.parametrize("tokens_per_step", [16, 256])
def test_paged_and_contiguous_match_float64(case, tokens_per_step):
    kv, q, ref = _case(*case)
    paged = pa.paged_attention_torch(q, kv.k_pool, kv.v_pool, kv.block_table, kv.seq_lens,
                                     tokens_per_step=tokens_per_step)
    kc, vc = pa.to_contiguous(kv, max_len=max(case[0]) + 7)
    contig = pa.contiguous_attention_torch(q, kc, vc, kv.seq_lens)
    torch.testing.assert_close(paged.double(), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(contig.double(), ref, rtol=1e-5, atol=1e-5)
    assert (paged - contig).abs().max() < 1e-5


def test_paged_bf16_matches_float64():
    kv, q, ref = _case([5, 48, 200], 8, 2, 64, 16, dtype=torch.bfloat16)
    out = pa.paged_attention_torch(q, kv.k_pool, kv.v_pool, kv.block_table, kv.seq_lens)
    torch.testing.assert_close(out.double(), ref, rtol=2e-2, atol=2e-2)


def test_reference_is_plain_softmax():
    # one sequence, one head, two tokens: out = (e^{s0} v0 + e^{s1} v1) / (e^{s0} + e^{s1})
    q = torch.tensor([[[1.0, 0.0]]])
    k = torch.tensor([[[2.0, 0.0]], [[0.0, 1.0]]])  # s = q.k / sqrt(2) = [sqrt(2), 0]
    v = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    out = pa.attention_reference(q, [(k, v)])
    a = torch.exp(torch.tensor(2 ** 0.5, dtype=torch.float64))
    torch.testing.assert_close(out[0, 0], torch.stack([a, torch.ones_like(a)]) / (a + 1))


def test_paged_ignores_unused_slots_and_blocks():
    seq_lens = [17, 3]
    kv, q, _ = _case(seq_lens, 4, 2, 16, 16)
    before = pa.paged_attention_torch(q, kv.k_pool, kv.v_pool, kv.block_table, kv.seq_lens)
    used = {int(kv.block_table[0, 0]), int(kv.block_table[0, 1]), int(kv.block_table[1, 0])}
    k2, v2 = kv.k_pool.clone(), kv.v_pool.clone()
    k2[int(kv.block_table[0, 1]), 1:] = 1e4  # tail of sequence 0's last block
    k2[int(kv.block_table[1, 0]), 3:] = -1e4
    for blk in set(range(kv.k_pool.shape[0])) - used:  # spare blocks
        k2[blk], v2[blk] = 1e4, 1e4
    after = pa.paged_attention_torch(q, k2, v2, kv.block_table, kv.seq_lens)
    torch.testing.assert_close(after, before)


def test_gqa_rejects_bad_head_counts():
    kv, q, _ = _case([4], 4, 2, 8, 4)
    with pytest.raises(InputError, match="multiple"):
        pa.paged_attention_torch(q[:, :3], kv.k_pool, kv.v_pool, kv.block_table, kv.seq_lens)
    with pytest.raises(InputError):
        pa.make_paged_kv([0, 3], kv_heads=1, head_dim=4)


def test_decode_splits_by_hand():
    # 132 SMs x 16 = 2112 programs at most, rounded down
    # batch 128 x 8 KV heads = 1024 programs -> 2112 // 1024 = 2; 128 tiles of 64 allow 16
    assert pa.decode_splits(8192, 64, 128, 8, 132) == 2
    assert pa.decode_splits(8192, 64, 96, 8, 132) == 2  # 2112 // 768 (3 would start a wave)
    assert pa.decode_splits(8192, 64, 32, 8, 132) == 8  # 2112 // 256
    assert pa.decode_splits(8192, 64, 512, 8, 132) == 1  # 4096 programs already
    # batch 1 x 8 heads: 2112 // 8 = 264 splits; the length allows tiles // 8
    assert pa.decode_splits(100, 16, 1, 8, 132) == 1  # 7 tiles: < 8 a split
    assert pa.decode_splits(256, 16, 1, 8, 132) == 2  # 16 tiles
    assert pa.decode_splits(4096, 64, 1, 8, 132) == 8  # 64 tiles
    assert pa.decode_splits(131072, 64, 1, 8, 132) == pa.MAX_SPLITS  # 256 allowed, cap 64
    assert pa.decode_splits(10, 16, 1, 8, 132) == 1  # shorter than one tile
    assert pa.decode_splits(8192, 16, 1, 8, 8) == 16  # a small GPU: 128 // 8
    for max_len in (1, 15, 16, 17, 127, 128, 129, 1000, 5000, 70000):
        for batch in (1, 3, 64):
            n = pa.decode_splits(max_len, 16, batch, 2, 132)
            assert 1 <= n <= max(1, -(-max_len // 16)) and n <= pa.MAX_SPLITS
    with pytest.raises(InputError):
        pa.decode_splits(0, 16, 1, 8, 132)
    with pytest.raises(InputError):
        pa.decode_splits(100, 16, 1, 8, 0)


def test_paged_kv_memory_by_hand():
    # per token: 2 (K, V) x 2 kv heads x 4 dims x 2 bytes = 32 bytes
    m = pa.paged_kv_memory([1, 16, 17], block_size=16, max_len=64, kv_heads=2, head_dim=4,
                           dtype_bytes=2)
    assert m.tokens == 34 and m.blocks == 1 + 1 + 2
    assert m.used_bytes == 34 * 32
    assert m.paged_bytes == 4 * 16 * 32
    assert m.fragmentation_bytes == (15 + 0 + 15) * 32
    assert m.reserved_bytes == 3 * 64 * 32
    assert m.saved_bytes == (192 - 64) * 32
    assert m.saved_fraction == pytest.approx(2 / 3)
    assert m.block_table_bytes == 3 * 4 * 4
    with pytest.raises(InputError):
        pa.paged_kv_memory([65], block_size=16, max_len=64, kv_heads=1, head_dim=1,
                           dtype_bytes=2)


def test_attention_counts_by_hand_and_flop_counter():
    lens, heads, kvh, d = [3, 5], 4, 2, 8
    c = pa.attention_decode_counts(lens, heads=heads, kv_heads=kvh, head_dim=d, act_bytes=2)
    assert c.flops == heads * 8 * (4 * d + 5) + 2 * heads * d
    assert c.bytes_read == 2 * heads * d * 2 + 2 * 8 * kvh * d * 2
    assert c.bytes_written == 2 * heads * d * 2
    paged = pa.attention_decode_counts(lens, heads=heads, kv_heads=kvh, head_dim=d,
                                       act_bytes=2, block_size=4)
    assert paged.bytes_read - c.bytes_read == 4 * (1 + 2) + 4 * 2  # block ids + seq_lens
    # the matmul part against torch's own count of an unpadded per-sequence attention
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        for n in lens:
            qh, k, v = _rand(heads, 1, d), _rand(heads, n, d), _rand(heads, n, d)
            torch.softmax(qh @ k.transpose(-1, -2), -1) @ v
    assert fc.get_total_flops() == heads * sum(lens) * 4 * d


# ---- benchmarks (tiny shapes: this checks the plumbing, not the speed) --------------------

def test_bench_add_rmsnorm_points_and_ratios():
    pts = bench.bench_add_rmsnorm("cpu", quick=True, shape=bench.NormShape(64, 256),
                                  impls=("torch",))
    assert [p.name for p in pts] == ["add_rmsnorm.eager.torch", "add_rmsnorm.unfused.torch",
                                     "add_rmsnorm.fused.torch"]
    assert all(p.stats.median_s > 0 and p.stats.n >= 5 for p in pts)
    assert pts[1].bytes == an.add_rmsnorm_counts(64, 256, 4, fused=False).bytes
    (row,) = bench.add_rmsnorm_ratios(pts)
    assert row["byte_ratio"] == pytest.approx((4 * 64 * 256 + 256) / (5 * 64 * 256 + 256))
    n = 64 * 256 * 4
    assert row["byte_ratio_vs_eager"] == pytest.approx((4 * n + 1024) / (10 * n + 1024))
    assert row["speedup"] > 0


def test_bench_decode_attention_points():
    pts = bench.bench_decode_attention("cpu", quick=True,
                                       shape=bench.DecodeShape(3, 4, 2, 16, 1, 40, 16))
    assert {p.name for p in pts} == {"decode_attention.paged.torch",
                                     "decode_attention.contiguous.torch"}
    for p in pts:
        assert p.extra["max_rel_err"] < 1e-5 and p.flops > 0 and p.stats.median_s > 0
        assert p.extra["seq_lens"][0] == 40 and 0 < p.extra["kv_saved_fraction"] < 1


@pytest.mark.gpu
@gpu
def test_cuda_benchmarks_run():
    pts = bench.run_kernel_benchmarks("cuda", quick=True)
    assert {p.extra["impl"] for p in pts} >= {"torch", "triton"}
