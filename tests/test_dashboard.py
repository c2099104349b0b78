"""History (perfscope.history/1) and the dashboard page: parsed, figure data checked against
the history, strings escaped, no network."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest

from perfscope.errors import InputError
from perfscope.regress import dashboard, history

EVIL = '</script><script>alert("x")</script>&<b>'


def _doc(verdicts: dict[str, tuple[str, float, float, float]], commit: str) -> dict:
    """A minimal perfscope.regress/1 document."""
    return {
        "schema": "perfscope.regress/1", "threshold": 0.05,
        "baseline": {"ref": "origin/main", "commit": "b" * 40, "kind": "git"},
        "candidate": {"ref": "HEAD", "commit": commit, "kind": "git"},
        "machine": {"node": "ci", "processor": "x86_64", "cpus_available": 2},
        "benchmarks": [
            {"name": name, "verdict": v, "ratio": r, "ci_low": lo, "ci_high": hi, "rounds": 40,
             "candidate_median_s": 1e-4 * r, "candidate_ci_low_s": 1e-4 * lo,
             "candidate_ci_high_s": 1e-4 * hi}
            for name, (v, r, lo, hi) in verdicts.items()],
    }


@pytest.fixture
def hist(tmp_path: Path) -> Path:
    path = tmp_path / "history" / "regress.jsonl"
    path.parent.mkdir()
    runs = [
        {"analyze": ("no change", 1.0, 0.98, 1.02), EVIL: ("no change", 0.99, 0.97, 1.01)},
        {"analyze": ("regression", 1.12, 1.08, 1.15), EVIL: ("no change", 1.0, 0.98, 1.03)},
        {"analyze": ("improvement", 0.9, 0.88, 0.93), EVIL: ("inconclusive", 1.0, 0.9, 1.1)},
    ]
    for i, run in enumerate(runs):
        history.append(path, history.from_regress(_doc(run, f"{i}" * 40),
                                                  when=f"2026-01-0{i + 1}T00:00:00Z"))
    history.append(path.parent / "bench.jsonl", [
        history.from_timings("analyze", [1.0e-4, 1.1e-4, 0.9e-4], source="pytest-benchmark",
                             commit="c" * 40, when="2026-01-02T12:00:00Z")])
    return path.parent


class _Scripts(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.json: dict[str, str] = {}
        self.external: list[str] = []
        self.text: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("src", "href"):
            if a.get(key):
                self.external.append(a[key])
        if tag == "script" and a.get("type") == "application/json":
            self._in = a["id"]
            self.json[self._in] = ""

    def handle_endtag(self, tag):
        self._in = None

    def handle_data(self, data):
        if self._in:
            self.json[self._in] += data
        else:
            self.text.append(data)


def test_history_round_trip(hist: Path) -> None:
    recs = history.load(hist)
    assert len(recs) == 7
    assert [r["time"] for r in recs] == sorted(r["time"] for r in recs)
    first = recs[0]
    assert first["schema"] == "perfscope.history/1"
    assert set(first) == set(history.FIELDS)
    bench = [r for r in recs if r["source"] == "pytest-benchmark"]
    assert bench[0]["median_s"] == pytest.approx(1.0e-4) and bench[0]["ratio"] is None
    assert bench[0]["ci_low_s"] <= 1.0e-4 <= bench[0]["ci_high_s"]


def test_history_errors_name_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "h.jsonl"
    f.write_text('{"schema": "perfscope.history/1", "benchmark": "a", "median_s": 1}\nnope\n')
    with pytest.raises(InputError, match=r"h\.jsonl:2: not JSON"):
        history.load(f)
    f.write_text('{"schema": "other"}\n')
    with pytest.raises(InputError, match=r"h\.jsonl:1: not a perfscope.history/1"):
        history.load(f)
    with pytest.raises(InputError, match="no such file"):
        history.load(tmp_path / "missing")


def test_dashboard_figures_carry_the_history(hist: Path) -> None:
    recs = history.load(hist)
    page = dashboard.render_html(recs, plotly_js="/* plotly */")
    p = _Scripts()
    p.feed(page)
    assert p.external == []  # nothing fetched from anywhere
    assert len(p.json) == 2  # one chart per benchmark
    figs = [json.loads(t) for t in p.json.values()]
    by_title = {f["layout"]["title"]["text"]: f for f in figs}
    fig = by_title["analyze"]
    traces = {t["name"]: t for t in fig["data"]}
    assert traces["ratio (median)"]["y"] == [1.0, 1.12, 0.9]
    assert traces["ratio CI high"]["y"] == [1.02, 1.15, 0.93]
    assert traces["ratio CI low"]["y"] == [0.98, 1.08, 0.88]
    assert traces["ratio CI low"]["fill"] == "tonexty"  # the band between the two edges
    # the regression is marked, on the ratio panel and on the time panel
    assert traces["regression"]["x"] == ["2026-01-02T00:00:00Z"]
    assert traces["regression"]["y"] == [1.12]
    assert traces["regression (time)"]["y"] == [pytest.approx(1.12e-4)]
    # times from both sources, each with its band
    assert traces["median time (regress)"]["y"] == pytest.approx([1e-4, 1.12e-4, 0.9e-4])
    assert traces["median time (pytest-benchmark)"]["y"] == [pytest.approx(1e-4)]
    assert "time pytest-benchmark CI low" in traces
    # the threshold band is drawn at 1 + t and 1 / (1 + t)
    ys = sorted(s["y0"] for s in fig["layout"]["shapes"])
    assert ys == pytest.approx([1 / 1.05, 1.05])


def test_dashboard_escapes_every_string(hist: Path) -> None:
    page = dashboard.render_html(history.load(hist), title="<i>t</i>", plotly_js="")
    assert "<script>alert" not in page
    assert "<i>t</i>" not in page and "&lt;i&gt;t&lt;/i&gt;" in page
    p = _Scripts()
    p.feed(page)
    # the JSON block survives intact and holds the name, escaped for plotly's HTML labels
    titles = [json.loads(t)["layout"]["title"]["text"] for t in p.json.values()]
    assert any(t.startswith("&lt;/script&gt;") for t in titles)
    # and the page text shows the name as text
    assert any(EVIL in chunk for chunk in p.text)


def test_dashboard_inlines_plotly(hist: Path) -> None:
    page = dashboard.render_html(history.load(hist))
    assert len(page) > 1_000_000  # plotly.js itself, not a <script src=...>
    assert "Plotly.newPlot" in page
    assert "https://cdn" not in page.split("<script>", 2)[-1][-2000:]


def test_dashboard_cli(hist: Path, tmp_path: Path, capsys) -> None:
    from perfscope.cli import main

    out = tmp_path / "index.html"
    main(["dashboard", "--history", str(hist), "-o", str(out)])
    assert out.read_text().count('data-benchmark-index=') == 2
    main(["dashboard", "--history", str(hist), "--format", "json"])
    doc = json.loads(capsys.readouterr().out)
    rows = {r["benchmark"]: r for r in doc["benchmarks"]}
    assert rows["analyze"]["runs"] == 4 and rows["analyze"]["regressions"] == 1
    main(["dashboard", "--history", str(hist), "--format", "csv"])
    assert capsys.readouterr().out.startswith("benchmark,runs,regressions")
    main(["dashboard", "--history", str(hist), "--format", "table"])
    table = capsys.readouterr().out
    assert "analyze" in table and max(map(len, table.splitlines())) <= 80
    with pytest.raises(SystemExit) as e:
        main(["dashboard", "--history", str(tmp_path / "none")])
    assert e.value.code == 2
    assert "no such file" in capsys.readouterr().err
