"""Serving figures of one configuration: TTFT, TPOT, tokens/s per GPU and per user.

``serving_summary`` is the one place the report gets them from. They come from
``perfscope.serving.predict`` (a serving benchmark at concurrency ``batch``: queueing of the
prompts that arrive together, decode over the growing context, the engine's scheduler and
calibrated overheads; the neutral engine unless one is named), next to the step-level
roofline figures the report's charts and bounds are built from.

Definitions (stated on every surface that shows them, ``DEFINITIONS`` and ``LABELS``):
- TTFT: mean time to first token of a serving benchmark at concurrency ``batch`` (the queueing
  of the prompts that arrive together), engine overheads included.
- TPOT: mean time per output token after the first, ``(e2e - TTFT) / (osl - 1)``, decode over
  the growing context with the other requests' prefills riding in the steps.
- tokens/s per GPU: output tokens of all ``batch`` requests per second of the run, over the
  GPUs of the layout; per user: ``1 / TPOT``.
- prefill step / decode step: one roofline step (``analyze``): the whole batch's prompts, and
  one decode step at the mean context, no engine overheads: what the bounds and charts show.
- memory fit: at the last output token (``isl + osl`` tokens cached per sequence).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, NamedTuple

LABELS = {
    "ttft_s": "TTFT (serving, mean)",
    "tpot_s": "TPOT (serving, mean)",
    "tokens_per_s_per_gpu": "output tokens/s per GPU",
    "tokens_per_s_per_user": "output tokens/s per user",
    "e2e_s": "end to end per request",
    "prefill_step_s": "prefill step (roofline)",
    "decode_step_s": "decode step (roofline)",
}

DEFINITIONS = {
    "ttft_s": "TTFT: mean time to first token of a serving benchmark at concurrency = batch "
              "(perfscope predict: the queueing of prompts that arrive together and the "
              "engine's overheads included)",
    "tpot_s": "TPOT: mean time per output token after the first, (end to end - TTFT) / "
              "(output - 1), over the growing context with the other prompts' prefills",
    "tokens_per_s_per_gpu": "output tokens/s per GPU: all requests' output tokens per second "
                            "of the run, over the layout's GPUs",
    "tokens_per_s_per_user": "output tokens/s per user: 1 / TPOT",
    "e2e_s": "end to end: TTFT + (output - 1) x TPOT",
    "prefill_step_s": "prefill step: one roofline step running the whole batch's prompts (no "
                      "queueing, no engine overheads)",
    "decode_step_s": "decode step: one roofline step at the mean context over the output",
}


class ServingSummary(NamedTuple):
    ceiling: str  # spec (upper-bound speed) | empirical (expected)
    batch: int  # requests in flight (the benchmark's concurrency)
    isl: int  # prompt tokens per request
    osl: int  # output tokens per request
    gpus: int  # tp x pp x attention-DP
    ttft_s: float  # serving prediction (perfscope.serving.predict)
    tpot_s: float
    e2e_s: float
    tokens_per_s_per_gpu: float
    tokens_per_s_per_user: float
    prefill: Any  # Analysis of the prefill step (the whole batch's prompts)
    decode: Any  # Analysis of the decode step at the mean context
    final: Any  # Analysis of the last decode step: memory fit
    engine: str = "neutral"
    prediction: Any = None  # the serving Prediction (queueing, bursts, uncertainty)

    @property
    def decode_context(self) -> int:
        return self.decode.scenario.context_len

    @property
    def prefill_step_s(self) -> float:
        return self.prefill.totals.time_s

    @property
    def decode_step_s(self) -> float:
        return self.decode.totals.time_s

    def to_json(self) -> dict[str, Any]:
        mem = self.final.memory
        p = self.prediction
        return {"ceiling": self.ceiling, "batch": self.batch, "isl": self.isl,
                "osl": self.osl, "gpus": self.gpus, "engine": self.engine,
                "ttft_s": self.ttft_s, "tpot_s": self.tpot_s, "e2e_s": self.e2e_s,
                "tokens_per_s_per_gpu": self.tokens_per_s_per_gpu,
                "tokens_per_s_per_user": self.tokens_per_s_per_user,
                "ttft_first_wave_s": p.ttft_burst_s if p else None,
                "ttft_later_s": p.ttft_steady_s if p else None,
                "prefill_step_s": self.prefill_step_s, "decode_step_s": self.decode_step_s,
                "decode_context_len": self.decode_context,
                "prefill_bound": self.prefill.totals.bound,
                "decode_bound": self.decode.totals.bound,
                "memory_per_gpu_bytes": mem.total_bytes, "usable_bytes": mem.usable_bytes,
                "fits": mem.fits, "max_batch": mem.max_batch,
                "uncertainty": {k: p.uncertainty.get(k) for k in ("tpot_mape", "ttft_mape")}
                if p else None,
                "definitions": DEFINITIONS}


def serving_summary(model: Any, hw: Any, base: Any, *, batch: int, isl: int, osl: int,
                    ceiling: str = "spec", engine: str | None = None) -> ServingSummary:
    """TTFT, TPOT and throughput of ``batch`` concurrent requests of ``isl`` prompt and
    ``osl`` output tokens on ``hw`` (``base``: a Scenario giving dtypes, parallelism,
    implementation), as ``perfscope predict`` gives them for ``engine`` (neutral when None),
    beside the roofline steps behind them."""
    from perfscope.analysis import analyze
    from perfscope.serving.predict import Layout, Workload, predict

    common = replace(base, batch=batch, ceiling=ceiling)
    prefill = analyze(model, hw, replace(common, phase="prefill", seq_len=isl, context_len=0))
    mean_ctx = isl + (osl - 1) // 2
    decode = analyze(model, hw, replace(common, phase="decode", seq_len=1,
                                        context_len=max(1, mean_ctx)))
    last = isl + osl - 1
    final = decode if last == mean_ctx else \
        analyze(model, hw, replace(common, phase="decode", seq_len=1, context_len=last))
    gpus = base.tp * base.pp * base.attn_dp
    p = predict(model, hw, Layout(tp=base.tp, pp=base.pp, ep=base.ep, attn_dp=base.attn_dp,
                                  moe_comm=base.moe_comm),
                Workload(isl, max(osl, 2), batch), engine=engine,
                weight_dtype=base.weight_dtype, act_dtype=base.act_dtype,
                kv_dtype=base.kv_dtype, group_size=base.group_size, ceiling=ceiling)
    return ServingSummary(ceiling, batch, isl, osl, gpus, p.ttft_s, p.tpot_s, p.e2e_s,
                          p.tokens_per_s_per_gpu, p.tokens_per_s_per_user, prefill, decode,
                          final, p.engine.name, p)
