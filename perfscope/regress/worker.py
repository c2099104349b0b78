"""One warm benchmark process of a paired comparison, driven over pipes (stdlib only).

Run as a script, not imported from a tree under test: the runner starts it as
``python -P worker.py --suite FILE --threads N`` with PYTHONPATH pointing at the checkout
being measured, so the suite's imports resolve to that revision's code while this file and
the suite come from the revision running ``perfscope regress``.

Protocol: one JSON object per line. Requests on stdin, replies on the original stdout (the
benchmarks' own prints go to stderr so they cannot corrupt the protocol):

    {"cmd": "setup", "names": [..] | null, "quick": bool}
                                           -> {"ok": true, "ready": {name: per_call_s},
                                                "skipped": {name: why}, "errors": {name: why},
                                                "files": {module: file}, "threads": n}
    {"cmd": "reset", "name": s}               -> {"ok": true}  (the setup again: a new block)
    {"cmd": "run", "name": s, "inner": k, "clock": "wall"|"cpu"}
                                              -> {"ok": true, "time_s": seconds per call}
    {"cmd": "quit"}                           -> (exits)

A suite is a Python file whose module-level functions named ``bench_*`` are setups: each
returns the zero-argument callable to time (setup itself is not timed). A setup that raises
ImportError or unittest.SkipTest skips that benchmark with the message as the reason; a
setup with the attribute ``quick = False`` is left out when the runner asks for the quick set
(unless named explicitly).
"""

from __future__ import annotations

import gc
import importlib.util
import json
import os
import sys
import time
import traceback
import unittest
from collections.abc import Callable
from typing import Any

WARMUP_S = 0.05
WARMUP_CALLS = 3


def load_suite(path: str) -> dict[str, Callable[[], Callable[[], Any]]]:
    """``bench_*`` setups of the suite file, in definition order, by name (prefix dropped)."""
    spec = importlib.util.spec_from_file_location("perfscope_regress_suite", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the suite {path}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return {k[len("bench_"):]: v for k, v in vars(mod).items()
            if k.startswith("bench_") and callable(v)}


def _warm(fn: Callable[[], Any]) -> float:
    """Call ``fn`` until WARMUP_CALLS calls and WARMUP_S seconds have passed; seconds per
    call of the last calls."""
    t0 = time.perf_counter()
    calls = 0
    t = t0
    while calls < WARMUP_CALLS or t - t0 < WARMUP_S:
        s = time.perf_counter()
        fn()
        t = time.perf_counter()
        calls += 1
        last = t - s
    return max(last, 1e-9)


def _set_threads(n: int) -> int | None:
    """Pin torch's intra-op pool if the suite imported torch (the env vars set by the runner
    already pin OpenMP/MKL/OpenBLAS pools at their first use)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    torch.set_num_threads(n)
    return int(torch.get_num_threads())


CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


def _time(fn: Callable[[], Any], inner: int, clock: str = "wall") -> float:
    """Seconds per call of ``inner`` calls: wall clock (perf_counter), or this process's CPU
    time (all its threads; blind to time spent preempted, and to time spent waiting)."""
    now = CLOCKS[clock]
    t = now()
    for _ in range(inner):
        fn()
    return (now() - t) / inner


def _files() -> dict[str, str]:
    """Top-level modules loaded and the file each came from (the runner checks that the code
    under test came from the checkout it asked for)."""
    out = {}
    for name, mod in list(sys.modules.items()):
        f = getattr(mod, "__file__", None)
        if "." not in name and f:
            out[name] = f
    return out


def serve(suite: str, threads: int, inp: Any, out: Any) -> None:
    setups = load_suite(suite)
    fns: dict[str, Callable[[], Any]] = {}

    def reply(obj: dict[str, Any]) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    for line in inp:
        req = json.loads(line)
        cmd = req.get("cmd")
        try:
            if cmd == "quit":
                return
            if cmd == "list":
                reply({"ok": True, "names": list(setups)})
            elif cmd == "setup":
                names = req.get("names") or [n for n, f in setups.items()
                                             if not req.get("quick") or getattr(f, "quick", True)]
                ready: dict[str, float] = {}
                skipped: dict[str, str] = {}
                errors: dict[str, str] = {}
                for name in names:
                    if name not in setups:
                        skipped[name] = "not in this suite"
                        continue
                    try:
                        fn = setups[name]()
                        _set_threads(threads)
                        ready[name] = _warm(fn)
                        fns[name] = fn
                    except (ImportError, unittest.SkipTest) as e:
                        skipped[name] = f"{type(e).__name__}: {e}"
                    except Exception as e:
                        errors[name] = f"{type(e).__name__}: {e}"
                        traceback.print_exc()
                # the setups' objects (torch, the suite's data) move out of the collector's
                # reach: a collection during a sample then costs the same on both sides
                gc.collect()
                gc.freeze()
                reply({"ok": True, "ready": ready, "skipped": skipped, "errors": errors,
                       "files": _files(), "threads": _set_threads(threads),
                       "python": sys.version.split()[0], "pid": os.getpid()})
            elif cmd == "reset":
                # a new block: the setup again (fresh data, so fresh addresses and alignment)
                name = req["name"]
                fns.pop(name, None)
                fn = setups[name]()
                fn()  # one warm call: the block's data touched once before timing
                fns[name] = fn
                gc.collect()
                gc.freeze()
                reply({"ok": True})
            elif cmd == "run":
                reply({"ok": True, "time_s": _time(fns[req["name"]], int(req["inner"]),
                                                   req.get("clock", "wall"))})
            else:
                reply({"ok": False, "error": f"unknown command {cmd!r}"})
        except Exception as e:
            traceback.print_exc()
            reply({"ok": False, "error": f"{type(e).__name__}: {e}"})


def main(argv: list[str]) -> None:
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("--suite", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cpus", default="", help="comma-separated CPU ids to pin to")
    a = p.parse_args(argv)
    if a.cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(c) for c in a.cpus.split(",")})
    # the protocol keeps the real stdout; anything the benchmarks print goes to stderr
    proto = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    serve(a.suite, a.threads, sys.stdin, proto)


if __name__ == "__main__":
    main(sys.argv[1:])
