"""``perfscope profile --format json|csv``: the report's numbers as data.

``perfscope.report/1``::

    { "schema": "perfscope.report/1", "created", "command", "versions": {...},
      "model": {"name", "params", "active_params", "source"},
      "config": {"batch", "isl", "osl", "batches", "tp", "pp", "ep", "weight_dtype",
                 "act_dtype", "kv_dtype", "attention"},
      "devices": [ {
          "hardware": {"name", "display_name", "file"},
          "summary": {"spec": Summary, "empirical": Summary},   # at the operating batch
          "gemm_compute_batch": int|null,   # decode GEMMs compute-bound from this batch
          "step_compute_batch": int|null,   # the whole decode step compute-bound from here
          "kv_limit_batch": int,            # largest batch whose KV cache fits
          "context_limit": int|null,        # longest context that fits at the batch
          "phases": {"prefill": perfscope.analysis/1, "decode": perfscope.analysis/1},
          "sweep": [Summary + {"hardware"}] } ],          # per batch and ceiling
      "measured": perfscope.bench/1 | null }
    Summary: {"ceiling", "batch", "isl", "osl", "gpus", "ttft_s", "tpot_s", "e2e_s",
              "tokens_per_s_per_gpu", "tokens_per_s_per_user", "decode_context_len",
              "prefill_bound", "decode_bound", "memory_per_gpu_bytes", "usable_bytes",
              "fits", "max_batch", "definitions"}

CSV: one row per device x batch x ceiling (the sweep), ``operating`` marking the operating
batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SCHEMA = "perfscope.report/1"


def _summary(s: Any, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return s.to_json() | dict(extra or {})


def report_document(study: Any, *, created: str, command: str, versions: Mapping[str, str],
                    measured: Mapping[str, Any] | None) -> dict[str, Any]:
    st = study
    s = st.base
    pr = st.hws[0].spec.decode.precision
    devices = []
    for h in st.hws:
        sweep = [_summary(getattr(p, c), {"hardware": h.hw.name})
                 for p in h.sweep for c in ("spec", "empirical")]
        for r in sweep:
            r.pop("definitions", None)
        devices.append({
            "hardware": {"name": h.hw.name, "display_name": h.hw.display_name,
                         "file": h.hw.file},
            "summary": {"spec": _summary(h.spec), "empirical": _summary(h.empirical)},
            "gemm_compute_batch": h.gemm_compute_batch,
            "step_compute_batch": h.step_compute_batch,
            "kv_limit_batch": h.kv_limit_batch, "context_limit": h.context_limit,
            "phases": {"prefill": h.spec.prefill.to_json(), "decode": h.spec.decode.to_json()},
            "sweep": sweep})
    return {"schema": SCHEMA, "created": created, "command": command,
            "versions": dict(versions),
            "model": {"name": st.model.name, "params": st.model.params,
                      "active_params": st.model.active_params, "source": st.model.source},
            "config": {"batch": st.batch, "isl": st.isl, "osl": st.osl,
                       "batches": list(st.batches), "tp": s.tp, "pp": s.pp, "ep": s.ep,
                       "weight_dtype": str(pr.weight), "act_dtype": pr.act, "kv_dtype": pr.kv,
                       "attention": s.attention},
            "devices": devices, "measured": dict(measured) if measured else None}


def report_csv_rows(study: Any) -> list[dict[str, Any]]:
    rows = []
    for h in study.hws:
        for p in h.sweep:
            for c in ("spec", "empirical"):
                r = {"hardware": h.hw.name, "operating": p.batch == study.batch}
                r |= {k: v for k, v in getattr(p, c).to_json().items() if k != "definitions"}
                rows.append(r)
    return rows
