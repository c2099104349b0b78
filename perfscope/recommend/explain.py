"""Why the top choice: Recommendation records with the roofline's numbers as evidence.

Each rule reads the search (step models, served grids) and one ``analyze()`` of the top
choice's decode and prefill steps, so every number matches what ``perfscope analyze`` shows
for that step. Rules: where decode and prefill sit against the ridge; what raising the batch
buys and what stops it; what each quantization changes; what the KV dtype changes; what TP
costs in all-reduce time on this link and over PCIe; why PP adds latency.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

from perfscope.analysis import Analysis, analyze
from perfscope.analytic.ops import OpGraph
from perfscope.recommend.answers import _eval_of
from perfscope.recommend.types import Candidate, Recommendation
from perfscope.roofline import roofline
from perfscope.serving.fitting import layout_scenario
from perfscope.units import DTYPE_BITS, fmt_bytes, fmt_time

if TYPE_CHECKING:
    from perfscope.recommend.search import Evaluated, Search


def _ms(t: float) -> str:
    return fmt_time(t)


def _n(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _step(search: Search, e: Evaluated, phase: str, batch: int) -> Analysis:
    req = search.req
    sc = e.sm.scenario
    if phase == "decode":
        b = max(1, int(np.ceil(batch / sc.pp)))
        return analyze(req.model, req.hw, layout_scenario(
            sc, phase="decode", batch=b, context_len=req.isl + req.osl // 2 - 1, kv_dtype=e.kv))
    return analyze(req.model, req.hw, layout_scenario(sc, phase="prefill", batch=1,
                                                      seq_len=req.isl, kv_dtype=e.kv))


def _gemm_position(a: Analysis) -> tuple[float, float, float]:
    """GEMM FLOP/byte over the step, the ridge of their dtype, and their share of the step."""
    pts = [p for p in a.points if p.op.kind == "gemm"]
    flops = sum(p.op.flops * p.op.count for p in pts)
    nbytes = sum(p.bytes * p.op.count for p in pts)
    t = sum(p.total_time_s for p in pts)
    big = max(pts, key=lambda p: p.total_time_s)
    ridge = big.peak_flops_per_s / big.bandwidth_bytes_s
    return flops / nbytes if nbytes else 0.0, ridge, t / a.totals.time_s


def explain(search: Search, top: Candidate) -> list[Recommendation]:
    e = _eval_of(search, top)
    assert e is not None
    dec = _step(search, e, "decode", top.concurrency)
    pre = _step(search, e, "prefill", 1)
    recs = [_decode_bound(search, e, top, dec), _batch(search, e, top),
            _prefill_bound(search, top, pre)]
    # (the rules below return None where they have nothing to compare)
    for rule in (_quant, _kv, _tp, _pp):
        r = rule(search, e, top, dec)
        if r is not None:
            recs.append(r)
    fp8 = _fp8_unsupported(search)
    if fp8 is not None:
        recs.append(fp8)
    return recs


def _fp8_unsupported(search: Search) -> Recommendation | None:
    gone = [k for k in search.dropped if "fp8 math needs Hopper" in k]
    if not gone:
        return None
    return Recommendation("quant.fp8_unsupported", gone[0] + ": use int8 W8A8 for "
                          "compute-bound prefill, or int8/int4 weight-only for memory-bound "
                          "decode.", {}, None)


def _decode_bound(search: Search, e: Evaluated, top: Candidate, a: Analysis) -> Recommendation:
    hw = search.req.hw
    inten, ridge, share = _gemm_position(a)
    kind = a.totals.time_by_kind
    step = a.totals.time_s
    weights = e.sm.weights_bytes
    kv_read = sum(p.op.kv_read_bytes * p.op.count for p in a.points)
    bound = "memory" if inten < ridge else "compute"
    msg = (f"Decode of {top.concurrency} sequences is {bound}-bound: its GEMMs do "
           f"{inten:.0f} FLOP per byte against a ridge of {ridge:.0f} on {hw.display_name} "
           f"({a.precision.compute}), {inten / ridge:.0%} of the way to the compute roof. "
           f"Each step streams {fmt_bytes(weights)} of weights per GPU "
           f"(GEMMs {share:.0%} of the {_ms(step)} step), reads "
           f"{fmt_bytes(kv_read)} of KV cache (attention {kind.get('attention', 0) / step:.0%})"
           + (f", and all-reduces take {kind.get('comm', 0) / step:.0%}"
              if kind.get("comm") else "") + ".")
    return Recommendation("roofline.decode", msg, {
        "gemm_flops_per_byte": inten, "ridge_flops_per_byte": ridge,
        "decode_step_s": step, "weights_per_gpu_bytes": weights, "kv_read_bytes": kv_read,
        "gemm_time_s": share * step, "attention_time_s": kind.get("attention", 0.0),
        "comm_time_s": kind.get("comm", 0.0)})


def _batch(search: Search, e: Evaluated, top: Candidate) -> Recommendation:
    s, req = e.served, search.req
    conc = s.concurrency
    i = int(np.flatnonzero(conc == top.concurrency)[0])
    tps = e.tokens_per_s_per_gpu
    m = int(s.max_running[0])
    if i + 1 >= len(conc):
        why = f"the search stops at {int(conc[-1])} requests per replica"
    elif conc[i + 1] > m:
        why = (f"the KV cache is full: {m} sequences of {req.isl + req.osl} tokens fit "
               f"({fmt_bytes(float(s.kv_bytes_per_seq[0]))} each)")
    elif req.tpot_s is not None and s.tpot_s[i + 1] > req.tpot_s:
        why = (f"the TPOT target stops it: {int(conc[i + 1])} requests would take "
               f"{_ms(float(s.tpot_s[i + 1]))} per token (> {_ms(req.tpot_s)})")
    elif req.ttft_s is not None and s.ttft_s[i + 1] > req.ttft_s:
        why = (f"the TTFT target stops it: {int(conc[i + 1])} requests would wait "
               f"{_ms(float(s.ttft_s[i + 1]))} for the first token (> {_ms(req.ttft_s)})")
    else:
        why = "throughput per GPU stops rising: the steps have turned compute-bound"
    gain = float(tps[i] / tps[0])
    msg = (f"Raising concurrency from 1 to {top.concurrency} multiplies tokens/s per GPU by "
           f"{gain:.1f} ({tps[0]:,.0f} to {tps[i]:,.0f}): a memory-bound step costs little "
           f"more for more sequences (TPOT {_ms(float(s.tpot_s[0]))} to "
           f"{_ms(float(s.tpot_s[i]))}). It stops at {top.concurrency} because {why}.")
    return Recommendation("batch.scaling", msg, {
        "tokens_per_s_per_gpu_at_1": float(tps[0]), "tokens_per_s_per_gpu": float(tps[i]),
        "tpot_s_at_1": float(s.tpot_s[0]), "tpot_s": float(s.tpot_s[i]),
        "kv_capacity_sequences": float(m), "concurrency": float(top.concurrency)},
        gain, "tokens/s/GPU vs one request")


def _prefill_bound(search: Search, top: Candidate, a: Analysis) -> Recommendation:
    inten, ridge, share = _gemm_position(a)
    bound = "compute" if inten >= ridge else "memory"
    msg = (f"Prefill of {search.req.isl} tokens is {bound}-bound: {inten:.0f} FLOP per byte "
           f"against the ridge at {ridge:.0f} ({_ms(a.totals.time_s)} alone, GEMMs "
           f"{share:.0%}). " + ("8-bit tensor math (fp8 or int8 W8A8) doubles its roof; "
                                "weight-only quantization leaves it at 16-bit math."
                                if bound == "compute" else
                                "Short prompts stream weights like decode does."))
    return Recommendation("roofline.prefill", msg, {
        "gemm_flops_per_byte": inten, "ridge_flops_per_byte": ridge,
        "prefill_s": a.totals.time_s, "ttft_s": top.ttft_s})


def _same(search: Search, top: Candidate, **kw) -> list[Evaluated]:
    want = {"tp": top.tp, "pp": top.pp, "ep": top.ep, "attn_dp": top.attn_dp,
            "scheme": top.scheme, "kv": top.kv_dtype} | kw
    return [e for e in search.evals
            if all((getattr(e.st, k) if k not in ("scheme", "kv") else
                    (e.st.scheme.name if k == "scheme" else e.kv)) == v
                   for k, v in want.items() if v is not None)]


def _at(e: Evaluated, c: int) -> int:
    """Index of concurrency ``c`` on e's grid (the nearest at or below)."""
    return int(np.searchsorted(e.served.concurrency, c, side="right") - 1)


def _quant(search: Search, e: Evaluated, top: Candidate, a: Analysis) -> Recommendation | None:
    others = _same(search, top, scheme=None)
    if len(others) < 2:
        return None
    i = _at(e, top.concurrency)
    parts, ev = [], {}
    base = next((o for o in others if o.st.scheme.name in ("bf16", "fp16")), None)
    for o in sorted(others, key=lambda o: -o.sm.weights_bytes):
        j = _at(o, top.concurrency)
        name = o.st.scheme.label
        d, t1 = float(o.served.decode_step_s[j]), float(o.served.prefill_s[0])
        ev[f"{o.st.scheme.name}_decode_step_s"] = d
        ev[f"{o.st.scheme.name}_prefill_s"] = t1
        ev[f"{o.st.scheme.name}_weights_per_gpu_bytes"] = float(o.sm.weights_bytes)
        parts.append(f"{name} {fmt_bytes(o.sm.weights_bytes)}/GPU: decode step {_ms(d)}, "
                     f"prefill {_ms(t1)}")
    msg = (f"At {top.layout} and {top.concurrency} requests: " + "; ".join(parts) + ". "
           "Decode is memory-bound, so it gains from fewer weight bytes whichever the math; "
           "compute-bound prefill gains only from 8-bit tensor math (W8A8), and weight-only "
           "formats add dequantization to it.")
    gain = None
    if base is not None:
        tb = float(np.max(np.where(search.meets(base), base.tokens_per_s_per_gpu, 0)))
        gain = top.tokens_per_s_per_gpu / tb if tb > 0 else None
    ev["decode_step_s"] = float(e.served.decode_step_s[i])
    return Recommendation("quant.weights", msg, ev, gain, "tokens/s/GPU vs 16-bit weights")


def _kv(search: Search, e: Evaluated, top: Candidate, a: Analysis) -> Recommendation | None:
    others = {o.kv: o for o in _same(search, top, kv=None)}
    if len(others) < 2 or "bf16" not in others:
        return None
    b16 = others["bf16"]
    low = min(others.values(), key=lambda o: o.served.kv_bytes_per_seq[0])
    if low is b16:
        return None
    m16, m8 = int(b16.served.max_running[0]), int(low.served.max_running[0])
    i16, i8 = _at(b16, top.concurrency), _at(low, top.concurrency)
    t16 = float(np.max(np.where(search.meets(b16), b16.tokens_per_s_per_gpu, 0)))
    t8 = float(np.max(np.where(search.meets(low), low.tokens_per_s_per_gpu, 0)))
    msg = (f"An {low.kv} KV cache holds {m8} sequences of {search.req.isl + search.req.osl} "
           f"tokens per replica instead of {m16} in bf16, and halves what each decode step "
           f"reads from it: step {_ms(float(b16.served.decode_step_s[i16]))} -> "
           f"{_ms(float(low.served.decode_step_s[i8]))} at {top.concurrency} requests.")
    return Recommendation("kv.dtype", msg, {
        "bf16_max_concurrency": float(m16), f"{low.kv}_max_concurrency": float(m8),
        "bf16_best_tokens_per_s_per_gpu": t16, f"{low.kv}_best_tokens_per_s_per_gpu": t8},
        t8 / t16 if t16 > 0 else None, f"tokens/s/GPU, {low.kv} vs bf16 KV cache")


def _tp(search: Search, e: Evaluated, top: Candidate, a: Analysis) -> Recommendation | None:
    hw = search.req.hw
    comm = [p for p in a.points if p.op.unit == "link" and p.op.comm == "all_reduce"]
    if top.tp > 1 and comm:
        t = sum(p.total_time_s for p in comm)
        n = sum(p.op.count for p in comm)
        link = comm[0].link or (hw.gpu_link.name if hw.gpu_link else "the GPU link")
        msg = (f"TP{top.tp} adds two all-reduces per layer: {n} per decode step, "
               f"{_ms(t)} of the {_ms(a.totals.time_s)} step on {link}")
        ev = {"allreduces_per_step": float(n), "allreduce_time_s": t,
              "decode_step_s": a.totals.time_s}
        pcie = hw.host_link
        if pcie is not None and hw.gpu_link is not None and pcie.kind != hw.gpu_link.kind:
            # the same GPUs without their scale-up link: every group crosses PCIe
            slow = dataclasses.replace(hw, topology=dataclasses.replace(
                hw.topology, scale_up=None, scale_up_kind="none", scale_up_domain=1))
            t_p = sum(roofline(OpGraph((p.op,)), slow, search.req.ceiling)[0].time_s *
                      p.op.count for p in comm)
            msg += f"; over {pcie.display_name} the same would take {_ms(t_p)}"
            ev["allreduce_time_pcie_s"] = t_p
        fewer = [o for o in search.evals if o.st.scheme.name == top.scheme and o.kv ==
                 top.kv_dtype and o.st.tp < top.tp and o.st.pp == top.pp and search.meets(o).any()]
        if fewer:
            o = max(fewer, key=lambda o: float(np.max(np.where(search.meets(o),
                                                                o.tokens_per_s_per_gpu, 0))))
            best_o = float(np.max(np.where(search.meets(o), o.tokens_per_s_per_gpu, 0)))
            msg += (f". TP{o.st.tp} replicas reach {best_o:,.0f} tokens/s/GPU under the "
                    f"same targets against {top.tokens_per_s_per_gpu:,.0f}")
            ev["fewer_tp_tokens_per_s_per_gpu"] = best_o
        return Recommendation("tp.comm", msg + ".", ev)
    more = [o for o in search.evals if o.st.tp > top.tp and o.st.scheme.name == top.scheme
            and o.kv == top.kv_dtype and o.st.pp == top.pp]
    if not more:
        return None
    o = min(more, key=lambda o: o.st.tp)
    msg = (f"TP{top.tp} needs no all-reduce; TP{o.st.tp} would cut the single-request TPOT "
           f"from {_ms(float(e.served.tpot_s[0]))} to {_ms(float(o.served.tpot_s[0]))} but "
           f"splits every step over {o.st.tp} GPUs and adds all-reduces, so tokens/s per GPU "
           "is lower under these targets.")
    return Recommendation("tp.comm", msg, {"tpot_s_at_1": float(e.served.tpot_s[0]),
                                           "more_tp_tpot_s_at_1": float(o.served.tpot_s[0])})


def _pp(search: Search, e: Evaluated, top: Candidate, a: Analysis) -> Recommendation | None:
    pps = [o for o in search.evals if o.st.pp > 1 and o.st.scheme.name == top.scheme
           and o.kv == top.kv_dtype and o.feasible.any()]
    if not pps:
        return None
    o = min(pps, key=lambda o: (o.st.pp, o.st.tp))
    g = o.st.gpus
    tps = [x for x in search.evals if x.st.pp == 1 and x.st.gpus == g and
           x.st.scheme.name == top.scheme and x.kv == top.kv_dtype]
    msg = (f"PP{o.st.pp} cuts the layers into {o.st.pp} stages that a token crosses one "
           f"after the other (plus {o.st.pp - 1} activation transfers), so it does not "
           f"shorten a step: TPOT at one request {_ms(float(o.served.tpot_s[0]))}")
    ev = {"pp": float(o.st.pp), "pp_tpot_s_at_1": float(o.served.tpot_s[0])}
    if tps:
        t = tps[0]
        msg += (f" against {_ms(float(t.served.tpot_s[0]))} with TP{t.st.tp} on the same "
                f"{g} GPUs")
        ev["tp_tpot_s_at_1"] = float(t.served.tpot_s[0])
    msg += ". PP raises throughput only by keeping several micro-batches in flight."
    return Recommendation("pp.latency", msg, ev)


def explain_failure(search: Search, status: str,
                    ranked: list[Candidate]) -> tuple[str, list[Recommendation]]:
    """What is closest, and why nothing works (status no_fit or no_target)."""
    req = search.req
    if status == "no_fit":
        if search.too_big:
            st, w, usable = min(search.too_big, key=lambda t: t[1])
            need = int(np.ceil(w * st.gpus / usable))
            msg = (f"{req.model.name} fits nowhere on {req.gpus} x {req.hw.display_name}: "
                   f"the smallest weight footprint allowed is {fmt_bytes(w)} per GPU "
                   f"(TP{st.tp} PP{st.pp} {st.scheme.label}) against {fmt_bytes(usable)} "
                   f"usable; it needs about {need} GPUs")
            bits = DTYPE_BITS.get(st.scheme.weight_dtype, 16)
            if bits > 4:  # a smaller format than the smallest allowed one exists
                msg += (", or lower-bit weights (--weight-dtypes "
                        f"{'int8,int4' if bits > 8 else 'int4'})")
            for why in sorted(search.dropped):
                if "Hopper" in why or "dtype" in why:
                    msg += f"; {why}"
            return msg + ".", [Recommendation("fit.weights", msg + ".", {
                "weights_per_gpu_bytes": w, "usable_per_gpu_bytes": usable,
                "gpus_needed": float(need)})]
        if search.evals:
            e = min(search.evals, key=lambda e: float(e.served.kv_bytes_per_seq[0]))
            kv = float(e.served.kv_bytes_per_seq[0])
            msg = (f"The weights fit, but not one {req.isl + req.osl}-token sequence: its KV "
                   f"cache needs {fmt_bytes(kv)} per GPU (closest: TP{e.st.tp} PP{e.st.pp} "
                   f"{e.st.scheme.label}, KV {e.kv}); shorten the request or add GPUs.")
            return msg, [Recommendation("fit.kv", msg, {"kv_bytes_per_seq": kv})]
        reasons = "; ".join(sorted(search.dropped)) or "no configuration is allowed"
        msg = f"Nothing to search: {reasons}."
        return msg, [Recommendation("search.empty", msg, {})]
    # no_target: the feasible configuration closest to the targets
    best = None
    for e in search.evals:
        s = e.served
        r = np.ones_like(s.tpot_s)
        if req.tpot_s is not None:
            r = np.maximum(r, s.tpot_s / req.tpot_s)
        if req.ttft_s is not None:
            r = np.maximum(r, s.ttft_s / req.ttft_s)
        r = np.where(e.feasible, r, np.inf)
        i = int(np.argmin(r))
        if best is None or r[i] < best[0]:
            best = (float(r[i]), e, i)
    assert best is not None
    _, e, i = best
    s = e.served
    min_tpot = min(float(np.min(np.where(x.feasible, x.served.tpot_s, np.inf)))
                   for x in search.evals)
    min_ttft = min(float(np.min(np.where(x.feasible, x.served.ttft_s, np.inf)))
                   for x in search.evals)
    targets = " and ".join(f"{k} <= {_ms(v)}" for k, v in (("TTFT", req.ttft_s),
                                                            ("TPOT", req.tpot_s)) if v)
    msg = (f"No configuration meets {targets}. Closest: TP{e.st.tp} PP{e.st.pp} "
           f"{e.st.scheme.label}, KV {e.kv}, {_n(int(s.concurrency[i]), 'request')}: TTFT "
           f"{_ms(float(s.ttft_s[i]))}, TPOT {_ms(float(s.tpot_s[i]))}. The fastest any "
           f"allowed configuration gets: TPOT {_ms(min_tpot)} (one request streaming its "
           f"weights), TTFT {_ms(min_ttft)}.")
    return msg, [Recommendation("targets.unmet", msg, {
        "closest_ttft_s": float(s.ttft_s[i]), "closest_tpot_s": float(s.tpot_s[i]),
        "min_tpot_s": min_tpot, "min_ttft_s": min_ttft})]
