"""Rich tables for a perfscope.bench/1 document: every measurement beside its ceiling."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from perfscope.cli.output import _term_width
from perfscope.units import fmt_time, si


def _r(v: float | None, unit: str) -> str:
    return "-" if not v else si(v, unit)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}%"


def _shape(sh: dict[str, Any]) -> str:
    if {"m", "n", "k"} <= set(sh):
        g = f"{sh['groups']}x " if sh.get("groups", 1) != 1 else ""
        return f"{g}{sh['m']}x{sh['n']}x{sh['k']}"
    if "heads" in sh:
        return (f"b{sh['batch']} q{sh['q_len']} kv{sh['kv_len']} h{sh['heads']}/"
                f"{sh['kv_heads']} d{sh['head_dim_qk']}")
    return " ".join(f"{k}={v}" for k, v in sh.items())


def tables(doc: dict[str, Any]) -> list[Any]:
    from rich.table import Table

    out: list[Any] = []
    dev = doc.get("device", {})
    head = Table(title=f"perfscope bench on {dev.get('name', '?')} ({dev.get('kind', '?')}"
                       + (f", {doc['threads']} threads" if doc.get("threads") else "") + ")")
    for c in ("section", "name", "value", "spread (p80..p20)", "shape", "n", "cv"):
        head.add_column(c, justify="right" if c in ("value", "n", "cv") else "left")
    for c in (doc.get("ceilings") or {}).get("values", []):
        unit = "FLOP/s" if c["unit"] == "FLOP/s" else "B/s"
        head.add_row("ceiling", c["name"], _r(c["value"], unit),
                     f"{_r(c['low'], unit)} .. {_r(c['high'], unit)}", _shape(c["shape"]),
                     str(c["stats"]["n"]), f"{c['stats']['cv']:.2f}")
    if head.row_count:
        out.append(head)
    ops = doc.get("ops") or {}
    if ops.get("points"):
        t = Table(title=f"ops of {ops.get('model')} vs the {ops.get('ceiling')} roof of "
                        f"{ops.get('hardware')}", caption=f"scaling: {ops.get('scaling')}")
        for c in ("phase", "op", "shape run", "scaled", "median", "p20..p80", "FLOP/s",
                  "bytes/s", "predicted", "% roof", "bound"):
            t.add_column(c, justify="left" if c in ("phase", "op", "shape run", "scaled",
                                                      "bound") else "right")
        for p in ops["points"]:
            ex, st = p.get("extra", {}), p["stats"]
            name = p["name"] + (f" (sweep b={ex['sweep_batch']})" if "sweep_batch" in ex else "")
            t.add_row(ex.get("phase", ""), name, _shape(p["shape"]), ex.get("scale_note", ""),
                      fmt_time(st["median_s"]),
                      f"{fmt_time(st['p20_s'])}..{fmt_time(st['p80_s'])}",
                      _r(p["achieved_flops_per_s"], "FLOP/s"),
                      _r(p["achieved_bytes_per_s"], "B/s"),
                      fmt_time(p["predicted_time_s"]) if p.get("predicted_time_s") else "-",
                      _pct(p.get("pct_of_roof")), ex.get("bound", ""))
        out.append(t)
    k = (doc.get("kernels") or {}).get("points", [])
    if k:
        t = Table(title="reference kernels")
        for c in ("name", "dtype", "shape", "median", "FLOP/s", "bytes/s", "% roof"):
            t.add_column(c)
        for p in k:
            t.add_row(p["name"], p["dtype"], _shape(p["shape"]),
                      fmt_time(p["stats"]["median_s"]), _r(p["achieved_flops_per_s"], "FLOP/s"),
                      _r(p["achieved_bytes_per_s"], "B/s"), _pct(p.get("pct_of_roof")))
        out.append(t)
    comm = (doc.get("comm") or {}).get("results", [])
    if comm:
        t = Table(title="collectives")
        cols = list(comm[0])[:8]
        for c in cols:
            t.add_column(str(c))
        for r in comm:
            t.add_row(*[f"{r.get(c):.4g}" if isinstance(r.get(c), float) else str(r.get(c))
                        for c in cols])
        out.append(t)
    return out


def render(doc: dict[str, Any], output: Path | None) -> None:
    from rich.console import Console

    from perfscope.cli.output import emit

    if output is None:
        con = Console(highlight=False, width=max(150, _term_width()))
        for t in tables(doc):
            con.print(t)
        return
    buf = io.StringIO()
    con = Console(file=buf, width=160, highlight=False, color_system=None)
    for t in tables(doc):
        con.print(t)
    emit(buf.getvalue(), output)
