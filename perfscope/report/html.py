"""A self-contained HTML page: plotly.js inlined (works offline, no network request), figures
as JSON, sortable tables, cards. Every string that came from a user (model names, paths,
commands) is escaped; JSON inside <script> has '<' escaped so no text can close the tag.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

CSS = """
:root { --fg:#1d232b; --muted:#5b6573; --line:#dde2e8; --bg:#f6f7f9; --accent:#1f5fa8;
        --bad:#b42318; --good:#157f3b; --warn:#a15c00; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
       color:var(--fg); background:var(--bg); }
main { max-width:1240px; margin:0 auto; padding:24px 28px 60px; }
h1 { font-size:24px; margin:0 0 4px; } h2 { font-size:19px; margin:34px 0 8px;
  padding-top:10px; border-top:1px solid var(--line); } h3 { font-size:15px; margin:20px 0 6px; }
p.sub, .muted { color:var(--muted); } p { margin:6px 0; max-width:1050px; }
.headline { background:#fff; border-left:4px solid var(--accent); padding:12px 16px;
  margin:16px 0; font-size:15px; border-radius:4px; }
.headline b.bad { color:var(--bad); }
.cards { display:grid; grid-template-columns:repeat(auto-fill,minmax(178px,1fr)); gap:10px;
  margin:10px 0 6px; }
.card { background:#fff; border:1px solid var(--line); border-radius:6px; padding:10px 12px; }
.card .k { color:var(--muted); font-size:12px; } .card .v { font-size:21px; font-weight:600;
  white-space:nowrap; } .card .e { font-size:12px; color:var(--muted); white-space:nowrap; }
.card.bad .v { color:var(--bad); } .card.good .v { color:var(--good); }
.fig { background:#fff; border:1px solid var(--line); border-radius:6px; margin:10px 0;
  overflow-x:auto; } .fig > div { margin:0 auto; }
table { border-collapse:collapse; background:#fff; margin:8px 0; font-size:12.5px; }
th, td { padding:4px 9px; border-bottom:1px solid var(--line); text-align:right;
  white-space:nowrap; } th { background:#eef1f5; position:sticky; top:0; }
td.l, th.l { text-align:left; } table.sortable th { cursor:pointer; user-select:none; }
table.sortable th:hover { background:#e2e7ee; } th.asc::after { content:" ▲"; }
th.desc::after { content:" ▼"; }
tr.bound-compute td.b { color:var(--good); } tr.bound-memory td.b { color:var(--accent); }
tr.bound-comm td.b { color:var(--warn); }
.tablewrap { overflow-x:auto; max-height:560px; overflow-y:auto; }
details { margin:8px 0; } summary { cursor:pointer; color:var(--accent); }
code, pre { font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; }
pre { background:#fff; border:1px solid var(--line); padding:8px 10px; overflow-x:auto;
  white-space:pre-wrap; word-break:break-all; }
dl.kv { display:grid; grid-template-columns:max-content 1fr; gap:3px 14px; margin:6px 0; }
dl.kv dt { color:var(--muted); } dl.kv dd { margin:0; word-break:break-word; }
.tag { display:inline-block; padding:0 6px; border-radius:3px; font-size:11.5px;
  background:#eef1f5; color:var(--muted); margin-left:4px; }
.rec { background:#fff; border:1px solid var(--line); border-radius:6px; padding:10px 14px;
  margin:8px 0; } .rec .rule { font:12px ui-monospace,monospace; color:var(--muted); }
nav.toc { font-size:13px; margin:8px 0 0; } nav.toc a { margin-right:12px; color:var(--accent);
  text-decoration:none; }
"""

SORT_JS = """
document.querySelectorAll('table.sortable').forEach(function (t) {
  t.querySelectorAll('th').forEach(function (th, col) {
    th.addEventListener('click', function () {
      var body = t.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var asc = !th.classList.contains('asc');
      t.querySelectorAll('th').forEach(function (h) { h.classList.remove('asc', 'desc'); });
      th.classList.add(asc ? 'asc' : 'desc');
      rows.sort(function (a, b) {
        var x = a.cells[col], y = b.cells[col];
        var xv = x.dataset.v, yv = y.dataset.v;
        var c = (xv !== undefined && yv !== undefined) ? (parseFloat(xv) - parseFloat(yv))
              : x.textContent.localeCompare(y.textContent);
        return asc ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""

PLOT_JS = """
document.querySelectorAll('div[data-figure]').forEach(function (div) {
  var fig = JSON.parse(document.getElementById(div.dataset.figure).textContent);
  Plotly.newPlot(div, fig.data, fig.layout, {displaylogo: false, responsive: false,
    modeBarButtonsToRemove: ['select2d', 'lasso2d']});
});
"""


def esc(s: Any) -> str:
    return html.escape(str(s), quote=True)


def json_script(obj: Any) -> str:
    """JSON safe inside <script>: '<', '>' and '&' escaped, no NaN."""
    text = json.dumps(_clean(obj), allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _clean(o: Any) -> Any:
    """Drop None values of dicts (plotly reads null as a value), NaN/inf become None."""
    if isinstance(o, Mapping):
        return {str(k): _clean(v) for k, v in o.items() if v is not None}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o


class Page:
    """Collects sections; ``render()`` returns the whole document."""

    def __init__(self, title: str):
        self.title = title
        self.parts: list[str] = []
        self.figures: list[tuple[str, Any]] = []
        self.toc: list[tuple[str, str]] = []

    def add(self, markup: str) -> None:
        self.parts.append(markup)

    def section(self, anchor: str, title: str, intro: str = "") -> None:
        self.toc.append((anchor, title))
        self.add(f'<h2 id="{esc(anchor)}">{esc(title)}</h2>')
        if intro:
            self.add(f"<p>{intro}</p>")

    def figure(self, fig: Mapping[str, Any], caption: str = "") -> None:
        fid = f"fig{len(self.figures)}"
        self.figures.append((fid, fig))
        self.add(f'<div class="fig"><div id="{fid}" data-figure="{fid}-data"></div></div>')
        if caption:
            self.add(f'<p class="muted">{caption}</p>')

    def render(self, plotly_js: str, header: str = "") -> str:
        toc = "".join(f'<a href="#{esc(a)}">{esc(t)}</a>' for a, t in self.toc)
        data = "\n".join(f'<script type="application/json" id="{fid}-data">{json_script(fig)}'
                         "</script>" for fid, fig in self.figures)
        safe_js = plotly_js.replace("</script", "<\\/script")
        return (
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            # nothing on this page may reach the network
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
            "script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; "
            "img-src data: blob:; font-src data:; connect-src 'none'\">"
            f"<title>{esc(self.title)}</title><style>{CSS}</style>"
            f"<script>{safe_js}</script></head><body><main>{header}"
            f'<nav class="toc">{toc}</nav>' + "\n".join(self.parts) +
            f"</main>{data}<script>{PLOT_JS}{SORT_JS}</script></body></html>\n")


def plotly_js() -> str:
    """plotly.js from the installed plotly package (inlined: the page works offline)."""
    from perfscope.errors import InputError

    try:
        from plotly.offline import get_plotlyjs
    except ImportError:
        raise InputError("the HTML report needs plotly: pip install plotly (a core "
                         "dependency of perfscope; reinstall with `pip install -e .`)") from None
    return get_plotlyjs()


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, sortable: bool = True,
          left: Iterable[int] = (0,), row_class: Sequence[str] | None = None) -> str:
    """Rows of cells: a str (escaped here), or (text, sort value) for numeric sorting, or
    (text, sort value, css class)."""
    lcols = set(left)
    th = "".join(f'<th class="{"l" if i in lcols else ""}">{esc(h)}</th>'
                 for i, h in enumerate(headers))
    body = []
    for j, r in enumerate(rows):
        tds = []
        for i, c in enumerate(r):
            cls = "l" if i in lcols else ""
            attr = ""
            if isinstance(c, tuple):
                if len(c) > 2:
                    cls = (cls + " " + c[2]).strip()
                if c[1] is not None and isinstance(c[1], (int, float)) and \
                        math.isfinite(c[1]):
                    attr = f' data-v="{c[1]!r}"'
                c = c[0]
            tds.append(f'<td class="{cls}"{attr}>{esc(c)}</td>')
        rc = f' class="{esc(row_class[j])}"' if row_class else ""
        body.append(f"<tr{rc}>{''.join(tds)}</tr>")
    cls = "sortable" if sortable else ""
    return (f'<div class="tablewrap"><table class="{cls}"><thead><tr>{th}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


def cards(items: Sequence[tuple[str, str, str, str]]) -> str:
    """(label, value, second line, css class)."""
    return '<div class="cards">' + "".join(
        f'<div class="card {esc(c)}"><div class="k">{esc(k)}</div><div class="v">{esc(v)}</div>'
        f'<div class="e">{esc(e)}</div></div>' for k, v, e, c in items) + "</div>"


def kv(items: Iterable[tuple[str, Any]]) -> str:
    return '<dl class="kv">' + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>"
                                        for k, v in items) + "</dl>"
