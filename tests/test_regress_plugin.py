"""The pytest plugin's perfscope_compare fixture, run in a pytester session."""

from __future__ import annotations

pytest_plugins = ["pytester"]


def test_fixture_reports_verdicts(pytester) -> None:
    pytester.makepyfile(test_ab="""
        def work(n):
            return sum(range(n))

        def test_slower(perfscope_compare):  # CPU time: robust to an oversubscribed machine
            r = perfscope_compare(baseline=lambda: work(2000), candidate=lambda: work(8000),
                                  min_rounds=10, clock="cpu")  # 4x the work
            assert r.verdict == "regression", r.summary
            assert r.ci_low > 1.05 and r.ratio > 1.5
            assert r.summary.startswith("regression: candidate/baseline")

        def test_faster_on_the_cpu_clock(perfscope_compare):
            r = perfscope_compare(baseline=lambda: work(4000), candidate=lambda: work(2000),
                                  min_rounds=10, clock="cpu")
            assert r.verdict == "improvement", r.summary

        def test_same(perfscope_compare):
            f = lambda: work(2000)
            r = perfscope_compare(baseline=f, candidate=f, min_rounds=10)
            assert r.verdict != "regression", r.summary
    """)
    res = pytester.runpytest("-p", "perfscope.regress.pytest_plugin",
                             "--perfscope-max-time", "1.5")
    res.assert_outcomes(passed=3)
