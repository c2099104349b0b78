"""Collective benchmarks through torch.distributed, reported the nccl-tests way.

all-reduce, all-gather and reduce-scatter over message sizes from bytes to hundreds of MB:
gloo between CPU processes, NCCL between GPUs. Bandwidths follow nccl-tests
(https://github.com/NVIDIA/nccl-tests/blob/master/doc/PERFORMANCE.md):

    algbw = size / time
    busbw = algbw * 2(n-1)/n   all-reduce      (each rank sends and receives 2(n-1)/n of size)
    busbw = algbw * (n-1)/n    all-gather, reduce-scatter

``size`` is the whole buffer: the all-reduce buffer, the all-gather *output* and the
reduce-scatter *input* (each rank holds size / n of the other side). busbw is the figure to
draw against a link's bandwidth: it does not depend on n for a ring at the link's speed.

Timing: each iteration starts after a barrier and is timed with perf_counter (CPU) or CUDA
events (GPU); the iteration's time is the max over ranks (the slowest rank is the collective's
time, as in nccl-tests), and the result is the median with p20/p80 over iterations. Every op
is first checked on rank-dependent random data against the expected result.

Two ways to run: ``run_comm_benchmarks`` spawns ``world_size`` local processes (loopback,
MASTER_ADDR=127.0.0.1, a free port) unless it is already under torchrun (RANK and WORLD_SIZE
set), where it uses that group; on a multi-GPU or multi-node system the same module runs as
``torchrun --nproc-per-node 8 -m perfscope.measure.comm``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from perfscope.errors import InputError, MeasureError
from perfscope.measure.timing import summarize

OPS = ("all_reduce", "all_gather", "reduce_scatter")
BACKENDS = ("gloo", "nccl", "mpi", "ucc")
QUICK_SIZES = [8, 4096, 1 << 18, 1 << 22]  # 8 B .. 4 MiB
FULL_SIZES = [1 << k for k in range(3, 29)]  # 8 B .. 256 MiB, x2 steps as nccl-tests -f 2
MASTER_ADDR = "127.0.0.1"
INIT_TIMEOUT_S = 60.0


# ---- bandwidth convention -----------------------------------------------------------------

def bus_factor(op: str, ranks: int) -> float:
    """nccl-tests' busbw / algbw: 2(n-1)/n for all-reduce, (n-1)/n for gather/scatter."""
    if ranks < 1:
        raise InputError(f"ranks {ranks}: must be >= 1")
    if op == "all_reduce":
        return 2.0 * (ranks - 1) / ranks
    if op in ("all_gather", "reduce_scatter"):
        return (ranks - 1) / ranks
    raise InputError(f"collective {op!r}: use one of {', '.join(OPS)}")


def bandwidths(op: str, size_bytes: float, time_s: float, ranks: int) -> tuple[float, float]:
    """(algbw, busbw) in bytes/s for a collective over ``size_bytes`` taking ``time_s``."""
    if time_s <= 0:
        raise MeasureError(f"{op}: non-positive time {time_s}")
    algbw = size_bytes / time_s
    return algbw, algbw * bus_factor(op, ranks)


# ---- inside a process group ---------------------------------------------------------------

def rank_tensor(rank: int, numel: int, seed: int = 0) -> Any:
    """Rank ``rank``'s float32 input: normal random, reproducible by any process."""
    import torch

    gen = torch.Generator().manual_seed(seed * 100_003 + rank)
    return torch.randn(numel, generator=gen)


def _device() -> Any:
    import torch
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _collective(op: str, out: Any, inp: Any) -> None:
    import torch.distributed as dist

    if op == "all_reduce":
        dist.all_reduce(out)
    elif op == "all_gather":  # all_gather_single is the newer name of all_gather_into_tensor
        (getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor)(out, inp)
    else:
        (getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor)(out, inp)


def _buffers(op: str, numel: int, ranks: int, device: Any) -> tuple[Any, Any]:
    """(out, inp) for a collective over ``numel`` elements in all (nccl-tests' size)."""
    import torch

    if op == "all_reduce":
        buf = torch.randn(numel, device=device)
        return buf, buf
    if op == "all_gather":
        return (torch.empty(numel, device=device),
                torch.randn(numel // ranks, device=device))
    return torch.empty(numel // ranks, device=device), torch.randn(numel, device=device)


def check_collectives(ops: Sequence[str] = OPS, numel: int = 4096, seed: int = 0
                      ) -> dict[str, float]:
    """Run each op on ``rank_tensor`` data and compare with the result computed locally.

    Returns the max absolute error per op; raises MeasureError when one is wrong.
    """
    import torch
    import torch.distributed as dist

    n, rank, dev = dist.get_world_size(), dist.get_rank(), _device()
    numel = max(n, numel // n * n)
    errs = {}
    for op in ops:
        if op == "all_gather":
            inp = rank_tensor(rank, numel // n, seed).to(dev)
            out = torch.empty(numel, device=dev)
            expect = torch.cat([rank_tensor(r, numel // n, seed) for r in range(n)])
        else:
            full = sum(rank_tensor(r, numel, seed).double() for r in range(n))
            inp = rank_tensor(rank, numel, seed).to(dev)
            if op == "all_reduce":
                out, expect = inp, full
            else:
                out = torch.empty(numel // n, device=dev)
                expect = full.chunk(n)[rank]
        _collective(op, out, inp)
        err = float((out.cpu().double() - expect).abs().max())
        # float32 sums of n normal values: a few ulps of the largest partial sum
        if err > 1e-5 * n * max(1.0, float(expect.abs().max())):
            raise MeasureError(f"{op} over {n} ranks gave a wrong result (max error {err:.3g})")
        errs[op] = err
    return errs


def benchmark_collectives(sizes: Sequence[int] | None = None, ops: Sequence[str] = OPS,
                          quick: bool = True, progress_path: str | None = None
                          ) -> list[dict[str, Any]]:
    """Time ``ops`` at each size (bytes) in the current process group; every rank returns
    the same rows: op, size_bytes, ranks, backend, device, dtype, median_s, p20_s, p80_s, min_s,
    n, cv, method, algbw_bytes_s, busbw_bytes_s, check_max_abs_err. Rank 0 appends a line
    "done total" to ``progress_path`` after each (op, size)."""
    import torch
    import torch.distributed as dist

    for op in ops:
        bus_factor(op, 1)  # validates the name
    sizes = list(sizes or (QUICK_SIZES if quick else FULL_SIZES))
    n, backend, dev = dist.get_world_size(), str(dist.get_backend()), _device()
    cuda = dev.type == "cuda"
    budget_s, min_iters, max_iters = (0.05, 5, 50) if quick else (0.5, 10, 200)
    errs = check_collectives(ops)
    rows: list[dict[str, Any]] = []
    total = len(ops) * len(sizes)
    for op in ops:
        for size in sizes:
            if progress_path and dist.get_rank() == 0:
                with open(progress_path, "a") as f:
                    f.write(f"{len(rows)} {total} {op} {size}\n")
            numel = max(n, math.ceil(size / 4 / n) * n)  # fp32, divisible by the ranks
            out, inp = _buffers(op, numel, n, dev)
            for _ in range(2):  # warm-up: connection set-up, first-touch
                _collective(op, out, inp)
            dist.barrier()
            t0 = time.perf_counter()
            _collective(op, out, inp)
            if cuda:
                torch.cuda.synchronize()
            est = torch.tensor([time.perf_counter() - t0], dtype=torch.float64, device=dev)
            dist.all_reduce(est, op=dist.ReduceOp.MAX)  # every rank must agree on the count
            iters = max(min_iters, min(max_iters, int(budget_s / max(float(est), 1e-9))))
            samples = _time_iterations(op, out, inp, iters, cuda)
            t = torch.tensor(samples, dtype=torch.float64, device=dev)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)  # per iteration, the slowest rank
            stats = summarize(t.cpu().tolist(), method="cuda_events" if cuda else
                              "perf_counter")
            size_bytes = numel * 4
            algbw, busbw = bandwidths(op, size_bytes, stats.median_s, n)
            rows.append({"op": op, "size_bytes": size_bytes, "ranks": n, "backend": backend,
                         "device": dev.type, "dtype": "fp32", **stats.to_dict(),
                         "algbw_bytes_s": algbw, "busbw_bytes_s": busbw,
                         "check_max_abs_err": errs[op]})
            del out, inp
    if progress_path and dist.get_rank() == 0:
        with open(progress_path, "a") as f:
            f.write(f"{total} {total} done 0\n")
    return rows


def _time_iterations(op: str, out: Any, inp: Any, iters: int, cuda: bool) -> list[float]:
    import torch
    import torch.distributed as dist

    if cuda:
        ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
              for _ in range(iters)]
        for start, end in ev:
            dist.barrier()
            start.record()
            _collective(op, out, inp)
            end.record()
        torch.cuda.synchronize()
        return [s.elapsed_time(e) * 1e-3 for s, e in ev]
    samples = []
    for _ in range(iters):
        dist.barrier()
        t0 = time.perf_counter()
        _collective(op, out, inp)
        samples.append(time.perf_counter() - t0)
    return samples


# ---- launching ----------------------------------------------------------------------------

def under_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def free_port(host: str = MASTER_ADDR) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _check_port(port: int, host: str = MASTER_ADDR) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as e:
            raise MeasureError(f"port {port} on {host} is in use ({e.strerror}); pass another "
                               "port, or none to pick a free one") from None


def choose_backend(backend: str | None, world_size: int) -> tuple[str, str]:
    """(backend, why): nccl when there is a GPU per rank, else gloo between CPU processes,
    and a line saying so when CUDA is there but the GPUs are too few (never silent)."""
    import torch

    if backend is not None:
        return backend, ""
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus >= world_size:
        return "nccl", ""
    if gpus:
        return "gloo", (f"{gpus} GPU(s) for {world_size} ranks: NCCL needs one GPU per rank, "
                        f"so gloo ran between {world_size} CPU processes (these are CPU "
                        "collectives, not GPU ones); use --world-size "
                        f"{gpus} or a machine with more GPUs for NCCL")
    return "gloo", ""


def resolve_backend(backend: str | None, world_size: int) -> str:
    """The backend to use (``choose_backend``), checked to work here."""
    import torch
    import torch.distributed as dist

    from perfscope.measure.skips import Skip

    if not dist.is_available():
        raise Skip("torch.distributed is not available in this torch build")
    backend = choose_backend(backend, world_size)[0]
    if backend not in BACKENDS:
        raise InputError(f"backend {backend!r}: use one of {', '.join(BACKENDS)}")
    if not dist.is_backend_available(backend):
        raise MeasureError(f"backend {backend} is not available in this torch build; "
                           "use gloo (CPU) or a CUDA build for nccl")
    if backend == "nccl" and torch.cuda.device_count() < world_size:
        raise MeasureError(f"nccl needs one GPU per rank: {world_size} ranks, "
                           f"{torch.cuda.device_count()} GPU(s); use backend gloo")
    return backend


def _init_group(backend: str, rank: int, world_size: int) -> None:
    import torch
    import torch.distributed as dist

    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))
    dist.init_process_group(backend, rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=INIT_TIMEOUT_S))


def all_reduce_values(numel: int = 4096, seed: int = 0) -> list[float]:
    """All-reduce (sum) each rank's ``rank_tensor`` and return the result, for the tests."""
    import torch.distributed as dist

    t = rank_tensor(dist.get_rank(), numel, seed).to(_device())
    dist.all_reduce(t)
    return [float(v) for v in t.cpu().tolist()]


TASKS: dict[str, Any] = {"bench": benchmark_collectives, "check": check_collectives,
                         "all_reduce": all_reduce_values}


def _worker(rank: int, world_size: int, backend: str, port: int, result_path: str,
            task: str, kwargs: dict[str, Any]) -> None:
    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR=MASTER_ADDR, MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    _init_group(backend, rank, world_size)
    try:
        result = TASKS[task](**kwargs)
        if rank == 0:
            from perfscope.io import write_atomic

            write_atomic(result_path, json.dumps(result), what="comm result")
    finally:
        dist.destroy_process_group()


def spawn(task: str, world_size: int, backend: str | None, port: int | None,
          progress: Callable[[str, int, int], None] | None = None, **kwargs: Any) -> Any:
    """Run a task of ``TASKS`` ("bench", "check", "all_reduce") in ``world_size`` fresh
    local processes; rank 0's result comes back. A worker's error comes back as one
    MeasureError line. ``progress(label, done, total)`` follows a "bench" task."""
    import torch.multiprocessing as mp

    if world_size < 2:
        raise InputError(f"world_size {world_size}: a collective needs at least 2 ranks")
    backend = resolve_backend(backend, world_size)
    if port is None:
        port = free_port()
    else:
        _check_port(port)
    with tempfile.TemporaryDirectory(prefix="perfscope-comm-") as d:
        path = os.path.join(d, "result.json")
        if task == "bench" and progress is not None:
            kwargs = {**kwargs, "progress_path": os.path.join(d, "progress")}
        try:
            ctx = mp.start_processes(_worker, args=(world_size, backend, port, path, task,
                                                    kwargs),
                                     nprocs=world_size, join=False, start_method="spawn")
            while not ctx.join(timeout=0.2):
                if progress is not None and "progress_path" in kwargs:
                    _report(kwargs["progress_path"], progress)
            if progress is not None and "progress_path" in kwargs:
                _report(kwargs["progress_path"], progress)  # the last line: all done
        except Exception as e:  # ProcessRaisedException carries the worker's traceback
            lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
            raise MeasureError(f"{task} over {world_size} {backend} ranks (port {port}) "
                               f"failed: {lines[-1] if lines else type(e).__name__}") from None
        with open(path) as f:
            return json.load(f)


def _report(path: str, progress: Callable[[str, int, int], None]) -> None:
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return
    if lines:
        done, total, op, size = lines[-1].split()
        progress(f"{op} {int(size)} B" if op != "done" else "done", int(done), int(total))


def run_comm_benchmarks(quick: bool = True, world_size: int = 2, backend: str | None = None,
                        sizes: list[int] | None = None, ops: Sequence[str] = OPS,
                        port: int | None = None,
                        progress: Callable[[str, int, int], None] | None = None
                        ) -> list[dict[str, Any]]:
    """Benchmark collectives; returns one dict per (op, size) (see ``benchmark_collectives``).

    Under torchrun (RANK, WORLD_SIZE set) it runs in that group, initialising it from the
    environment if needed, and ``world_size``/``port`` are ignored; otherwise it spawns
    ``world_size`` processes on 127.0.0.1 and ``port`` (None: a free one).
    """
    import torch.distributed as dist

    if under_torchrun():
        own = not dist.is_initialized()
        if own:
            ws = int(os.environ["WORLD_SIZE"])
            _init_group(resolve_backend(backend, ws), int(os.environ["RANK"]), ws)
        try:
            return benchmark_collectives(sizes, ops, quick)
        finally:
            if own:
                dist.destroy_process_group()
    return list(spawn("bench", world_size, backend, port, progress=progress, sizes=sizes,
                      ops=list(ops), quick=quick))


# ---- command line: python -m perfscope.measure.comm, or under torchrun --------------------

def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m perfscope.measure.comm", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", action="store_true", help="8 B .. 256 MiB instead of the quick set")
    p.add_argument("--ops", default=",".join(OPS))
    p.add_argument("--sizes", default="", help="comma-separated bytes")
    p.add_argument("--backend", default=None, choices=BACKENDS)
    p.add_argument("--world-size", type=int, default=2, help="processes to spawn (no torchrun)")
    p.add_argument("--format", choices=("table", "json"), default="table")
    a = p.parse_args(argv)
    sizes = [int(s) for s in a.sizes.split(",") if s] or None
    rows = run_comm_benchmarks(quick=not a.full, world_size=a.world_size, backend=a.backend,
                               sizes=sizes, ops=[o for o in a.ops.split(",") if o])
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    if a.format == "json":
        print(json.dumps(rows, indent=1))
        return 0
    from rich.console import Console

    from perfscope.report.bench_tables import comm_table

    Console(highlight=False).print(comm_table({"backend": rows[0]["backend"] if rows else "?",
                                               "device": rows[0]["device"] if rows else "?",
                                               "ranks": rows[0]["ranks"] if rows else "?",
                                               "results": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
