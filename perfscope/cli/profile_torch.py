"""perfscope profile --torch-model / --module: thin glue (parse, call the library, render).

The library is perfscope.measure.torchprof; this module checks the options before any work,
runs it, writes the Chrome trace and the calibration atomically, and renders table / json /
csv (perfscope.profile/1).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from perfscope.cli.output import check_format, emit, log, to_csv_text, to_json_text
from perfscope.cli.profile import ProfileArgs
from perfscope.errors import InputError
from perfscope.units import fmt_time, si


def _check_folder(path: Path | None, flag: str) -> None:
    """Fail before minutes of profiling, not after: the output folder must exist."""
    if path is not None and not Path(path).parent.is_dir():
        raise InputError(f"{flag} {path}: the folder {Path(path).parent} does not exist; "
                         "create it first or choose another path")


def run(args: ProfileArgs) -> None:
    from perfscope.measure.torchprof.profile import (
        ProfileOptions,
        check_torch,
        fit_from_profiles,
        profile_module,
        profile_transformers,
        validate_options,
    )

    fmt = args.fmt or "table"
    if fmt == "html":
        raise InputError("--format html is the report of plain perfscope profile; with "
                         "--torch-model or --module use table, json or csv")
    check_format(fmt)
    if args.torch_model and args.module:
        raise InputError("--torch-model and --module: choose one")
    check_torch(transformers=args.torch_model)
    for path, flag in ((args.output, "--output"), (args.trace, "--trace"),
                       (args.calibration_out, "--calibration-out")):
        _check_folder(path, flag)
    if args.hw_given and "," in args.hw:
        raise InputError(f"--hw {args.hw}: with --torch-model or --module, predictions are for "
                         "one device; give one name or spec file")
    if args.module and args.calibration_out:
        raise InputError("--calibration-out fits predictions of the analytic graph: use it "
                         "with --torch-model")
    cal = None
    if args.calibration is not None:
        from perfscope.calibration import load_calibration

        cal = load_calibration(args.calibration)
    phases = tuple(p.strip() for p in args.phases.split(",") if p.strip())
    opts = ProfileOptions(device=args.device, dtype=args.dtype, attn=args.attn_impl,
                          batch=args.batch, seq_len=args.isl, context_len=args.context_len,
                          phases=phases, warmup=args.warmup, repeat=args.repeat,
                          trace=args.trace is not None, hw=args.hw if args.hw_given else None,
                          layers=args.layers, calibration=cal, threads=args.threads)
    validate_options(opts)
    what = args.module if args.module else args.model
    steps = ", ".join(phases) if args.torch_model else "forward"
    log(f"perfscope profile: profiling {what} ({steps}, {opts.repeat} steps after "
        f"{opts.warmup} warm-up)")
    result = profile_module(args.module, opts) if args.module else \
        profile_transformers(args.model, opts)
    if args.trace is not None and result.trace_json is not None:
        from perfscope.io import write_atomic

        write_atomic(args.trace, result.trace_json, what="--trace")
        log(f"wrote {args.trace} (Chrome trace: chrome://tracing or ui.perfetto.dev)")
    if args.calibration_out is not None:
        from perfscope.io import write_atomic

        fitted = fit_from_profiles([result])
        write_atomic(args.calibration_out, to_json_text(fitted.to_json()),
                     what="--calibration-out")
        e = fitted.fit_error
        log(f"wrote {args.calibration_out}: {len(fitted.kinds)} kinds; step error "
            f"{e.get('step_mean_abs_rel_error_before', 0):.0%} uncalibrated -> "
            f"{e.get('step_mean_abs_rel_error', 0):.0%} calibrated (in-sample: profile more "
            "shapes to see how it holds on others)")
    data = result.to_json()
    if fmt == "json":
        emit(to_json_text(data), args.output)
    elif fmt == "csv":
        emit(to_csv_text(_csv_rows(data["ops"])), args.output)
    else:
        _table(data, args.output)


def _csv_rows(ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: (";".join(v) if isinstance(v, list) else v) for k, v in o.items()} for o in ops]


# ---- the table (fits 80 columns) ----------------------------------------------------------

_MARK = {"equal": "=", "differs": "!", "blind spot": "?"}


def _t(x: float | None) -> str:
    return fmt_time(x) if x is not None else "-"


def _width() -> int:
    try:
        return int(os.environ.get("COLUMNS", "")) or os.get_terminal_size().columns
    except (ValueError, OSError):
        return 80


def _table(data: dict[str, Any], output: Path | None) -> None:
    from rich.console import Console
    from rich.table import Table

    from perfscope.report.tables import head_rule_box

    width = 80 if output is not None else max(60, min(_width(), 120))
    con = Console(width=width, record=output is not None, highlight=False, soft_wrap=False,
                  file=open(os.devnull, "w") if output is not None else None)  # noqa: SIM115
    m, hw, dev, cfg = data["model"], data["hardware"], data["device"], data["config"]
    n_l = m.get("layers")
    layers = f", {n_l} layer{'s' if n_l != 1 else ''}" if n_l else ""
    n = dev.get("torch_threads")
    con.print(f"{m['name']}{layers} on {dev.get('name', dev.get('device'))} "
              f"({dev.get('device')}, {cfg['dtype']}, {n} thread{'' if n == 1 else 's'})")
    con.print(f"roofline: {hw['display_name']}: {si(hw['peak_flops_per_s'], 'FLOP/s')}, "
              f"{si(hw['memory_bandwidth_bytes_s'], 'B/s')}")
    calibrated = any("calibrated_time_s" in o for o in data["ops"])
    for ph in data["phases"]:
        shape = ph["shape"]
        step = ph["step_time_s"]
        title = f"{ph['phase']}"
        if shape:
            title += (f": batch {shape['batch']}, " + (f"prompt {shape['seq_len']}"
                      if ph["phase"] == "prefill" else f"context {shape['context_len']}"))
        tab = Table(title=title, title_justify="left", box=head_rule_box(), pad_edge=False,
                    show_edge=False)
        tab.add_column("op", no_wrap=True, overflow="ellipsis", max_width=24)
        tab.add_column("FLOP", justify="right", no_wrap=True)
        tab.add_column("measured", justify="right", no_wrap=True)
        tab.add_column("predicted", justify="right", no_wrap=True)
        if calibrated:
            tab.add_column("calibrated", justify="right", no_wrap=True)
        tab.add_column("x pred", justify="right", no_wrap=True)
        tab.add_column("share", justify="right", no_wrap=True)
        total = step["median_s"]
        for o in (o for o in data["ops"] if o["phase"] == ph["phase"]):
            meas, pred = o["measured_time_s"], o["predicted_time_s"]
            flops = o["analytic_flops"] if o["analytic_flops"] is not None else \
                o["profiled_flops"]
            cells = [o["name"], (si(flops) + _MARK.get(o["flops_check"], " ")) if flops
                     else "-", _t(meas), _t(pred)]
            if calibrated:
                cells.append(_t(o.get("calibrated_time_s")))
            cells += [f"{meas / pred:.3g}" if meas and pred else "-",
                      f"{meas / total:.0%}" if meas and total else "-"]
            tab.add_row(*cells)
        con.print(tab)
        line = (f"step {fmt_time(total)} measured (p20-p80 {fmt_time(step['p20_s'])}-"
                f"{fmt_time(step['p80_s'])}, n={step['n']})")
        if ph.get("predicted_time_s") is not None:
            line += f", {fmt_time(ph['predicted_time_s'])} predicted"
        if ph.get("calibrated_time_s") is not None:
            line += f", {fmt_time(ph['calibrated_time_s'])} calibrated"
        con.print(line)
        eff = ph.get("efficiency_by_kind") or {}
        if eff:
            con.print("roofline efficiency: " + ", ".join(
                f"{k} {v['efficiency']:.1%}" for k, v in sorted(eff.items())))
    if any(o["analytic_flops"] is not None for o in data["ops"]):
        con.print("FLOP: analytic count; = FlopCounterMode agrees, ! differs, ? counts "
                  "nothing (a blind spot); see the JSON notes")
    else:
        con.print("FLOP: FlopCounterMode's count (matrix products and attention only)")
    for n in data["notes"]:
        con.print(f"note: {n}")
    if output is not None:
        from perfscope.cli.output import write_atomic

        write_atomic(output, con.export_text())
        log(f"wrote {output}")
