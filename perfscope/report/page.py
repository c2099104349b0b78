"""The ``perfscope profile`` report: one HTML page from a Study (and, when given, a
``perfscope.bench/1`` document measured on this machine, recommendation records and a Pareto
figure). ``render_report`` is pure: inputs in, the page's text out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from perfscope.report import chartdata as C
from perfscope.report import fmt as F
from perfscope.report import plotly_charts as PC
from perfscope.report import plotly_roofline as PR
from perfscope.report.html import Page, cards, esc, kv, plotly_js, table
from perfscope.report.study import HwStudy, Study, bottleneck, gain_to
from perfscope.report.summary import DEFINITIONS, LABELS


class ReportInput(NamedTuple):
    study: Study
    command: str  # exactly as typed
    created: str  # ISO-8601 UTC
    versions: Mapping[str, str]
    measured: Mapping[str, Any] | None = None  # perfscope.bench/1 document
    recommendations: Sequence[Mapping[str, Any]] | None = None  # rule, message, evidence,
    #                                                             expected_gain
    pareto: Mapping[str, Any] | None = None  # plotly figure (dict) of the Pareto front
    notes: Sequence[str] = ()
    torch_profiles: Sequence[Mapping[str, Any]] = ()  # perfscope.profile/1 documents


def render_report(inp: ReportInput, js: str | None = None) -> str:
    """The page's HTML text. ``js``: plotly.js to inline (default: the installed plotly's)."""
    st = inp.study
    title = f"{st.model.name} on {', '.join(h.hw.display_name for h in st.hws)}"
    page = Page(f"perfscope: {title}")
    _overview(page, st)
    if len(st.hws) > 1:
        _compare(page, st)
    _rooflines(page, st)
    _sweeps(page, st)
    _breakdowns(page, st)
    _op_tables(page, st)
    if inp.measured:
        from perfscope.report.page_measured import measured_sections

        measured_sections(page, inp.measured)
    if inp.torch_profiles:
        from perfscope.report.torchprof_section import torchprof_section_html

        page.toc.append(("torch-profile", "Where the time went"))
        for i, doc in enumerate(inp.torch_profiles):
            page.add(f'<div id="torch-profile{"" if i == 0 else i}">'
                     f"{torchprof_section_html(doc, f'perfscope-torchprof{i}')}</div>")
    if inp.recommendations:
        _recommendations(page, inp.recommendations)
    if inp.pareto:
        page.section("pareto", "Pareto front", "Throughput against latency over the "
                     "configurations searched.")
        page.figure(inp.pareto)
    _definitions(page)
    return page.render(js if js is not None else plotly_js(), _header(inp, title))


# ---- header: what, and how to reproduce it ---------------------------------------------

def config_line(st: Study) -> str:
    s = st.base
    pr = st.hws[0].spec.decode.precision
    par = f"TP {s.tp}" + (f", PP {s.pp}" if s.pp > 1 else "") + (f", EP {s.ep}" if s.ep > 1
                                                                   else "")
    return (f"batch {st.batch} requests of {F.count(st.isl)} prompt + {F.count(st.osl)} "
            f"output tokens; weights {pr.weight}, activations {pr.act}, KV cache {pr.kv}; "
            f"{par}; {s.attention} attention")


def _header(inp: ReportInput, title: str) -> str:
    st = inp.study
    specs = []
    for h in st.hws:
        hw = h.hw
        specs.append((f"{hw.name}", f"{hw.file}  (memory: {hw.memory_source})"))
        dt = h.spec.decode.precision.compute
        if dt in hw.peaks:
            specs.append((f"{hw.name} {dt} peak", hw.peaks[dt].source))
        emp = hw.empirical
        if emp is not None and dt in emp.gemm_flops:
            specs.append((f"{hw.name} {dt} achieved GEMM", emp.gemm_sources.get(dt, "")))
        if emp is not None and emp.memory_source:
            specs.append((f"{hw.name} achieved memory", emp.memory_source))
        link = hw.gpu_link
        if link is not None and (st.base.tp > 1 or st.base.pp > 1):
            specs.append((f"{hw.name} link {link.name}", f"{link.file}  ({link.source})"))
    specs.append((f"model {st.model.name}", st.model.source or "-"))
    repro = [("command", inp.command), ("created (UTC)", inp.created)]
    repro += [(f"version {k}", v) for k, v in inp.versions.items()]
    repro += [(f"spec {k}", v) for k, v in specs]
    if inp.measured:
        dev = inp.measured.get("device") or {}
        repro.append(("measured on", ", ".join(f"{k} {v}" for k, v in dev.items()
                                                if not isinstance(v, dict))))
        tel = dev.get("telemetry")
        if tel:
            repro.append(("telemetry", ", ".join(f"{k} {v}" for k, v in tel.items())))
    return (f"<h1>{esc(title)}</h1><p class=\"sub\">{esc(config_line(st))}</p>"
            f"<p class=\"sub\">Times at spec ceilings (upper-bound speed) with empirical "
            f"ceilings (expected) beside them. Created {esc(inp.created)}.</p>"
            f"<details><summary>Reproduce this report</summary><pre>{esc(inp.command)}</pre>"
            f"{kv(repro)}</details>")


# ---- overview: the headline and the numbers --------------------------------------------

def headline(h: HwStudy) -> str:
    """One or two sentences that make the bottleneck obvious (HTML)."""
    s = h.spec
    b = bottleneck(s)
    mem = s.final.memory
    parts = []
    what = max(b["bytes_share"], key=b["bytes_share"].get)
    if b["bound"] == "memory":
        parts.append(f"Decode at batch {s.batch} is <b class=\"bad\">memory-bound</b>: "
                     f"{F.pct(b['bound_share'], 0)} of the step waits on HBM, "
                     f"{F.pct(b['bytes_share'][what], 0)} of the bytes are {what}; "
                     f"<b>{esc(b['top_op'])}</b> alone takes {F.pct(b['top_share'], 0)}.")
    elif b["bound"] == "comm":
        parts.append(f"Decode at batch {s.batch} is <b class=\"bad\">communication-bound</b>: "
                     f"{F.pct(b['comm_share'], 0)} of the step is collectives over the link.")
    else:
        parts.append(f"Decode at batch {s.batch} is <b>compute-bound</b> "
                     f"({F.pct(b['bound_share'], 0)} of the step); <b>{esc(b['top_op'])}</b> "
                     f"takes {F.pct(b['top_share'], 0)}.")
    if not mem.fits:
        parts.append(f"<b class=\"bad\">It does not fit</b>: {F.nbytes(mem.total_bytes)} per GPU "
                     f"against {F.nbytes(mem.usable_bytes)} usable; shard it (--tp) or quantize "
                     "(--weight-dtype fp8/int4).")
    else:
        best = gain_to(s, h.sweep, h.kv_limit_batch)
        if best is not None and best.batch > s.batch and \
                best.spec.tokens_per_s_per_gpu > 1.2 * s.tokens_per_s_per_gpu:
            x = best.spec.tokens_per_s_per_gpu / s.tokens_per_s_per_gpu
            parts.append(f"Batching to {best.batch} (the KV cache fits up to "
                         f"{h.kv_limit_batch}) raises tokens/s per GPU {F.num(x, 2)}x "
                         f"({F.num(s.tokens_per_s_per_gpu)} to "
                         f"{F.num(best.spec.tokens_per_s_per_gpu)}) at a TPOT of "
                         f"{F.seconds(best.spec.tpot_s)} instead of {F.seconds(s.tpot_s)}.")
    if h.gemm_compute_batch:
        parts.append(f"Decode GEMMs turn compute-bound at batch {h.gemm_compute_batch}.")
    return " ".join(parts)


def summary_cards(h: HwStudy) -> str:
    s, e = h.spec, h.empirical
    mem = s.final.memory
    fit_cls = "good" if mem.fits else "bad"
    return cards([
        (LABELS["ttft_s"], F.seconds(s.ttft_s), f"expected {F.seconds(e.ttft_s)}", ""),
        (LABELS["tpot_s"], F.seconds(s.tpot_s), f"expected {F.seconds(e.tpot_s)}", ""),
        (LABELS["decode_step_s"], F.seconds(s.decode_step_s),
         f"expected {F.seconds(e.decode_step_s)}", ""),
        (LABELS["prefill_step_s"], F.seconds(s.prefill_step_s),
         f"expected {F.seconds(e.prefill_step_s)}", ""),
        ("output tokens/s per GPU", F.num(s.tokens_per_s_per_gpu),
         f"expected {F.num(e.tokens_per_s_per_gpu)}", ""),
        ("output tokens/s per user", F.num(s.tokens_per_s_per_user),
         f"expected {F.num(e.tokens_per_s_per_user)}", ""),
        ("decode bound", s.decode.totals.bound,
         f"MBU {F.pct(s.decode.totals.mbu, 0)}, MFU {F.pct(s.decode.totals.mfu, 0)}",
         "bad" if s.decode.totals.bound != "compute" else ""),
        ("prefill bound", s.prefill.totals.bound,
         f"MFU {F.pct(s.prefill.totals.mfu, 0)}, MBU {F.pct(s.prefill.totals.mbu, 0)}", ""),
        ("memory per GPU", F.nbytes(mem.total_bytes),
         f"of {F.nbytes(mem.usable_bytes)} usable: {'fits' if mem.fits else 'DOES NOT FIT'}",
         fit_cls),
        ("largest batch that fits", F.count(mem.max_batch),
         f"at {F.count(s.isl + s.osl)} tokens per sequence", "bad" if mem.max_batch < s.batch
         else ""),
        ("GEMMs compute-bound from", f"batch {h.gemm_compute_batch}" if h.gemm_compute_batch
         else "never", "decode, spec ceilings", ""),
    ])


def _overview(page: Page, st: Study) -> None:
    page.section("summary", "Summary")
    for h in st.hws:
        if len(st.hws) > 1:
            page.add(f"<h3>{esc(h.hw.display_name)}</h3>")
        page.add(f'<div class="headline">{headline(h)}</div>')
        page.add(summary_cards(h))
    engine = st.hws[0].spec.engine if st.hws else "neutral"
    page.add('<p class="muted">Big numbers: spec ceilings (upper-bound speed); "expected": '
             "empirical ceilings (published achieved GEMM and memory rates, kernel overhead). "
             f"TTFT, TPOT and tokens/s: perfscope predict, {esc(engine)} engine, "
             f"{st.batch} requests in flight. {esc(DEFINITIONS['ttft_s'])}. "
             f"{esc(DEFINITIONS['tpot_s'])}. {esc(DEFINITIONS['decode_step_s'])}.</p>")


def _compare(page: Page, st: Study) -> None:
    page.section("devices", "Devices compared", "The same workload on each device.")
    page.figure(PC.compare_chart(st.hws))
    rows = []
    for h in st.hws:
        s, e, m = h.spec, h.empirical, h.spec.final.memory
        rows.append([h.hw.display_name, (F.seconds(s.ttft_s), s.ttft_s),
                     (F.seconds(e.ttft_s), e.ttft_s), (F.seconds(s.tpot_s), s.tpot_s),
                     (F.seconds(e.tpot_s), e.tpot_s),
                     (F.num(s.tokens_per_s_per_gpu), s.tokens_per_s_per_gpu),
                     (F.num(e.tokens_per_s_per_gpu), e.tokens_per_s_per_gpu),
                     s.decode.totals.bound, "yes" if m.fits else "NO",
                     (F.count(m.max_batch), m.max_batch)])
    page.add(table(["device", "TTFT spec", "TTFT expected", "TPOT spec", "TPOT expected",
                    "tok/s/GPU spec", "tok/s/GPU expected", "decode bound", "fits",
                    "max batch"], rows))


def _rooflines(page: Page, st: Study) -> None:
    page.section("roofline", "Roofline", "Every op of one prefill step (circles) and one "
                 "decode step (diamonds) at the operating batch, on each device's roofline. "
                 "Marker area: share of its step's time. Solid roofs: spec; dashed: achieved "
                 "(empirical). Hover a point for its shape, FLOPs, bytes and time.")
    panels = []
    for h in st.hws:
        p = C.analysis_panel([h.spec.prefill, h.spec.decode], h.hw.display_name)
        d = h.spec.decode.totals
        panels.append(p._replace(note=f"decode {d.bound}-bound, TPOT {F.seconds(d.time_s)}"))
    for i in range(0, len(panels), 2 if len(panels) > 2 else len(panels)):
        chunk = panels[i:i + (2 if len(panels) > 2 else len(panels))]
        page.figure(PR.roofline(chunk, height=560))
    comm = [(h.hw.display_name, [*C.analysis_points(h.spec.prefill)[1],
                                 *C.analysis_points(h.spec.decode)[1]], h) for h in st.hws]
    if any(c for _, c, _ in comm):
        panels2 = []
        for name, pts, h in comm:
            link = h.hw.gpu_link
            roofs = {}
            if link is not None:
                roofs[f"{link.name} per direction"] = (link.bandwidth_bytes_s, "spec")
                if link.empirical_busbw_bytes_s:
                    roofs[f"{link.name} achieved busbw"] = (link.empirical_busbw_bytes_s,
                                                            "empirical")
            panels2.append((name, pts, roofs))
        page.add("<h3>Communication against the link</h3>")
        page.figure(PC.link_chart(panels2), "Each collective of the step (hollow: predicted) "
                    "at its message size and the bus bandwidth it reaches; lines: the link's "
                    "ceilings. Small messages are latency-bound.")


def _sweeps(page: Page, st: Study) -> None:
    page.section("sweep", "Batch sweep", "Decode is memory-bound at small batch: every "
                 "sequence re-reads the same weights. Batching raises the intensity of the "
                 "GEMMs and walks them along the roof toward the ridge; the KV cache, read "
                 "once per sequence, does not gain. Move the slider to follow the ops.")
    for i, h in enumerate(st.hws):
        name = h.hw.display_name
        body = []
        body.append(("traj", PC.trajectory(h, f"{st.model.name} decode on {name}")))
        body.append(("batch", PC.batch_chart(h, f"Throughput and latency against batch on "
                                                f"{name}")))
        if i > 0:
            page.add(f"<details><summary>{esc(name)}</summary>")
        for _, fig in body:
            page.figure(fig)
        rows = []
        for p in h.sweep:
            s, e, m = p.spec, p.empirical, p.spec.final.memory
            rows.append([(str(p.batch), p.batch), (F.seconds(s.ttft_s), s.ttft_s),
                         (F.seconds(s.tpot_s), s.tpot_s), (F.seconds(e.tpot_s), e.tpot_s),
                         (F.num(s.tokens_per_s_per_gpu), s.tokens_per_s_per_gpu),
                         (F.num(s.tokens_per_s_per_user), s.tokens_per_s_per_user),
                         s.decode.totals.bound, (F.pct(s.decode.totals.mbu), s.decode.totals.mbu),
                         (F.nbytes(m.total_bytes), m.total_bytes), "yes" if m.fits else "NO"])
        page.add(table(["batch", "TTFT", "TPOT spec", "TPOT expected", "tok/s per GPU",
                        "tok/s per user", "decode bound", "MBU", "memory/GPU", "fits"], rows))
        if i > 0:
            page.add("</details>")


def _breakdowns(page: Page, st: Study) -> None:
    page.section("breakdown", "Where the time and memory go")
    rows = []
    for h in st.hws:
        link = h.hw.gpu_link.name if h.hw.gpu_link else "link"
        for ph, a in (("prefill", h.spec.prefill), ("decode", h.spec.decode)):
            label = f"{h.hw.name} {ph}" if len(st.hws) > 1 else ph
            rows.append((label, a.totals.time_by_kind, a.totals.time_s, link))
    page.figure(PC.kinds_chart(rows, "Time by op kind (spec ceilings)"),
                "Share of each step's time by kind of op; communication is named with its "
                "link. Hover for absolute times.")
    for i, h in enumerate(st.hws):
        if i > 0:
            page.add(f"<details><summary>Memory on {esc(h.hw.display_name)}</summary>")
        page.figure(PC.memory_chart(h, f"Memory per GPU on {h.hw.display_name}"),
                    f"Longest context that fits at batch {st.batch}: "
                    f"{F.count(h.context_limit) if h.context_limit else 'none'} tokens.")
        if i > 0:
            page.add("</details>")


def op_rows(a: Any) -> tuple[list[list[Any]], list[str]]:
    total = a.totals.time_s or 1.0
    rows, classes = [], []
    for p in sorted(a.points, key=lambda p: -p.total_time_s):
        op = p.op
        link = op.unit == "link"
        rows.append([op.name, op.kind, (str(op.count), op.count),
                     C.shape_text(op.shape), (F.si(op.flops, "FLOP"), op.flops),
                     (F.nbytes(op.comm_bytes if link else op.bytes),
                      op.comm_bytes if link else op.bytes),
                     ("-" if link else F.intensity(p.intensity), p.intensity),
                     (F.seconds(p.time_s), p.time_s), (F.seconds(p.total_time_s), p.total_time_s),
                     (F.pct(p.total_time_s / total), p.total_time_s / total),
                     (p.bound, None, "b"), p.ceiling,
                     C.link_name(a, p) if link else ""])
        classes.append(f"bound-{p.bound}")
    return rows, classes


def _op_tables(page: Page, st: Study) -> None:
    page.section("ops", "Ops", "Per op type: FLOPs and bytes per instance, count = layers "
                 "of that type. Click a column to sort.")
    heads = ["op", "kind", "count", "shape", "FLOPs", "bytes", "FLOP/B", "time", "x count",
             "share", "bound", "ceiling", "link"]
    for i, h in enumerate(st.hws):
        for ph, a in (("prefill", h.spec.prefill), ("decode", h.spec.decode)):
            s = a.scenario
            what = f"{ph} batch {s.batch}" + (f", context {s.context_len}" if ph == "decode"
                                              else f", prompt {s.seq_len}")
            rows, classes = op_rows(a)
            kinds = sorted(a.totals.time_by_kind.items(), key=lambda kv: -kv[1])
            sub = ", ".join(f"{k} {F.pct(v / (a.totals.time_s or 1))}" for k, v in kinds if v)
            page.add(f"<details{' open' if i == 0 else ''}><summary>{esc(h.hw.display_name)}"
                     f": {esc(what)}: {F.seconds(a.totals.time_s)}, {a.totals.bound}-bound "
                     f"<span class=\"tag\">{esc(sub)}</span></summary>")
            page.add(table(heads, rows, left=(0, 1, 3, 10, 11, 12), row_class=classes))
            page.add("</details>")


def _recommendations(page: Page, recs: Sequence[Mapping[str, Any]]) -> None:
    page.section("recommendations", "Recommendations")
    for r in recs:
        ev = r.get("evidence") or {}
        evs = ", ".join(f"{k} {v}" for k, v in ev.items()) if isinstance(ev, Mapping) \
            else str(ev)
        gain = r.get("expected_gain")
        page.add(f'<div class="rec"><div class="rule">{esc(r.get("rule", ""))}</div>'
                 f"<div>{esc(r.get('message', ''))}</div>"
                 + (f'<div class="muted">evidence: {esc(evs)}</div>' if evs else "")
                 + (f'<div class="muted">expected gain: {esc(gain)}</div>' if gain else "")
                 + "</div>")


def _definitions(page: Page) -> None:
    page.section("notes", "How to read this report")
    names = {"ttft_s": "TTFT", "tpot_s": "TPOT", "tokens_per_s_per_gpu": "tokens/s per GPU",
             "tokens_per_s_per_user": "tokens/s per user", "e2e_s": "end to end",
             "prefill_step_s": "prefill step", "decode_step_s": "decode step"}
    items = [(names.get(k, k), v) for k, v in DEFINITIONS.items()]
    items += [("spec ceilings", "published peak FLOP/s and bandwidth: the upper-bound speed"),
              ("empirical ceilings", "published achieved GEMM and memory rates where the "
               "spec has them, plus a fixed kernel overhead: the expected speed"),
              ("bound", "compute when the op's FLOPs take longer than its bytes at the "
               "ceilings, memory otherwise; comm for collectives over the link"),
              ("per GPU", "memory and FLOPs are for the busiest GPU of the group; times are "
               "the group's wall time")]
    page.add(kv(items))
