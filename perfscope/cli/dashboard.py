"""perfscope dashboard: the benchmark history as one static, self-contained HTML page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from perfscope.cli.output import emit, log, to_csv_text, to_json_text

DEFAULT_HISTORY = Path("dashboards") / "history"
DEFAULT_PAGE = Path("dashboards") / "index.html"
FORMATS = ("html", "table", "json", "csv")


def dashboard_cmd(
    history: Annotated[Path, typer.Option(help="A .jsonl history file or a folder of them "
                                               "(perfscope.history/1).")] = DEFAULT_HISTORY,
    fmt: Annotated[str, typer.Option("--format", "-f", help="html (the page) | table | json "
                                                            "| csv (a summary per "
                                                            "benchmark)")] = "html",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Where to write "
                                                "(html default: dashboards/index.html; "
                                                "others: stdout).")] = None,
    title: Annotated[str, typer.Option(help="Page title.")] = "perfscope benchmark history",
) -> None:
    """One trend chart per benchmark with its confidence band, regressions marked."""
    from perfscope.errors import InputError
    from perfscope.regress.dashboard import render_html, summary_rows
    from perfscope.regress.history import load

    if fmt not in FORMATS:
        raise InputError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
    records = load(history)
    if not records:
        raise InputError(f"--history {history}: no records yet; run `perfscope regress ... "
                         "--history FILE` or `pytest benchmarks/suite --perfscope-history "
                         "FILE` first")
    if fmt == "html":
        from perfscope.io import write_atomic

        out = output or DEFAULT_PAGE
        write_atomic(out, render_html(records, title=title, source=str(history)),
                     what="--output")
        log(f"perfscope dashboard: wrote {out} ({len(records)} records)")
    elif fmt == "json":
        emit(to_json_text({"schema": "perfscope.dashboard/1", "history": str(history),
                           "benchmarks": summary_rows(records)}), output)
    elif fmt == "csv":
        emit(to_csv_text(summary_rows(records)), output)
    else:
        emit(_table(summary_rows(records)), output)


def _table(rows: list[dict]) -> str:
    import io

    from rich.console import Console
    from rich.table import Table

    from perfscope.cli.regress import _width
    from perfscope.units import fmt_time

    t = Table(box=None, pad_edge=False, padding=(0, 1), show_edge=False)
    for col in ("benchmark", "runs", "regr.", "latest median", "ratio", "verdict"):
        t.add_column(col, justify="left" if col in ("benchmark", "verdict") else "right",
                     overflow="fold")
    for r in rows:
        t.add_row(r["benchmark"], str(r["runs"]), str(r["regressions"]),
                  fmt_time(r["latest_median_s"]) if r["latest_median_s"] is not None else "-",
                  "-" if r["latest_ratio"] is None else f"{r['latest_ratio']:.3f}",
                  r["latest_verdict"] or "-")
    buf = io.StringIO()
    Console(file=buf, width=_width(), highlight=False, soft_wrap=False).print(t)
    return buf.getvalue()
