"""Sweeps: one analysed step per point of a grid (batch x lengths x dtypes x parallelism x
devices), one flat row each. ``perfscope analyze`` with lists prints these rows.

``perfscope.sweep/1``::

    { "schema": "perfscope.sweep/1",
      "axes":  {name: [values...]},    # the parameters that vary, in grid order
      "fixed": {name: value},          # the ones that do not
      "points": [Row] }
    Row: {"model", "hardware", "phase", "batch", "seq_len", "context_len", "tp", "pp", "ep",
          "weight_dtype", "act_dtype", "kv_dtype", "ceiling",
          "time_s", "bound", "flops", "bytes", "mfu", "mbu",
          "tokens_per_s",            # new tokens of the whole batch per second of this step
          "tokens_per_s_per_gpu",    # the same over tp x pp GPUs
          "tokens_per_s_per_user",   # decode: 1 / step time; null for prefill
          "time_by_kind": {kind: s}, "weights_bytes", "kv_cache_bytes",
          "activation_peak_bytes", "memory_total_bytes", "capacity_bytes", "usable_bytes",
          "fits", "max_batch",
          "error": null | str }      # a point the device or model cannot run (fp8 on A100)

Figures are per GPU (the busiest rank) as in ``perfscope.analysis/1``; ``time_s`` is the
step's wall time for the whole group.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from perfscope.errors import PerfscopeError

SCHEMA = "perfscope.sweep/1"
AXES = ("model", "hardware", "phase", "batch", "seq_len", "context_len", "tp", "pp", "ep",
        "attn_dp", "weight_dtype", "act_dtype", "kv_dtype", "ceiling")
SCENARIO_KEYS = ("phase", "batch", "seq_len", "context_len", "tp", "pp", "ep", "attn_dp",
                 "weight_dtype", "act_dtype", "kv_dtype", "ceiling")


def row_of(a: Any) -> dict[str, Any]:
    """The sweep row of one Analysis."""
    s, t, mem, pr = a.scenario, a.totals, a.memory, a.precision
    gpus = s.tp * s.attn_dp * s.pp
    return {
        "model": a.model.name, "hardware": a.hw.name, "phase": s.phase, "batch": s.batch,
        "seq_len": s.seq_len, "context_len": s.cached_before, "tp": s.tp, "pp": s.pp,
        "ep": s.ep, "attn_dp": s.attn_dp, "weight_dtype": str(pr.weight), "act_dtype": pr.act,
        "kv_dtype": pr.kv, "scheme": pr.scheme,
        "ceiling": s.ceiling, "time_s": t.time_s, "bound": t.bound, "flops": t.flops,
        "bytes": t.bytes, "mfu": t.mfu, "mbu": t.mbu, "tokens_per_s": t.tokens_per_s,
        "tokens_per_s_per_gpu": t.tokens_per_s / gpus,
        "tokens_per_s_per_user": (1 / t.time_s if t.time_s else None)
        if s.phase == "decode" else None,
        "time_by_kind": dict(t.time_by_kind), "weights_bytes": mem.weights_bytes,
        "kv_cache_bytes": mem.kv_cache_bytes, "activation_peak_bytes": mem.activation_peak_bytes,
        "memory_total_bytes": mem.total_bytes, "capacity_bytes": mem.capacity_bytes,
        "usable_bytes": mem.usable_bytes, "fits": mem.fits, "max_batch": mem.max_batch,
        "error": None,
    }


def grid(values: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of ``values`` (axis -> list), in the order the axes are given.
    Prefill points take no cached context, so the context axis collapses for them."""
    keys = list(values)
    out: list[dict[str, Any]] = []
    seen: set[tuple] = set()
    for combo in itertools.product(*(values[k] for k in keys)):
        p = dict(zip(keys, combo, strict=True))
        if p.get("phase") == "prefill":
            p["context_len"] = 0
        key = tuple(sorted((k, str(v)) for k, v in p.items()))
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def run_sweep(values: Mapping[str, Sequence[Any]], base: Mapping[str, Any]) -> list[dict]:
    """Analyse each grid point. ``values`` holds the axes ("model" and "hardware" are names
    or paths; the rest Scenario fields); ``base`` the Scenario fields that stay fixed.

    A point the model or device cannot run becomes a row with ``error`` set; if no point
    runs at all, the first error is raised."""
    from perfscope.analysis import analyze
    from perfscope.specs.loading import load_hw
    from perfscope.specs.model import load_model
    from perfscope.specs.scenario import Scenario

    rows: list[dict[str, Any]] = []
    first: PerfscopeError | None = None
    models = {m: load_model(m) for m in values.get("model", [base.get("model")])}
    hws = {h: load_hw(h) for h in values.get("hardware", [base.get("hardware")])}
    for p in grid(values):
        point = {k: v for k, v in base.items() if k in SCENARIO_KEYS} | \
            {k: v for k, v in p.items() if k in SCENARIO_KEYS}
        m = models[p.get("model", base.get("model"))]
        hw = hws[p.get("hardware", base.get("hardware"))]
        extra = {k: v for k, v in base.items() if k not in (*SCENARIO_KEYS, "model", "hardware")}
        try:
            rows.append(row_of(analyze(m, hw, Scenario(**point, **extra))))
        except PerfscopeError as e:
            first = first or e
            rows.append({"model": m.name, "hardware": hw.name} | point | {"error": str(e)})
    if first is not None and all(r.get("error") for r in rows):
        raise first
    return rows


def document(values: Mapping[str, Sequence[Any]], fixed: Mapping[str, Any],
             rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {"schema": SCHEMA, "axes": {k: list(v) for k, v in values.items()},
            "fixed": dict(fixed), "points": [dict(r) for r in rows]}


def csv_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Flat rows: ``time_by_kind`` spread into ``time_<kind>_s`` columns."""
    kinds = list(dict.fromkeys(k for r in rows for k in (r.get("time_by_kind") or {})))
    out = []
    for r in rows:
        flat = {k: v for k, v in r.items() if k != "time_by_kind"}
        for k in kinds:
            flat[f"time_{k}_s"] = (r.get("time_by_kind") or {}).get(k)
        out.append(flat)
    return out
