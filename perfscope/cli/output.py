"""Rendering helpers shared by the commands: formats, terminal width, file output, logging.

Width: ``COLUMNS`` when set, else the terminal's width, else (a pipe or a file) a wide page
so that nothing is cut. Renderers choose their columns to fit it (perfscope.report.tables);
this module only prints what they return.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

FORMATS = ("table", "json", "csv")
PIPE_WIDTH = 160  # stdout is neither a terminal nor sized by COLUMNS: a wide page


def check_format(fmt: str, formats: tuple[str, ...] = FORMATS) -> str:
    from perfscope.errors import InputError

    if fmt not in formats:
        raise InputError(f"--format {fmt!r}: use one of {', '.join(formats)}")
    return fmt


def log(msg: str) -> None:
    print(msg, file=sys.stderr)


def serving_lengths(model: Any, isl: int | None, osl: int | None, cmd: str,
                    default: int = 1024) -> tuple[int, int]:
    """``--isl`` / ``--osl`` of predict and recommend: ``default`` each when not given, and
    when neither was given and the two exceed the model's context (GPT-2: 1,024 tokens), half
    the context each, said on stderr. Lengths the user typed are left for the model to
    refuse."""
    if isl is None and osl is None and 2 * default > model.max_position:
        isl = model.max_position // 2
        log(f"perfscope {cmd}: {model.name} holds {model.max_position:,} tokens: isl {isl:,}, "
            f"osl {model.max_position - isl:,} (set --isl / --osl to choose)")
        return isl, model.max_position - isl
    return (default if isl is None else isl), (default if osl is None else osl)


def to_json_text(data: Any) -> str:
    return json.dumps(data, indent=2, allow_nan=False, default=_default) + "\n"


def _default(o: Any) -> Any:
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def to_csv_text(rows: Iterable[Mapping[str, Any]]) -> str:
    """Rows as CSV; the columns are the union of the rows' keys in first-seen order."""
    rows = list(rows)
    buf = io.StringIO()
    if rows:
        cols = list(dict.fromkeys(k for r in rows for k in r))
        w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: (json.dumps(v) if isinstance(v, (dict, list)) else v)
                        for k, v in r.items()})
    return buf.getvalue()


def write_atomic(path: Path, text: str | bytes, what: str = "--output") -> None:
    from perfscope.io import write_atomic as _write

    _write(path, text, what=what)


def emit(text: str, output: Path | None) -> None:
    """Data to stdout, or atomically to ``output``."""
    if output is None:
        sys.stdout.write(text)
    else:
        write_atomic(output, text)
        log(f"wrote {output}")


def term_width(stream: Any = None) -> int:
    """COLUMNS if set, else the terminal's width, else PIPE_WIDTH."""
    env = os.environ.get("COLUMNS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    stream = stream or sys.stdout
    try:
        if stream.isatty():
            return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):
        pass
    return PIPE_WIDTH


_term_width = term_width  # the old name (cli/bench_tables.py)


def console(width: int | None = None, stderr: bool = False):
    """A rich console on stdout (or stderr) at the width above; no highlighting guesses."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(highlight=False, soft_wrap=False, width=width or term_width(stream),
                   stderr=stderr)


def render_text(renderables: Iterable[Any], width: int) -> str:
    """Plain text of rich renderables at ``width`` columns."""
    from rich.console import Console

    con = Console(record=True, width=width, file=io.StringIO(), highlight=False,
                  color_system=None, soft_wrap=False)
    for r in renderables:
        con.print(r)
    return "\n".join(line.rstrip() for line in con.export_text().splitlines()) + "\n"


def out_width(output: Path | None) -> int:
    """The width to lay out for: the terminal (stdout), or a wide page for a file (unless
    COLUMNS says otherwise)."""
    return term_width() if output is None else term_width(io.StringIO())


def show(renderables: Iterable[Any], output: Path | None = None,
         width: int | None = None) -> None:
    """Print renderables to stdout, or their plain text atomically to ``output``."""
    width = width or out_width(output)
    if output is None:
        con = console(width)
        for r in renderables:
            con.print(r)
    else:
        write_atomic(output, render_text(renderables, width))
        log(f"wrote {output}")
