"""The Triton kernels against the float64 references, on the device they can run on: a GPU,
or the CPU through Triton's interpreter. These are the GPU tests with only the device
switched. Not collected on its own (not test_*.py): tests/test_measure_triton.py runs it, in
this process on a GPU, in a fresh process with TRITON_INTERPRET=1 on a CPU (the interpreter
must be on before triton is first imported, and other tests import it through transformers).
"""

from __future__ import annotations

import importlib
import os

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
MODULE = "perfscope.measure.kernels.triton_kernels"
if DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
    raise RuntimeError("run with TRITON_INTERPRET=1 on a machine without CUDA "
                       "(tests/test_measure_triton.py does)")

from perfscope.errors import MeasureError  # noqa: E402
from perfscope.measure.kernels import add_rmsnorm as an  # noqa: E402
from perfscope.measure.kernels import paged_attention as pa  # noqa: E402

RAGGED = [
    # (seq_lens, heads, kv_heads, head_dim, block_size): lengths 1, block multiples, +1
    ([1, 16, 17, 100, 33, 5], 8, 2, 32, 16),
    ([64, 3, 250], 4, 4, 16, 16),  # MHA
    ([9, 1, 40, 41], 8, 1, 64, 8),  # MQA
]
# the loop's variants: fp32 broadcast products one page a tile (no tl.dot), tl.dot on a tile
# of 16 (one page of 16, or two pages of 8: the gathered path), the default tile of 64
# (several pages a tile; sequences shorter than one tile)
LAUNCHES = {"scalar16": pa.DecodeLaunch(16, mma=False), "mma16": pa.DecodeLaunch(16),
            "default": pa.DECODE_LAUNCH}


@pytest.fixture(scope="module")
def tk():
    return importlib.import_module(MODULE)


def _rand(*shape, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g).to(device=DEVICE, dtype=dtype)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)])
@pytest.mark.parametrize("tokens,hidden", [(1, 8), (37, 1000), (19, 4096)])  # 4096: 8 warps
def test_triton_add_rmsnorm_matches_float64(tk, dtype, tol, tokens, hidden):
    x = _rand(tokens, hidden, dtype=dtype)
    r = _rand(tokens, hidden, dtype=dtype, seed=1)
    w = _rand(hidden, dtype=dtype, seed=2)
    h_ref, o_ref = an.add_rmsnorm_reference(x, r, w)
    for fn in (tk.add_rmsnorm_unfused_triton, tk.add_rmsnorm_fused_triton):
        h, out = torch.empty_like(x), torch.empty_like(x)
        fn(x, r, w, an.EPS, h, out)
        torch.testing.assert_close(h.cpu().double(), h_ref, rtol=tol, atol=tol)
        torch.testing.assert_close(out.cpu().double(), o_ref, rtol=tol, atol=tol)


def _both_layouts(tk, case, dtype, num_splits, launch=None):
    """(paged, contiguous, float64 reference) outputs of one ragged case."""
    seq_lens, heads, kvh, d, bs = case
    kv = pa.make_paged_kv(seq_lens, kv_heads=kvh, head_dim=d, block_size=bs, dtype=dtype,
                          device=DEVICE)
    q = _rand(len(seq_lens), heads, d, dtype=dtype, seed=5)
    ref = pa.attention_reference(q, [pa.sequence_kv(kv, b) for b in range(len(seq_lens))])
    paged = tk.paged_attention_triton(q, kv.k_pool, kv.v_pool, kv.block_table, kv.seq_lens,
                                      num_splits=num_splits, launch=launch)
    kc, vc = pa.to_contiguous(kv, max_len=max(seq_lens) + 5)
    contig = tk.contiguous_attention_triton(q, kc, vc, kv.seq_lens, num_splits=num_splits,
                                            launch=launch)
    return paged, contig, ref


def _attention(tk, case, dtype, tol, num_splits=1, launch=None):
    paged, contig, ref = _both_layouts(tk, case, dtype, num_splits, launch)
    torch.testing.assert_close(paged.cpu().double(), ref, rtol=tol, atol=tol)
    torch.testing.assert_close(contig.cpu().double(), ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("launch", LAUNCHES)
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 3e-2)])
@pytest.mark.parametrize("case", RAGGED)
def test_triton_attention_matches_float64(tk, dtype, tol, case, launch):
    _attention(tk, case, dtype, tol, launch=LAUNCHES[launch])


# split-KV in tiles of 16: 2, 3, 7 splits cut some sequences into uneven chunks and leave
# the shortest (1..16 tokens, one tile) with empty splits; 20 is more than the longest
# sequence of any case has tiles (16), so every sequence has empty splits
@pytest.mark.parametrize("num_splits,dtype,tol,launch", [
    (2, torch.float32, 1e-4, "mma16"), (3, torch.float32, 1e-4, "mma16"),
    (7, torch.float32, 1e-4, "mma16"), (20, torch.float32, 1e-4, "mma16"),
    (7, torch.bfloat16, 3e-2, "mma16"),  # bf16: the combine's cast
    (3, torch.float32, 1e-4, "scalar16"), (3, torch.bfloat16, 3e-2, "default")])
@pytest.mark.parametrize("case", RAGGED)
def test_triton_split_attention_matches_float64(tk, dtype, tol, case, num_splits, launch):
    _attention(tk, case, dtype, tol, num_splits, LAUNCHES[launch])


@pytest.mark.parametrize("case", RAGGED)
def test_auto_splits_match_one_pass(tk, case):
    """num_splits=None (the heuristic) against the one-pass kernel, in tiles of 16. On these
    lengths it picks 1 but for RAGGED[1] (16 tiles: 2 splits of 8), so both of its paths are
    taken."""
    launch = LAUNCHES["mma16"]
    auto = _both_layouts(tk, case, torch.float32, None, launch)
    one = _both_layouts(tk, case, torch.float32, 1, launch)
    for a, o in zip(auto[:2], one[:2], strict=True):
        torch.testing.assert_close(a, o, rtol=1e-5, atol=1e-5)
    seq_lens, _, kvh, _, _ = case
    q = torch.empty((len(seq_lens), 1, 1), device=DEVICE)
    want = 2 if case is RAGGED[1] else 1
    assert tk.decode_num_splits(q, max(seq_lens), launch.block_n, kvh) == want


def test_num_splits_out_of_range(tk):
    for bad in (0, pa.MAX_SPLITS + 1):
        with pytest.raises(MeasureError, match="num_splits"):
            _attention(tk, RAGGED[1], torch.float32, 1e-4, bad)


def test_launches_triton_cannot_build(tk):
    with pytest.raises(MeasureError, match=r"block_n 24: .* power of two"):
        _attention(tk, RAGGED[0], torch.float32, 1e-4, launch=pa.DecodeLaunch(24))
    with pytest.raises(MeasureError, match=r"tl\.dot needs both >= 16"):
        _attention(tk, RAGGED[0], torch.float32, 1e-4, launch=pa.DecodeLaunch(8))
    _attention(tk, RAGGED[0], torch.float32, 1e-4, launch=pa.DecodeLaunch(8, mma=False))


@pytest.mark.skipif(DEVICE == "cuda", reason="the interpreter's loop variant")
def test_while_loop_variant_for_old_interpreters(tk, monkeypatch):
    """triton < 3.8's interpreter cannot take range() over a loaded length; the kernels then
    loop with while. Forced here under a newer interpreter, they give the same results."""
    monkeypatch.setattr(tk, "interpreter_needs_while_loop", lambda: True)
    _attention(tk, RAGGED[0], torch.float32, 1e-4, launch=LAUNCHES["mma16"])
    _attention(tk, RAGGED[0], torch.float32, 1e-4, 3, LAUNCHES["mma16"])  # split-KV


def test_while_loop_only_for_old_interpreters(tk):
    assert tk.interpreter_needs_while_loop("3.6.0", interpret=True)
    assert tk.interpreter_needs_while_loop("3.7.1", interpret=True)
    assert not tk.interpreter_needs_while_loop("3.8.0", interpret=True)
    assert not tk.interpreter_needs_while_loop("3.9.0", interpret=True)
    assert not tk.interpreter_needs_while_loop("3.6.0", interpret=False)  # compiled: for
