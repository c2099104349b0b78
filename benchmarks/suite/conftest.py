"""pytest-benchmark over the suite: `pytest benchmarks/suite [--perfscope-history FILE]`.

With ``--perfscope-history FILE`` each benchmark's per-round timings are appended to FILE as
perfscope.history/1 lines (median and bootstrap interval), for `perfscope dashboard`.
Thread pools are pinned to ``--perfscope-threads`` (default 1) as `perfscope regress` pins
them: on a shared 2-core machine an unpinned 256^3 GEMM measured 56 ms instead of 0.4 ms.
"""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path
from typing import Any

import pytest

RESULTS: list[tuple[str, list[float]]] = []


def pytest_addoption(parser: Any) -> None:
    parser.addoption("--perfscope-history", default=None, metavar="FILE",
                     help="append the timings to this .jsonl history (perfscope.history/1)")
    parser.addoption("--perfscope-threads", type=int, default=1, metavar="N",
                     help="OpenMP/MKL/torch threads of the benchmarks (default 1)")


def pytest_configure(config: Any) -> None:
    import os

    from perfscope.regress.sides import THREAD_VARS

    n = str(config.getoption("--perfscope-threads"))
    for var in THREAD_VARS:  # before torch starts its pools
        os.environ[var] = n


@pytest.fixture
def benchmark_threads(request: Any) -> int:
    return int(request.config.getoption("--perfscope-threads"))


@pytest.fixture
def suite_results() -> list[tuple[str, list[float]]]:
    return RESULTS


def _commit() -> str | None:
    r = subprocess.run(["git", "-C", str(Path(__file__).parent), "rev-parse", "HEAD"],
                       capture_output=True, text=True, check=False)
    return r.stdout.strip() or None


def pytest_sessionfinish(session: Any) -> None:
    path = session.config.getoption("--perfscope-history")
    if not path or not RESULTS:
        return
    from perfscope.regress.history import append, from_timings

    commit = _commit()
    machine = f"{platform.node()} ({platform.processor() or platform.machine()})"
    recs = [from_timings(name, data, source="pytest-benchmark", commit=commit, ref="HEAD",
                         machine=machine) for name, data in RESULTS if len(data) >= 2]
    n = append(Path(path), recs, what="--perfscope-history")
    print(f"\nperfscope: appended {n} records to {path}")
