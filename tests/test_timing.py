"""Timing harness: statistics on known samples, sizing rules, the CPU path end to end."""

from __future__ import annotations

import itertools
import statistics

import pytest

from perfscope.errors import InputError, MeasureError
from perfscope.measure import timing
from perfscope.measure.types import TimingStats

torch = pytest.importorskip("torch")
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_summarize_known_samples():
    s = timing.summarize([5.0, 1.0, 4.0, 2.0, 3.0])
    # numpy linear quantiles of 1..5: p20 at position 0.8 -> 1.8, p80 at 3.2 -> 4.2
    assert (s.median_s, s.p20_s, s.p80_s, s.min_s, s.n) == (3.0, 1.8, 4.2, 1.0, 5)
    assert s.cv == pytest.approx(statistics.stdev([1, 2, 3, 4, 5]) / 3.0)
    assert s.cv == pytest.approx(0.5270462766947299)


def test_summarize_even_count_and_numpy_agreement():
    np = pytest.importorskip("numpy")
    xs = [0.7, 0.1, 0.3, 0.9, 0.2, 0.4]
    s = timing.summarize(xs)
    assert s.median_s == pytest.approx(float(np.percentile(xs, 50)))
    assert s.p20_s == pytest.approx(float(np.percentile(xs, 20)))
    assert s.p80_s == pytest.approx(float(np.percentile(xs, 80)))


def test_never_a_single_sample():
    with pytest.raises(MeasureError):
        timing.summarize([1.0])
    with pytest.raises(InputError):
        timing.benchmark(lambda: None, min_runs=1)


def test_stats_to_dict_has_fields():
    d = TimingStats(1.0, 0.9, 1.1, 0.8, 10, 0.05, threads=2, method="perf_counter").to_dict()
    assert d == {"median_s": 1.0, "p20_s": 0.9, "p80_s": 1.1, "min_s": 0.8, "n": 10,
                 "cv": 0.05, "threads": 2, "method": "perf_counter"}
    assert "threads" not in TimingStats(1.0, 0.9, 1.1, 0.8, 10, 0.05).to_dict()


def test_flush_buffer_is_twice_the_cache_in_whole_mib():
    mib = 2**20
    assert timing.flush_buffer_bytes(50 * mib) == 100 * mib  # H100 L2
    assert timing.flush_buffer_bytes(40 * mib) == 80 * mib  # A100 L2
    assert timing.flush_buffer_bytes(1.5 * mib) == 3 * mib
    assert timing.flush_buffer_bytes(100_000) == mib  # rounded up to a whole MiB
    assert timing.flush_buffer_bytes(0) == mib


def test_run_count_and_graph_inner():
    assert timing.run_count(0.01, budget_s=0.5, min_runs=5, max_runs=200) == 50
    assert timing.run_count(1.0, budget_s=0.5, min_runs=5, max_runs=200) == 5
    assert timing.run_count(1e-7, budget_s=0.5, min_runs=5, max_runs=200) == 200
    assert timing.graph_inner_calls(1e-5) == 100  # 1 ms target / 10 us
    assert timing.graph_inner_calls(5e-3) == 1
    assert timing.graph_inner_calls(1e-9) == timing.GRAPH_MAX_INNER


def test_cpu_benchmark_counts_runs_and_threads():
    calls = []
    n = timing.set_cpu_threads(1)
    assert n == 1
    st = timing.benchmark(lambda: calls.append(1), warmup_s=0.0, min_runs=7, max_runs=9,
                          budget_s=10.0, flush_l2=False)
    assert 7 <= st.n <= 9
    assert st.threads == 1 and st.method == "perf_counter"
    assert st.p20_s <= st.median_s <= st.p80_s
    assert len(calls) >= st.n + 2  # at least two warm-up calls
    timing.set_cpu_threads(None)


def test_rotating_input_sets():
    built, seen = [], []

    def setup(i: int) -> int:
        built.append(i)
        return i

    timing.benchmark(lambda x: seen.append(x), setup=setup, warmup_s=0.0, min_runs=10,
                     max_runs=10, flush_l2=True)
    assert built == list(range(timing.INPUT_SETS))
    assert set(seen) == set(range(timing.INPUT_SETS))
    # consecutive calls never reuse the same input set
    assert all(a != b for a, b in itertools.pairwise(seen))


def test_cuda_graph_needs_cuda():
    with pytest.raises(InputError):
        timing.benchmark(lambda: None, cuda_graph=True)


def test_random_tensor_is_never_zeros_and_seeded():
    a = timing.random_tensor((1000,), torch.float32, seed=3)
    b = timing.random_tensor((1000,), torch.float32, seed=3)
    assert torch.equal(a, b)
    assert float(a.abs().min()) > 0 and float(a.std()) > 0.5
    i8 = timing.random_tensor((1000,), torch.int8, seed=1)
    assert int((i8 != 0).sum()) > 900
    f8 = timing.random_tensor((64,), torch.float8_e4m3fn, seed=1)
    assert float(f8.float().abs().sum()) > 0


def test_check_close_accepts_rounding_and_rejects_wrong():
    x = timing.random_tensor((64, 64), torch.float32, seed=0)
    w = timing.random_tensor((64, 64), torch.float32, seed=1)
    ref = x.double() @ w.double()
    assert timing.check_close((x.bfloat16() @ w.bfloat16()), ref, "bf16", "mm") < 0.03
    with pytest.raises(MeasureError, match="wrong result"):
        timing.check_close(x @ w + 1.0, ref, "fp32", "mm")
    with pytest.raises(MeasureError, match="all zeros"):
        timing.check_close(torch.zeros(4), torch.zeros(4), "fp32", "zeros")
    with pytest.raises(MeasureError, match="inf/nan"):
        timing.check_close(torch.tensor([float("nan"), 1.0]), torch.ones(2), "fp32", "nan")


def test_is_oom():
    assert timing.is_oom(RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert timing.is_oom(RuntimeError("[enforce fail] DefaultCPUAllocator: can't allocate"))
    assert not timing.is_oom(ValueError("bad shape"))


@pytest.mark.gpu
@cuda
def test_cuda_events_and_graph():
    a = torch.randn(1024, 1024, device="cuda")
    st = timing.benchmark(lambda: a @ a, device="cuda", budget_s=0.1)
    assert st.method == "cuda_events" and st.n >= 5
    g = timing.benchmark(lambda: a.add_(1.0), device="cuda", budget_s=0.1, cuda_graph=True)
    assert g.method.startswith("cuda_graph x") and g.median_s > 0
