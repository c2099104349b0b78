"""The report's measured sections, read from a ``perfscope.bench/1`` document (the coupling
with the measuring side is the document): this machine's ceilings, the model's ops measured
beside their predictions on the measured roofline, reference kernels, collectives."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from perfscope.report import chartdata as C
from perfscope.report import fmt as F
from perfscope.report import plotly_measured as PC
from perfscope.report import plotly_roofline as PR
from perfscope.report.html import Page, esc, kv, table


def _stats(p: Mapping[str, Any]) -> Mapping[str, Any]:
    return p.get("stats") or {}


def measured_sections(page: Page, doc: Mapping[str, Any]) -> None:
    dev = doc.get("device") or {}
    name = dev.get("name", "this machine")
    page.section("measured", f"Measured on {name}",
                 "Timed on that device, not predicted: medians with p20-p80 spreads. Ceilings "
                 "first, then the model's ops placed on its measured roofline beside what "
                 "perfscope predicts for them there.")
    items = [("device", ", ".join(f"{k} {v}" for k, v in dev.items() if not isinstance(v, dict))),
             ("threads", doc.get("threads")), ("quick", doc.get("quick")),
             ("measured for", F.seconds(doc.get("duration_s"))),
             ("libraries", ", ".join(f"{k} {v}" for k, v in (doc.get("libraries") or {}).items())),
             ("created", doc.get("created")), ("command", doc.get("command"))]
    tel = dev.get("telemetry")
    if tel:
        items.append(("telemetry", ", ".join(f"{k} {v}" for k, v in tel.items())))
    load = dev.get("load_average_1m")
    if load is not None and dev.get("logical_cpus") and load > 0.75 * dev["logical_cpus"]:
        items.append(("note", f"load average {load} on {dev['logical_cpus']} CPUs: other "
                              "processes shared the machine, timings are noisy"))
    page.add(kv(items))
    _ceilings(page, doc)
    _ops(page, doc)
    _kernels(page, doc)
    _comm(page, doc)
    skipped = doc.get("skipped") or []
    if skipped:
        page.add("<h3>Not measured</h3><ul>" + "".join(
            f"<li>{esc(s.get('section'))}: {esc(s.get('message'))}</li>" for s in skipped)
            + "</ul>")


def _ceilings(page: Page, doc: Mapping[str, Any]) -> None:
    vals = (doc.get("ceilings") or {}).get("values") or []
    if not vals:
        return
    page.add("<h3>Ceilings</h3>")
    rows = []
    for c in vals:
        unit = c.get("unit", "")
        f = (lambda v: F.rate(v)) if unit == "FLOP/s" else (lambda v: F.si(v, "B/s"))
        st = _stats(c)
        rows.append([c.get("name"), (f(c.get("value")), c.get("value")),
                     f"{f(c.get('low'))} .. {f(c.get('high'))}", C.shape_text(c.get("shape")),
                     (str(st.get("n")), st.get("n")), (F.num(st.get("cv")), st.get("cv"))])
    page.add(table(["ceiling", "value (median)", "spread (p80 .. p20 time)", "shape", "n",
                    "cv"], rows))


def _ops(page: Page, doc: Mapping[str, Any]) -> None:
    ops = doc.get("ops") or {}
    pts = ops.get("points") or []
    if not pts:
        return
    roofs = C.doc_roofs(doc)
    points = C.doc_points(doc)
    page.add(f"<h3>The ops of {esc(ops.get('model', ''))} measured here</h3>")
    if roofs and points:
        panel = C.Panel(f"{doc.get('device', {}).get('name', 'local')} (measured roofline)",
                        roofs, points)
        page.figure(PR.roofline([panel], height=560),
                    "Filled: measured here; hollow: predicted on the measured roofline of this "
                    "machine (" + esc(ops.get("ceiling", "")) + " ceilings); a line joins "
                    "each pair. " + esc(ops.get("scaling", "")))
    rows = []
    for p in pts:
        ex = p.get("extra") or {}
        st = _stats(p)
        pred = p.get("predicted_time_s")
        med = st.get("median_s")
        ratio = med / pred if med and pred else None
        sb = ex.get("sweep_batch")
        rows.append([p.get("name") + (f" b={sb}" if sb else ""), ex.get("phase", ""),
                     (F.seconds(med), med), (F.seconds(pred), pred),
                     (f"{F.num(ratio)}x" if ratio else "-", ratio),
                     (F.rate(p.get("achieved_flops_per_s")), p.get("achieved_flops_per_s")),
                     (F.si(p.get("achieved_bytes_per_s"), "B/s"), p.get("achieved_bytes_per_s")),
                     (F.pct((p.get("pct_of_roof") or 0) / 100) if p.get("pct_of_roof") is not
                      None else "-", p.get("pct_of_roof")),
                     f"{F.seconds(st.get('p20_s'))} .. {F.seconds(st.get('p80_s'))}",
                     C.shape_text(p.get("shape")), ex.get("scale_note") or ""])
    page.add(table(["op", "phase", "measured", "predicted", "measured / predicted", "FLOP/s",
                    "bytes/s", "of roof", "p20 .. p80", "shape run", "scaled"], rows,
                   left=(0, 1, 9, 10)))


def _kernels(page: Page, doc: Mapping[str, Any]) -> None:
    pts = (doc.get("kernels") or {}).get("points") or []
    if not pts:
        return
    bw = max((c.get("value") or 0 for c in (doc.get("ceilings") or {}).get("values", [])
              if str(c.get("name", "")).startswith("memory.")), default=None)
    page.add("<h3>Reference kernels (fused add + RMSNorm, paged attention)</h3>")
    page.figure(PC.kernels_chart(pts, bw), "Achieved bytes/s of each variant: a fused kernel "
                "moves fewer bytes, so it should finish sooner at the same bandwidth.")
    rows = []
    for p in pts:
        st = _stats(p)
        rows.append([p.get("name"), C.shape_text(p.get("shape")),
                     (F.seconds(st.get("median_s")), st.get("median_s")),
                     (F.nbytes(p.get("bytes")), p.get("bytes")),
                     (F.si(p.get("achieved_bytes_per_s"), "B/s"), p.get("achieved_bytes_per_s")),
                     (F.pct(p["achieved_bytes_per_s"] / bw) if bw and
                      p.get("achieved_bytes_per_s") else "-",
                      (p.get("achieved_bytes_per_s") or 0) / bw if bw else None)])
    page.add(table(["kernel", "shape", "median", "bytes moved", "bytes/s",
                    "of measured bandwidth"], rows, left=(0, 1)))


def _comm(page: Page, doc: Mapping[str, Any]) -> None:
    res = (doc.get("comm") or {}).get("results") or []
    if not res:
        return
    page.add("<h3>Collectives</h3>")
    page.figure(PC.comm_measured_chart(res), "Bus bandwidth (nccl-tests convention) against "
                "message size.")
    rows = [[r.get("op"), (F.nbytes(r.get("size_bytes")), r.get("size_bytes")),
             (str(r.get("ranks")), r.get("ranks")), r.get("backend", ""),
             (F.seconds(r.get("median_s")), r.get("median_s")),
             (F.si(r.get("busbw_bytes_s"), "B/s"), r.get("busbw_bytes_s")),
             r.get("link", "")] for r in res]
    page.add(table(["collective", "message", "ranks", "backend", "median", "bus bandwidth",
                    "link"], rows, left=(0, 3, 6)))
