"""The perfscope.bench/1 document: device, telemetry, library versions, the exact command,
and one section per benchmark group. Pure data in, plain dicts out (no I/O, no torch).

```
{ "schema": "perfscope.bench/1", "created": ISO-8601 UTC, "command": str, "argv": [str],
  "quick": bool, "device": {"kind": "cpu"|"cuda", "name", ..., "pci_bus_id"?,
  "telemetry"?: {...}}, "libraries": {"python", "perfscope", "torch", "triton"?, ...},
  "threads": int|null, "duration_s": float,
  "ceilings"?: {"values": [Ceiling], "points": [Point], "saved_spec": str|null,
                "rounds": int, "duration_s"},
  "ops"?: {"model", "hardware", "ceiling", "roof", "scenarios": [...], "scaling": str,
           "roof_note"?: str, "points": [Point], "duration_s"},
  "kernels"?: {"points": [Point], "duration_s"},
  "comm"?: {"backend", "device", "ranks", "note"?: str, "results": [Collective],
            "duration_s"},
  "skipped": [{"section": str, "message": str}] }
Ceiling: {"name", "value", "low", "high", "unit", "dtype", "shape", "rounds": [rate per round],
          "spread", "stats"}
Point: {"name", "kind", "dtype", "shape", "device", "stats": {median_s, p20_s, p80_s, min_s,
        n, cv, threads?, method?, telemetry?}, "flops", "bytes", "intensity",
        "achieved_flops_per_s", "achieved_bytes_per_s", "predicted_time_s", "pct_of_roof",
        "extra": {"impl", "check_max_rel_err", "above_roof"?, "phase"?, ...}}
Collective: {"op", "size_bytes", "ranks", "backend", "device", "dtype", "median_s", "p20_s",
             "p80_s", "min_s", "n", "cv", "algbw_bytes_s", "busbw_bytes_s",
             "check_max_abs_err", "link"?, "link_bandwidth_bytes_s"?, "fraction_of_link"?}
```
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from typing import Any

from perfscope.measure.types import MeasuredPoint

SCHEMA = "perfscope.bench/1"


def clean(v: Any) -> Any:
    """JSON-safe: nan/inf floats become None, mappings and sequences recursively."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, Mapping):
        return {str(k): clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [clean(x) for x in v]
    return v


def point_dict(p: MeasuredPoint) -> dict[str, Any]:
    extra = dict(p.extra)
    return clean({
        "name": p.name, "kind": p.kind, "dtype": p.dtype, "shape": dict(p.shape),
        "device": p.device, "stats": p.stats.to_dict(), "flops": p.flops, "bytes": p.bytes,
        "intensity": p.intensity if p.bytes else None,
        "achieved_flops_per_s": p.achieved_flops_per_s,
        "achieved_bytes_per_s": p.achieved_bytes_per_s,
        "predicted_time_s": p.predicted_time_s,
        "pct_of_roof": extra.pop("pct_of_roof", None),
        "extra": extra,
    })


def bench_document(*, argv: list[str], quick: bool, device: Mapping[str, Any],
                   libraries: Mapping[str, str], threads: int | None,
                   sections: Mapping[str, Any], skipped: Iterable[tuple[str, str]],
                   started: float, finished: float) -> dict[str, Any]:
    import shlex

    cmd = ["perfscope", *argv[1:]] if argv and argv[0].endswith(("perfscope", "__main__.py")) \
        else list(argv)
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "command": shlex.join(cmd),
        "argv": list(argv),
        "quick": quick,
        "device": dict(device),
        "libraries": dict(libraries),
        "threads": threads,
        "duration_s": finished - started,
    }
    doc.update(sections)
    doc["skipped"] = [{"section": s, "message": m} for s, m in skipped]
    return clean(doc)


def csv_rows(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per ceiling, measured point and collective, every row with every column (the
    union over sections, empty where a column does not apply), units in the column names."""
    rows: list[dict[str, Any]] = []
    for c in (doc.get("ceilings") or {}).get("values", []):
        st = c.get("stats") or {}
        unit = "flops_per_s" if c.get("unit") == "FLOP/s" else "bytes_per_s"
        rows.append({"section": "ceilings", "name": c.get("name"), "kind": "ceiling",
                     "dtype": c.get("dtype"), "shape": _shape(c.get("shape")),
                     f"ceiling_{unit}": c.get("value"), f"ceiling_low_{unit}": c.get("low"),
                     f"ceiling_high_{unit}": c.get("high"), "rounds": len(c.get("rounds", [])),
                     "median_s": st.get("median_s"), "p20_s": st.get("p20_s"),
                     "p80_s": st.get("p80_s"), "n": st.get("n"), "cv": st.get("cv")})
    for sec in ("ceilings", "ops", "kernels"):
        for p in (doc.get(sec) or {}).get("points", []):
            st = p.get("stats") or {}
            ex = p.get("extra") or {}
            rows.append({
                "section": sec, "name": p.get("name"), "kind": p.get("kind"),
                "phase": ex.get("phase", ""), "dtype": p.get("dtype"),
                "shape": _shape(p.get("shape")), "impl": ex.get("impl", ""),
                "median_s": st.get("median_s"), "p20_s": st.get("p20_s"),
                "p80_s": st.get("p80_s"), "n": st.get("n"), "cv": st.get("cv"),
                "method": st.get("method", ""),
                "flops": p.get("flops"), "bytes": p.get("bytes"),
                "achieved_flops_per_s": p.get("achieved_flops_per_s"),
                "achieved_bytes_per_s": p.get("achieved_bytes_per_s"),
                "predicted_time_s": p.get("predicted_time_s"),
                "pct_of_roof": p.get("pct_of_roof"), "above_roof": ex.get("above_roof", ""),
                "scale": ex.get("scale", ""), "scale_note": ex.get("scale_note", ""),
                "sweep_batch": ex.get("sweep_batch", ""),
            })
    for r in (doc.get("comm") or {}).get("results", []):
        rows.append({"section": "comm", "name": r.get("op"), "kind": "comm",
                     "dtype": r.get("dtype"), "size_bytes": r.get("size_bytes"),
                     "ranks": r.get("ranks"), "backend": r.get("backend"),
                     "comm_device": r.get("device"), "median_s": r.get("median_s"),
                     "p20_s": r.get("p20_s"), "p80_s": r.get("p80_s"), "n": r.get("n"),
                     "cv": r.get("cv"), "method": r.get("method", ""),
                     "algbw_bytes_per_s": r.get("algbw_bytes_s"),
                     "busbw_bytes_per_s": r.get("busbw_bytes_s"),
                     "link": r.get("link", ""),
                     "link_bandwidth_bytes_per_s": r.get("link_bandwidth_bytes_s", ""),
                     "fraction_of_link": r.get("fraction_of_link", "")})
    cols = list(dict.fromkeys(k for r in rows for k in r))
    return [{c: ("" if r.get(c) is None else r.get(c, "")) for c in cols} for r in rows]


def _shape(sh: Mapping[str, Any] | None) -> str:
    return ";".join(f"{k}={v}" for k, v in (sh or {}).items())
