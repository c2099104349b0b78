"""Machine ceilings: dtype support rules, STREAM accounting, GEMMs as layers run them (int8
padding, fp8 scaling), repeated rounds, spec writing and reading back."""

from __future__ import annotations

import pytest

from perfscope.errors import InputError, MeasureError, UnsupportedDtypeError
from perfscope.measure import bandwidth as BW
from perfscope.measure import ceilings as C
from perfscope.measure import dtypes as D
from perfscope.measure.gemm import INT8_PAD_ROWS, Gemm, int8_rows, time_gemm
from perfscope.measure.hwspec import hw_toml, parse_spec_text, save_hw
from perfscope.measure.timing import one_thread
from perfscope.measure.types import MeasuredPoint, TimingStats
from perfscope.specs.loading import load_hw

torch = pytest.importorskip("torch")
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
MIB = 2**20


@pytest.fixture
def small(monkeypatch):
    """Tiny sweeps so the CPU path runs in about a second."""
    monkeypatch.setattr(C, "CPU_GEMM_SIZES_QUICK", (128, 256))
    monkeypatch.setattr(C, "bandwidth_array_bytes", lambda device, quick: 8 * MIB)


def test_cuda_dtypes_by_capability():
    assert D.cuda_dtypes((7, 0)) == ["fp32", "fp16"]  # V100: no bf16/tf32/fp8
    assert D.cuda_dtypes((8, 0)) == ["fp32", "tf32", "bf16", "fp16", "int8"]  # A100
    assert D.cuda_dtypes((8, 9)) == ["fp32", "tf32", "bf16", "fp16", "fp8", "int8"]  # L40S
    assert "fp8" in D.cuda_dtypes((9, 0))  # H100
    assert "fp8" not in D.cuda_dtypes((9, 0), has_scaled_mm=False)
    assert "int8" not in D.cuda_dtypes((9, 0), has_int_mm=False)


def test_cpu_dtypes_by_flags():
    assert D.cpu_dtypes({"avx2", "fma"}) == ["fp32"]
    assert D.cpu_dtypes({"avx512f", "avx512_bf16"}) == ["fp32", "bf16"]
    assert D.cpu_dtypes({"amx_bf16", "amx_int8", "avx512_fp16"}) == \
        ["fp32", "bf16", "fp16", "int8"]


def test_fp8_on_cpu_is_a_clear_error():
    if "fp8" in D.supported_dtypes("cpu"):
        pytest.skip("this CPU claims fp8")
    with pytest.raises(UnsupportedDtypeError, match="no fp8"):
        D.check_dtype_supported("fp8", "cpu")
    with pytest.raises(InputError, match="unknown") as e:  # a typo is bad input, not a skip
        D.check_dtype_supported("fp7", "cpu")
    assert not isinstance(e.value, UnsupportedDtypeError)


def test_stream_accounting():
    # STREAM: copy moves 2 words per element, triad 3 (bytes read + written)
    assert BW.stream_bytes("copy", 1000, 4) == 8000
    assert BW.stream_bytes("triad", 1000, 4) == 12000


def test_gemm_counts():
    g = Gemm("bf16", 16, 4096, 1024)
    assert g.flops == 2 * 16 * 4096 * 1024
    assert g.bytes() == 2 * (16 * 1024 + 1024 * 4096) + 2 * 16 * 4096
    assert Gemm("int8", 32, 64, 64).bytes() == 32 * 64 + 64 * 64 + 4 * 32 * 64
    assert Gemm("fp32", 8, 8, 8, groups=3).flops == 3 * 2 * 8**3
    # a bias: one add per output, n elements read
    assert Gemm("fp32", 8, 16, 4, bias=True).flops == 2 * 8 * 16 * 4 + 8 * 16
    assert Gemm("fp32", 8, 16, 4, bias=True).bytes() == 4 * (8 * 4 + 4 * 16 + 8 * 16 + 16)


def _check(g: Gemm, seed: int = 0) -> float:
    x, p = g.x("cpu", seed), g.w("cpu", seed + 1)
    with D.matmul_precision(g.dtype):
        return g.verify((x, p), g.fn("cpu")(x, p))


def test_gemm_check_runs_against_fp64():
    assert _check(Gemm("fp32", 96, 80, 72)) < 1e-5
    assert _check(Gemm("bf16", 64, 64, 256)) < 0.03
    assert _check(Gemm("fp32", 8, 32, 16, groups=3, bias=True)) < 1e-5
    assert _check(Gemm("int8", 40, 64, 64)) == 0.0  # exact


def test_gemm_check_catches_a_wrong_row_outside_the_sampled_rows():
    """Rows past the element-wise sample are still covered (Freivalds over all rows)."""
    g = Gemm("fp32", 1000, 64, 32)
    x, p = g.x("cpu", 0), g.w("cpu", 1)
    out = g.fn("cpu")(x, p)
    out[501] += 1.0  # not one of the 128 spread rows checked element by element
    with pytest.raises(MeasureError, match="all rows"):
        g.verify((x, p), out)


def test_gemm_check_catches_a_wrong_column_outside_the_sampled_columns():
    """Columns past the element-wise sample are covered too: Freivalds sums every column,
    each with a nonzero weight (a wrong element in any column moves its row's sum)."""
    g = Gemm("fp32", 40, 1000, 32)
    x, p = g.x("cpu", 0), g.w("cpu", 1)
    out = g.fn("cpu")(x, p)
    assert 502 not in set(checks_spread(1000, 256))
    out[7, 502] += 1.0
    with pytest.raises(MeasureError, match="all rows"):
        g.verify((x, p), out)
    check = g.checker()
    with one_thread():  # as the harness runs checks
        for col in range(1000):  # whichever column it is
            out = g.fn("cpu")(x, p)
            out[3, col] += 1.0
            with pytest.raises(MeasureError):
                check((x, p), out)
    bad = g.fn("cpu")(x, p)
    bad[0, 0] *= -1  # inside the sample: the element-wise check names it
    with pytest.raises(MeasureError, match=r"GEMM 40x1000x32: wrong result"):
        g.verify((x, p), bad)


def checks_spread(n: int, limit: int) -> list[int]:
    from perfscope.measure.checks import spread_indices

    return spread_indices(n, limit).tolist()


def test_gemm_checker_keeps_each_weights_pieces_once(monkeypatch):
    """W^T r is computed once per weight tensor however many outputs are checked, and again
    for another weight (a CUDA graph's sets each have their own)."""
    from perfscope.measure import gemm as G

    g = Gemm("fp32", 64, 96, 48, groups=3, bias=True)
    check = g.checker()
    calls = []
    real = G.matvec64
    monkeypatch.setattr(G, "matvec64", lambda a, v: calls.append(tuple(a.shape)) or real(a, v))
    p = g.w("cpu", 1)
    for seed in range(4):
        x = g.x("cpu", 10 + seed)
        assert check((x, p), g.fn("cpu")(x, p)) < 1e-5
    w_t = (3, 48, 96)  # W^T: (groups, k, n)
    assert calls.count(w_t) == 1
    p2 = g.w("cpu", 2)
    x = g.x("cpu", 20)
    assert check((x, p2), g.fn("cpu")(x, p2)) < 1e-5
    assert calls.count(w_t) == 2


def test_matvec64_is_a_float64_product_in_slices(monkeypatch):
    from perfscope.measure import gemm as G

    monkeypatch.setattr(G, "CHUNK_ELEMENTS", 100)  # 15 rows: slices of 6 columns
    a = torch.randn(3, 5, 77)
    v = torch.randn(77, dtype=torch.float64)
    vb = torch.randn(3, 77, dtype=torch.float64)  # batched like a
    with one_thread():
        torch.testing.assert_close(G.matvec64(a, v), a.double() @ v, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(G.matvec64(a, vb), (a.double() @ vb[..., None])[..., 0],
                                   rtol=1e-12, atol=1e-12)


def test_int8_gemm_pads_m_on_cuda_and_counts_the_true_rows():
    # torch._int_mm on CUDA refuses M <= 16: X gets INT8_PAD_ROWS rows there, not on a CPU
    assert int8_rows(1, cuda=True) == INT8_PAD_ROWS == 32
    assert int8_rows(16, cuda=True) == 32 and int8_rows(17, cuda=True) == 17
    assert int8_rows(1, cuda=False) == 1
    g = Gemm("int8", 4, 64, 128, pad_int8=True)  # the CUDA layout, run here on the CPU
    x, p = g.x("cpu", 0), g.w("cpu", 1)
    assert tuple(x.shape) == (32, 128) and g.m_run == 32
    assert g.flops == 2 * 4 * 64 * 128  # the model's 4 rows, not the 32 run
    assert g.bytes() == 4 * 128 + 128 * 64 + 4 * 4 * 64
    assert g.verify((x, p), g.fn("cpu")(x, p)) == 0.0  # the true rows, exactly
    pt = time_gemm(g, "cpu", budget_s=0.01, warmup_s=0.0, flush_l2=False)
    assert pt.extra["padded_m"] == 32 and pt.flops == g.flops and pt.shape["m"] == 4


def test_fp8_data_is_unit_scale_with_the_scale_in_scale_b():
    g = Gemm("fp8", 16, 32, 4096)
    w = g.w("cpu", 1)["w"].float()
    # unit-scale normal data keeps e4m3 normal: |x| >= 2^-6 for all but ~1.2% of values,
    # where 1/sqrt(4096) scaling would have put most of them in subnormals or zero
    assert float((w.abs() < 2 ** -6).float().mean()) < 0.03
    assert 0.9 < float(w.std()) < 1.1
    assert g.scale_b() == pytest.approx(1 / 64)
    ref = g.reference(g.x("cpu", 0), {"w": g.w("cpu", 1)["w"]})
    assert 0.3 < float(ref.std()) < 3  # outputs O(1): the scale is applied


def test_fp8_ceiling_is_measured_with_and_without_fast_accumulation():
    kinds = C.gemm_kinds(["bf16", "fp8"])
    assert [(k.name, k.dtype, k.fast_accum) for k in kinds] == [
        ("gemm.bf16", "bf16", False), ("gemm.fp8", "fp8", False),
        ("gemm.fp8.fast_accum", "fp8", True)]


def test_cache_sizes_and_plateau():
    sizes = BW.cache_sizes(32 * MIB)
    assert sizes[0] == MIB // 4 and max(sizes) == 128 * MIB and 24 * MIB in sizes

    def pt(ws: int, t: float) -> MeasuredPoint:
        return MeasuredPoint("c", "memory", {"elements": ws // 8}, "fp32",
                             TimingStats(t, t, t, t, 5, 0.0), 0.0, float(ws), "cpu")

    pts = [pt(MIB, 1e-5), pt(8 * MIB, 4e-5), pt(64 * MIB, 1e-2)]
    best = BW.plateau(pts, 32 * MIB)
    assert best is not None and best.bytes == 8 * MIB  # 200 GB/s beats 100 GB/s


def test_measure_ceilings_cpu_skips_missing_dtype(small):
    steps = []
    res = C.measure_ceilings("cpu", dtypes=["fp32", "fp8"], quick=True, sweep=False,
                             rounds=2, progress=lambda label, i, n: steps.append((i, n)))
    g = res.gemm()
    assert set(g) == {"fp32"}
    c = g["fp32"]
    assert c.low <= c.value <= c.high and c.stats.n >= 10
    assert c.shape["m"] in (128, 256)
    assert len(c.rounds) == 2 and c.value == max(c.rounds) and c.low == min(c.rounds)
    assert any("fp8" in s for s in res.skipped)
    bw = res.bandwidth()
    assert bw is not None and bw.unit == "bytes/s" and bw.value > 0 and len(bw.rounds) == 2
    assert {x.name for x in res.ceilings} >= {"gemm.fp32", "memory.copy", "memory.triad"}
    # determinate progress: 2 sizes + copy + triad, then 1 GEMM + 2 streams in round 2
    total = 2 + 2 + (1 + 2)
    assert steps[0] == (0, total) and steps[-1] == (total, total)
    assert [i for i, _ in steps] == list(range(total + 1))


def test_stream_arrays_are_made_once_for_every_round(small, monkeypatch):
    made = []
    real = C.stream_arrays
    monkeypatch.setattr(C, "stream_arrays", lambda d, n: made.append(n) or real(d, n))
    res = C.measure_ceilings("cpu", dtypes=["fp32"], quick=True, sweep=False, rounds=2)
    assert made == [8 * MIB]
    assert sorted(len(c.rounds) for c in res.ceilings if c.name.startswith("memory.")) == [2, 2]


def test_ceiling_from_rounds():
    st = TimingStats(0.01, 0.008, 0.012, 0.007, 10, 0.1)
    slow = TimingStats(0.02, 0.019, 0.021, 0.018, 10, 0.05)

    def pt(stats):
        return MeasuredPoint("g", "gemm", {"m": 8}, "fp32", stats, 1e9, 1e6, "cpu")

    c = C.ceiling_from("gemm.fp32", [pt(slow), pt(st)], "FLOP/s")
    # rounds at 1e9 FLOP / 0.02 s and / 0.01 s; the roof is the best round
    assert c.rounds == (5e10, 1e11) and c.value == 1e11 and c.low == 5e10
    assert c.high == pytest.approx(1e9 / 0.008)  # the best round's p20 rate
    assert c.spread == pytest.approx(0.5)
    assert c.to_dict()["rounds"] == [5e10, 1e11]


def test_a_wrong_result_is_an_error_not_a_skip(small, monkeypatch):
    from perfscope.measure import gemm as G

    real = G.Gemm.fn

    def wrong(self, device):
        f = real(self, device)
        return lambda x, p: f(x, p) * 1.5

    monkeypatch.setattr(G.Gemm, "fn", wrong)
    with pytest.raises(MeasureError, match="wrong result"):
        C.measure_ceilings("cpu", dtypes=["fp32"], quick=True, sweep=False, rounds=1)


def test_an_unexpected_failure_is_an_error_naming_what_failed(small, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("driver exploded")

    monkeypatch.setattr(C, "stream_point", boom)
    with pytest.raises(MeasureError, match="ceiling memory copy failed: RuntimeError: "
                                           "driver exploded"):
        C.measure_ceilings("cpu", dtypes=[], quick=True, sweep=False, rounds=1)


def test_out_of_memory_is_a_skip(small, monkeypatch):
    def oom(*a, **k):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp] DefaultCPUAllocator: can't "
                           "allocate memory")

    monkeypatch.setattr(C, "stream_point", oom)
    res = C.measure_ceilings("cpu", dtypes=[], quick=True, sweep=False, rounds=1)
    assert any("memory copy: out of memory" in s for s in res.skipped)
    assert any("memory triad: out of memory" in s for s in res.skipped)
    assert res.bandwidth() is None


def test_save_into_a_missing_folder_fails(tmp_path):
    from perfscope.measure.hwspec import check_save_path

    with pytest.raises(InputError, match="does not exist"):
        check_save_path("/proc/nope/x.toml")
    with pytest.raises(InputError, match="does not exist"):
        save_hw(tmp_path / "no" / "x.toml", _fake_result(), CPU_DESC)
    with pytest.raises(InputError, match="is a folder"):
        check_save_path(str(tmp_path))
    check_save_path("local")  # the local spec's folder is created as needed


def _fake_result() -> C.CeilingsResult:
    st = TimingStats(0.01, 0.009, 0.011, 0.008, 10, 0.05)
    res = C.CeilingsResult("cpu")
    res.ceilings = [
        C.Ceiling("gemm.fp32", 1.5e11, 1.4e11, 1.6e11, "FLOP/s", "fp32",
                  {"m": 1024, "n": 1024, "k": 1024}, st),
        C.Ceiling("memory.copy", 2.0e10, 1.9e10, 2.1e10, "bytes/s", "fp32",
                  {"elements": 1 << 24}, st),
        C.Ceiling("memory.triad", 2.5e10, 2.4e10, 2.6e10, "bytes/s", "fp32",
                  {"elements": 1 << 24}, st),
    ]
    return res


CPU_DESC = {"kind": "cpu", "name": "Test CPU", "physical_cores": 4, "torch_threads": 4,
            "cache_bytes": {"l1": 32768, "l2": 524288, "l3": 16 * MIB},
            "memory_bytes": 64_000_000_000}


def test_saved_spec_loads_back(tmp_path):
    path = save_hw(tmp_path / "mybox.toml", _fake_result(), CPU_DESC)
    assert [p.name for p in tmp_path.iterdir()] == ["mybox.toml"]  # no temp file left over
    hw = load_hw(str(path))
    assert hw.name == "mybox" and hw.sm_count == 4
    assert hw.l2_bytes == 16 * MIB  # the last-level cache
    assert hw.memory_bytes == pytest.approx(64e9)
    assert hw.tensor_flops("fp32", "empirical") == (pytest.approx(1.5e11), "measured")
    assert hw.tensor_flops("fp32", "spec")[0] == pytest.approx(1.5e11)  # measured as peak
    assert hw.memory_bandwidth("empirical") == (pytest.approx(2.5e10), "measured")  # triad
    assert not hw.has_dtype("bf16")
    with pytest.raises(UnsupportedDtypeError):
        hw.tensor_flops("fp8")


def test_save_local_uses_the_local_path(tmp_path, monkeypatch):
    monkeypatch.setenv("PERFSCOPE_LOCAL_HW", str(tmp_path / "sub" / "local.toml"))
    p = save_hw("local", _fake_result(), CPU_DESC)
    assert p == tmp_path / "sub" / "local.toml"
    from perfscope.measure.hwspec import load_local_spec

    hw = load_local_spec()
    assert hw is not None and hw.name == "local"


def test_gpu_spec_puts_tensor_dtypes_on_the_tensor_unit():
    res = _fake_result()
    st = res.ceilings[0].stats
    res.ceilings.append(C.Ceiling("gemm.bf16", 7.0e14, 6.9e14, 7.1e14, "FLOP/s", "bf16",
                                  {"m": 8192, "n": 8192, "k": 8192}, st))
    desc = {"kind": "cuda", "name": "NVIDIA H100 80GB HBM3", "sm_count": 132,
            "l2_bytes": 50 * MIB, "memory_bytes": 85_000_000_000}
    hw = parse_spec_text(hw_toml(res, desc))
    assert hw.peaks["bf16"].tensor_dense == pytest.approx(7.0e14)
    assert hw.peaks["fp32"].tensor_dense is None and hw.peaks["fp32"].vector == \
        pytest.approx(1.5e11)
    assert hw.sm_count == 132 and hw.l2_bytes == 50 * MIB


def test_agree():
    st = TimingStats(1, 1, 1, 1, 5, 0)
    a = C.Ceiling("g", 10, 9, 11, "FLOP/s", "fp32", {}, st)
    assert C.agree(a, C.Ceiling("g", 10.5, 10, 12, "FLOP/s", "fp32", {}, st))
    assert not C.agree(a, C.Ceiling("g", 13, 12, 14, "FLOP/s", "fp32", {}, st))


@pytest.mark.gpu
@cuda
def test_gpu_ceilings_quick():
    res = C.measure_ceilings("cuda", quick=True)
    assert "bf16" in res.gemm() or "fp16" in res.gemm()
    assert res.get("cache.plateau") is not None
    assert res.bandwidth() is not None
    if "fp8" in D.supported_dtypes("cuda"):
        assert res.get("gemm.fp8") is not None and res.get("gemm.fp8.fast_accum") is not None


@pytest.mark.gpu
@cuda
def test_gpu_int8_decode_gemm_runs_padded():
    if "int8" not in D.supported_dtypes("cuda"):
        pytest.skip("no int8 tensor cores")
    p = time_gemm(Gemm("int8", 1, 4096, 4096, pad_int8=True), "cuda", budget_s=0.05)
    assert p.extra["padded_m"] == 32 and p.flops == 2 * 4096 * 4096
