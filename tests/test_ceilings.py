"""Machine ceilings: dtype support rules, STREAM accounting, spec writing and reading back."""

from __future__ import annotations

import pytest

from perfscope.errors import UnsupportedDtypeError
from perfscope.measure import ceilings as C
from perfscope.measure.hwspec import hw_toml, parse_spec_text, save_hw
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
    assert C.cuda_dtypes((7, 0)) == ["fp32", "fp16"]  # V100: no bf16/tf32/fp8
    assert C.cuda_dtypes((8, 0)) == ["fp32", "tf32", "bf16", "fp16", "int8"]  # A100
    assert C.cuda_dtypes((8, 9)) == ["fp32", "tf32", "bf16", "fp16", "fp8", "int8"]  # L40S
    assert "fp8" in C.cuda_dtypes((9, 0))  # H100
    assert "fp8" not in C.cuda_dtypes((9, 0), has_scaled_mm=False)
    assert "int8" not in C.cuda_dtypes((9, 0), has_int_mm=False)


def test_cpu_dtypes_by_flags():
    assert C.cpu_dtypes({"avx2", "fma"}) == ["fp32"]
    assert C.cpu_dtypes({"avx512f", "avx512_bf16"}) == ["fp32", "bf16"]
    assert C.cpu_dtypes({"amx_bf16", "amx_int8", "avx512_fp16"}) == \
        ["fp32", "bf16", "fp16", "int8"]


def test_fp8_on_cpu_is_a_clear_error():
    if "fp8" in C.supported_dtypes("cpu"):
        pytest.skip("this CPU claims fp8")
    with pytest.raises(UnsupportedDtypeError, match="no fp8"):
        C.check_dtype_supported("fp8", "cpu")
    with pytest.raises(UnsupportedDtypeError, match="unknown"):
        C.check_dtype_supported("fp7", "cpu")


def test_stream_accounting():
    # STREAM: copy moves 2 words per element, triad 3 (bytes read + written)
    assert C.stream_bytes("copy", 1000, 4) == 8000
    assert C.stream_bytes("triad", 1000, 4) == 12000


def test_gemm_counts():
    g = C.Gemm("bf16", 16, 4096, 1024)
    assert g.flops == 2 * 16 * 4096 * 1024
    assert g.bytes() == 2 * (16 * 1024 + 1024 * 4096) + 2 * 16 * 4096
    assert C.Gemm("int8", 32, 64, 64).bytes() == 32 * 64 + 64 * 64 + 4 * 32 * 64
    assert C.Gemm("fp32", 8, 8, 8, groups=3).flops == 3 * 2 * 8**3


def test_gemm_check_runs_against_fp64():
    assert C.Gemm("fp32", 96, 80, 72).check("cpu") < 1e-5
    assert C.Gemm("bf16", 64, 64, 256).check("cpu") < 0.03


def test_cache_sizes_and_plateau():
    sizes = C.cache_sizes(32 * MIB)
    assert sizes[0] == MIB // 4 and max(sizes) == 128 * MIB and 24 * MIB in sizes

    def pt(ws: int, t: float) -> MeasuredPoint:
        return MeasuredPoint("c", "memory", {"elements": ws // 8}, "fp32",
                             TimingStats(t, t, t, t, 5, 0.0), 0.0, float(ws), "cpu")

    pts = [pt(MIB, 1e-5), pt(8 * MIB, 4e-5), pt(64 * MIB, 1e-2)]
    best = C.plateau(pts, 32 * MIB)
    assert best is not None and best.bytes == 8 * MIB  # 200 GB/s beats 100 GB/s


def test_measure_ceilings_cpu_skips_missing_dtype(small):
    res = C.measure_ceilings("cpu", dtypes=["fp32", "fp8"], quick=True, sweep=False)
    g = res.gemm()
    assert set(g) == {"fp32"}
    c = g["fp32"]
    assert c.low <= c.value <= c.high and c.stats.n >= 10
    assert c.shape["m"] in (128, 256)
    assert any("fp8" in s for s in res.skipped)
    bw = res.bandwidth()
    assert bw is not None and bw.unit == "bytes/s" and bw.value > 0
    assert {x.name for x in res.ceilings} >= {"gemm.fp32", "memory.copy", "memory.triad"}


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
