"""Progress of the bench sections on stderr.

On a terminal each section draws a determinate rich bar (done / total, the step running, the
time elapsed) that clears when the section ends; every section then leaves one line with its
elapsed time, so a log, a pipe or CI shows one line per section instead of a minute of
silence.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

Step = Callable[[str, int, int], None]  # (label, done, total)


class Reporter:
    """``bars``: True draws rich bars, False only the per-section lines, None decides by
    whether ``stream`` is a terminal. ``quiet`` silences everything (library use)."""

    def __init__(self, bars: bool | None = None, stream: TextIO | None = None,
                 quiet: bool = False):
        self.stream = stream or sys.stderr
        self.bars = (self.stream.isatty() if bars is None else bars) and not quiet
        self.quiet = quiet

    def log(self, msg: str) -> None:
        if not self.quiet:
            print(f"perfscope bench: {msg}", file=self.stream, flush=True)

    @contextmanager
    def section(self, name: str) -> Iterator[Step]:
        """A step callback for one section; the closing line reports the steps and time."""
        t0 = time.perf_counter()
        state = {"done": 0, "total": 0}

        def track(label: str, done: int, total: int) -> None:
            state["done"], state["total"] = done, total

        if not self.bars:
            yield track
        else:
            with self._bar(name) as update:
                def step(label: str, done: int, total: int) -> None:
                    track(label, done, total)
                    update(label, done, total)

                yield step
        steps = f", {state['done']} of {state['total']} steps" if state["total"] else ""
        self.log(f"{name} done in {time.perf_counter() - t0:.1f} s{steps}")

    @contextmanager
    def _bar(self, name: str) -> Iterator[Step]:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        con = Console(file=self.stream, force_terminal=True)
        cols: list[Any] = [TextColumn(f"[bold]{name}[/]"), BarColumn(bar_width=24),
                           MofNCompleteColumn(), TimeElapsedColumn(),
                           TextColumn("{task.description}")]
        with Progress(*cols, console=con, transient=True) as prog:
            task = prog.add_task("", total=None)

            def update(label: str, done: int, total: int) -> None:
                prog.update(task, description=label, completed=done, total=total or None)

            yield update
