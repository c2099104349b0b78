"""Terminal tables (rich). Renderers take results and a width and return renderables; the CLI
prints them. Columns are chosen to fit the width (least important dropped first), numbers
never wrap, names are never cut, rows are sorted by their share of the step.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from perfscope.report import fmt as F

if TYPE_CHECKING:
    from perfscope.analysis import Analysis

US = "us"  # the terminal spells micro as 'u' (plain ASCII survives every pipe)


def t_s(x: float | None) -> str:
    return F.seconds(x, micro=US)


@dataclass(frozen=True)
class Col:
    """One column: ``keep`` ranks it (0 is never dropped; higher goes first)."""

    header: str
    keep: int = 0
    right: bool = True
    wrap: bool = False  # long prose (paths, sources) may wrap; numbers never do


def wrap_fields(fields: Sequence[str], width: int, sep: str = "   ") -> list[str]:
    """Join ``fields`` into lines no wider than ``width``, breaking only between fields, so a
    number and its unit always stay on one line."""
    lines: list[str] = []
    cur = ""
    for f in fields:
        if not f:
            continue
        if cur and len(cur) + len(sep) + len(f) > width:
            lines.append(cur)
            cur = f
        else:
            cur = f if not cur else cur + sep + f
    if cur:
        lines.append(cur)
    return lines


def _measure(table: Any) -> int:
    from rich.console import Console
    from rich.measure import Measurement

    con = Console(width=100_000, file=io.StringIO())
    return Measurement.get(con, con.options, table).maximum


def head_rule_box() -> Any:
    """rich's SIMPLE_HEAD drawn in ASCII: a dashed rule under the header and nothing else, so
    every character of a table is one byte wide in pipes, files and byte-counting tools."""
    from rich.box import Box

    return Box("    \n    \n -- \n    \n    \n    \n    \n    \n", ascii=True)


def fit_table(cols: Sequence[Col], rows: Sequence[Sequence[Any]], width: int,
              styles: Sequence[str | None] | None = None, header: bool = True) -> Any:
    """A rich Table of ``rows`` with the columns that fit in ``width``. Cells may be str or
    rich Text; every cell is kept on one line."""
    from rich.table import Table

    keep = list(range(len(cols)))
    rule = head_rule_box()

    def build(idx: list[int]) -> Any:
        t = Table(box=rule, pad_edge=False, padding=(0, 1), show_edge=False,
                  collapse_padding=True, show_header=header)
        for i in idx:
            c = cols[i]
            t.add_column(c.header, justify="right" if c.right else "left", no_wrap=not c.wrap)
        for j, r in enumerate(rows):
            t.add_row(*[r[i] for i in idx], style=styles[j] if styles else None)
        return t

    table = build(keep)
    if any(c.wrap for c in cols):
        return table  # rich wraps the prose column to fit
    while _measure(table) > width:
        droppable = [i for i in keep if cols[i].keep > 0]
        if not droppable:
            break
        keep.remove(max(droppable, key=lambda i: (cols[i].keep, i)))
        table = build(keep)
    return table


def lines(texts: Sequence[str]) -> list[Any]:
    from rich.text import Text

    return [Text(t, no_wrap=True, overflow="ignore") for t in texts]


# ---- perfscope analyze: one step ------------------------------------------------------

CEILING_WORDS = {"spec": "spec ceilings (upper-bound speed)",
                 "empirical": "empirical ceilings (expected speed)"}


def _link_of(a: Analysis, p: Any) -> str:
    row_link = getattr(p, "link", None)  # issue 6: each comm point names its link
    if isinstance(row_link, str) and row_link:
        return row_link
    return a.hw.gpu_link.name if a.hw.gpu_link else "link"


def _shape(shape: Any) -> str:
    sh = dict(shape or {})
    if {"m", "n", "k"} <= set(sh):
        g = f"{sh['groups']}x " if sh.get("groups", 1) != 1 else ""
        return f"{g}{sh['m']}x{sh['n']}x{sh['k']}"
    if "heads" in sh:
        return f"b{sh.get('batch')} q{sh.get('q_len')} kv{sh.get('kv_len')}"
    if "bytes" in sh:
        return f"{F.nbytes(sh['bytes'])} x{sh.get('ranks', '')}"
    return " ".join(f"{v}" for v in sh.values())


def op_groups(a: Analysis) -> list[tuple[str, float, list[Any]]]:
    """Points grouped by kind, kinds by their share of the step, ops by theirs."""
    groups: dict[str, list[Any]] = {}
    for p in a.points:
        groups.setdefault(p.op.kind, []).append(p)
    out = [(k, sum(p.total_time_s for p in ps),
            sorted(ps, key=lambda p: (-p.total_time_s, p.op.name))) for k, ps in groups.items()]
    return sorted(out, key=lambda g: (-g[1], g[0]))


def analysis_renderables(a: Analysis, width: int, other: Analysis | None = None,
                         doc: dict[str, Any] | None = None) -> list[Any]:
    """The op table (grouped by kind, sorted by share, a subtotal per kind) and the step's
    totals and memory. ``other``: the same step at the other ceiling, shown beside; ``doc``:
    the analysis document with a ``calibration`` block (its calibrated step is shown)."""
    from rich.text import Text

    s, t, _mem, pr = a.scenario, a.totals, a.memory, a.precision
    lengths = f"prompt {s.seq_len}" if s.phase == "prefill" else \
        f"{s.seq_len} new tokens after {s.context_len} cached" if s.phase == "chunked_prefill" \
        else f"context {s.context_len}"
    head = wrap_fields([f"{a.model.name} on {a.hw.display_name}",
                        f"{s.phase} batch {s.batch}, {lengths}",
                        f"{pr.scheme or pr.weight};",
                        f"weights {pr.weight} ({pr.weight_source}),",
                        f"activations {pr.act}, KV {pr.kv}",
                        f"TP {s.tp} PP {s.pp} EP {s.ep}"
                        + (f" attention-DP {s.attn_dp}" if s.attn_dp > 1 else ""),
                        f"times at {CEILING_WORDS[s.ceiling]}"], width)
    cols = [Col("op", 0, right=False), Col("count", 4), Col("time", 5), Col("x count", 0),
            Col("share", 0), Col("bound", 1, right=False), Col("FLOP", 6), Col("bytes", 6),
            Col("FLOP/B", 2), Col("attainable", 7), Col("shape", 8, right=False)]
    rows: list[list[Any]] = []
    styles: list[str | None] = []
    total = t.time_s or 1.0
    for kind, ktime, pts in op_groups(a):
        kflops = sum(p.op.flops * p.op.count for p in pts)
        kbytes = sum((p.op.comm_bytes if p.op.unit == "link" else p.op.bytes) * p.op.count
                     for p in pts)
        rows.append([Text(f"{kind} ({len(pts)})"), "", "", t_s(ktime), F.pct(ktime / total),
                     "", F.si(kflops), F.nbytes(kbytes), "", "", ""])
        styles.append("bold")
        for p in pts:
            op = p.op
            link = op.unit == "link"
            rows.append([
                "  " + op.name, str(op.count), t_s(p.time_s), t_s(p.total_time_s),
                F.pct(p.total_time_s / total),
                f"comm: {_link_of(a, p)}" + (f" {p.algorithm}" if p.algorithm else "")
                if link else p.bound,
                "-" if link else F.si(op.flops),
                F.nbytes(op.comm_bytes) + " link" if link else F.nbytes(op.bytes),
                "-" if link else F.intensity(p.intensity),
                "-" if link else F.rate(p.attainable_flops_per_s),
                _shape(op.shape)])
            styles.append(None)
    table = fit_table(cols, rows, width, styles)
    notes = [f"note: {n}" for n in pr.notes]
    if doc is not None and "calibration" in doc:
        c = doc["calibration"]
        notes.insert(0, f"calibrated by {c['file']} (fitted on {c['hardware']}, "
                        f"{c['ceiling']} ceilings): step {t_s(c['time_s'])} = ops "
                        f"{t_s(c['ops_time_s'])} + framework {t_s(c['framework_time_s'])}")
        notes += [f"note: {n}" for n in c["notes"]]
    return [*lines(head), table, *lines(step_lines(a, width, other)),
            *lines([w for n in notes for w in wrap_fields(n.split(" "), width, sep=" ")])]


def step_lines(a: Analysis, width: int, other: Analysis | None = None) -> list[str]:
    """Totals and memory of one step, as lines that fit ``width``."""
    s, t, mem = a.scenario, a.totals, a.memory
    gpus = s.tp * s.attn_dp * s.pp
    what = {"prefill": "TTFT (prefill of the whole batch, no queueing)",
            "decode": f"TPOT (one decode step at context {s.context_len})",
            "chunked_prefill": "chunk step"}[s.phase]
    step = [f"{what}: {t_s(t.time_s)} at {CEILING_WORDS[s.ceiling]}"]
    fixed = sum(p.overhead_s * p.op.count for p in a.points if p.bound != "comm")
    if fixed:
        step.append(f"(incl. {t_s(fixed)} fixed per-kernel cost)")
    if other is not None:
        step.append(f"{t_s(other.totals.time_s)} at {CEILING_WORDS[other.scenario.ceiling]}")
    fields = [f"{t.bound}-bound", f"{F.si(t.flops, 'FLOP')} and {F.nbytes(t.bytes)} per GPU",
              f"MFU {F.pct(t.mfu)}", f"MBU {F.pct(t.mbu)}",
              f"{F.num(t.tokens_per_s)} tokens/s for the batch"
              + (f" ({F.num(t.tokens_per_s / gpus)} per GPU)" if gpus > 1 else " (1 GPU)")]
    if s.phase == "decode":
        fields.append(f"{F.num(1 / t.time_s if t.time_s else 0)} tokens/s per user")
    fit = "fits" if mem.fits else "DOES NOT FIT"
    memory = [f"memory per GPU: weights {F.nbytes(mem.weights_bytes)}",
              f"+ KV cache {F.nbytes(mem.kv_cache_bytes)}",
              f"+ activations {F.nbytes(mem.activation_peak_bytes)}",
              f"= {F.nbytes(mem.total_bytes)} of {F.nbytes(mem.usable_bytes)} usable "
              f"({mem.reserve_fraction:.0%} reserve): {fit}",
              f"largest batch that fits: {mem.max_batch}"]
    return [*wrap_fields(step, width), *wrap_fields(fields, width),
            *wrap_fields(memory, width, sep=" "),
            *wrap_fields([f"params {F.num(a.model.params / 1e9)} B",
                          f"active {F.num(a.model.active_params / 1e9)} B"], width)]


# ---- perfscope analyze with lists: one row per point --------------------------------------

def sweep_renderables(rows: Sequence[dict[str, Any]], axes: Sequence[str], fixed: str,
                      width: int) -> list[Any]:
    """One row per point of a sweep; ``axes`` are the varied parameters (shown first)."""
    label = {"model": "model", "hardware": "hw", "phase": "phase", "batch": "batch",
             "seq_len": "seq", "context_len": "ctx", "tp": "TP", "pp": "PP", "ep": "EP",
             "weight_dtype": "weights", "act_dtype": "act", "kv_dtype": "KV",
             "ceiling": "ceiling"}
    cols = [Col(label.get(x, x), 0, right=x in ("batch", "seq_len", "context_len", "tp",
                                                    "pp", "ep")) for x in axes]
    cols += [Col("step time", 0), Col("bound", 0, right=False), Col("tok/s", 1),
             Col("tok/s/GPU", 3), Col("tok/s/user", 2), Col("MFU", 5), Col("MBU", 5),
             Col("memory/GPU", 4), Col("fits", 1, right=False), Col("max batch", 2)]
    body: list[list[str]] = []
    for r in rows:
        cells = [str(r.get(x)) for x in axes]
        if r.get("error"):
            body.append([*cells, "-", "n/a", "-", "-", "-", "-", "-", "-", "-", "-"])
            continue
        per_user = r.get("tokens_per_s_per_user")
        body.append([*cells, t_s(r["time_s"]), r["bound"], F.num(r["tokens_per_s"]),
                     F.num(r["tokens_per_s_per_gpu"]), F.num(per_user) if per_user else "-",
                     F.pct(r["mfu"]), F.pct(r["mbu"]), F.nbytes(r["memory_total_bytes"]),
                     "yes" if r["fits"] else "NO", str(r["max_batch"])])
    out: list[Any] = [*lines(wrap_fields([fixed], width) if fixed else []),
                      fit_table(cols, body, width)]
    errs = [f"{', '.join(str(r.get(x)) for x in axes)}: {r['error']}"
            for r in rows if r.get("error")]
    notes = ["tok/s: new tokens per second of the whole batch; tok/s/user: decode only "
             "(1 / step time)"] + [f"n/a {e}" for e in errs]
    out += lines([line for n in notes for line in _wrap_words(n, width)])
    return out


def _wrap_words(text: str, width: int) -> list[str]:
    return wrap_fields(text.split(" "), width, sep=" ")


def render_text(render: Callable[[int], list[Any]], width: int) -> str:
    """Plain text of what ``render(width)`` returns (for tests and files)."""
    from rich.console import Console

    con = Console(record=True, width=width, file=io.StringIO(), color_system=None,
                  highlight=False, soft_wrap=False)
    for r in render(width):
        con.print(r)
    return con.export_text()
