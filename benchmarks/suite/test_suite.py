"""The suite's benchmarks under pytest-benchmark (absolute timings; `perfscope regress` runs
the same setups paired against another revision)."""

from __future__ import annotations

import sys
import unittest
from pathlib import Path

import pytest

from perfscope.regress.worker import load_suite

SUITE = load_suite(str(Path(__file__).with_name("suite.py")))


@pytest.mark.parametrize("name", list(SUITE))
def test_bench(benchmark, suite_results, benchmark_threads: int, name: str) -> None:
    try:
        fn = SUITE[name]()
    except (ImportError, unittest.SkipTest) as e:
        pytest.skip(f"{name}: {e}")
    torch = sys.modules.get("torch")
    if torch is not None:  # the setup may have imported it just now
        torch.set_num_threads(benchmark_threads)
    benchmark.group = name
    benchmark(fn)
    stats = getattr(benchmark, "stats", None)
    if stats is not None:  # None under --benchmark-disable
        suite_results.append((name, list(stats.stats.data)))
