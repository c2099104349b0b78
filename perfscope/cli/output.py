"""Rendering helpers shared by the commands: formats, atomic file output, logging."""

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


def check_format(fmt: str) -> str:
    from perfscope.errors import InputError

    if fmt not in FORMATS:
        raise InputError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
    return fmt


def log(msg: str) -> None:
    print(msg, file=sys.stderr)


def to_json_text(data: Any) -> str:
    return json.dumps(data, indent=2, allow_nan=False, default=_default) + "\n"


def _default(o: Any) -> Any:
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def to_csv_text(rows: Iterable[Mapping[str, Any]]) -> str:
    rows = list(rows)
    buf = io.StringIO()
    if rows:
        cols = list(rows[0])
        w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: (json.dumps(v) if isinstance(v, (dict, list)) else v)
                        for k, v in r.items()})
    return buf.getvalue()


def write_atomic(path: Path, text: str) -> None:
    from perfscope.io import write_atomic as _write

    _write(path, text)


def emit(text: str, output: Path | None) -> None:
    """Data to stdout, or atomically to ``output``."""
    if output is None:
        sys.stdout.write(text)
    else:
        write_atomic(output, text)
        log(f"wrote {output}")


def console():
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False, width=max(100, _term_width()))


def _term_width() -> int:
    try:
        return os.get_terminal_size().columns
    except OSError:
        return 120
