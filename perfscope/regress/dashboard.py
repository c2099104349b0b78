"""The benchmark-history dashboard: one static, self-contained HTML page.

One chart per benchmark. Top panel (where paired runs exist): the median paired ratio
candidate / baseline of each ``perfscope regress`` run with its bootstrap confidence band
and the threshold band; bottom panel: the median time per call with its confidence band,
one trace per source (paired runs, pytest-benchmark). Runs whose verdict was "regression"
are marked with red crosses on both panels.

Figures are plain plotly JSON (built here, no plotly import needed for them); plotly's
JavaScript is inlined so the page works offline. Every string from the history is escaped:
HTML text with ``html.escape``, JSON in ``<script>`` blocks with ``<``, ``>`` and ``&`` as
unicode escapes, so a benchmark named ``</script>`` stays text.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

BAND = "rgba(31, 119, 180, 0.18)"
LINE = "#1f77b4"
TIME_COLORS = {"regress": "#2ca02c", "pytest-benchmark": "#9467bd"}
RED = "#d62728"


def by_benchmark(records: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    out: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        out.setdefault(str(r["benchmark"]), []).append(r)
    return out


def _label(r: Mapping[str, Any]) -> str:
    c = r.get("commit")
    parts = [str(r.get("time") or "")]
    if r.get("ref") or c:
        parts.append(f"{r.get('ref') or ''} {str(c)[:10] if c else ''}".strip())
    if r.get("baseline"):
        parts.append(f"vs {r['baseline']}")
    if r.get("verdict"):
        parts.append(str(r["verdict"]))
    return "<br>".join(html.escape(p) for p in parts)


def _band(xs: list[Any], lo: list[Any], hi: list[Any], yaxis: str, name: str,
          color: str = BAND) -> list[dict[str, Any]]:
    """Upper edge (invisible) then lower edge filled up to it: the confidence band."""
    common = {"x": xs, "mode": "lines", "line": {"width": 0}, "yaxis": yaxis,
              "hoverinfo": "skip", "showlegend": False, "legendgroup": name}
    return [dict(common, y=hi, name=f"{name} CI high", type="scatter"),
            dict(common, y=lo, name=f"{name} CI low", type="scatter", fill="tonexty",
                 fillcolor=color)]


def figure(name: str, recs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The plotly figure (data + layout) of one benchmark's history."""
    paired = [r for r in recs if r.get("ratio") is not None]
    data: list[dict[str, Any]] = []
    layout: dict[str, Any] = {
        "title": {"text": html.escape(name)}, "height": 460 if paired else 300,
        "margin": {"l": 70, "r": 20, "t": 50, "b": 40}, "hovermode": "closest",
        "legend": {"orientation": "h", "y": -0.15}, "xaxis": {"type": "date"}, "shapes": [],
    }
    time_axis = "y2" if paired else "y"
    if paired:
        xs = [r["time"] for r in paired]
        data += _band(xs, [r["ci_low"] for r in paired], [r["ci_high"] for r in paired], "y",
                      "ratio")
        data.append({"type": "scatter", "mode": "lines+markers", "name": "ratio (median)",
                     "x": xs, "y": [r["ratio"] for r in paired], "yaxis": "y",
                     "line": {"color": LINE}, "text": [_label(r) for r in paired],
                     "hovertemplate": "%{y:.3f}<br>%{text}<extra></extra>"})
        thr = [float(r["threshold"]) for r in paired if r.get("threshold")]
        if thr:
            t = thr[-1]
            for y in (1 + t, 1 / (1 + t)):
                layout["shapes"].append({"type": "line", "xref": "paper", "x0": 0, "x1": 1,
                                         "yref": "y", "y0": y, "y1": y,
                                         "line": {"color": "#888", "dash": "dot", "width": 1}})
        layout["yaxis"] = {"title": {"text": "candidate / baseline"}, "domain": [0.55, 1.0]}
        layout["yaxis2"] = {"title": {"text": "time per call"}, "domain": [0.0, 0.42],
                            "tickformat": "~s", "ticksuffix": "s", "anchor": "x"}
        layout["xaxis"]["anchor"] = "y2"  # dates under the lower panel, shared by both
    else:
        layout["yaxis"] = {"title": {"text": "time per call"}, "tickformat": "~s",
                           "ticksuffix": "s"}
    sources = sorted({str(r.get("source") or "?") for r in recs})
    for src in sources:
        rs = [r for r in recs if str(r.get("source") or "?") == src]
        xs = [r["time"] for r in rs]
        color = TIME_COLORS.get(src, "#7f7f7f")
        if all(r.get("ci_low_s") is not None and r.get("ci_high_s") is not None for r in rs):
            data += _band(xs, [r["ci_low_s"] for r in rs], [r["ci_high_s"] for r in rs],
                          time_axis, f"time {src}", "rgba(127, 127, 127, 0.18)")
        data.append({"type": "scatter", "mode": "lines+markers",
                     "name": f"median time ({html.escape(src)})", "x": xs,
                     "y": [r["median_s"] for r in rs], "yaxis": time_axis,
                     "line": {"color": color}, "text": [_label(r) for r in rs],
                     "hovertemplate": "%{y:.4s}s<br>%{text}<extra></extra>"})
    bad = [r for r in recs if r.get("verdict") == "regression"]
    if bad:
        mark = {"type": "scatter", "mode": "markers", "showlegend": False,
                "marker": {"color": RED, "symbol": "x", "size": 13, "line": {"width": 2}},
                "legendgroup": "regression", "hoverinfo": "skip"}
        if paired:
            data.append(dict(mark, name="regression", x=[r["time"] for r in bad],
                             y=[r["ratio"] for r in bad], yaxis="y", showlegend=True))
        data.append(dict(mark, name="regression (time)", x=[r["time"] for r in bad],
                         y=[r["median_s"] for r in bad], yaxis=time_axis,
                         showlegend=not paired))
    return {"data": data, "layout": layout}


def summary_rows(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per benchmark: runs, regressions, the latest record's time, and the latest paired
    run's ratio and verdict."""
    rows = []
    for name, recs in by_benchmark(records).items():
        last = recs[-1]
        paired = [r for r in recs if r.get("ratio") is not None]
        lp: Mapping[str, Any] = paired[-1] if paired else {}
        rows.append({"benchmark": name, "runs": len(recs),
                     "regressions": sum(r.get("verdict") == "regression" for r in recs),
                     "latest_time": last.get("time"), "latest_source": last.get("source"),
                     "latest_median_s": last.get("median_s"), "latest_ratio": lp.get("ratio"),
                     "latest_ci_low": lp.get("ci_low"), "latest_ci_high": lp.get("ci_high"),
                     "latest_verdict": lp.get("verdict")})
    return rows


def script_json(obj: Any) -> str:
    """JSON safe inside a <script> element: no '<', '>' or '&' left to end it."""
    text = json.dumps(obj, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _fmt_s(v: Any) -> str:
    if not isinstance(v, (int, float)):
        return "-"
    from perfscope.units import fmt_time

    return fmt_time(float(v))


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:24px auto;max-width:1100px;
color:#222;padding:0 16px}h1{font-size:1.5em}h2{font-size:1.1em;margin:28px 0 4px}
table{border-collapse:collapse;font-size:.9em}td,th{padding:3px 10px;border-bottom:1px solid #ddd;
text-align:right}td:first-child,th:first-child{text-align:left}.regression{color:#d62728;
font-weight:600}.meta{color:#666;font-size:.85em}.fig{width:100%}
"""


def render_html(records: Sequence[Mapping[str, Any]], *, title: str = "perfscope benchmark "
                "history", source: str = "", plotly_js: str | None = None) -> str:
    """The dashboard page. ``plotly_js`` defaults to plotly's bundled library (inlined)."""
    if plotly_js is None:
        plotly_js = plotly_source()
    groups = by_benchmark(records)
    rows = summary_rows(records)
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title>", f"<style>{CSS}</style>",
        f"<script>{plotly_js}</script>", "</head>", "<body>", f"<h1>{html.escape(title)}</h1>",
        f'<p class="meta">{len(records)} records, {len(groups)} benchmarks'
        + (f", from {html.escape(source)}" if source else "") + ". Ratios are candidate / "
        "baseline time (above 1: slower), bands are bootstrap confidence intervals of the "
        "median, red crosses mark runs judged a regression.</p>",
        "<table><thead><tr><th>benchmark</th><th>runs</th><th>regressions</th>"
        "<th>latest</th><th>median time</th><th>ratio</th><th>CI</th><th>verdict</th>"
        "</tr></thead><tbody>",
    ]
    for r in rows:
        ratio = r["latest_ratio"]
        ci = (f"{r['latest_ci_low']:.3f}..{r['latest_ci_high']:.3f}"
              if ratio is not None and r["latest_ci_low"] is not None else "-")
        verdict = r["latest_verdict"] or "-"
        cls = ' class="regression"' if verdict == "regression" else ""
        parts.append(
            f"<tr><td>{html.escape(r['benchmark'])}</td><td>{r['runs']}</td>"
            f"<td>{r['regressions']}</td><td>{html.escape(str(r['latest_time'] or '-'))}</td>"
            f"<td>{html.escape(_fmt_s(r['latest_median_s']))}</td>"
            f"<td>{'-' if ratio is None else f'{ratio:.3f}'}</td><td>{html.escape(ci)}</td>"
            f"<td{cls}>{html.escape(str(verdict))}</td></tr>")
    parts.append("</tbody></table>")
    for i, (name, recs) in enumerate(groups.items()):
        parts += [f'<section><h2 id="b{i}">{html.escape(name)}</h2>',
                  f'<div class="fig" id="fig-{i}"></div>',
                  f'<script type="application/json" id="fig-{i}-data" data-benchmark-index="{i}">'
                  f"{script_json(figure(name, recs))}</script></section>"]
    parts += ["<script>",
              "for (const el of document.querySelectorAll('script[type=\"application/json\"]'))"
              " {",
              "  const fig = JSON.parse(el.textContent);",
              "  Plotly.newPlot(el.id.replace(/-data$/, ''), fig.data, fig.layout,",
              "                 {displaylogo: false, responsive: true});",
              "}", "</script>", "</body>", "</html>"]
    return "\n".join(parts) + "\n"


def plotly_source() -> str:
    """plotly's JavaScript, to inline (the page then needs no network)."""
    from perfscope.errors import InputError

    try:
        from plotly.offline import get_plotlyjs
    except ImportError:
        raise InputError("perfscope dashboard needs plotly: pip install 'perfscope[report]'"
                         ) from None
    return str(get_plotlyjs())
