"""Benchmark history: one JSON line per benchmark per run (``perfscope.history/1``).

    {"schema": "perfscope.history/1", "time": ISO-8601 UTC, "source": "regress" |
     "pytest-benchmark", "benchmark": name, "commit": sha|null, "ref": str|null,
     "median_s", "ci_low_s", "ci_high_s", "n",          # the measured (candidate) side
     "ratio", "ci_low", "ci_high", "verdict", "threshold",   # regress only, else null
     "baseline": ref|null, "baseline_commit": sha|null, "machine": str}

Lines are appended to a ``.jsonl`` file (``dashboards/history/`` by convention); the
dashboard reads every ``.jsonl`` in a folder. Timings depend on the machine: keep CI history
as a CI artifact or cache, not in the repository (a small example is committed).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from perfscope.errors import InputError

SCHEMA = "perfscope.history/1"
FIELDS = ("schema", "time", "source", "benchmark", "commit", "ref", "median_s", "ci_low_s",
          "ci_high_s", "n", "ratio", "ci_low", "ci_high", "verdict", "threshold", "baseline",
          "baseline_commit", "machine")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def record(**values: Any) -> dict[str, Any]:
    """A history line with every field present (None where it does not apply)."""
    unknown = set(values) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown history fields {sorted(unknown)}")
    out: dict[str, Any] = dict.fromkeys(FIELDS)
    out |= {"schema": SCHEMA, "time": _now()} | values
    return out


def from_regress(doc: Mapping[str, Any], when: str | None = None) -> list[dict[str, Any]]:
    """History lines of a perfscope.regress/1 document: the ratio with its interval and the
    candidate's median time with its interval, per benchmark."""
    m = doc.get("machine", {})
    machine = f"{m.get('node', '?')} ({m.get('processor', '?')}, {m.get('cpus_available')} cpus)"
    out = []
    for b in doc["benchmarks"]:
        out.append(record(
            time=when or _now(), source="regress", benchmark=b["name"],
            commit=doc["candidate"]["commit"], ref=doc["candidate"]["ref"],
            median_s=b["candidate_median_s"], ci_low_s=b["candidate_ci_low_s"],
            ci_high_s=b["candidate_ci_high_s"], n=b["rounds"], ratio=b["ratio"],
            ci_low=b["ci_low"], ci_high=b["ci_high"], verdict=b["verdict"],
            threshold=doc["threshold"], baseline=doc["baseline"]["ref"],
            baseline_commit=doc["baseline"]["commit"], machine=machine))
    return out


def from_timings(name: str, samples_s: Iterable[float], *, source: str, commit: str | None,
                 ref: str | None = None, machine: str = "", confidence: float = 0.95,
                 when: str | None = None) -> dict[str, Any]:
    """A history line of absolute timings (seconds per call): median and bootstrap interval."""
    from perfscope.regress.stats import bootstrap_median_ci, median

    xs = [float(x) for x in samples_s]
    if not xs:
        raise ValueError(f"{name}: no timing samples")
    lo, hi = bootstrap_median_ci(xs, confidence=confidence)
    return record(time=when or _now(), source=source, benchmark=name, commit=commit, ref=ref,
                  median_s=median(xs), ci_low_s=lo, ci_high_s=hi, n=len(xs), machine=machine)


def append(path: Path, records: Iterable[Mapping[str, Any]], what: str = "--history") -> int:
    """Append lines to a .jsonl history (rewritten atomically); how many were added."""
    from perfscope.io import write_atomic

    new = [json.dumps(dict(r), allow_nan=False) for r in records]
    old = ""
    if path.is_file():
        old = path.read_text(encoding="utf-8")
        if old and not old.endswith("\n"):
            old += "\n"
    write_atomic(path, old + "".join(line + "\n" for line in new), what=what)
    return len(new)


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(path.glob("*.jsonl"))
    if path.is_file():
        return [path]
    raise InputError(f"--history {path}: no such file or folder; run `perfscope regress ... "
                     "--history FILE` or `pytest benchmarks/suite --perfscope-history FILE` first")


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def load(path: Path) -> list[dict[str, Any]]:
    """Every history line under ``path`` (a .jsonl file, or a folder of them), oldest first.
    A line that is not a perfscope.history/1 record is an error naming file and line."""
    out = []
    for f in _files(path):
        for i, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{f}:{i}: not JSON ({e.msg}); fix or delete the line") from None
            if not isinstance(rec, dict) or rec.get("schema") != SCHEMA:
                raise InputError(f"{f}:{i}: not a {SCHEMA} record; fix or delete the line")
            if not isinstance(rec.get("benchmark"), str) or not _finite(rec.get("median_s")):
                raise InputError(f"{f}:{i}: a record needs a benchmark name and a median_s; "
                                 "fix or delete the line")
            out.append(dict.fromkeys(FIELDS) | rec)
    out.sort(key=lambda r: str(r.get("time") or ""))
    return out
