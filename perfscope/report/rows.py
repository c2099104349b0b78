"""Flat rows (CSV) of an analysed step: the ops, then subtotals by kind, the step's totals and
its memory, told apart by the ``row`` column (op | kind | total | memory)."""

from __future__ import annotations

from typing import Any


def analysis_csv_rows(a: Any, doc: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """``row=op``: one per op type (the ``perfscope.analysis/1`` op fields); ``row=kind``:
    FLOPs, bytes and time of each kind over the step; ``row=total``: the step (time_s, bound,
    MFU, MBU, tokens/s); ``row=memory``: weights, KV cache, activations, total, capacity and
    usable bytes per GPU, with ``fits`` and ``max_batch`` on the total. ``doc``: the analysis
    document when it carries more than ``a.to_json()`` (calibrated times)."""
    doc = doc or a.to_json()
    t, mem, sc = doc["totals"], doc["memory"], doc["scenario"]
    rows: list[dict[str, Any]] = [{"row": "op", **op} for op in doc["ops"]]
    for kind, time_s in sorted(t["time_by_kind"].items(), key=lambda kv: -kv[1]):
        rows.append({"row": "kind", "name": kind, "kind": kind,
                     "total_flops": t["flops_by_kind"].get(kind, 0.0),
                     "bytes": t["bytes_by_kind"].get(kind, 0.0), "total_time_s": time_s,
                     "share": time_s / t["time_s"] if t["time_s"] else 0.0})
    rows.append({"row": "total", "name": "step", "phase": sc["phase"], "batch": sc["batch"],
                 "total_flops": t["flops"], "bytes": t["bytes"], "time_s": t["time_s"],
                 "total_time_s": t["time_s"], "bound": t["bound"], "ceiling": sc["ceiling"],
                 "mfu": t["mfu"], "mbu": t["mbu"], "tokens_per_s": t["tokens_per_s"],
                 "share": 1.0})
    if "calibration" in doc:
        c = doc["calibration"]
        rows.append({"row": "total", "name": "step calibrated", "phase": sc["phase"],
                     "batch": sc["batch"], "time_s": c["time_s"], "total_time_s": c["time_s"],
                     "calibrated_time_s": c["time_s"], "ceiling": sc["ceiling"]})
    for name, key in (("weights", "weights_bytes"), ("kv_cache", "kv_cache_bytes"),
                      ("activation_peak", "activation_peak_bytes"), ("total", "total_bytes"),
                      ("capacity", "capacity_bytes"), ("usable", "usable_bytes")):
        r: dict[str, Any] = {"row": "memory", "name": name, "bytes": mem[key]}
        if name == "total":
            r |= {"fits": mem["fits"], "max_batch": mem["max_batch"]}
        rows.append(r)
    return rows
