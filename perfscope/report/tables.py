"""Rich tables for the terminal."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from perfscope.units import fmt_bytes, fmt_time, si

if TYPE_CHECKING:
    from perfscope.analysis import Analysis


def analysis_table(a: Analysis, output: Path | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    from perfscope.cli.output import console, write_atomic

    s, t, mem = a.scenario, a.totals, a.memory
    lengths = f"prompt {s.seq_len}" if s.phase != "decode" else f"context {s.context_len}"
    title = (f"{a.model.name} on {a.hw.display_name} | {s.phase} batch {s.batch} {lengths}"
             f" | w {a.precision.weight} a {a.precision.act} kv {a.precision.kv}"
             f" | tp {s.tp} pp {s.pp} ep {s.ep} | {s.ceiling} ceilings")
    tab = Table(title=title, title_justify="left")
    for col in ("op", "kind", "x", "FLOP", "bytes", "FLOP/B", "attainable", "time", "x count",
                "share", "bound"):
        tab.add_column(col, justify="left" if col in ("op", "kind", "bound") else "right",
                       no_wrap=col == "op",
                       min_width=max(len(p.op.name) for p in a.points) if col == "op" else None)
    for p in a.points:
        op = p.op
        tab.add_row(op.name, op.kind, str(op.count), si(op.flops), fmt_bytes(op.bytes)
                    if op.unit != "link" else fmt_bytes(op.comm_bytes) + " link",
                    f"{p.intensity:.3g}" if op.unit != "link" else "-",
                    si(p.attainable_flops_per_s, "FLOP/s") if op.unit != "link" else "-",
                    fmt_time(p.time_s), fmt_time(p.total_time_s),
                    f"{p.total_time_s / t.time_s:.1%}" if t.time_s else "-", p.bound)
    lines = [
        f"step time {fmt_time(t.time_s)} ({t.bound}-bound)   {si(t.flops, 'FLOP')}   "
        f"{fmt_bytes(t.bytes)} moved   MFU {t.mfu:.1%}   MBU {t.mbu:.1%}   "
        f"{t.tokens_per_s:,.0f} tokens/s",
        f"memory per GPU: weights {fmt_bytes(mem.weights_bytes)} + "
        f"KV {fmt_bytes(mem.kv_cache_bytes)}"
        f" + activations {fmt_bytes(mem.activation_peak_bytes)} = {fmt_bytes(mem.total_bytes)}"
        f" of {fmt_bytes(mem.usable_bytes)} usable ({mem.reserve_fraction:.0%} reserve): "
        f"{'fits' if mem.fits else 'DOES NOT FIT'}; largest batch that fits: {mem.max_batch}",
        f"params {a.model.params / 1e9:.3f} B (active {a.model.active_params / 1e9:.3f} B)",
    ]
    if output is None:
        con = console()
        con.print(tab)
        for line in lines:
            con.print(line)
    else:
        con = Console(record=True, width=160, file=open("/dev/null", "w"))  # noqa: SIM115
        con.print(tab)
        for line in lines:
            con.print(line)
        write_atomic(output, con.export_text())
