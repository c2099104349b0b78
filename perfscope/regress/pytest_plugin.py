"""pytest plugin: the ``perfscope_compare`` fixture, a paired A/B timing inside a test.

    def test_fused_norm_not_slower(perfscope_compare):
        result = perfscope_compare(baseline=lambda: unfused(x), candidate=lambda: fused(x),
                                   threshold=0.05)
        assert result.verdict != "regression", result.summary

Registered through the ``pytest11`` entry point (``perfscope.regress.pytest_plugin``), or
with ``-p perfscope.regress.pytest_plugin``. ``--perfscope-max-time SECONDS`` caps each
comparison (default 5). Cheap to load: nothing is imported until the fixture is used.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest


def pytest_addoption(parser: Any) -> None:
    group = parser.getgroup("perfscope")
    group.addoption("--perfscope-max-time", type=float, default=5.0, metavar="SECONDS",
                    help="perfscope_compare: most seconds of sampling per comparison")


@pytest.fixture
def perfscope_compare(request: Any) -> Callable[..., Any]:
    """``perfscope_compare(baseline=fn, candidate=fn, threshold=0.05, ...)`` -> PairedResult
    (``verdict``, ``ratio``, ``ci_low``, ``ci_high``, ``summary``); keyword arguments as
    ``perfscope.regress.inprocess.compare_callables``."""
    from perfscope.regress.inprocess import compare_callables

    cap = request.config.getoption("--perfscope-max-time")

    def run(baseline: Callable[[], Any], candidate: Callable[[], Any], **kw: Any) -> Any:
        kw.setdefault("max_time_s", cap)
        return compare_callables(baseline, candidate, **kw)

    return run
