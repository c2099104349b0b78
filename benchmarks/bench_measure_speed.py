"""How long the quick measurements take, per section, before and after a change, side by side.

    python benchmarks/bench_measure_speed.py --baseline 933683b [--candidate .]
        [--what profile,bench] [--repeat 1] [--threads N]

Each side (a git ref checked out into a temporary worktree, or a directory used in place)
runs, in a fresh process with that tree first on the path, the real commands:

- ``perfscope profile -o report.html`` (issue 7's main job: the study, the quick measurement
  of ceilings and the model's ops, the HTML report; the goal is under 90 s on 2 idle cores),
- ``perfscope bench --quick -f json -o bench.json`` (every section; the README says about a
  minute on 2 cores).

For every bench section and for the whole command it prints the wall time, the CPU time
(user and system, this process and its children: the comm section's ranks), the minor page
faults (a fresh 4 KiB page each: what large short-lived allocations cost in system time) and
the 1-minute load average when the section started (above the core count means other
processes had the CPU, so wall times are inflated: compare CPU times then). Sides alternate
(baseline, candidate, baseline, ...) with ``--repeat``, so a change in load hits both.

A benchmark, not a test: it prints, it does not assert.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
COMMANDS = {
    "profile": ["profile", "-o", "{tmp}/report.html"],
    "bench": ["bench", "--quick", "-f", "json", "-o", "{tmp}/bench.json"],
}


# ---- the worker: one command in this process, its sections timed -------------------------

def _usage() -> dict[str, float]:
    me, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF,
                                                 resource.RUSAGE_CHILDREN))
    return {"wall_s": time.perf_counter(), "user_s": me.ru_utime + kids.ru_utime,
            "sys_s": me.ru_stime + kids.ru_stime, "faults": me.ru_minflt + kids.ru_minflt}


def _delta(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    return {k: b[k] - a[k] for k in a}


def worker(argv: list[str], out: Path) -> None:
    """Run ``perfscope argv`` here, recording each bench section (the Reporter's sections,
    which every version since the first round has)."""
    from perfscope.measure import progress

    sections: list[dict[str, Any]] = []
    orig = progress.Reporter.section

    @contextmanager
    def section(self: Any, name: str) -> Any:
        load = os.getloadavg()[0]
        t0 = _usage()
        with orig(self, name) as step:
            yield step
        sections.append({"name": name, "load_1m": load, **_delta(t0, _usage())})

    progress.Reporter.section = section  # type: ignore[method-assign]
    from perfscope.cli import main

    load = os.getloadavg()[0]
    t0 = _usage()
    code = 0
    try:
        main(argv)
    except SystemExit as e:
        code = int(e.code or 0)
    total = {"name": "(whole command)", "load_1m": load, **_delta(t0, _usage())}
    out.write_text(json.dumps({"exit": code, "sections": sections, "total": total}))


# ---- the driver ---------------------------------------------------------------------------

def run_side(tree: Path, what: str, threads: int | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="perfscope-speed-") as tmp:
        argv = [a.format(tmp=tmp) for a in COMMANDS[what]]
        if threads:
            argv += ["--threads", str(threads)]
        out = Path(tmp) / "timing.json"
        env = dict(os.environ, PYTHONPATH=str(tree), PYTHONDONTWRITEBYTECODE="1")
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker",
                            str(out), "--", *argv], env=env, cwd=tmp, text=True,
                           capture_output=True, check=False)
        wall = time.perf_counter() - t0
        if r.returncode or not out.exists():
            tail = (r.stderr or r.stdout).strip().splitlines()[-5:]
            return {"error": f"exit {r.returncode}: " + " | ".join(tail), "process_s": wall}
        doc = json.loads(out.read_text())
        doc["process_s"] = wall  # interpreter start and imports included
        return doc


def fmt_row(m: dict[str, Any] | None) -> str:
    if m is None:
        return f"{'-':>7} {'-':>7} {'-':>6} {'-':>8} {'-':>5}"
    return (f"{m['wall_s']:7.1f} {m['user_s'] + m['sys_s']:7.1f} {m['sys_s']:6.1f} "
            f"{m['faults'] / 1e3:7.0f}k {m['load_1m']:5.2f}")


def report(what: str, sides: list[tuple[str, list[dict[str, Any]]]]) -> None:
    cmd = "perfscope " + " ".join(a for a in COMMANDS[what] if "{tmp}" not in a)
    print(f"\n== {cmd} ==")
    head = f"{'wall s':>7} {'cpu s':>7} {'sys s':>6} {'faults':>8} {'load':>5}"
    print(f"{'section':<18} {'run':>3} | " + " | ".join(f"{name:^38}" for name, _ in sides))
    print(f"{'':<18} {'':>3} | " + " | ".join(head for _ in sides))
    runs = max(len(r) for _, r in sides)
    for i in range(runs):
        names: list[str] = []
        for _, rs in sides:
            if i < len(rs) and "sections" in rs[i]:
                names += [s["name"] for s in rs[i]["sections"] if s["name"] not in names]
        for name in [*names, "(whole command)"]:
            cells = []
            for _, rs in sides:
                r = rs[i] if i < len(rs) else {}
                if "error" in r:
                    cells.append(f"{'failed':^38}")
                    continue
                m = r.get("total") if name == "(whole command)" else \
                    next((s for s in r.get("sections", []) if s["name"] == name), None)
                cells.append(fmt_row(m))
            print(f"{name:<18} {i + 1:>3} | " + " | ".join(cells))
    for name, rs in sides:
        for r in rs:
            if "error" in r:
                print(f"  {name}: {r['error']}")
    if len(sides) == 2:
        def median_total(rs: list[dict[str, Any]], key: str) -> float:
            vals = sorted(r["total"][key] + (r["total"]["sys_s"] if key == "user_s" else 0)
                          for r in rs if "total" in r)
            return vals[len(vals) // 2] if vals else float("nan")

        (bn, b), (cn, c) = sides
        for key, label in (("wall_s", "wall"), ("user_s", "cpu (user + sys)")):
            bv, cv = median_total(b, key), median_total(c, key)
            print(f"  whole command {label}: {bn} {bv:.1f} s, {cn} {cv:.1f} s, "
                  f"ratio {cn}/{bn} = {cv / bv:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline", help="git ref or directory to compare with (none: only "
                                       "the candidate)")
    ap.add_argument("--candidate", default=str(REPO), help="git ref or directory "
                                                           "(default: this tree)")
    ap.add_argument("--what", default="profile,bench", help="profile, bench or both")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each side, alternating")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("argv", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.argv, args.worker)
        return

    sys.path.insert(0, str(REPO))
    from contextlib import ExitStack

    from perfscope.regress.sides import checkout

    whats = [w.strip() for w in args.what.split(",") if w.strip()]
    bad = [w for w in whats if w not in COMMANDS]
    if bad:
        sys.exit(f"--what {','.join(bad)}: use profile and/or bench")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"{cores} usable cores; load average at start {os.getloadavg()[0]:.2f} "
          "(above the core count: other processes share the CPU, wall times are inflated)")
    with ExitStack() as stack:
        trees = []
        if args.baseline:
            t = stack.enter_context(checkout(args.baseline, REPO, "--baseline"))
            trees.append((f"baseline {args.baseline}", t.path))
        t = stack.enter_context(checkout(args.candidate, REPO, "--candidate"))
        trees.append(("candidate" if args.candidate != str(REPO) else "this tree", t.path))
        for what in whats:
            results: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in trees}
            for _ in range(args.repeat):
                for name, path in trees:
                    print(f"  running {what} on {name} ...", file=sys.stderr, flush=True)
                    results[name].append(run_side(path, what, args.threads))
            report(what, [(name, results[name]) for name, _ in trees])
    print("\ncolumns: wall and CPU seconds (user + sys, children included), system seconds, "
          "minor page faults (thousands), 1-minute load average when the section started")


if __name__ == "__main__":
    main()
