"""Fused residual-add + RMSNorm against the unfused pair, measured side by side in one run.

    .venv/bin/python benchmarks/bench_fused_norm.py [--device cuda] [--full] [--rounds 3]

For every implementation that runs here (torch everywhere, c on a CPU with a C compiler,
triton on CUDA) it prints unfused and fused time, analytic bytes, achieved bandwidth next
to that of a torch copy of the same size (a practical bandwidth reference, not a peak: a
well-vectorized kernel can beat it), and the ratios.
Each round times unfused and fused back to back; the last line is the median over rounds.
A benchmark, not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import statistics
import sys

from perfscope.measure.kernels import bench


def copy_bandwidth(device: str, nbytes: int, quick: bool) -> float:
    """Bytes/s of dst.copy_(src) over ``nbytes`` (read + write counted)."""
    import torch

    from perfscope.measure.timing import benchmark

    n = nbytes // 4
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)
    stats = benchmark(lambda: dst.copy_(src), device=device,
                      budget_s=0.3 if quick else 2.0)
    return 2 * nbytes / stats.median_s


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--full", action="store_true", help="larger tensors, longer timing")
    p.add_argument("--dtype", default=None, help="fp32 (CPU default), bf16 (CUDA default), fp16")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--tokens", type=int, default=None)
    p.add_argument("--hidden", type=int, default=None)
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    a = p.parse_args(argv)
    quick = not a.full
    shape = bench.NORM_SHAPES[("cuda" if a.device.startswith("cuda") else "cpu", quick)]
    shape = bench.NormShape(a.tokens or shape.tokens, a.hidden or shape.hidden)
    threads = None
    if a.device == "cpu":
        from perfscope.measure.timing import set_cpu_threads

        threads = set_cpu_threads(a.threads)
    from perfscope.measure.kernels.add_rmsnorm import impl_status

    for name, why in impl_status(a.device, a.dtype or
                                 ("fp32" if a.device == "cpu" else "bf16")).items():
        if why:
            print(f"skipped impl {name}: {why}", file=sys.stderr)

    print(f"add + RMSNorm, {shape.tokens} x {shape.hidden}, device {a.device}"
          + (f", {threads} threads" if threads else ""))
    ceiling = copy_bandwidth(a.device, shape.tokens * shape.hidden * 4, quick)
    print(f"torch copy bandwidth (reference): {ceiling / 1e9:.1f} GB/s")
    print(f"{'round':>5} {'impl':<7}{'unfused_ms':>11}{'fused_ms':>10}{'unfused_MB':>11}"
          f"{'fused_MB':>10}{'unf_GB/s':>9}{'fus_GB/s':>9}{'fus/copy':>10}"
          f"{'byte_ratio':>11}{'speedup':>9}")
    speedups: dict[str, list[float]] = {}
    byte_ratio: dict[str, float] = {}
    eager: dict[str, list[float]] = {}  # speedups of fused vs the op-by-op eager baseline
    eager_bytes: dict[str, float] = {}
    for rnd in range(a.rounds):
        pts = bench.bench_add_rmsnorm(a.device, quick, dtype=a.dtype, shape=shape)
        for r in bench.add_rmsnorm_ratios(pts):
            speedups.setdefault(r["impl"], []).append(r["speedup"])
            if "speedup_vs_eager" in r:
                eager.setdefault(r["impl"], []).append(r["speedup_vs_eager"])
                eager_bytes[r["impl"]] = r["byte_ratio_vs_eager"]
            byte_ratio[r["impl"]] = r["byte_ratio"]
            print(f"{rnd:>5} {r['impl']:<7}{r['unfused_time_s'] * 1e3:>11.2f}"
                  f"{r['fused_time_s'] * 1e3:>10.2f}{r['unfused_bytes'] / 1e6:>11.1f}"
                  f"{r['fused_bytes'] / 1e6:>10.1f}{r['unfused_bytes_per_s'] / 1e9:>9.1f}"
                  f"{r['fused_bytes_per_s'] / 1e9:>9.1f}"
                  f"{100 * r['fused_bytes_per_s'] / ceiling:>9.0f}%"
                  f"{r['byte_ratio']:>11.3f}{r['speedup']:>9.2f}")
    for impl, s in speedups.items():
        print(f"median over {len(s)} rounds, {impl}: fused moves {byte_ratio[impl]:.3f}x the "
              f"bytes of unfused and runs {statistics.median(s):.2f}x faster "
              f"(ideal at equal bandwidth: {1 / byte_ratio[impl]:.2f}x)")
    for impl, s in eager.items():
        print(f"against the op-by-op eager baseline (torch ops, intermediates in memory), "
              f"{impl}: fused moves {eager_bytes[impl]:.3f}x the bytes and runs "
              f"{statistics.median(s):.2f}x faster")
    return 0


if __name__ == "__main__":
    sys.exit(main())
