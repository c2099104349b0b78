"""Speed of the recommender: candidates evaluated per second, and a cold `perfscope recommend`.

Targets (issue "Serving predictions and the recommender"): at least 100,000 candidate
configurations per second on 2 cores, and `perfscope recommend` for Llama-3.1-70B on 8 x H100
under 2 s wall in a fresh process. Prints measured / target side by side, with the CPU time
beside the wall time and the load average: on a shared machine the wall clock measures the
neighbours too, the CPU time only this process.

    python benchmarks/bench_recommend.py
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

# as the CLI does (perfscope.cli.predict.one_blas_thread): numpy's BLAS on one thread, set
# before numpy loads
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from perfscope.recommend.search import run_search  # noqa: E402
from perfscope.recommend.types import RecommendRequest  # noqa: E402
from perfscope.serving.predict import Layout, Workload, predict  # noqa: E402
from perfscope.specs.loading import load_hw  # noqa: E402
from perfscope.specs.model import load_model  # noqa: E402

CLI = [sys.executable, "-m", "perfscope", "recommend", "--model", "llama-3.1-70b", "--hw",
       "h100-sxm", "--gpus", "8", "--isl", "1024", "--osl", "1024", "--tpot", "0.05",
       "--ttft", "2", "--format", "json"]
RATE_TARGET = 100_000  # candidates per second
CLI_TARGET_S = 2.0


def rate() -> tuple[float, float, int]:
    """Candidates per second of the vectorised evaluation (wall and CPU), step models fitted
    beforehand (they are cached per configuration), best of 3."""
    req = RecommendRequest(load_model("llama-3.1-70b"), load_hw("h100-sxm"), gpus=8,
                           isl=1024, osl=1024, ttft_s=2.0, tpot_s=0.05)
    run_search(req)  # fit and cache the step models
    walls, cpus, n = [], [], 0
    for _ in range(3):
        w, c = time.perf_counter(), time.process_time()
        s = run_search(req)  # all fits hit the cache: this is the evaluation
        walls.append(s.eval_s)
        cpus.append(time.process_time() - c)
        n = sum(len(e.served.concurrency) for e in s.evals)
        del w
    return n / min(walls), n / min(cpus), n


def cli() -> tuple[float, float]:
    """Cold process: wall seconds and the child's CPU seconds, median of 3."""
    walls, cpus = [], []
    for _ in range(3):
        before = os.times()
        t = time.perf_counter()
        subprocess.run(CLI, check=True, capture_output=True)
        walls.append(time.perf_counter() - t)
        after = os.times()
        cpus.append((after.children_user - before.children_user)
                    + (after.children_system - before.children_system))
    return statistics.median(walls), statistics.median(cpus)


def predict_ms() -> float:
    m, hw = load_model("llama-3.1-70b"), load_hw("h100-sxm")
    t = time.perf_counter()
    for c in range(1, 21):  # a new concurrency each time (the step model is cached)
        predict(m, hw, Layout(tp=4), Workload(1024, 1024, c), weight_dtype="fp8")
    return (time.perf_counter() - t) / 20 * 1e3


def main() -> int:
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
          "(wall-clock figures include the neighbours' load)")
    w, c, n = rate()
    print(f"{'candidates/s (wall)':28s} {w:12,.0f}   target {RATE_TARGET:,}   "
          f"ratio {w / RATE_TARGET:.2f}  ({n:,} candidates)")
    print(f"{'candidates/s (CPU time)':28s} {c:12,.0f}   target {RATE_TARGET:,}   "
          f"ratio {c / RATE_TARGET:.2f}")
    cw, cc = cli()
    print(f"{'recommend CLI, cold (wall)':28s} {cw:11.2f}s   target {CLI_TARGET_S:.1f}s     "
          f"ratio {cw / CLI_TARGET_S:.2f}")
    print(f"{'recommend CLI, cold (CPU)':28s} {cc:11.2f}s   target {CLI_TARGET_S:.1f}s     "
          f"ratio {cc / CLI_TARGET_S:.2f}")
    print(f"{'predict, warm (ms)':28s} {predict_ms():11.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
