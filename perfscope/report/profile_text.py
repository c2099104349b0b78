"""The terminal summary of ``perfscope profile``: per device, TTFT, TPOT, tokens/s per GPU and
per user at spec (upper-bound speed) and empirical (expected) ceilings, the bound, memory fit
and the largest batch that fits, where decode turns compute-bound. Renderables that fit the
given width."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from perfscope.report import fmt as F
from perfscope.report.study import HwStudy, Study, bottleneck
from perfscope.report.summary import DEFINITIONS, LABELS
from perfscope.report.tables import Col, fit_table, lines, t_s, wrap_fields


def _metrics(h: HwStudy, width: int) -> Any:
    s, e = h.spec, h.empirical
    rows = [
        [LABELS["ttft_s"], t_s(s.ttft_s), t_s(e.ttft_s)],
        [LABELS["tpot_s"], t_s(s.tpot_s), t_s(e.tpot_s)],
        [LABELS["decode_step_s"], t_s(s.decode_step_s), t_s(e.decode_step_s)],
        ["output tokens/s per GPU", F.num(s.tokens_per_s_per_gpu),
         F.num(e.tokens_per_s_per_gpu)],
        ["output tokens/s per user", F.num(s.tokens_per_s_per_user),
         F.num(e.tokens_per_s_per_user)],
        ["end to end per request", t_s(s.e2e_s), t_s(e.e2e_s)],
        ["decode bound", s.decode.totals.bound, e.decode.totals.bound],
        ["prefill bound", s.prefill.totals.bound, e.prefill.totals.bound],
    ]
    return fit_table([Col("at ceilings:", 0, right=False), Col("spec (upper bound)", 0),
                      Col("empirical (expected)", 0)], rows, width)


def device_renderables(st: Study, h: HwStudy, width: int) -> list[Any]:
    s = h.spec
    mem = s.final.memory
    b = bottleneck(s)
    pr = s.decode.precision
    head = wrap_fields([f"{st.model.name} on {h.hw.display_name}",
                        f"batch {st.batch} x ({F.count(st.isl)} prompt + {F.count(st.osl)} "
                        "output tokens)",
                        f"weights {pr.weight}, KV {pr.kv}",
                        f"TP {st.base.tp}" + (f" PP {st.base.pp}" if st.base.pp > 1 else "")],
                       width)
    fit = "fits" if mem.fits else "DOES NOT FIT"
    what = max(b["bytes_share"], key=b["bytes_share"].get)
    facts = [
        *wrap_fields([f"memory per GPU {F.nbytes(mem.total_bytes)}",
                      f"of {F.nbytes(mem.usable_bytes)} usable: {fit}"], width, sep=" "),
        *wrap_fields([f"largest batch that fits: {F.count(mem.max_batch)}",
                      f"(KV cache at {F.count(st.isl + st.osl)} tokens per sequence)"], width,
                     sep=" "),
        *wrap_fields(["decode GEMMs compute-bound from batch "
                      + (F.count(h.gemm_compute_batch) if h.gemm_compute_batch else "never"),
                      ("whole step from batch " + F.count(h.step_compute_batch))
                      if h.step_compute_batch else
                      "the whole step never (KV cache reads grow with the batch)"], width,
                     sep="; "),
        *wrap_fields([f"decode bottleneck: {b['top_op']} {F.pct(b['top_share'], 0)} of the "
                      "step",
                      f"{F.pct(b['bytes_share'][what], 0)} of the bytes moved are {what}"],
                     width, sep="; "),
    ]
    if not mem.fits:
        need = 1 << max(0, math.ceil(math.log2(mem.total_bytes / mem.usable_bytes)))
        facts.append(f"to fit: shard it (--tp {need * st.base.tp}) or quantize it "
                     "(--weight-dtype fp8 or int4)")
    if b["comm_share"] > 0.01:
        facts.append(f"communication: {F.pct(b['comm_share'], 0)} of the decode step")
    return [*lines(head), _metrics(h, width), *lines(facts)]


def compare_table(st: Study, width: int) -> Any:
    rows = [[h.hw.name, t_s(h.spec.ttft_s), t_s(h.spec.tpot_s),
             F.num(h.spec.tokens_per_s_per_gpu), F.num(h.spec.tokens_per_s_per_user),
             "yes" if h.spec.final.memory.fits else "NO", F.count(h.kv_limit_batch)]
            for h in st.hws]
    return fit_table([Col("device", 0, right=False), Col("TTFT", 0), Col("TPOT", 0),
                      Col("tok/s/GPU", 0), Col("tok/s/user", 2), Col("fits", 1, right=False),
                      Col("max batch", 1)], rows, width)


def summary_renderables(st: Study, width: int, report_path: str | None = None,
                        measured: Mapping[str, Any] | None = None) -> list[Any]:
    from rich.text import Text

    out: list[Any] = []
    for i, h in enumerate(st.hws):
        if i:
            out.append(Text(""))
        out += device_renderables(st, h, width)
    if len(st.hws) > 1:
        out += [Text(""), *lines(["devices compared (spec ceilings; expected in the "
                                  "report):"]), compare_table(st, width)]
    engine = st.hws[0].spec.engine if st.hws else "neutral"
    notes = [f"TTFT, TPOT, tokens/s: perfscope predict ({engine} engine), {st.batch} "
             "requests in flight.", DEFINITIONS["ttft_s"] + ".", DEFINITIONS["tpot_s"] + ".",
             DEFINITIONS["decode_step_s"] + "."]
    out.append(Text(""))
    out += lines([w for n in notes for w in wrap_fields(n.split(" "), width, sep=" ")])
    if measured:
        ops = (measured.get("ops") or {}).get("points") or []
        ceil = (measured.get("ceilings") or {}).get("values") or []
        dev = (measured.get("device") or {}).get("name", "this machine")
        out += lines(wrap_fields([f"measured on {dev}: {len(ceil)} ceilings, {len(ops)} ops",
                                  f"in {F.seconds(measured.get('duration_s'), micro='us')}"],
                                 width, sep=" "))
    if report_path:
        out += lines([f"report: {report_path}"])
    return out
