"""Tables of a perfscope.bench/1 document: every measurement beside its ceiling.

Renderers take the document and return rich renderables (``bench_renderables``) or plain
text (``bench_text``); they do no I/O. Every column carries its unit, every table fits 80
columns (long cells wrap), and a field a section lacks prints "-" instead of failing.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from perfscope.units import fmt_bytes, fmt_time

_PREFIXES = ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""))


def _rate(v: Any, unit: str) -> str:
    """3 significant digits under the prefix they round to (999.97 MB/s is "1 GB/s")."""
    if not isinstance(v, (int, float)) or not v:
        return "-"
    for scale, p in _PREFIXES:
        if abs(v) >= scale * 0.9995:
            return f"{v / scale:.3g} {p}{unit}"
    return f"{v:.3g} {unit}"


def _time(v: Any) -> str:
    return fmt_time(float(v)) if isinstance(v, (int, float)) and v else "-"


def shape_text(sh: Mapping[str, Any] | None) -> str:
    """A shape in a few characters: GEMM m x n x k, attention b/q/kv/heads/d, rows x width."""
    sh = dict(sh or {})
    g = sh.get
    if {"m", "n", "k"} <= set(sh):
        lead = f"{g('groups')}x " if g("groups", 1) != 1 else ""
        return f"{lead}{g('m')}x{g('n')}x{g('k')}"
    if "heads" in sh:
        parts = [f"b{g('batch', '?')}"]
        if "q_len" in sh:
            parts.append(f"q{g('q_len')}")
        if "kv_len" in sh:
            parts.append(f"kv{g('kv_len')}")
        elif "max_len" in sh:
            parts.append(f"kv<={g('max_len')}")
        parts.append(f"h{g('heads')}/{g('kv_heads', '?')}")
        d = g("head_dim_qk", g("head_dim"))
        if d is not None:
            parts.append(f"d{d}")
        return " ".join(parts)
    if "tokens" in sh and ("width" in sh or "hidden" in sh):
        return f"{g('tokens')}x{g('width', g('hidden'))}"
    if "elements" in sh:
        return f"{g('elements')} el"
    return " ".join(f"{k}={v}" for k, v in sh.items()) or "-"


def _table(title: str, cols: list[tuple[str, str]], caption: str | None = None) -> Any:
    """Left-justified columns hold names and shapes and may fold; right-justified ones hold
    numbers with units and never wrap, nor does the first (the name): the shapes fold first
    (no vertical rules: 80 columns go to the data)."""
    from rich.table import Table

    from perfscope.report.tables import head_rule_box

    t = Table(title=title, title_justify="left", caption=caption, caption_justify="left",
              box=head_rule_box(), pad_edge=False)
    for i, (name, justify) in enumerate(cols):  # the name column shrinks last
        t.add_column(name, justify=justify, overflow="fold",  # type: ignore[arg-type]
                     no_wrap=justify == "right" or i == 0)
    return t


def ceilings_table(sec: Mapping[str, Any]) -> Any:
    rounds = sec.get("rounds")
    t = _table("measured ceilings", [("ceiling", "left"), ("value", "right"),
                                     ("worst round", "right"), ("spread", "right"),
                                     ("shape", "left")],
               caption=f"value: the best of {rounds} rounds (a roof is what the machine "
                       "reached); a wide spread means the machine was busy" if rounds else None)
    for c in sec.get("values", []):
        unit = "FLOP/s" if c.get("unit") == "FLOP/s" else "B/s"
        spread = c.get("spread")
        t.add_row(str(c.get("name")), _rate(c.get("value"), unit), _rate(c.get("low"), unit),
                  f"{100 * spread:.0f}%" if isinstance(spread, (int, float)) else "-",
                  shape_text(c.get("shape")))
    return t


BOUND = {"memory": "mem", "compute": "comp", "comm": "link"}


def _pct(p: Mapping[str, Any]) -> str:
    """Share of the roof reached, with the bound; "above*" where the point beat its roof."""
    ex = p.get("extra") or {}
    pct = p.get("pct_of_roof")
    bound = BOUND.get(ex.get("bound", ""), ex.get("bound", ""))
    if not isinstance(pct, (int, float)):
        return "-"
    return f"{'above*' if ex.get('above_roof') else f'{pct:.0f}%'} {bound}".strip()


def ops_tables(sec: Mapping[str, Any]) -> list[Any]:
    """One table per phase: op, shape run, median time, the rate of its bound (bytes/s when
    memory-bound, FLOP/s otherwise), and the share of the roof (predicted / measured time)."""
    roof = sec.get("roof") or f"{sec.get('hardware')} {sec.get('ceiling')}"
    by_phase: dict[str, list[Mapping[str, Any]]] = {}
    for p in sec.get("points", []):
        by_phase.setdefault((p.get("extra") or {}).get("phase", ""), []).append(p)
    out = []
    for i, (phase, pts) in enumerate(by_phase.items()):
        notes = []
        last = i == len(by_phase) - 1
        if last and sec.get("scaling"):
            notes.append(f"shapes: {sec['scaling']}")
        if last and sec.get("roof_note"):
            notes.append(f"* {sec['roof_note']}")
        t = _table(f"ops of {sec.get('model', '?')}" + (f", {phase}" if phase else "") +
                   f" (roof: {roof})",
                   [("op", "left"), ("shape run", "left"), ("median", "right"),
                    ("achieved", "right"), ("% of roof", "right")],
                   caption="\n".join(notes) or None)
        for p in pts:
            ex = p.get("extra") or {}
            name = str(p.get("name")) + (f" b={ex['sweep_batch']}" if ex.get("sweep_batch")
                                         else "")
            achieved = _rate(p.get("achieved_bytes_per_s"), "B/s") \
                if ex.get("bound") == "memory" else _rate(p.get("achieved_flops_per_s"),
                                                          "FLOP/s")
            t.add_row(name, shape_text(p.get("shape")),
                      _time((p.get("stats") or {}).get("median_s")), achieved, _pct(p))
        out.append(t)
    return out


def kernels_table(sec: Mapping[str, Any]) -> Any:
    """Memory-bound kernels: their bytes/s is the figure to read (FLOP/s is in the data)."""
    t = _table("reference kernels", [("kernel", "left"), ("impl", "left"), ("dtype", "left"),
                                     ("shape", "left"), ("median", "right"),
                                     ("bytes/s", "right")])
    for p in sec.get("points", []):
        ex = p.get("extra") or {}
        name = str(p.get("name"))
        impl = ex.get("impl", "")
        if impl and name.endswith(f".{impl}"):
            name = name[: -len(impl) - 1]
        t.add_row(name, impl or "-", str(p.get("dtype", "-")), shape_text(p.get("shape")),
                  _time((p.get("stats") or {}).get("median_s")),
                  _rate(p.get("achieved_bytes_per_s"), "B/s"))
    return t


def comm_table(sec: Mapping[str, Any]) -> Any:
    """nccl-tests' columns: size, time, algbw, busbw (and the share of a link's bandwidth)."""
    res = sec.get("results", [])
    link = any("fraction_of_link" in r for r in res)
    cols = [("collective", "left"), ("size", "right"), ("ranks", "right"),
            ("time", "right"), ("algbw", "right"), ("busbw", "right")]
    if link:
        cols.append(("% link", "right"))
    title = (f"collectives: {sec.get('backend', '?')} between {sec.get('ranks', '?')} "
             f"{'GPUs' if sec.get('device') == 'cuda' else 'CPU processes'}")
    t = _table(title, cols, caption=sec.get("note"))
    for r in res:
        row = [str(r.get("op")), fmt_bytes(float(r.get("size_bytes") or 0)),
               str(r.get("ranks", "-")), _time(r.get("median_s")),
               _rate(r.get("algbw_bytes_s"), "B/s"), _rate(r.get("busbw_bytes_s"), "B/s")]
        if link:
            f = r.get("fraction_of_link")
            row.append(f"{100 * f:.0f}%" if isinstance(f, (int, float)) else "-")
        t.add_row(*row)
    return t


def header(doc: Mapping[str, Any]) -> str:
    dev = doc.get("device") or {}
    n = doc.get("threads")
    threads = f", {n} thread{'s' if n != 1 else ''}" if n else ""
    mode = "quick" if doc.get("quick") else "full"
    return (f"perfscope bench on {dev.get('name', '?')} ({dev.get('kind', '?')}{threads}), "
            f"{mode}, {doc.get('duration_s', 0):.0f} s")


def bench_renderables(doc: Mapping[str, Any]) -> list[Any]:
    """The header, one table per section present, and the skipped lines."""
    from rich.text import Text

    out: list[Any] = [Text(header(doc))]
    if (doc.get("ceilings") or {}).get("values"):
        out.append(ceilings_table(doc["ceilings"]))
    if (doc.get("ops") or {}).get("points"):
        out.extend(ops_tables(doc["ops"]))
    if (doc.get("kernels") or {}).get("points"):
        out.append(kernels_table(doc["kernels"]))
    if (doc.get("comm") or {}).get("results"):
        out.append(comm_table(doc["comm"]))
    saved = (doc.get("ceilings") or {}).get("saved_spec")
    if saved:
        out.append(Text(f"measured spec saved to {saved} (use it with --hw local or --hw "
                        f"{saved})"))
    skipped = doc.get("skipped") or []
    if skipped:
        out.append(Text(f"skipped ({len(skipped)}):\n" + "\n".join(
            f"  {s.get('section')}: {s.get('message')}" for s in skipped)))
    return out


def bench_text(doc: Mapping[str, Any], width: int = 100) -> str:
    """The tables as plain text ``width`` columns wide (for files and pipes)."""
    from rich.console import Console

    buf = io.StringIO()
    con = Console(file=buf, width=width, highlight=False, color_system=None,
                  force_terminal=False)
    for r in bench_renderables(doc):
        con.print(r)
    return buf.getvalue()
