"""Speed of the analytic path: one API call, and a cold CLI process, for an 80-layer model.

Targets (issue "Analytic core"): under 100 us per API call, under 0.3 s per CLI process, and
no torch import on the analytic path. Prints measured / target ratios side by side.

    python benchmarks/bench_analyze.py
    python benchmarks/bench_analyze.py --against /path/to/other/checkout [--rounds 12]

``--against`` times another checkout of perfscope in the same run, in alternating worker
processes, and prints this tree / that tree per case: on a shared, noisy machine only a
side-by-side ratio says whether a change made the analysis faster or slower.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
CASES = [
    ("llama-3.1-70b", dict(phase="decode", batch=32, context_len=4096, tp=4)),
    ("llama-3.1-70b", dict(phase="prefill", batch=1, seq_len=2048)),
    ("deepseek-v3", dict(phase="decode", batch=64, context_len=4096, tp=8)),
    ("gemma-2-9b", dict(phase="decode", batch=8, context_len=8000)),
]
CLI = [sys.executable, "-m", "perfscope", "analyze", "--model", "llama-3.1-70b", "--hw",
       "h100-sxm", "--phase", "decode", "--batch", "32", "--context-len", "4096", "--tp", "4",
       "--format", "json"]


def label(model: str, kw: dict) -> str:
    return f"analyze() {model} {kw['phase']} b{kw['batch']} tp{kw.get('tp', 1)}"


def per_call(model: str, kw: dict, reps: int = 2000) -> list[float]:
    from perfscope.api import Scenario, analyze, load_hw, load_model

    m, hw, sc = load_model(model), load_hw("h200-sxm"), Scenario(**kw)
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


def worker() -> None:
    """Time every case in this process and print the fastest sample per case (JSON,
    seconds): the least disturbed by the other processes of a shared machine."""
    print(json.dumps([min(per_call(m, kw, 1400)) for m, kw in CASES]))


def _worker_run(tree: Path) -> list[float]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run([sys.executable, __file__, "--worker"], env=env, cwd=tree,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def compare(other: Path, rounds: int = 4) -> None:
    """Alternate worker processes of both trees; per case, the fastest sample of each."""
    mine: list[list[float]] = []
    theirs: list[list[float]] = []
    for _ in range(rounds):
        mine.append(_worker_run(HERE))
        theirs.append(_worker_run(other))
    print(f"{'case':44} {'this':>9} {'other':>9} {'ratio':>6}")
    for i, (model, kw) in enumerate(CASES):
        a, b = min(r[i] for r in mine), min(r[i] for r in theirs)
        print(f"{label(model, kw):44} {a * 1e6:7.1f}us {b * 1e6:7.1f}us {a / b:6.2f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--against", type=Path, help="another perfscope checkout to compare with")
    ap.add_argument("--rounds", type=int, default=4,
                    help="worker processes per tree with --against (more: steadier minima)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker()
        return
    if args.against:
        compare(args.against.resolve(), args.rounds)
        return
    print(f"{'case':44} {'median':>10} {'min':>10} {'target':>8} {'ratio':>6}")
    for model, kw in CASES:
        s = per_call(model, kw)
        print(f"{label(model, kw):44} {statistics.median(s) * 1e6:8.1f}us {min(s) * 1e6:8.1f}us "
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
