"""The perfscope.bench/1 document: device, telemetry, library versions, the exact command,
and one section per benchmark group. Pure data in, plain dicts out (no I/O, no torch).

```
{ "schema": "perfscope.bench/1", "created": ISO-8601 UTC, "command": str, "argv": [str],
  "quick": bool, "device": {"kind": "cpu"|"cuda", "name", ... , "telemetry"?: {...}},
  "libraries": {"python", "perfscope", "torch", ...}, "threads": int|null,
  "duration_s": float,
  "ceilings"?: {"values": [Ceiling], "points": [Point], "saved_spec": str|null},
  "ops"?: {"model", "hardware", "ceiling", "scenarios": [...], "scaling": str,
           "points": [Point]},
  "kernels"?: {"points": [Point]}, "comm"?: {"results": [dict]},
  "skipped": [{"section": str, "message": str}] }
Point: {"name", "kind", "dtype", "shape", "device", "stats": {median_s, p20_s, p80_s, min_s,
        n, cv, threads?, method?}, "flops", "bytes", "intensity", "achieved_flops_per_s",
        "achieved_bytes_per_s", "predicted_time_s", "pct_of_roof", "extra": {...}}
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
    """One row per measured point of every section (ceiling values included)."""
    rows: list[dict[str, Any]] = []

    def add(section: str, p: Mapping[str, Any]) -> None:
        st = p.get("stats") or {}
        ex = p.get("extra") or {}
        rows.append({
            "section": section, "name": p.get("name"), "kind": p.get("kind"),
            "phase": ex.get("phase", ""), "dtype": p.get("dtype"),
            "shape": ";".join(f"{k}={v}" for k, v in (p.get("shape") or {}).items()),
            "median_s": st.get("median_s"), "p20_s": st.get("p20_s"),
            "p80_s": st.get("p80_s"), "n": st.get("n"), "cv": st.get("cv"),
            "flops": p.get("flops"), "bytes": p.get("bytes"),
            "achieved_flops_per_s": p.get("achieved_flops_per_s"),
            "achieved_bytes_per_s": p.get("achieved_bytes_per_s"),
            "predicted_time_s": p.get("predicted_time_s"),
            "pct_of_roof": p.get("pct_of_roof"),
            "scale": ex.get("scale", 1.0), "scale_note": ex.get("scale_note", ""),
            "sweep_batch": ex.get("sweep_batch", ""),
        })

    for sec in ("ceilings", "ops", "kernels"):
        for p in (doc.get(sec) or {}).get("points", []):
            add(sec, p)
    for r in (doc.get("comm") or {}).get("results", []):
        rows.append({"section": "comm", "name": r.get("name", r.get("op", "")),
                     "kind": "comm", "median_s": r.get("median_s", r.get("time_s"))})
    return rows


def fmt_rate(v: float | None, unit: str) -> str:
    from perfscope.units import si

    return "-" if v is None or v == 0 else si(v, unit)
