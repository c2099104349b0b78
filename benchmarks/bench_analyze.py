"""Speed of the analytic path: one API call, and a cold CLI process, for an 80-layer model.

Targets (issue "Analytic core"): under 100 us per API call, under 0.3 s per CLI process, and
no torch import on the analytic path. Prints measured / target ratios side by side.

    python benchmarks/bench_analyze.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

from perfscope.api import Scenario, analyze, load_hw, load_model

CASES = [
    ("llama-3.1-70b", Scenario(phase="decode", batch=32, context_len=4096, tp=4)),
    ("llama-3.1-70b", Scenario(phase="prefill", batch=1, seq_len=2048)),
    ("deepseek-v3", Scenario(phase="decode", batch=64, context_len=4096, tp=8)),
    ("gemma-2-9b", Scenario(phase="decode", batch=8, context_len=8000)),
]
CLI = [sys.executable, "-m", "perfscope", "analyze", "--model", "llama-3.1-70b", "--hw",
       "h100-sxm", "--phase", "decode", "--batch", "32", "--context-len", "4096", "--tp", "4",
       "--format", "json"]


def per_call(model: str, sc: Scenario, reps: int = 2000) -> list[float]:
    m, hw = load_model(model), load_hw("h200-sxm")
    for _ in range(200):
        analyze(m, hw, sc)
    samples = []
    for _ in range(7):
        t = time.perf_counter()
        for _ in range(reps // 7):
            analyze(m, hw, sc)
        samples.append((time.perf_counter() - t) / (reps // 7))
    return samples


def cli_runs(n: int = 7) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(CLI, check=True, capture_output=True)
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    print(f"{'case':44} {'median':>10} {'min':>10} {'target':>8} {'ratio':>6}")
    for model, sc in CASES:
        s = per_call(model, sc)
        label = f"analyze() {model} {sc.phase} b{sc.batch} tp{sc.tp}"
        print(f"{label:44} {statistics.median(s) * 1e6:8.1f}us {min(s) * 1e6:8.1f}us "
              f"{'100us':>8} {statistics.median(s) / 100e-6:6.2f}")
    c = cli_runs()
    print(f"{'perfscope analyze (cold process, 80 layers)':44} {statistics.median(c):9.3f}s "
          f"{min(c):9.3f}s {'0.3s':>8} {statistics.median(c) / 0.3:6.2f}")
    probe = subprocess.run([sys.executable, "-c", "import sys, perfscope.cli.app, "
                            "perfscope.analysis, perfscope.api; print(sorted({m.split('.')[0] "
                            "for m in sys.modules} & {'torch', 'numpy', 'pandas'}))"],
                           capture_output=True, text=True, check=True)
    print(f"heavy modules imported by the analytic path: {probe.stdout.strip()}")


if __name__ == "__main__":
    main()
