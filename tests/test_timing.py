"""Timing harness: statistics on known samples, sizing rules, the CPU path end to end, and
the CUDA decisions that can be checked without a GPU (what to graph and how, which device)."""

from __future__ import annotations

import itertools
import statistics

import pytest

from perfscope.errors import InputError, MeasureError
from perfscope.measure import checks, cuda_timing, timing
from perfscope.measure.skips import is_oom
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
    assert cuda_timing.graph_inner_calls(1e-5) == 100  # 1 ms target / 10 us
    assert cuda_timing.graph_inner_calls(5e-3) == 1
    assert cuda_timing.graph_inner_calls(1e-9) == cuda_timing.GRAPH_MAX_INNER


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
    a = checks.random_tensor((1000,), torch.float32, seed=3)
    b = checks.random_tensor((1000,), torch.float32, seed=3)
    assert torch.equal(a, b)
    assert float(a.abs().min()) > 0 and float(a.std()) > 0.5
    i8 = checks.random_tensor((1000,), torch.int8, seed=1)
    assert int((i8 != 0).sum()) > 900
    f8 = checks.random_tensor((64,), torch.float8_e4m3fn, seed=1)
    assert float(f8.float().abs().sum()) > 0


def test_check_close_accepts_rounding_and_rejects_wrong():
    x = checks.random_tensor((64, 64), torch.float32, seed=0)
    w = checks.random_tensor((64, 64), torch.float32, seed=1)
    ref = x.double() @ w.double()
    assert checks.check_close((x.bfloat16() @ w.bfloat16()), ref, "bf16", "mm") < 0.03
    with pytest.raises(MeasureError, match="wrong result"):
        checks.check_close(x @ w + 1.0, ref, "fp32", "mm")
    with pytest.raises(MeasureError, match="all zeros"):
        checks.check_close(torch.zeros(4), torch.zeros(4), "fp32", "zeros")
    with pytest.raises(MeasureError, match="inf/nan"):
        checks.check_close(torch.tensor([float("nan"), 1.0]), torch.ones(2), "fp32", "nan")


def test_is_oom():
    assert is_oom(RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert is_oom(RuntimeError("[enforce fail] DefaultCPUAllocator: can't allocate"))
    assert not is_oom(ValueError("bad shape"))


def test_timed_outputs_are_verified_per_input_set():
    """verify sees the output of a timed call with the arguments of that call, for every
    input set, and its failure is the benchmark's failure."""
    seen = []

    def verify(args, out):
        x, p = args
        assert out == x * 10 + p  # this call's own inputs
        seen.append(x)
        return 0.0

    params_built = []

    def params(i):
        params_built.append(i)
        return 7

    timing.benchmark(lambda x, p: x * 10 + p, setup=lambda i: i, params=params,
                     warmup_s=0.0, min_runs=6, max_runs=6, flush_l2=False, verify=verify)
    assert sorted(seen) == list(range(timing.INPUT_SETS))
    assert params_built == [0]  # on a CPU the weights are one tensor, shared by the sets

    calls = [0]

    def drifting(x):
        calls[0] += 1
        return x if calls[0] <= 2 else x + 1  # right in warm-up, wrong when timed

    def exact(args, out):
        if out != args[0]:
            raise MeasureError("wrong result")
        return 0.0

    with pytest.raises(MeasureError, match="wrong result"):
        timing.benchmark(drifting, setup=lambda i: i, warmup_s=0.0, min_runs=5,
                         flush_l2=False, verify=exact)


def test_kept_sets_spread():
    assert timing.kept_sets(4) == {0, 1, 2, 3}
    assert timing.kept_sets(100, 8) == {0, 14, 28, 42, 57, 71, 85, 99}
    assert timing.kept_sets(4, 2) == {0, 3}  # the shared first set and a rotated one
    assert timing.kept_sets(4, 1) == {0}


def test_verify_sets_samples_the_sets_checked():
    seen = []

    def verify(args, out):
        seen.append(args[0])
        return 0.0

    timing.benchmark(lambda x: x + 1, setup=lambda i: i, warmup_s=0.0, min_runs=8,
                     max_runs=8, flush_l2=False, verify=verify, verify_sets=2)
    assert sorted(seen) == [0, timing.INPUT_SETS - 1]
    with pytest.raises(InputError, match="verify_sets"):
        timing.benchmark(lambda: 0, flush_l2=False, verify=verify, verify_sets=0)


def test_flush_buffer_is_made_once_per_device():
    timing._flush_buffer.cache_clear()
    f1, f2 = timing.make_flush("cpu"), timing.make_flush("cpu")
    f1()
    f2()
    info = timing._flush_buffer.cache_info()
    assert (info.misses, info.hits) == (1, 1)


def test_large_cpu_tensors_repeat_a_prime_block():
    shape = (1100, 4096)  # 4.5 M elements: past TILE_ABOVE
    assert shape[0] * shape[1] > checks.TILE_ABOVE
    t = checks.random_tensor(shape, torch.float32, seed=3)
    p = checks.TILE_PERIOD
    flat = t.view(-1)
    assert torch.equal(flat[:1000], flat[p:p + 1000])  # the block repeats ...
    assert len({tuple(r[:8].tolist()) for r in t}) == shape[0]  # ... but no two rows match
    assert 0.98 < float(t.std()) < 1.02 and abs(float(t.mean())) < 0.01
    assert not bool((t == 0).any())
    other = checks.random_tensor(shape, torch.float32, seed=4)
    assert not torch.equal(t[0], other[0])  # the seed picks the block
    ints = checks.random_tensor(shape, torch.int8, seed=3)
    assert ints.dtype == torch.int8 and int(ints.min()) >= -64 and int(ints.max()) < 64
    small = checks.random_tensor((64, 64), torch.float32, seed=3)  # drawn element by element
    assert len(set(small.view(-1).tolist())) == 64 * 64


# ---- CUDA decisions, checked on a CPU --------------------------------------------------------

MIB = 2**20
H200_L2 = 60 * MIB


def test_graph_rotates_enough_sets_to_keep_l2_cold():
    # batch-1 decode GEMM, 50 MiB of weight, 20 us a call, inside H200's 60 MiB L2: between
    # two uses of a set the others must touch > 2 x L2: (sets - 1) * 50 >= 120 -> sets = 4
    plan, why = cuda_timing.graph_plan(20e-6, 50 * MIB, H200_L2, 8 * 2**30, rotate=True,
                                       cold=True)
    assert plan == cuda_timing.GraphPlan(sets=4, inner=50) and why == ""
    assert (plan.sets - 1) * 50 * MIB >= 2 * H200_L2
    # a 1 MiB norm at 3 us: 121 sets, but a replay of 334 calls needs no more than that
    plan, _ = cuda_timing.graph_plan(3e-6, MIB, H200_L2, 8 * 2**30, rotate=True, cold=True)
    assert plan is not None and plan.sets == 121 and plan.inner == 334
    # a 300 KiB op at 1 us: 1000 calls a replay, sets capped by the calls: ceil(120/0.29)+1
    plan, _ = cuda_timing.graph_plan(1e-6, 300 * 1024, H200_L2, 8 * 2**30, rotate=True,
                                     cold=True)
    assert plan is not None and plan.inner == 1000 and plan.sets == 411


def test_graph_refused_where_it_would_time_the_cache():
    big = 8 * 2**30
    # a long call needs no graph
    long_call, _ = cuda_timing.graph_plan(1e-3, 50 * MIB, H200_L2, big, rotate=True, cold=True)
    assert long_call is None
    # cannot rotate and fits in L2: a replay would re-read it from L2
    plan, why = cuda_timing.graph_plan(20e-6, 50 * MIB, H200_L2, big, rotate=False, cold=True)
    assert plan is None and "fits in L2" in why
    # cannot rotate but larger than twice L2: one set is cold enough
    plan, _ = cuda_timing.graph_plan(50e-6, 200 * MIB, H200_L2, big, rotate=False, cold=True)
    assert plan == cuda_timing.GraphPlan(1, 20)
    # the sets do not fit in the memory allowed: time flushed single calls instead
    plan, why = cuda_timing.graph_plan(20e-6, 50 * MIB, H200_L2, 100 * MIB, rotate=True,
                                       cold=True)
    assert plan is None and "exceed" in why
    # an embedding gathers 2 KiB a call from a 272 MiB table: the sets it would need hold
    # what they hold, not what a call touches
    plan, why = cuda_timing.graph_plan(3e-6, 2048, H200_L2, big, rotate=True, cold=True,
                                       held_bytes=272 * MIB)
    assert plan is None and "272.0 MiB" in why
    # unknown working set
    assert cuda_timing.graph_plan(20e-6, None, H200_L2, big, rotate=True, cold=True)[0] is None
    # cache-hot on purpose (the plateau sweep): no rotation needed
    hot, _ = cuda_timing.graph_plan(5e-6, MIB, H200_L2, big, rotate=False, cold=False)
    assert hot == cuda_timing.GraphPlan(1, 200)


def test_a_long_call_that_is_launch_bound_gets_a_graph():
    """Wall time per call includes launching every kernel. An add + RMSNorm + int8
    quantization of one 4096-wide token took 447 us a call eagerly on an H200 (a dozen
    kernels), so it was timed without a graph at 130 us; replayed in a graph such a call
    takes tens of microseconds. The replay probe decides, and the plan follows its time."""
    big = 8 * 2**30
    plan, why = cuda_timing.graph_plan(447e-6, 3 * 4096 * 2, H200_L2, big, rotate=True,
                                       cold=True, replay_s=20e-6)
    assert plan is not None and why == ""
    # planned at the replay's 20 us: 50 calls a replay, as a 20 us call gets
    assert plan.inner == cuda_timing.graph_inner_calls(20e-6) == 50
    # a replay not much faster than the eager call: the kernels are long, launch is small
    plan, why = cuda_timing.graph_plan(1e-3, 50 * MIB, H200_L2, big, rotate=True, cold=True,
                                       replay_s=0.9e-3)
    assert plan is None and "900 us in a graph" in why and "launch overhead is small" in why
    # nothing probed (not capturable): as before, no graph for a long call
    assert cuda_timing.graph_plan(447e-6, MIB, H200_L2, big, rotate=True, cold=True)[0] is None


def test_graph_sets_have_their_own_weights():
    built = []

    def params(i):
        built.append(i)
        return f"W{i}"

    eager = [("x0", "W0"), ("x1", "W0")]
    out = cuda_timing.graph_sets(eager, 4, lambda i: f"x{i}", params)
    assert out == [("x0", "W0"), ("x1", "W1"), ("x2", "W2"), ("x3", "W3")]
    assert built == [1, 2, 3]


def test_tensor_bytes_of_a_set():
    x = torch.zeros(4, 8)  # 128 bytes
    p = {"w": torch.zeros(16, dtype=torch.bfloat16), "offset": 3}  # 32 bytes
    assert cuda_timing.tensor_bytes(((x, None), p)) == 128 + 32


def test_device_index(monkeypatch):
    assert cuda_timing.cuda_index("cuda:1", device_count=2) == 1
    assert cuda_timing.cuda_index("cuda", device_count=2, current=1) == 1
    with pytest.raises(InputError, match="has 2 GPU"):
        cuda_timing.cuda_index("cuda:2", device_count=2)
    with pytest.raises(InputError, match="cuda:N"):
        cuda_timing.cuda_index("cuda:x", device_count=2)


def test_select_device_sets_the_current_device(monkeypatch):
    """--device cuda:1 makes GPU 1 current, so events and streams are on it."""
    calls = []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: calls.append(i))
    assert cuda_timing.select_device("cuda:1") == "cuda:1"
    assert calls == [1]
    assert cuda_timing.select_device("cuda") == "cuda:0"
    assert calls == [1, 0]


@pytest.mark.gpu
@cuda
def test_cuda_events_graph_verify_and_telemetry():
    a = torch.randn(1024, 1024, device="cuda")
    st = timing.benchmark(lambda: a @ a, device="cuda", budget_s=0.1)
    assert st.method.startswith("cuda_events") and st.n >= 5 and st.telemetry is not None
    # a 3 MiB op with rotating inputs is graphed over enough sets to exceed twice the L2,
    # and the graph replays' outputs are the ones checked
    seen = []
    n = 1 << 18

    def verify(args, out):
        seen.append(bool(torch.allclose(out, args[0] * args[1])))
        return 0.0

    g = timing.benchmark(lambda x, p: x * p, device="cuda", budget_s=0.1, cuda_graph=None,
                         setup=lambda i: torch.randn(n, device="cuda"),
                         params=lambda i: torch.randn(n, device="cuda"), set_bytes=3 * 4 * n,
                         verify=verify)
    assert g.method.startswith("cuda_graph x") and seen and all(seen)
    sets = int(g.method.split(" over ")[1].split()[0])
    l2 = timing.cache_bytes("cuda")
    assert sets == 1 or (sets - 1) * 3 * 4 * n >= 2 * l2


@pytest.mark.gpu
@cuda
def test_many_short_kernels_are_timed_in_a_graph():
    """A call of 200 elementwise kernels on one 4096-wide row takes far longer to launch
    eagerly than to run: the replay probe sees that and the call is timed in a graph."""
    n = 4096

    def chain(x, p):
        for _ in range(100):
            x = (x * p).tanh()
        return x

    g = timing.benchmark(chain, device="cuda", budget_s=0.1, cuda_graph=None,
                         setup=lambda i: torch.randn(n, device="cuda"),
                         params=lambda i: torch.rand(n, device="cuda"), set_bytes=3 * 4 * n)
    assert g.method.startswith("cuda_graph x"), g.method
    # 200 kernels of a few microseconds each at most, launch gaps gone
    assert g.median_s < 200 * 5e-6, g.median_s


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2,
                    reason="needs two GPUs")
def test_second_gpu_is_the_one_timed():
    dev = cuda_timing.select_device("cuda:1")
    a = torch.randn(2048, 2048, device=dev)
    st = timing.benchmark(lambda: a @ a, device=dev, budget_s=0.05)
    assert st.n >= 5 and torch.cuda.current_device() == 1
