"""Regression gating: the exact-count gate, paired timing comparisons, benchmark history.

- ``counts``: analytic results of fixed models and scenarios against a snapshot.
- ``stats`` and ``paired``: baseline and candidate timed interleaved, verdict on the median
  paired ratio with a bootstrap interval.
- ``sides`` and ``worker``: where each side's code comes from (git refs, directories,
  commands) and the warm process that runs the suite.
- ``history`` and ``dashboard``: results kept as JSON lines, drawn as a static HTML page.

Nothing is imported here: ``perfscope.regress.pytest_plugin`` loads in every pytest run.
"""
