"""Our measured GEMM ceiling against the best rate plain torch.matmul reaches, side by side.

    python benchmarks/bench_ceiling_vs_torch.py [--device cpu|cuda] [--dtype fp32] [--quick]

Plain torch: a hot loop of ``a @ b`` per shape (no flush, no rotation, no correctness check,
median of the loop), the best shape's FLOP/s. Ours: ``perfscope bench ceilings`` as the CLI
runs it. The goal is ratio >= 0.8. Then the ceiling is measured a second time: the two must
agree within their reported p80..p20 spreads. A benchmark, not a test: it prints, it does
not assert.
"""

from __future__ import annotations

import argparse
import statistics
import time


def torch_rate(device: str, dtype: str, s: tuple[int, int, int], seconds: float) -> float:
    import torch

    from perfscope.measure.dtypes import matmul_precision, torch_dtype

    m, n, k = s
    a = torch.randn(m, k, device=device).to(torch_dtype(dtype))
    b = torch.randn(k, n, device=device).to(torch_dtype(dtype))
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    with matmul_precision(dtype):
        for _ in range(3):
            a @ b
        sync()
        times = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end or len(times) < 5:
            t = time.perf_counter()
            a @ b
            sync()
            times.append(time.perf_counter() - t)
    return 2.0 * m * n * k / statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()

    import torch

    from perfscope.measure.ceilings import agree, measure_ceilings
    from perfscope.measure.timing import set_cpu_threads

    dev = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dt = args.dtype or ("bf16" if dev.startswith("cuda") else "fp32")
    if dev == "cpu":
        print(f"threads: {set_cpu_threads(args.threads)}")
    sq = (256, 512, 1024, 1536, 2048) if dev == "cpu" else (2048, 4096, 8192, 12288)
    shapes = [(x, x, x) for x in sq]
    shapes += [(1024, 4096, 1024), (2048, 1024, 4096)] if dev == "cpu" else \
        [(8192, 28672, 8192), (16384, 8192, 1024)]
    print(f"{'shape (m x n x k)':>22} {'torch.matmul':>14}")
    best, best_shape = 0.0, shapes[0]
    for s in shapes:
        r = torch_rate(dev, dt, s, 0.5 if args.quick else 1.5)
        print(f"{'x'.join(map(str, s)):>22} {r / 1e9:11.1f} GF/s")
        if r > best:
            best, best_shape = r, s
    runs = []
    for i in range(2):
        res = measure_ceilings(dev, dtypes=[dt], quick=args.quick, sweep=False)
        c = res.gemm().get(dt)
        if c is None:
            print("ceiling not measured:", res.skipped)
            return
        runs.append(c)
        print(f"perfscope ceiling run {i + 1}: {c.value / 1e9:.1f} GF/s at "
              f"{c.shape['m']}x{c.shape['n']}x{c.shape['k']} (p80..p20 "
              f"{c.low / 1e9:.1f}..{c.high / 1e9:.1f}, n={c.stats.n}, cv={c.stats.cv:.3f})")
    print(f"best torch.matmul: {best / 1e9:.1f} GF/s at {'x'.join(map(str, best_shape))}")
    for i, c in enumerate(runs):
        print(f"ratio ceiling run {i + 1} / best torch: {c.value / best:.3f}  (goal >= 0.8)")
    print(f"repeated ceilings agree within their spread: {agree(runs[0], runs[1])}")


if __name__ == "__main__":
    main()
