"""Serving figures of one configuration: TTFT, TPOT, tokens/s per GPU and per user.

``serving_summary`` is the one place the report gets them from. Today it derives them from
three analysed steps (no queueing model); ``perfscope predict`` (perfscope.serving) will
replace its body, and every renderer keeps working.

Definitions (stated on every surface that shows them):
- TTFT: one prefill step of the whole batch's prompts (``batch`` x ``isl`` tokens), requests
  arriving together, no queueing behind other requests.
- TPOT: one decode step at the mean cached context over the output, ``isl + (osl - 1) / 2``.
- tokens/s per GPU: ``batch / TPOT / GPUs`` (decode in steady state, all GPUs of the group).
- tokens/s per user: ``1 / TPOT`` (what one stream sees while decoding).
- memory fit: at the last output token (``isl + osl`` tokens cached per sequence).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, NamedTuple

DEFINITIONS = {
    "ttft_s": "TTFT: one prefill of the whole batch's prompts (no queueing)",
    "tpot_s": "TPOT: one decode step at the mean context over the output",
    "tokens_per_s_per_gpu": "output tokens/s per GPU: batch / TPOT / GPUs (steady decode)",
    "tokens_per_s_per_user": "output tokens/s per user: 1 / TPOT",
    "e2e_s": "end to end: TTFT + (output - 1) x TPOT",
}


class ServingSummary(NamedTuple):
    ceiling: str  # spec (upper-bound speed) | empirical (expected)
    batch: int
    isl: int  # prompt tokens per request
    osl: int  # output tokens per request
    gpus: int  # tp x pp
    ttft_s: float
    tpot_s: float
    e2e_s: float
    tokens_per_s_per_gpu: float
    tokens_per_s_per_user: float
    prefill: Any  # Analysis of the prefill step
    decode: Any  # Analysis of the decode step at the mean context
    final: Any  # Analysis of the last decode step: memory fit

    @property
    def decode_context(self) -> int:
        return self.decode.scenario.context_len

    def to_json(self) -> dict[str, Any]:
        mem = self.final.memory
        return {"ceiling": self.ceiling, "batch": self.batch, "isl": self.isl,
                "osl": self.osl, "gpus": self.gpus, "ttft_s": self.ttft_s,
                "tpot_s": self.tpot_s, "e2e_s": self.e2e_s,
                "tokens_per_s_per_gpu": self.tokens_per_s_per_gpu,
                "tokens_per_s_per_user": self.tokens_per_s_per_user,
                "decode_context_len": self.decode_context,
                "prefill_bound": self.prefill.totals.bound,
                "decode_bound": self.decode.totals.bound,
                "memory_per_gpu_bytes": mem.total_bytes, "usable_bytes": mem.usable_bytes,
                "fits": mem.fits, "max_batch": mem.max_batch,
                "definitions": DEFINITIONS}


def serving_summary(model: Any, hw: Any, base: Any, *, batch: int, isl: int, osl: int,
                    ceiling: str = "spec") -> ServingSummary:
    """TTFT, TPOT and throughput of ``batch`` requests of ``isl`` prompt and ``osl`` output
    tokens on ``hw`` (``base``: a Scenario giving dtypes, parallelism, implementation)."""
    from perfscope.analysis import analyze

    common = replace(base, batch=batch, ceiling=ceiling)
    prefill = analyze(model, hw, replace(common, phase="prefill", seq_len=isl, context_len=0))
    mean_ctx = isl + (osl - 1) // 2
    decode = analyze(model, hw, replace(common, phase="decode", seq_len=1,
                                        context_len=max(1, mean_ctx)))
    last = isl + osl - 1
    final = decode if last == mean_ctx else \
        analyze(model, hw, replace(common, phase="decode", seq_len=1, context_len=last))
    gpus = base.tp * base.pp
    ttft, tpot = prefill.totals.time_s, decode.totals.time_s
    return ServingSummary(ceiling, batch, isl, osl, gpus, ttft, tpot,
                          ttft + (osl - 1) * tpot,
                          batch / tpot / gpus if tpot else 0.0,
                          1 / tpot if tpot else 0.0, prefill, decode, final)
