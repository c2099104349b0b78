"""The two sides of a paired comparison: where the code comes from and how one sample is run.

- ``checkout``: a git ref of the repository checked out into a temporary ``git worktree``
  (removed afterwards), or a directory used as it is (``.`` is the working tree with its
  uncommitted changes).
- ``WorkerSide``: one warm Python process running the suite over a line protocol
  (``worker.py``), so interpreter start-up and imports are paid once, not per sample.
- ``WorkerPool``: several such processes for one side, a benchmark's blocks taking turns
  among them. One process can run the same code several percent faster or slower than
  another for its whole life (where the interpreter and its objects landed in memory:
  identical code read 1.07x against itself for a whole run, with an interval of
  1.05-1.09); with blocks spread over processes that luck becomes block-to-block variation,
  which the block bootstrap sees, instead of a verdict.
- ``CommandSide``: an arbitrary shell command timed as a whole process per sample.

Both pin the thread pools (OMP/MKL/OpenBLAS/torch) to a fixed count and, where the OS allows,
the process to a fixed CPU set, the same for both sides.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perfscope.errors import InputError, MeasureError

WORKER = Path(__file__).with_name("worker.py")
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


@dataclass(frozen=True)
class Tree:
    """Source tree of one side: what was asked for, where it lies, the commit if known."""

    ref: str
    path: Path
    commit: str | None
    kind: str  # "git" (a ref checked out) | "dir" (used in place)


def _git(repo: Path, *args: str) -> str:
    try:
        r = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                           check=False)
    except FileNotFoundError:
        raise InputError("--baseline/--candidate: git is not installed; pass directories "
                         "instead of refs") from None
    if r.returncode:
        raise InputError(f"git {' '.join(args)}: {r.stderr.strip() or r.stdout.strip()}")
    return r.stdout.strip()


def repo_root(start: Path) -> Path:
    try:
        return Path(_git(start, "rev-parse", "--show-toplevel"))
    except InputError:
        raise InputError(f"{start} is not inside a git repository: run perfscope regress "
                         "from the repository to compare, or pass directories") from None


@contextlib.contextmanager
def checkout(ref: str, repo: Path, what: str) -> Iterator[Tree]:
    """A directory is used in place; anything else is a git ref checked out (detached) into
    a temporary worktree that is removed on exit."""
    p = Path(ref)
    if p.is_dir():
        commit = None
        with contextlib.suppress(InputError, OSError):
            commit = _git(p, "rev-parse", "HEAD")
        yield Tree(ref, p.resolve(), commit, "dir")
        return
    root = repo_root(repo)
    try:
        commit = _git(root, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    except InputError:
        commit = ""
    if not commit:
        raise InputError(f"{what} {ref!r}: not a directory and not a commit of {root}; give a "
                         "branch, tag or SHA (in a shallow CI clone fetch it first, e.g. "
                         "`git fetch --depth=1 origin main`)")
    tmp = Path(tempfile.mkdtemp(prefix="perfscope-regress-"))
    dest = tmp / "tree"
    try:
        _git(root, "worktree", "add", "--detach", "--quiet", str(dest), commit)
        yield Tree(ref, dest, commit, "git")
    finally:
        with contextlib.suppress(InputError):
            _git(root, "worktree", "remove", "--force", str(dest))
        shutil.rmtree(tmp, ignore_errors=True)
        with contextlib.suppress(InputError):
            _git(root, "worktree", "prune")


def pinned_env(threads: int, pythonpath: Sequence[Path] = ()) -> dict[str, str]:
    env = dict(os.environ)
    for v in THREAD_VARS:
        env[v] = str(threads)
    # same hash seed for both sides: dict/set layouts (and their speed) then match
    env["PYTHONHASHSEED"] = "0"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(str(p) for p in pythonpath)
    return env


@dataclass
class SetupReport:
    ready: dict[str, float] = field(default_factory=dict)  # name -> seconds per call (warm-up)
    skipped: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


class WorkerSide:
    """A warm worker process running the suite against one tree."""

    def __init__(self, label: str, tree: Tree, suite: Path, *, threads: int,
                 cpus: Sequence[int] = (), paths: Sequence[str] = (".",), quick: bool = False,
                 clock: str = "wall", python: str = sys.executable) -> None:
        self.label, self.tree, self.threads, self.quick = label, tree, threads, quick
        self.clock = clock
        # the worker's stderr goes to a file (a pipe nobody reads could fill and block it)
        self._log = tempfile.TemporaryFile(mode="w+", encoding="utf-8")  # noqa: SIM115
        roots = [tree.path / sub for sub in paths]
        self.roots = roots
        cmd = [python, "-P", str(WORKER), "--suite", str(suite.resolve()),
               "--threads", str(threads)]
        if cpus:
            cmd += ["--cpus", ",".join(map(str, cpus))]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._log, text=True, cwd=str(tree.path),
                                     env=pinned_env(threads, roots), bufsize=1)

    def _ask(self, req: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except (BrokenPipeError, OSError):
            line = ""
        if not line:
            raise MeasureError(f"the {self.label} benchmark process ({self.tree.ref}) exited: "
                               f"{self.stderr_tail()}")
        rep = json.loads(line)
        if not rep.get("ok"):
            raise MeasureError(f"{self.label} ({self.tree.ref}): {rep.get('error')}")
        return rep

    def stderr_tail(self, lines: int = 6) -> str:
        self._log.seek(0)
        tail = self._log.read().strip().splitlines()[-lines:]
        return " | ".join(tail) or "no output"

    def setup(self, names: Sequence[str] | None) -> SetupReport:
        rep = self._ask({"cmd": "setup", "names": list(names) if names else None,
                         "quick": self.quick})
        self._check_files(rep.get("files", {}))
        return SetupReport(rep["ready"], rep["skipped"], rep["errors"])

    def _check_files(self, files: dict[str, str]) -> None:
        """Each top-level package that exists in the tree must have been imported from it (an
        installed copy shadowing the checkout would compare a revision with itself)."""
        for mod, f in files.items():
            for root in self.roots:
                here = (root / mod / "__init__.py").is_file() or (root / f"{mod}.py").is_file()
                if here and not Path(f).resolve().is_relative_to(root.resolve()):
                    raise MeasureError(
                        f"{self.label}: {mod} was imported from {f}, not from the checkout "
                        f"{root}; remove the conflicting install from sys.path or pass "
                        "--path for a src/ layout")

    def run(self, name: str, inner: int) -> float:
        return float(self._ask({"cmd": "run", "name": name, "inner": inner,
                                "clock": self.clock})["time_s"])

    def reset(self, name: str) -> None:
        self._ask({"cmd": "reset", "name": name})

    def close(self) -> None:
        with contextlib.suppress(Exception):
            assert self.proc.stdin is not None
            self.proc.stdin.write('{"cmd": "quit"}\n')
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


class WorkerPool:
    """``workers`` warm processes of one tree, one Side. Each benchmark starts on process 0
    and moves on at every reset (the paired loop resets it between blocks): block ``t`` runs
    on process ``(t + skew x (t // k)) mod k``. The baseline's pool has ``skew`` 0 and the
    candidate's 1, so over ``k * k`` blocks every pairing of a baseline process with a
    candidate process occurs once (k = 2: 0-0, 1-1, 0-1, 1-0)."""

    def __init__(self, workers: Sequence[WorkerSide], skew: int = 0) -> None:
        if not workers:
            raise ValueError("a worker pool needs at least one worker")
        self.workers, self.skew = list(workers), skew
        self._block: dict[str, int] = {}

    def _at(self, name: str) -> WorkerSide:
        k, t = len(self.workers), self._block.get(name, 0)
        return self.workers[(t + self.skew * (t // k)) % k]

    def setup(self, names: Sequence[str] | None) -> SetupReport:
        """Set up every process at once; a benchmark is ready where all of them have it."""
        with ThreadPoolExecutor(len(self.workers)) as pool:
            reps = list(pool.map(lambda w: w.setup(names), self.workers))
        first = reps[0]
        ready = {n: t for n, t in first.ready.items() if all(n in r.ready for r in reps)}
        skipped: dict[str, str] = {}
        errors: dict[str, str] = {}
        for r in reps:
            for n, why in r.skipped.items():
                skipped.setdefault(n, why)
            for n, why in r.errors.items():
                errors.setdefault(n, why)
        for n in first.ready:
            if n not in ready and n not in skipped and n not in errors:
                errors[n] = "ready in one worker process and not in another"
        return SetupReport(ready, skipped, errors)

    def run(self, name: str, inner: int) -> float:
        return self._at(name).run(name, inner)

    def reset(self, name: str) -> None:
        """The next block of ``name``: on the next process, with its data set up afresh."""
        self._block[name] = self._block.get(name, 0) + 1
        self._at(name).reset(name)

    def close(self) -> None:
        for w in self.workers:
            w.close()


class CommandSide:
    """A shell command timed as a whole process per call (start-up included): for gating a
    binary or script that perfscope cannot drive as a warm process."""

    name = "command"

    def __init__(self, label: str, command: str, *, threads: int, cpus: Sequence[int] = (),
                 cwd: Path | None = None, clock: str = "wall") -> None:
        self.label, self.command, self.threads, self.clock = label, command, threads, clock
        self.tree = Tree(command, (cwd or Path.cwd()).resolve(), None, "cmd")
        self._env = pinned_env(threads)
        self._cpus = set(cpus)

    def _pin(self) -> None:  # runs in the child between fork and exec
        if self._cpus and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, self._cpus)

    def _once(self) -> float:
        import resource

        def cpu() -> float:
            ru = resource.getrusage(resource.RUSAGE_CHILDREN)
            return ru.ru_utime + ru.ru_stime

        c, t = cpu(), time.perf_counter()
        r = subprocess.run(self.command, shell=True, cwd=self.tree.path, env=self._env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                           preexec_fn=self._pin if self._cpus else None, check=False)
        dt = time.perf_counter() - t if self.clock == "wall" else cpu() - c
        if r.returncode:
            tail = " | ".join(r.stderr.strip().splitlines()[-3:])
            raise MeasureError(f"--{self.label}-cmd exited with status {r.returncode}: {tail}")
        return dt

    def setup(self, names: Sequence[str] | None) -> SetupReport:
        warm = min(self._once() for _ in range(2))
        return SetupReport({self.name: warm}, {}, {})

    def run(self, name: str, inner: int) -> float:
        return sum(self._once() for _ in range(inner)) / inner

    def reset(self, name: str) -> None:
        pass

    def close(self) -> None:
        pass
