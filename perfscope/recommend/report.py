"""The recommender's outputs: perfscope.recommend/1 JSON, CSV rows, an 80-column table, and the
Pareto chart (plotly; no I/O)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from perfscope.units import fmt_bytes, fmt_time

if TYPE_CHECKING:
    from perfscope.recommend.types import RecommendResult

SCHEMA = "perfscope.recommend/1"


def to_json(r: RecommendResult) -> dict[str, Any]:
    q = r.request
    return {
        "schema": SCHEMA,
        "model": {"name": q.model.name, "params": q.model.params,
                  "active_params": q.model.active_params},
        "hardware": {"name": q.hw.name, "display_name": q.hw.display_name,
                     "memory_bytes": q.hw.memory_bytes,
                     "gpu_link": q.hw.gpu_link.name if q.hw.gpu_link else None},
        "gpus": q.gpus,
        "workload": {"isl": q.isl, "osl": q.osl},
        "targets": {"ttft_s": q.ttft_s, "tpot_s": q.tpot_s},
        "allowed": {"weight_dtypes": list(q.weight_dtypes) if q.weight_dtypes else None,
                    "kv_dtypes": list(q.kv_dtypes) if q.kv_dtypes else None,
                    "max_gpus": q.max_gpus or q.gpus},
        "engine": r.engine, "ceiling": q.ceiling,
        "status": r.status, "message": r.message,
        "top": r.top.to_json() if r.top else None,
        "ranked": [c.to_json() for c in r.ranked],
        "pareto": [c.to_json() for c in r.pareto],
        "recommendations": [x.to_json() for x in r.recommendations],
        "answers": r.answers,
        "quantization": list(r.quantization),
        "searched": r.searched,
        "uncertainty": r.uncertainty,
    }


CSV_COLS = ("rank", "layout", "tp", "pp", "ep", "attn_dp", "dp", "scheme", "weight_dtype",
            "act_dtype", "kv_dtype", "concurrency_per_replica", "ttft_s", "tpot_s", "e2e_s",
            "tokens_per_s_per_gpu", "tokens_per_s_per_user", "memory_per_gpu_bytes",
            "max_concurrency_per_replica", "meets_targets", "pareto")


def csv_rows(r: RecommendResult) -> list[dict[str, Any]]:
    """The ranked table, then the Pareto points not already in it (rank empty)."""
    out = []
    seen = set()
    pareto_keys = {_key(c.to_json()) for c in r.pareto}
    for i, c in enumerate(r.ranked, 1):
        d = c.to_json()
        seen.add(_key(d))
        out.append({"rank": i, **{k: d.get(k) for k in CSV_COLS if k not in ("rank", "pareto")},
                    "pareto": _key(d) in pareto_keys})
    for c in r.pareto:
        d = c.to_json()
        if _key(d) not in seen:
            out.append({"rank": "", **{k: d.get(k) for k in CSV_COLS
                                       if k not in ("rank", "pareto")}, "pareto": True})
    return out


def _key(d: dict[str, Any]) -> tuple:
    return (d["layout"], d["scheme"], d["kv_dtype"], d["concurrency_per_replica"])


def render_text(r: RecommendResult, width: int = 80, top_n: int = 10) -> str:
    """Ranked table, direct answers, quantization side by side, explanations (80 columns)."""
    import io

    from rich.console import Console
    from rich.table import Table

    q = r.request
    con = Console(record=True, highlight=False, soft_wrap=False, file=io.StringIO(),
                  width=width)
    targets = ", ".join(f"{k} <= {fmt_time(v)}" for k, v in (("TTFT", q.ttft_s),
                                                             ("TPOT", q.tpot_s)) if v)
    con.print(f"{q.model.name} on {q.gpus} x {q.hw.display_name}, isl {q.isl} osl {q.osl}"
              + (f", {targets}" if targets else "") + f" [{r.engine} engine]")
    con.print(f"{'RECOMMENDED' if r.status == 'ok' else r.status.upper()}: {r.message}")
    if r.ranked:
        # one space between columns: attention-DP layouts ("TP4 EP8 ADP2 x2") still fit 80
        t = Table(box=None, pad_edge=False, title_justify="left", padding=(0, 1, 0, 0),
                  title="ranked (best concurrency per configuration)")
        for col, just in (("#", "right"), ("layout", "left"), ("w", "left"), ("kv", "left"),
                          ("conc", "right"), ("TTFT", "right"), ("TPOT", "right"),
                          ("tok/s/GPU", "right"), ("tok/s/usr", "right"), ("GiB", "right")):
            t.add_column(col, justify=just, no_wrap=True)  # type: ignore[arg-type]
        for i, c in enumerate(r.ranked[:top_n], 1):
            lay = c.layout + (f" x{c.dp}" if c.dp > 1 else "")
            t.add_row(str(i), lay, c.scheme, c.kv_dtype, str(c.concurrency * c.dp),
                      fmt_time(c.ttft_s), fmt_time(c.tpot_s),
                      f"{c.tokens_per_s_per_gpu:,.0f}", f"{c.tokens_per_s_per_user:,.1f}",
                      f"{c.memory_per_gpu_bytes / 2**30:.1f}")
        con.print(t)
        con.print("conc: requests in flight on all replicas (x N: N replicas); GiB: memory "
                  "per GPU", overflow="fold")
    a = r.answers
    lines = []
    if "largest_batch" in a:
        lb, lc, sg = a["largest_batch"], a["longest_context"], a["smallest_gpu_count"]
        cap = (f"; the engine runs at most {lb['engine_cap']}"
               if lb["value"] > lb["engine_cap"] else "")
        lines.append(f"largest batch that fits: {lb['value']} sequences of "
                     f"{lb['tokens_per_sequence']} tokens per replica ({_cfg(lb)}{cap})")
        lines.append(f"longest context that fits: {lc['value']:,} tokens ({_cfg(lc)}"
                     + ("; the model's limit" if lc["limited_by"] == "model" else "") + ")")
        lines.append(f"smallest GPU count that fits: {sg['value']} ({_cfg(sg)})")
    for b in a.get("best_for_tpot", []):
        if b["config"] is None:
            lines.append(f"best layout for TPOT <= {fmt_time(b['tpot_target_s'])}: none")
        else:
            lines.append(f"best layout for TPOT <= {fmt_time(b['tpot_target_s'])}: "
                         f"{_cfg(b['config'])}, {b['concurrency_per_replica']} requests, "
                         f"{b['tokens_per_s_per_gpu']:,.0f} tok/s/GPU")
    if lines:
        con.print("\nanswers")
        for line in lines:
            con.print("  " + line, overflow="fold")
    if r.quantization:
        t = Table(box=None, pad_edge=False, title="quantization side by side",
                  title_justify="left")
        for col in ("scheme", "best tok/s/GPU", "vs 16-bit", "TPOT@1", "TTFT@1", "weights"):
            t.add_column(col, justify="left" if col == "scheme" else "right", no_wrap=True)
        for row in r.quantization:
            at = row.get("at_top_layout", {})
            gain = row.get("gain_vs_16bit")
            if row.get("fits") is False:
                t.add_row(row["label"], "does not fit", "-", "-", "-", "-")
                continue
            t.add_row(row["label"], f"{row['best_tokens_per_s_per_gpu']:,.0f}",
                      f"{gain:.2f}x" if gain else "-",
                      fmt_time(at["tpot_s_at_1"]) if at else "-",
                      fmt_time(at["ttft_s_at_1"]) if at else "-",
                      fmt_bytes(at["weights_per_gpu_bytes"]) if at else "-")
        con.print()
        con.print(t)
        con.print("TPOT@1, TTFT@1, weights: at the recommended layout, one request")
    if r.recommendations:
        con.print("\nwhy")
        for rec in r.recommendations:
            gain = f" [gain {rec.expected_gain:.2f}x]" if rec.expected_gain else ""
            con.print(f"- {rec.rule}: {rec.message}{gain}", overflow="fold")
    s = r.searched
    u = r.uncertainty
    con.print(f"\nsearched {s['candidates']:,} candidates ({s['structural_configs']} "
              f"layouts x dtypes), {s['feasible']:,} fit, {s['meeting_targets']:,} meet the "
              "targets" + (f"; uncertainty TPOT +-{u['tpot_mape']:.0%}, TTFT "
                           f"+-{u['ttft_mape']:.0%}" if u.get("tpot_mape") else ""),
              overflow="fold")
    if u.get("calibration"):
        con.print(f"calibration applied: {u['calibration']['file']} (measured on "
                  f"{u['calibration']['hardware']}; replaces the engine's kernel efficiencies "
                  "and fixed costs)", overflow="fold")
    return "\n".join(line.rstrip() for line in con.export_text().splitlines()) + "\n"


def _cfg(d: dict[str, Any]) -> str:
    s = f"TP{d['tp']}"
    if d.get("pp", 1) > 1:
        s += f" PP{d['pp']}"
    if d.get("ep", 1) > 1:
        s += f" EP{d['ep']}"
    return f"{s} {d['scheme']} KV {d['kv_dtype']}"


def pareto_figure(result: RecommendResult):
    """Tokens/s per GPU against tokens/s per user: every candidate that fits (grey), the
    Pareto front (line), the recommendation (star), the TPOT target (dashed). No I/O."""
    import plotly.graph_objects as go

    fig = go.Figure()
    if result.cloud:
        xs, ys = zip(*result.cloud, strict=True)
        fig.add_trace(go.Scattergl(x=xs, y=ys, mode="markers", name="fits in memory",
                                   marker={"size": 4, "color": "lightgray"},
                                   hoverinfo="skip"))
    if result.pareto:
        p = result.pareto
        fig.add_trace(go.Scatter(
            x=[c.tokens_per_s_per_user for c in p], y=[c.tokens_per_s_per_gpu for c in p],
            mode="lines+markers", name="Pareto front",
            text=[f"{c.layout} {c.scheme} kv {c.kv_dtype}, {c.concurrency} req/replica<br>"
                  f"TTFT {fmt_time(c.ttft_s)}, TPOT {fmt_time(c.tpot_s)}" for c in p],
            hovertemplate="%{text}<extra></extra>"))
    if result.top is not None:
        c = result.top
        fig.add_trace(go.Scatter(x=[c.tokens_per_s_per_user], y=[c.tokens_per_s_per_gpu],
                                 mode="markers", name="recommended",
                                 marker={"symbol": "star", "size": 16, "color": "crimson"},
                                 text=[f"{c.layout} {c.scheme} kv {c.kv_dtype}"],
                                 hovertemplate="%{text}<extra></extra>"))
    q = result.request
    if q.tpot_s:
        fig.add_vline(x=1.0 / q.tpot_s, line_dash="dash", line_color="gray",
                      annotation_text=f"TPOT {fmt_time(q.tpot_s)}")
    fig.update_layout(
        title=f"{q.model.name} on {q.gpus} x {q.hw.display_name}: isl {q.isl}, osl {q.osl}",
        xaxis_title="tokens/s per user (1 / TPOT)", yaxis_title="tokens/s per GPU",
        template="plotly_white", legend={"orientation": "h", "y": -0.15})
    return fig
