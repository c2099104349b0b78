"""perfscope predict: TTFT, TPOT, throughput and memory of one serving configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from perfscope.cli.output import (
    check_format,
    emit,
    serving_lengths,
    to_csv_text,
    to_json_text,
)

ModelOpt = Annotated[str, typer.Option("--model", "-m",
                                       help="Built-in model name or config.json path.")]
HwOpt = Annotated[str, typer.Option("--hw", help="Built-in device name or spec .toml path.")]
FormatOpt = Annotated[str, typer.Option("--format", "-f", help="table | json | csv")]
OutputOpt = Annotated[Path | None, typer.Option("--output", "-o",
                                                help="Write to this file (atomically).")]
EngineOpt = Annotated[str, typer.Option(
    help="trtllm | vllm | sglang | neutral: scheduler defaults and calibrated overheads of "
         "that engine (perfscope/serving/engines.toml).")]
CeilingOpt = Annotated[str, typer.Option(help="empirical (measured roofs, calibrated) | spec "
                                              "(datasheet roofs: an optimistic bound)")]
CalibrationOpt = Annotated[Path | None, typer.Option(
    help="Price every step with this perfscope.calibration/1 file (perfscope profile "
         "--torch-model --calibration-out FILE) instead of the engine's fitted kernel "
         "efficiencies.")]


def one_blas_thread() -> None:
    """Keep numpy's BLAS on one thread unless the user says otherwise (before numpy loads):
    the serving model multiplies many small matrices, where threads cost more than they save,
    and far more on a shared machine (DeepSeek-V3 on 8 x H200: 0.7 ms per step grid on one
    thread against 16 ms on two contended ones)."""
    import os

    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")


def predict_cmd(
    model: ModelOpt = "llama-3.1-8b",
    hw: HwOpt = "h100-sxm",
    tp: Annotated[int, typer.Option(help="Tensor-parallel degree.")] = 1,
    pp: Annotated[int, typer.Option(help="Pipeline-parallel degree.")] = 1,
    ep: Annotated[int, typer.Option(help="Expert-parallel degree (MoE).")] = 1,
    dp: Annotated[int, typer.Option(help="Data-parallel replicas sharing the traffic.")] = 1,
    attn_dp: Annotated[int, typer.Option(help="Data-parallel attention groups inside a "
                                              "replica (MoE with expert parallelism).")] = 1,
    moe_comm: Annotated[str | None, typer.Option(
        help="Under --attn-dp: all_to_all | allgather_reducescatter (default: the engine's; "
             "vLLM gathers, the others dispatch all-to-all).")] = None,
    isl: Annotated[int | None, typer.Option(
        help="Input (prompt) tokens per request. [default: 1024]")] = None,
    osl: Annotated[int | None, typer.Option(
        help="Output tokens per request. [default: 1024]")] = None,
    concurrency: Annotated[int | None, typer.Option(
        help="Requests in flight (benchmark concurrency, all replicas; a closed loop). "
             "[default: 1]")] = None,
    rate: Annotated[float | None, typer.Option(
        help="Instead of --concurrency: requests per second over all replicas, arriving at "
             "random (Poisson; an open loop). The concurrency is what the rate sustains.")
    ] = None,
    num_prompts: Annotated[int | None, typer.Option(
        help="Requests in the whole closed-loop run, as the benchmark's --num-prompts: the "
             "first wave queues, later requests arrive staggered (default: the calibration's "
             "convention, 10 per client).")] = None,
    weight_dtype: Annotated[str | None, typer.Option(help="bf16 fp16 fp8 int8 int4")] = None,
    act_dtype: Annotated[str | None, typer.Option(help="bf16 fp16 fp8 int8")] = None,
    kv_dtype: Annotated[str | None, typer.Option(help="bf16 fp16 fp8 int8")] = None,
    group_size: Annotated[int | None, typer.Option(help="Weight quantization group.")] = None,
    engine: EngineOpt = "neutral",
    ceiling: CeilingOpt = "empirical",
    calibration: CalibrationOpt = None,
    fmt: FormatOpt = "table",
    output: OutputOpt = None,
) -> None:
    """Serving under load: time to first token (with the queueing of prompts that arrive
    together), time per output token, end-to-end latency, tokens/s per GPU and per user,
    memory per GPU, and how uncertain each is."""
    one_blas_thread()
    from perfscope.serving.predict import Layout, Workload, predict
    from perfscope.specs.loading import load_hw
    from perfscope.specs.model import load_model

    check_format(fmt)
    if rate is not None and concurrency is not None:
        from perfscope.errors import InputError

        raise InputError("--rate and --concurrency: give one (a request rate is an open loop, "
                         "a concurrency a closed one)")
    cal = None
    if calibration is not None:
        from perfscope.calibration import load_calibration

        cal = load_calibration(calibration)  # a bad file fails before any work
    m = load_model(model)
    isl, osl = serving_lengths(m, isl, osl, "predict")
    p = predict(m, load_hw(hw), Layout(tp, pp, ep, dp, attn_dp, moe_comm),
                Workload(isl, osl, 1 if concurrency is None else concurrency, rate,
                         num_prompts), engine=engine,
                weight_dtype=weight_dtype, act_dtype=act_dtype, kv_dtype=kv_dtype,
                group_size=group_size,
                ceiling=ceiling, calibration=cal,
                calibration_file=str(calibration) if calibration else None)
    data = p.to_json()
    if fmt == "json":
        emit(to_json_text(data), output)
    elif fmt == "csv":
        emit(to_csv_text([csv_row(data)]), output)
    else:
        emit(render_table(data), output)


def csv_row(d: dict[str, Any]) -> dict[str, Any]:
    """The scalar fields of perfscope.predict/1, config flattened, one row."""
    row: dict[str, Any] = {"model": d["model"]["name"], "hardware": d["hardware"]["name"]}
    row.update(d["config"])
    for k in ("ttft_s", "tpot_s", "e2e_s", "tokens_per_s_per_gpu", "tokens_per_s_per_user",
              "memory_per_gpu_bytes", "fits", "ceiling", "ttft_burst_s", "ttft_steady_s",
              "queue_s", "decode_step_s", "prefill_s", "running_per_replica",
              "max_concurrency"):
        row[k] = d[k]
    row["calibration"] = (d.get("calibration") or {}).get("file") or ""
    u = d["uncertainty"]
    row["tpot_mape"] = u.get("tpot_mape")
    row["ttft_mape"] = u.get("ttft_mape")
    return row


def render_table(d: dict[str, Any]) -> str:
    """The prediction as text that fits 80 columns."""
    from rich.console import Console
    from rich.table import Table

    from perfscope.units import fmt_bytes, fmt_time

    c, u = d["config"], d["uncertainty"]
    title = (f"{d['model']['name']} on {c['gpus']} x {d['hardware']['display_name']}")
    lay = f"tp {c['tp']} pp {c['pp']}"
    if c["ep"] > 1:
        lay += f" ep {c['ep']}"
    if c["attn_dp"] > 1:
        lay += f" attn-dp {c['attn_dp']}"
    if c["dp"] > 1:
        lay += f" x {c['dp']} replicas"
    t = Table(title=title, title_justify="left", show_header=False, box=None, pad_edge=False)
    t.add_column("what", no_wrap=True)
    t.add_column("value", overflow="fold")

    def band(key: str, v: float) -> str:
        r = u.get(f"{key}_range")
        return f"{fmt_time(v)}  ({fmt_time(r[0])} - {fmt_time(r[1])})" if r else fmt_time(v)

    t.add_row("layout", f"{lay}; w {c['weight_dtype']} a {c['act_dtype']} kv {c['kv_dtype']}")
    if c.get("request_rate_per_s") is not None:
        t.add_row("workload", f"isl {c['isl']}, osl {c['osl']}, {c['request_rate_per_s']:g} "
                              f"requests/s (Poisson): {c['in_flight']:.3g} in flight on "
                              "average")
    else:
        t.add_row("workload", f"isl {c['isl']}, osl {c['osl']}, concurrency "
                              f"{c['concurrency']}")
    t.add_row("engine", f"{d['engine']['display_name']}; {d['ceiling']} ceilings")
    if d.get("calibration"):
        t.add_row("calibration", f"applied: {d['calibration']['file']} (measured on "
                                 f"{d['calibration']['hardware']}; replaces the engine's "
                                 "kernel efficiencies and fixed costs)")
    open_loop = d["benchmark"].get("kind") == "open"
    t.add_row("TTFT", band("ttft_s", d["ttft_s"]) + " mean over the run")
    if open_loop:
        t.add_row("  arrivals", f"{d['benchmark']['description']}: the step in flight, the "
                                "prompts ahead (M/D/1), then the prefill")
    else:
        t.add_row("  first wave", f"{fmt_time(d['ttft_burst_s'])} (all requests at once, "
                                  "queued)")
        t.add_row("  later ones", f"{fmt_time(d['ttft_steady_s'])} (staggered: the step in "
                                  "flight, then the prefill)")
        whose = "--num-prompts" if d["benchmark"].get("source") == "num_prompts" else \
            "the calibration's benchmark"
        t.add_row("  arrivals", f"{d['benchmark']['description']} ({whose})")
    if d["queue_s"] > 0:
        t.add_row("  KV-slot wait", fmt_time(d["queue_s"]))
    t.add_row("TPOT", band("tpot_s", d["tpot_s"]))
    t.add_row("end to end", fmt_time(d["e2e_s"]))
    t.add_row("tokens/s/GPU", f"{d['tokens_per_s_per_gpu']:,.1f}")
    t.add_row("tokens/s/user", f"{d['tokens_per_s_per_user']:,.1f}")
    t.add_row("memory/GPU", f"{fmt_bytes(d['memory_per_gpu_bytes'])} (weights "
                            f"{fmt_bytes(d['weights_per_gpu_bytes'])})")
    fits = "yes" if d["fits"] else "NO: the weights leave no room for one sequence"
    t.add_row("fits", f"{fits}; up to {d['max_concurrency']} requests in flight")
    if u.get("tpot_mape") is not None:
        t.add_row("uncertainty", f"TPOT +-{u['tpot_mape']:.0%}, TTFT +-{u['ttft_mape']:.0%} "
                                 f"({u['engine']} calibration, {u['fit_date']})")
    for n in u.get("notes", []):
        t.add_row("note", n)
    top = sorted(d["decode_ops"], key=lambda o: -o["time_s"])[:3]
    step = sum(o["time_s"] for o in d["decode_ops"]) or 1.0
    t.add_row("decode step", fmt_time(d["decode_step_s"]) + " at the mean context: " + ", ".join(
        f"{o['name']} {o['time_s'] / step:.0%} ({o['bound']})" for o in top))
    con = Console(record=True, highlight=False, soft_wrap=False, file=_null(),
                  width=_width())
    con.print(t)
    return "\n".join(line.rstrip() for line in con.export_text().splitlines()) + "\n"


def _width() -> int:
    import os
    import shutil

    cols = os.environ.get("COLUMNS")
    if cols and cols.isdigit():
        return max(60, int(cols))
    return max(60, min(shutil.get_terminal_size((80, 24)).columns, 120))


def _null():
    import io

    return io.StringIO()
