"""Collectives: the nccl-tests bandwidth convention by hand, and real gloo runs on loopback."""

from __future__ import annotations

import socket

import pytest

torch = pytest.importorskip("torch")

from perfscope.errors import InputError, MeasureError  # noqa: E402
from perfscope.measure import comm  # noqa: E402


def test_bus_factor_by_hand():
    # nccl-tests PERFORMANCE.md: all-reduce 2(n-1)/n, all-gather and reduce-scatter (n-1)/n
    assert comm.bus_factor("all_reduce", 8) == 1.75
    assert comm.bus_factor("all_reduce", 2) == 1.0
    assert comm.bus_factor("all_gather", 4) == 0.75
    assert comm.bus_factor("reduce_scatter", 2) == 0.5
    assert comm.bus_factor("all_reduce", 1) == 0.0
    # 1 GB in 10 ms over 8 ranks: algbw 100 GB/s, busbw 175 GB/s
    assert comm.bandwidths("all_reduce", 1e9, 0.01, 8) == pytest.approx((1e11, 1.75e11))
    assert comm.bandwidths("all_gather", 2e6, 1e-3, 4) == pytest.approx((2e9, 1.5e9))
    with pytest.raises(InputError, match="all_reduce"):
        comm.bus_factor("all_to_all", 2)
    with pytest.raises(MeasureError):
        comm.bandwidths("all_reduce", 1.0, 0.0, 2)


def test_two_gloo_processes_all_reduce_the_right_sum():
    got = torch.tensor(comm.spawn("all_reduce", 2, "gloo", None, numel=1000, seed=3))
    expect = comm.rank_tensor(0, 1000, 3) + comm.rank_tensor(1, 1000, 3)
    assert float(expect.abs().min()) > 0  # random, not zeros
    torch.testing.assert_close(got, expect, rtol=1e-6, atol=1e-6)


def test_two_gloo_processes_benchmark():
    steps = []
    rows = comm.run_comm_benchmarks(quick=True, world_size=2, backend="gloo",
                                    sizes=[8, 1 << 20],
                                    progress=lambda label, i, n: steps.append((i, n, label)))
    assert [(r["op"], r["size_bytes"]) for r in rows] == [
        (op, s) for op in comm.OPS for s in (8, 1 << 20)]
    # determinate progress from rank 0 (polled: not every step need be seen)
    assert steps and all(n == 6 and 0 <= i <= 6 for i, n, _ in steps)
    assert steps[-1] == (6, 6, "done")
    for r in rows:
        assert r["ranks"] == 2 and r["backend"] == "gloo" and r["n"] >= 5
        assert r["device"] == "cpu"
        assert 0 < r["p20_s"] <= r["median_s"] <= r["p80_s"]
        assert r["algbw_bytes_s"] == pytest.approx(r["size_bytes"] / r["median_s"])
        assert r["busbw_bytes_s"] == pytest.approx(
            r["algbw_bytes_s"] * comm.bus_factor(r["op"], 2))
        assert r["busbw_bytes_s"] > 0
        assert r["check_max_abs_err"] < 1e-5


def test_single_rank_group_as_under_torchrun(monkeypatch):
    import torch.distributed as dist

    port = comm.free_port()
    for k, v in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0",
                 "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(k, v)
    rows = comm.run_comm_benchmarks(backend="gloo", sizes=[64], ops=["all_reduce"])
    assert not dist.is_initialized()  # the group it made is gone again
    assert rows[0]["ranks"] == 1 and rows[0]["busbw_bytes_s"] == 0.0


def test_port_in_use_is_a_clean_error():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(MeasureError, match=f"port {port} .* in use"):
            comm.run_comm_benchmarks(world_size=2, backend="gloo", port=port)


def test_unavailable_backend_is_a_clean_error():
    with pytest.raises(InputError, match="backend"):
        comm.run_comm_benchmarks(backend="carrier-pigeon")
    with pytest.raises(InputError, match="2 ranks"):
        comm.run_comm_benchmarks(world_size=1, backend="gloo")
    if torch.cuda.device_count() < 2:
        with pytest.raises(MeasureError, match="nccl"):
            comm.run_comm_benchmarks(world_size=2, backend="nccl")


def test_single_gpu_nccl_request_says_what_ran(monkeypatch):
    """With CUDA but fewer GPUs than ranks, the default is gloo on CPU processes, and a line
    says so; with a GPU per rank it is NCCL; without CUDA, gloo silently (nothing else)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    backend, note = comm.choose_backend(None, 2)
    assert backend == "gloo" and "1 GPU(s) for 2 ranks" in note and "CPU processes" in note
    assert comm.choose_backend("nccl", 2) == ("nccl", "")  # asked for: checked later
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    assert comm.choose_backend(None, 8) == ("nccl", "")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert comm.choose_backend(None, 2) == ("gloo", "")


def test_module_command_line_prints_nccl_tests_columns(monkeypatch, capsys):
    row = {"op": "all_reduce", "size_bytes": 1 << 20, "ranks": 2, "backend": "gloo",
           "device": "cpu", "median_s": 1e-3, "algbw_bytes_s": 1.048576e9,
           "busbw_bytes_s": 1.048576e9}
    monkeypatch.setattr(comm, "run_comm_benchmarks", lambda **kw: [row])
    monkeypatch.setenv("COLUMNS", "80")
    assert comm.main(["--world-size", "2"]) == 0
    out = capsys.readouterr().out
    assert "collectives: gloo between 2 CPU processes" in out
    line = next(x for x in out.splitlines() if x.split()[:1] == ["all_reduce"])
    assert line.split() == ["all_reduce", "1", "MiB", "2", "1", "ms", "1.05", "GB/s", "1.05",
                            "GB/s"]
