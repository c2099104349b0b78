"""Report section for a profiled PyTorch model: where the time went, beside where the roofline
says it should go. No I/O: takes a ``perfscope.profile/1`` dict, returns an HTML fragment (a
``<section>`` with one plotly figure ``div`` per phase and a table). The page that embeds it
must load plotly.js itself; every string from the profile is escaped.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from perfscope.units import fmt_time, si

SCHEMA = "perfscope.profile/1"
_COLORS = {"measured": "#d62728", "predicted": "#1f77b4", "calibrated": "#2ca02c"}


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _t(x: float | None) -> str:
    return fmt_time(x) if x is not None else "-"


def _figure(phase: str, ops: Sequence[Mapping[str, Any]], div_id: str) -> str:
    import plotly.graph_objects as go

    names = [o["name"] for o in ops][::-1]  # plotly draws the first category at the bottom
    rows = list(ops)[::-1]
    fig = go.Figure()
    series = [("measured", "measured_time_s", "where the time went (measured)"),
              ("predicted", "predicted_time_s", "where the roofline says it should go")]
    if any(o.get("calibrated_time_s") is not None for o in ops):
        series.append(("calibrated", "calibrated_time_s", "roofline, calibrated"))
    for key, field, label in series:
        xs = [(o.get(field) or 0.0) * 1e3 for o in rows]
        text = [_t(o.get(field)) if o.get(field) is not None else "" for o in rows]
        fig.add_trace(go.Bar(y=names, x=xs, name=label, orientation="h", text=text,
                             hovertemplate="%{y}: %{text}<extra>" + label + "</extra>",
                             marker_color=_COLORS[key], textposition="none"))
    fig.update_layout(barmode="group", height=140 + 26 * len(ops), title=f"{phase}: time per op",
                      xaxis_title="time per step (ms)", margin={"l": 170, "r": 20, "t": 50,
                                                                "b": 40},
                      legend={"orientation": "h", "y": -0.12 - 8 / max(len(ops), 1)})
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id)


def _table(ph: Mapping[str, Any], ops: Sequence[Mapping[str, Any]]) -> str:
    step = ph.get("step_time_s", {}).get("median_s") or 0.0
    cal = any(o.get("calibrated_time_s") is not None for o in ops)
    head = ["op", "kind", "measured", "predicted"] + (["calibrated"] if cal else []) + \
        ["measured / predicted", "share of step", "FLOPs (analytic)", "FlopCounterMode"]
    out = ["<table class='perfscope-torchprof-ops'><thead><tr>",
           "".join(f"<th>{_e(h)}</th>" for h in head), "</tr></thead><tbody>"]
    for o in ops:
        m, p = o.get("measured_time_s"), o.get("predicted_time_s")
        cells = [o["name"], o.get("kind", ""), _t(m), _t(p)]
        if cal:
            cells.append(_t(o.get("calibrated_time_s")))
        cells += [f"{m / p:.3g}" if m and p else "-", f"{m / step:.1%}" if m and step else "-",
                  si(o["analytic_flops"]) if o.get("analytic_flops") else "-",
                  o.get("flops_check", "-")]
        title = o.get("note") or ""
        out.append(f"<tr title='{_e(title)}'>" + "".join(f"<td>{_e(c)}</td>" for c in cells) +
                   "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def torchprof_section_html(profile: Mapping[str, Any],
                           id_prefix: str = "perfscope-torchprof") -> str:
    """The HTML fragment of one ``perfscope.profile/1`` result (plotly.js not included);
    ``id_prefix`` keeps the chart ids of several such sections on one page apart."""
    if profile.get("schema") != SCHEMA:
        raise ValueError(f"expected a {SCHEMA} result, got {profile.get('schema')!r}")
    m, hw, dev = profile.get("model", {}), profile.get("hardware", {}), profile.get("device", {})
    parts = ["<section class='perfscope-torchprof'>",
             "<h2>Where the time went, beside where the roofline says it should go</h2>",
             f"<p>{_e(m.get('name', ''))}"
             + (f", {_e(m['layers'])} layer" + ("s" if m['layers'] != 1 else "")
                if m.get("layers") else "")
             + f" on {_e(dev.get('name', dev.get('device', '')))} "
             f"({_e(dev.get('device', ''))}, {_e(profile.get('config', {}).get('dtype', ''))})."
             f" Roofline: {_e(hw.get('display_name', ''))} "
             f"({_e(hw.get('source', ''))}). Rows are whole steps (all layers); "
             "framework rows are measured time no analytic op accounts for.</p>"]
    ops = profile.get("ops", [])
    for i, ph in enumerate(profile.get("phases", [])):
        name = ph.get("phase", "")
        mine = [o for o in ops if o.get("phase") == name]
        step = ph.get("step_time_s", {})
        head = f"{name}: measured {_t(step.get('median_s'))}"
        if ph.get("predicted_time_s") is not None:
            head += f", roofline {_t(ph['predicted_time_s'])}"
        if ph.get("calibrated_time_s") is not None:
            head += f", calibrated {_t(ph['calibrated_time_s'])}"
        parts.append(f"<h3>{_e(head)}</h3>")
        parts.append(_figure(name, mine, f"{id_prefix}-{i}"))
        eff = ph.get("efficiency_by_kind") or {}
        if eff:
            parts.append("<p>Roofline efficiency by kind: " + _e(", ".join(
                f"{k} {v['efficiency']:.1%}" for k, v in sorted(eff.items()))) + "</p>")
        parts.append(_table(ph, mine))
    notes = profile.get("notes") or []
    if notes:
        parts.append("<ul class='perfscope-torchprof-notes'>" +
                     "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
    parts.append("</section>")
    return "\n".join(parts)
