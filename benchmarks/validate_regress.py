"""Validate `perfscope regress` on this machine: identical code compared with itself must not
be called a regression, and a planted 10 % slowdown must be.

    python benchmarks/validate_regress.py [--runs 10] [--full] [--skip-identical]

1. ``--runs`` times: ``perfscope regress --baseline HEAD --candidate HEAD --quick`` (two
   worktrees of the same commit, a different seed each run). Prints each run's verdict and
   every benchmark's ratio and interval.
2. A worktree of HEAD with a planted slowdown: ``perfscope.analysis.analyze`` busy-waits 10 %
   of its own duration after each call (so every call is exactly 1.1x, whatever the load),
   compared with HEAD. Expected: "regression" on the benchmarks that call analyze() and
   "no change" (or inconclusive) on the others.

Slow (minutes) and timing-dependent: a validation script, not a test. Exit status 0 when both
expectations hold, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLANTED = '''

_unplanted_analyze = analyze


def analyze(model, hw, scenario):  # planted by benchmarks/validate_regress.py: 10 % slower
    import time as _time

    t0 = _time.perf_counter()
    out = _unplanted_analyze(model, hw, scenario)
    end = _time.perf_counter() + 0.10 * (_time.perf_counter() - t0)
    while _time.perf_counter() < end:
        pass
    return out
'''
SLOWED = ("analyze_",)  # benchmarks that call analyze() inside the timed call


def regress(*args: str) -> tuple[dict, float]:
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "perfscope", "regress", *args, "--format", "json"],
                       cwd=ROOT, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t
    if r.returncode not in (0, 1, 3):
        sys.exit(f"perfscope regress failed (exit {r.returncode}): {r.stderr.strip()}")
    return json.loads(r.stdout), wall


def show(doc: dict, wall: float, label: str) -> None:
    counts: dict[str, int] = {}
    for b in doc["benchmarks"]:
        counts[b["verdict"]] = counts.get(b["verdict"], 0) + 1
    summary = ", ".join(f"{v} {n}" for v, n in sorted(counts.items()))
    print(f"{label}: {doc['verdict']:<12} ({summary}; {doc['rounds']} rounds, {wall:.1f} s)")
    for b in doc["benchmarks"]:
        print(f"    {b['name']:<28} {b['verdict']:<12} {b['ratio']:.3f} "
              f"[{b['ci_low']:.3f}, {b['ci_high']:.3f}] n={b['rounds']}")
    for s in doc["skipped"]:
        print(f"    {s['name']:<28} skipped: {s['reason']}")
    sys.stdout.flush()


def planted_tree(tmp: Path) -> Path:
    dest = tmp / "planted"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(dest),
                    "HEAD"], check=True)
    f = dest / "perfscope" / "analysis.py"
    text = f.read_text()
    if "\ndef analyze(" not in text:
        sys.exit("perfscope/analysis.py has no analyze(): update the planted change")
    f.write_text(text + PLANTED)
    return dest


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--full", action="store_true", help="also run the planted case without "
                                                      "--quick")
    p.add_argument("--skip-identical", action="store_true")
    p.add_argument("--history", default=None, help="also append every run to this .jsonl")
    a = p.parse_args()
    extra = ["--history", str(Path(a.history).resolve())] if a.history else []
    ok = True
    if not a.skip_identical:
        verdicts = []
        for i in range(a.runs):
            doc, wall = regress("--baseline", "HEAD", "--candidate", "HEAD", "--quick",
                                "--seed", str(i), *extra)
            show(doc, wall, f"identical {i + 1:2}/{a.runs}")
            verdicts.append(doc["verdict"])
        bad = verdicts.count("regression")
        tally = ", ".join(f"{v} {verdicts.count(v)}" for v in sorted(set(verdicts)))
        print(f"identical code: {bad}/{a.runs} runs called a regression ({tally})")
        ok &= bad == 0
    with tempfile.TemporaryDirectory(prefix="perfscope-validate-") as tmp:
        tree = planted_tree(Path(tmp))
        try:
            modes = [("--quick",), ("--full",)] if a.full else [("--quick",)]
            for mode in modes:
                doc, wall = regress("--baseline", "HEAD", "--candidate", str(tree), *mode,
                                    *extra)
                show(doc, wall, f"planted +10% in analyze() {mode[0]}")
                slowed = [b for b in doc["benchmarks"] if b["name"].startswith(SLOWED)]
                caught = [b["name"] for b in slowed if b["verdict"] == "regression"]
                print(f"planted slowdown {mode[0]}: overall {doc['verdict']}; regression on "
                      f"{len(caught)}/{len(slowed)} benchmarks that call analyze()")
                ok &= doc["verdict"] == "regression"
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                           check=False)
    print("validation:", "PASSED" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
