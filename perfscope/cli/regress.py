"""perfscope regress: paired timing comparison of two revisions, and the exact-count gate.

Exit status (CI reads it): 0 no change or improvement, 1 regression, 3 inconclusive,
2 bad usage or a failure to run. ``perfscope regress counts``: 0 when the analytic results
match the snapshot, 1 when they differ (the diff is printed), 2 bad usage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from perfscope.cli.output import check_format, emit, log, to_csv_text, to_json_text

regress_app = typer.Typer(
    help="Gate performance in CI: compare two revisions' timings paired and interleaved "
         "(exit 0 no change/improvement, 1 regression, 3 inconclusive, 2 usage), or check "
         "the analytic counts against their snapshot (`perfscope regress counts`).",
    invoke_without_command=True, no_args_is_help=False, rich_markup_mode=None,
)

FormatOpt = Annotated[str, typer.Option("--format", "-f", help="table | json | csv")]
OutputOpt = Annotated[Path | None, typer.Option("--output", "-o",
                                                help="Write to this file (atomically).")]


@regress_app.callback()
def regress_cmd(
    ctx: typer.Context,
    baseline: Annotated[str | None, typer.Option(
        help="Git ref of this repository (branch, tag, SHA; checked out into a temporary "
             "worktree) or a directory.")] = None,
    candidate: Annotated[str | None, typer.Option(
        help="Git ref or directory; default: the working tree (its top folder) with its "
             "uncommitted changes.")] = None,
    baseline_cmd: Annotated[str | None, typer.Option(
        help="Instead of refs: a shell command timed as a whole process per sample.")] = None,
    candidate_cmd: Annotated[str | None, typer.Option(help="The command to compare with "
                                                           "--baseline-cmd.")] = None,
    suite: Annotated[Path | None, typer.Option(
        help="Benchmark suite file (bench_* setups); default benchmarks/suite/suite.py of "
             "the working tree.")] = None,
    bench: Annotated[str | None, typer.Option(help="Only these benchmarks, "
                                                   "comma-separated.")] = None,
    quick: Annotated[bool, typer.Option("--quick/--full", help="Short run (under a minute "
                                                               "on 2 cores).")] = False,
    threshold: Annotated[float, typer.Option(help="Relative change that counts, e.g. 0.05 "
                                                  "for 5 %.")] = 0.05,
    confidence: Annotated[float, typer.Option(help="Of the bootstrap interval.")] = 0.95,
    rounds: Annotated[int | None, typer.Option(help="Most paired rounds per benchmark.")] = None,
    min_rounds: Annotated[int | None, typer.Option(help="Rounds before the first "
                                                        "decision.")] = None,
    max_time: Annotated[float | None, typer.Option(help="Seconds of sampling at most "
                                                        "(all benchmarks).")] = None,
    sample_ms: Annotated[float | None, typer.Option(help="Target duration of one timed "
                                                         "sample, milliseconds.")] = None,
    clock: Annotated[str, typer.Option(help="wall (default) | cpu: process CPU time, blind to "
                                            "preemption; only for CPU-bound code (never GPU "
                                            "or I/O).")] = "wall",
    threads: Annotated[int, typer.Option(help="Thread count of both sides (OMP/MKL/"
                                              "OpenBLAS/torch).")] = 1,
    workers: Annotated[int, typer.Option(help="Warm processes per side (refs and "
                                              "directories); blocks take turns among "
                                              "them.")] = 2,
    cpus: Annotated[str, typer.Option(help="auto (the last --threads CPUs) | none | ids "
                                           "like 2,3: where both sides run.")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed of the order and the bootstrap.")] = 0,
    path: Annotated[str, typer.Option(help="Folders of each checkout put on PYTHONPATH, "
                                           "comma-separated (src for a src/ layout).")] = ".",
    prepare: Annotated[str | None, typer.Option(help="Shell command run in each checkout "
                                                     "before benchmarking (a build "
                                                     "step).")] = None,
    history: Annotated[Path | None, typer.Option(help="Append the results to this .jsonl "
                                                      "history (for perfscope "
                                                      "dashboard).")] = None,
    fmt: FormatOpt = "table",
    output: OutputOpt = None,
) -> int | None:
    """Compare the speed of two revisions, paired and interleaved, and give a verdict."""
    if ctx.invoked_subcommand is not None:
        return None
    import dataclasses

    from perfscope.regress.paired import QUICK, Settings
    from perfscope.regress.run import Request, resolve_cpus, run_regress

    check_format(fmt)
    if workers < 1:
        from perfscope.errors import InputError

        raise InputError(f"--workers {workers}: use 1 or more warm processes per side")
    base = QUICK if quick else Settings()
    settings = dataclasses.replace(
        base, threshold=threshold, confidence=confidence, threads=threads, seed=seed,
        workers=workers,
        clock=clock,
        cpus=resolve_cpus(cpus, threads) if threads >= 1 else (),
        max_rounds=rounds if rounds is not None else max(base.max_rounds, min_rounds or 0),
        min_rounds=min_rounds if min_rounds is not None else min(base.min_rounds,
                                                                 rounds or base.min_rounds),
        max_time_s=max_time if max_time is not None else base.max_time_s,
        total_time_s=None if max_time is not None else base.total_time_s,
        sample_s=sample_ms / 1e3 if sample_ms is not None else base.sample_s)
    req = Request(baseline=baseline, candidate=candidate, baseline_cmd=baseline_cmd,
                  candidate_cmd=candidate_cmd, suite=suite,
                  names=tuple(n.strip() for n in bench.split(",") if n.strip()) if bench
                  else None, quick=quick, settings=settings,
                  paths=tuple(p.strip() for p in path.split(",") if p.strip()) or (".",),
                  prepare=prepare)
    doc = run_regress(req, progress=lambda m: log(f"perfscope regress: {m}"))
    if history is not None:
        from perfscope.regress.history import append, from_regress

        n = append(history, from_regress(doc))
        log(f"perfscope regress: appended {n} records to {history}")
    if fmt == "json":
        emit(to_json_text(doc), output)
    elif fmt == "csv":
        emit(to_csv_text([{k: v for k, v in b.items() if k != "samples"}
                          for b in doc["benchmarks"]]), output)
    else:
        emit(render_table(doc), output)
    if fmt != "table" or output is not None:
        log(f"perfscope regress: {doc['verdict']} ({doc['reason']}); exit {doc['exit_code']}")
    return int(doc["exit_code"])


def render_table(doc: dict[str, Any]) -> str:
    """The verdicts as a text table that fits 80 columns."""
    import io
    import textwrap

    from rich.console import Console
    from rich.table import Table

    from perfscope.units import fmt_time

    conf = f"{doc['confidence']:.0%}"
    t = Table(box=None, pad_edge=False, padding=(0, 1, 0, 0), show_edge=False,
              title=f"{doc['candidate']['ref']} vs {doc['baseline']['ref']}: candidate / "
                    f"baseline time, {conf} CI, +-{doc['threshold']:.0%} band",
              title_justify="left")
    for col in ("benchmark", "verdict", "ratio", f"{conf} CI", "n", "baseline", "candidate"):
        t.add_column(col, justify="left" if col in ("benchmark", "verdict") else "right",
                     overflow="fold")
    for b in doc["benchmarks"]:
        t.add_row(b["name"], b["verdict"], f"{b['ratio']:.3f}",
                  f"{b['ci_low']:.3f}..{b['ci_high']:.3f}", str(b["rounds"]),
                  fmt_time(b["baseline_median_s"]), fmt_time(b["candidate_median_s"]))
    for s in doc["skipped"]:
        t.add_row(s["name"], "skipped", "-", "-", "-", "-", "-")
    buf = io.StringIO()
    width = _width()
    con = Console(file=buf, width=width, highlight=False, soft_wrap=False)
    con.print(t)
    notes = [f"verdict: {doc['verdict']} - {doc['reason']}"]
    notes += [f"skipped {s['name']}: {s['reason']}" for s in doc["skipped"]]
    notes.append(f"{doc['rounds']} rounds, {doc['sampling_s']:.1f} s sampling "
                 f"({doc['stopped']}), {doc['wall_s']:.1f} s in all")
    lines = [buf.getvalue().rstrip("\n")]
    lines += [textwrap.fill(n, width=max(width, 40), subsequent_indent="  ") for n in notes]
    return "\n".join(lines) + "\n"


def _width() -> int:
    import os
    import shutil

    cols = os.environ.get("COLUMNS")
    if cols and cols.isdigit():
        return int(cols)
    return shutil.get_terminal_size((80, 24)).columns


@regress_app.command("counts")
def counts_cmd(
    update: Annotated[bool, typer.Option("--update", help="Rewrite the snapshot from the "
                                                          "current code and print what "
                                                          "changed.")] = False,
    snapshot: Annotated[Path | None, typer.Option(help="Snapshot file (default: "
                                                       "tests/snapshots/counts.json of this "
                                                       "repository).")] = None,
    fmt: FormatOpt = "table",
    output: OutputOpt = None,
) -> int:
    """The exact-count gate: analytic results of fixed cases against their snapshot."""
    from perfscope.regress import counts

    check_format(fmt)
    path = snapshot or counts.default_snapshot()
    new = counts.collect()
    old = counts.load_snapshot(path) if path.is_file() or not update else None
    changes = counts.diff(old, new) if old is not None else []
    if fmt == "json":
        emit(to_json_text({"schema": "perfscope.counts-diff/1", "snapshot": str(path),
                           "updated": update, "changes": counts.change_rows(changes)}), output)
    elif fmt == "csv":
        emit(to_csv_text(counts.change_rows(changes)), output)
    elif old is None:
        emit(f"count gate: new snapshot {path} ({len(new['cases'])} cases)\n", output)
    else:
        emit(counts.render_diff(changes, str(path), updated=update), output)
    if update:
        counts.write_snapshot(path, new)
        log(f"perfscope regress counts: wrote {path} ({len(new['cases'])} cases, "
            f"{len(changes)} change(s))")
        return 0
    return 1 if changes else 0
