"""``perfscope regress`` as a library call: check out both sides, run the paired loop, and
build the ``perfscope.regress/1`` document.

    {"schema": "perfscope.regress/1", "verdict": "regression"|"improvement"|"no change"|
     "inconclusive", "reason", "exit_code", "threshold", "confidence",
     "baseline": {"ref", "commit", "kind"}, "candidate": {...}, "suite", "quick",
     "settings": {...}, "rounds", "stopped", "sampling_s", "wall_s", "machine": {...},
     "benchmarks": [{"name", "verdict", "ratio", "ci_low", "ci_high", "reason", "rounds",
                     "inner_calls", "baseline_median_s", "candidate_median_s",
                     "baseline_ci_low_s", ..., "samples": {"baseline_s", "candidate_s"}}],
     "skipped": [{"name", "reason"}]}

``ratio`` is the median over rounds of candidate time / baseline time (above 1: slower).
"""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perfscope.errors import InputError, MeasureError
from perfscope.regress.paired import Comparison, Settings, Side, compare
from perfscope.regress.sides import (
    CommandSide,
    Tree,
    WorkerPool,
    WorkerSide,
    checkout,
    repo_root,
)
from perfscope.regress.stats import EXIT_CODES, overall_verdict

SCHEMA = "perfscope.regress/1"
DEFAULT_SUITE = Path("benchmarks") / "suite" / "suite.py"


@dataclass(frozen=True)
class Request:
    """What to compare. Either refs/directories (``baseline``/``candidate``, run with the
    ``suite``) or two shell commands (``baseline_cmd``/``candidate_cmd``)."""

    baseline: str | None = None
    candidate: str | None = None
    baseline_cmd: str | None = None
    candidate_cmd: str | None = None
    suite: Path | None = None
    names: tuple[str, ...] | None = None
    quick: bool = False
    settings: Settings = field(default_factory=Settings)
    paths: tuple[str, ...] = (".",)  # put on PYTHONPATH, relative to each checkout
    prepare: str | None = None  # shell command run in each checkout first (build step)
    repo: Path = field(default_factory=Path.cwd)


def top(start: Path) -> Path:
    """The working tree's top folder (where the default suite and the default candidate
    are), or ``start`` itself outside a git repository."""
    try:
        return repo_root(start)
    except InputError:
        return start


def resolve_cpus(spec: str, threads: int) -> tuple[int, ...]:
    """``auto``: the last ``threads`` CPUs this process may use (both sides on the same
    ones); ``none``: no pinning; else a comma-separated list of CPU ids."""
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if spec == "none" or not allowed:
        return ()
    if spec == "auto":
        return tuple(allowed[-threads:]) if len(allowed) >= threads else tuple(allowed)
    try:
        cpus = tuple(int(c) for c in spec.split(",") if c.strip())
    except ValueError:
        raise InputError(f"--cpus {spec!r}: use auto, none or CPU ids like 0,1") from None
    bad = [c for c in cpus if c not in allowed]
    if not cpus or bad:
        raise InputError(f"--cpus {spec!r}: CPU(s) {bad or spec} not available here; "
                         f"this process may use {','.join(map(str, allowed))}")
    return cpus


def check_request(r: Request) -> None:
    refs = r.baseline is not None or r.candidate is not None
    cmds = r.baseline_cmd is not None or r.candidate_cmd is not None
    if refs and cmds:
        raise InputError("give either --baseline/--candidate (revisions run with the suite) "
                         "or --baseline-cmd/--candidate-cmd (two commands), not both")
    if cmds and not (r.baseline_cmd and r.candidate_cmd):
        raise InputError("--baseline-cmd and --candidate-cmd go together; give both")
    if not cmds and not r.baseline:
        raise InputError("--baseline: required (a git ref such as origin/main, or a "
                         "directory); or compare two commands with --baseline-cmd/"
                         "--candidate-cmd")
    s = r.settings
    if not 0 < s.threshold < 1:
        raise InputError(f"--threshold {s.threshold}: use a fraction such as 0.05 (5 %)")
    if not 0.5 <= s.confidence < 1:
        raise InputError(f"--confidence {s.confidence}: use a value in [0.5, 1), e.g. 0.95")
    if s.clock not in ("wall", "cpu"):
        raise InputError(f"--clock {s.clock!r}: use wall or cpu")
    if s.threads < 1:
        raise InputError(f"--threads {s.threads}: must be >= 1")
    if s.min_rounds < 5 or s.max_rounds < s.min_rounds:
        raise InputError(f"--min-rounds {s.min_rounds} / --rounds {s.max_rounds}: need "
                         "5 <= min rounds <= rounds")
    if not cmds:
        suite = r.suite or top(r.repo) / DEFAULT_SUITE
        if not suite.is_file():
            raise InputError(f"--suite {suite}: no benchmark suite there; pass --suite "
                             "FILE (a Python file of bench_* setups, see docs/regress.md)")
        names = suite_names(suite)
        missing = [n for n in r.names or () if n not in names]
        if missing:
            raise InputError(f"--bench {','.join(missing)}: not in the suite {suite}; it has "
                             f"{', '.join(names) or 'no bench_* functions'}")


def suite_names(suite: Path) -> list[str]:
    """The benchmark names of a suite file (its ``bench_*`` functions), read without
    running it."""
    import ast

    try:
        tree = ast.parse(suite.read_text(encoding="utf-8"), str(suite))
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"--suite {suite}: not a readable Python file ({e})") from None
    return [n.name[len("bench_"):] for n in tree.body
            if isinstance(n, ast.FunctionDef) and n.name.startswith("bench_")]


def _prepare(tree: Tree, cmd: str | None, label: str) -> None:
    if not cmd:
        return
    r = subprocess.run(cmd, shell=True, cwd=tree.path, capture_output=True, text=True,
                       check=False)
    if r.returncode:
        tail = " | ".join((r.stderr or r.stdout).strip().splitlines()[-3:])
        raise MeasureError(f"--prepare in the {label} checkout ({tree.ref}) exited with "
                           f"status {r.returncode}: {tail}")


@contextlib.contextmanager
def _sides(r: Request, cpus: tuple[int, ...]) -> Iterator[tuple[Side, Side, Tree, Tree]]:
    s = r.settings
    if r.baseline_cmd and r.candidate_cmd:
        a = CommandSide("baseline", r.baseline_cmd, threads=s.threads, cpus=cpus, cwd=r.repo,
                        clock=s.clock)
        b = CommandSide("candidate", r.candidate_cmd, threads=s.threads, cpus=cpus, cwd=r.repo,
                        clock=s.clock)
        yield a, b, a.tree, b.tree
        return
    assert r.baseline is not None
    suite = (r.suite or top(r.repo) / DEFAULT_SUITE).resolve()
    with checkout(r.baseline, r.repo, "--baseline") as ta, \
            checkout(r.candidate or str(top(r.repo)), r.repo, "--candidate") as tb:
        _prepare(ta, r.prepare, "baseline")
        _prepare(tb, r.prepare, "candidate")
        started: list[WorkerSide] = []
        k = max(1, s.workers)
        try:
            # all processes start at once (they import in parallel); each side is a pool
            for label, tree in (("baseline", ta), ("candidate", tb)):
                for _ in range(k):
                    started.append(WorkerSide(label, tree, suite, threads=s.threads,
                                              cpus=cpus, paths=r.paths, quick=r.quick,
                                              clock=s.clock))
            yield WorkerPool(started[:k], skew=0), WorkerPool(started[k:], skew=1), ta, tb
        finally:
            for w in started:
                w.close()


def _machine(cpus: tuple[int, ...]) -> dict[str, Any]:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"node": platform.node(), "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(), "cpus_available": n,
            "cpus_pinned": list(cpus), "load_average_1min": load}


def _reason(rows: Sequence[dict[str, Any]], verdict: str, threshold: float) -> str:
    if not rows:
        return "no benchmark ran on both sides"
    named = [f"{r['name']} (ratio {r['ratio']:.3f}, CI {r['ci_low']:.3f}..{r['ci_high']:.3f})"
             for r in rows if r["verdict"] == verdict]
    if verdict == "no change":
        return f"all {len(rows)} benchmarks inside the +-{threshold:.0%} band"
    return f"{verdict}: " + "; ".join(named)


def document(c: Comparison, r: Request, ta: Tree, tb: Tree, cpus: tuple[int, ...],
             wall_s: float) -> dict[str, Any]:
    s = r.settings
    rows = [b.to_json(s) for b in c.benchmarks]
    verdict = overall_verdict([row["verdict"] for row in rows])
    return {
        "schema": SCHEMA, "verdict": verdict, "reason": _reason(rows, verdict, s.threshold),
        "exit_code": EXIT_CODES[verdict], "threshold": s.threshold,
        "confidence": s.confidence,
        "baseline": {"ref": ta.ref, "commit": ta.commit, "kind": ta.kind},
        "candidate": {"ref": tb.ref, "commit": tb.commit, "kind": tb.kind},
        "suite": None if ta.kind == "cmd" else str(r.suite or DEFAULT_SUITE),
        # a candidate left to its default is the working tree, uncommitted changes included
        "quick": r.quick, "settings": s.to_json(), "rounds": c.rounds, "stopped": c.stopped,
        "sampling_s": c.sampling_s, "wall_s": wall_s, "machine": _machine(cpus),
        "benchmarks": rows,
        "skipped": [{"name": n, "reason": why} for n, why in c.skipped.items()],
    }


def _warn_if_busy(s: Settings, progress: Callable[[str], None]) -> None:
    if s.clock != "wall" or not hasattr(os, "getloadavg"):
        return
    load = os.getloadavg()[0]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    if load > cores:
        progress(f"load average {load:.1f} on {cores} cores: while processes wait for a CPU, "
                 "wall-clock ratios of short samples are distorted (verdicts get wider "
                 "intervals, ratios can read smaller or larger than they are); for CPU-bound "
                 "suites --clock cpu is immune to this")


def run_regress(r: Request, progress: Callable[[str], None] = lambda m: None
                ) -> dict[str, Any]:
    """Compare baseline and candidate; the perfscope.regress/1 document."""
    check_request(r)
    cpus = r.settings.cpus
    t0 = time.perf_counter()
    with _sides(r, cpus) as (a, b, ta, tb):
        progress(f"baseline {ta.ref} ({ta.kind}{', ' + ta.commit[:12] if ta.commit else ''}) "
                 f"vs candidate {tb.ref} ({tb.kind}"
                 f"{', ' + tb.commit[:12] if tb.commit else ''}); threads {r.settings.threads}"
                 f", cpus {','.join(map(str, cpus)) or 'any'}")
        _warn_if_busy(r.settings, progress)
        names = list(r.names) if r.names else None
        if ta.kind == "cmd":
            names = [CommandSide.name]
        c = compare(a, b, names, r.settings, progress)
    return document(c, r, ta, tb, cpus, time.perf_counter() - t0)
