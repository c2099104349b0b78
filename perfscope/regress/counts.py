"""The exact-count gate: analytic results of fixed models and scenarios against a snapshot.

``collect()`` runs ``perfscope.analysis.analyze`` on every case of ``CASES`` and keeps, from
its ``perfscope.analysis/1`` JSON, the numbers a modelling change moves: parameters, totals
(FLOPs, bytes, time by kind, MFU/MBU), memory, and for every op its count, FLOPs, bytes by
what moves, time and bound under the fixed hardware spec. ``diff(old, new)`` lists every
difference; ``render_diff`` prints them one per line (case, op, field, old -> new, relative
change). ``perfscope regress counts`` checks, ``--update`` rewrites the snapshot.

What fails the gate: a changed number (relative 1e-12, so only last-bit noise between libms
passes), a changed string (bound, dtype, kind), an op or case added, removed or renamed, a
stored field that the analysis no longer reports. What does not: new fields in the JSON
(the snapshot keeps a fixed selection), so a schema addition needs no update while any
change to what is computed does. An added op fails too: it changes the step's cost, and the
update should be a deliberate act.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

SCHEMA = "perfscope.counts/1"
UPDATE_COMMAND = "perfscope regress counts --update"
REL_TOL = 1e-12

# (case id, model, hardware, Scenario fields). Together they cover dense MHA/GQA, MLA, MoE
# (top-k, shared experts, EP), sliding windows, TP/PP/EP, weight-only and W8A8 quantization,
# quantized KV, prefill/decode/chunked prefill, unfused attention and norms, spec and
# empirical ceilings, and devices without bf16 (V100) or from another vendor (MI300X).
CASES: tuple[tuple[str, str, str, dict[str, Any]], ...] = (
    ("dense-prefill", "llama-3.1-8b", "h100-sxm",
     dict(phase="prefill", batch=1, seq_len=2048)),
    ("dense-decode-empirical", "llama-3.1-8b", "h100-sxm",
     dict(phase="decode", batch=16, context_len=4096, ceiling="empirical")),
    ("chunked-prefill", "llama-3.1-8b", "h200-sxm",
     dict(phase="chunked_prefill", batch=2, seq_len=512, context_len=3584)),
    ("mha-learned-pos", "gpt2", "a100-sxm-80gb",
     dict(phase="prefill", batch=8, seq_len=1024)),
    ("mha-relu-layernorm-decode", "opt-1.3b", "l40s",
     dict(phase="decode", batch=16, context_len=1024)),
    ("gqa-decode-tp4", "llama-3.1-70b", "h100-sxm",
     dict(phase="decode", batch=32, context_len=4096, tp=4)),
    ("gqa-tp8-pp2-fp8", "llama-3.1-405b", "h100-sxm",
     dict(phase="decode", batch=8, context_len=8192, tp=8, pp=2, weight_dtype="fp8")),
    ("mla-moe-decode-ep8-fp8", "deepseek-v3", "h200-sxm",
     dict(phase="decode", batch=64, context_len=4096, tp=8, ep=8, weight_dtype="fp8")),
    ("mla-moe-prefill-tp8", "deepseek-v3", "h200-sxm",
     dict(phase="prefill", batch=1, seq_len=4096, tp=8)),
    ("moe-decode-tp2", "mixtral-8x7b", "a100-sxm-80gb",
     dict(phase="decode", batch=16, context_len=2048, tp=2)),
    ("moe-chunked-ep2", "qwen3-30b-a3b", "h100-sxm",
     dict(phase="chunked_prefill", batch=4, seq_len=512, context_len=2048, tp=2, ep=2)),
    ("sliding-global-decode", "gemma-2-9b", "h100-sxm",
     dict(phase="decode", batch=8, context_len=8000)),
    ("sliding-prefill-kv-fp8", "mistral-7b", "h100-sxm",
     dict(phase="prefill", batch=2, seq_len=8192, kv_dtype="fp8")),
    ("int4-weight-only-kv-int8", "llama-3.1-8b", "a100-sxm-80gb",
     dict(phase="decode", batch=1, context_len=4096, weight_dtype="int4", kv_dtype="int8")),
    ("w8a8-int8-prefill", "qwen2.5-7b", "h100-sxm",
     dict(phase="prefill", batch=4, seq_len=1024, weight_dtype="int8", act_dtype="int8")),
    ("unfused-attn-norm-fp16", "qwen2.5-0.5b", "v100-sxm2-32gb",
     dict(phase="prefill", batch=4, seq_len=512, attention="unfused", fused_norm=False)),
    ("mha-decode-mi300x", "phi-3-mini", "mi300x",
     dict(phase="decode", batch=128, context_len=2000)),
)

OP_FIELDS = ("kind", "count", "flops", "bytes_read", "bytes_written", "weight_bytes",
             "act_in_bytes", "act_out_bytes", "kv_read_bytes", "kv_write_bytes", "link_bytes",
             "dequant_flops", "time_s", "bound", "dtype", "ceiling")
TOTAL_FIELDS = ("flops", "bytes", "time_s", "bound", "mfu", "mbu", "tokens_per_s",
                "flops_by_kind", "bytes_by_kind", "time_by_kind")
MEMORY_FIELDS = ("weights_bytes", "kv_cache_bytes", "activation_peak_bytes", "total_bytes",
                 "usable_bytes", "fits", "max_batch")
MODEL_FIELDS = ("params", "active_params")
PRECISION_FIELDS = ("weight_dtype", "act_dtype", "kv_dtype")


class Change(NamedTuple):
    """One difference: ``path`` locates it (case, section, op, field); ``old`` or ``new`` is
    None where the entry was added or removed."""

    case: str
    path: tuple[str, ...]
    old: Any
    new: Any

    @property
    def relative(self) -> float | None:
        """(new - old) / |old| for two numbers, else None."""
        if _is_num(self.old) and _is_num(self.new) and self.old:
            return (self.new - self.old) / abs(self.old)
        return None


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _pick(d: Mapping[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    # a field the analysis stopped reporting is kept as a marker, so the gate names it
    return {f: d.get(f, "<missing>") for f in fields}


def case_counts(model: str, hw: str, scenario: Mapping[str, Any]) -> dict[str, Any]:
    """The stored selection of one case's perfscope.analysis/1 document."""
    from perfscope.api import Scenario, analyze, load_hw, load_model

    doc = analyze(load_model(model), load_hw(hw), Scenario(**scenario)).to_json()
    ops: dict[str, Any] = {}
    for op in doc["ops"]:
        key, i = op["name"], 2
        while key in ops:  # never expected, but a duplicate must not hide a row
            key, i = f"{op['name']}#{i}", i + 1
        ops[key] = _pick(op, OP_FIELDS)
    return {
        "inputs": {"model": model, "hw": hw, "scenario": dict(scenario)},
        "model": _pick(doc["model"], MODEL_FIELDS),
        "precision": _pick(doc["scenario"], PRECISION_FIELDS),
        "totals": _pick(doc["totals"], TOTAL_FIELDS),
        "memory": _pick(doc["memory"], MEMORY_FIELDS),
        "ops": ops,
    }


def collect(cases: tuple[tuple[str, str, str, dict[str, Any]], ...] = CASES) -> dict[str, Any]:
    """The snapshot document of the current code."""
    return {"schema": SCHEMA, "source": "perfscope.analysis/1", "update": UPDATE_COMMAND,
            "cases": {cid: case_counts(m, hw, sc) for cid, m, hw, sc in cases}}


# ---- comparing -----------------------------------------------------------------------------

def _same(a: Any, b: Any) -> bool:
    if _is_num(a) and _is_num(b):
        if isinstance(a, int) and isinstance(b, int):
            return a == b
        return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=0.0)
    return type(a) is type(b) and a == b


def _walk(case: str, path: tuple[str, ...], old: Any, new: Any) -> Iterator[Change]:
    if isinstance(old, dict) and isinstance(new, dict):
        for k in old:
            if k not in new:
                yield Change(case, (*path, k), old[k], None)
            else:
                yield from _walk(case, (*path, k), old[k], new[k])
        for k in new:
            if k not in old:
                yield Change(case, (*path, k), None, new[k])
    elif not _same(old, new):
        yield Change(case, path, old, new)


def diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Change]:
    """Every difference between two snapshot documents, in snapshot order."""
    oc, nc = old.get("cases", {}), new.get("cases", {})
    out: list[Change] = []
    for cid in oc:
        if cid not in nc:
            out.append(Change(cid, (), "case", None))
        else:
            out.extend(_walk(cid, (), oc[cid], nc[cid]))
    out.extend(Change(cid, (), None, "case") for cid in nc if cid not in oc)
    return out


def _v(v: Any, other: Any = None) -> str:
    """A value for the diff; numbers get the digits needed to tell them from ``other``."""
    if isinstance(v, float) or (_is_num(v) and _is_num(other) and isinstance(other, float)):
        for digits in (6, 9, 12, 17):
            text = f"{v:.{digits}g}"
            if not _is_num(other) or text != f"{other:.{digits}g}":
                return text
        return repr(v)
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_v(x)}" for k, x in v.items()) + "}"
    return json.dumps(v) if isinstance(v, str) else str(v)


def _pct(rel: float) -> str:
    return f"{rel:+.2%}" if abs(rel) >= 1e-4 or rel == 0 else f"{rel * 100:+.2g}%"


def describe(c: Change) -> str:
    """One line: where, old -> new, relative change."""
    if not c.path:
        return f"{c.case}: case {'removed' if c.new is None else 'added'}"
    sect, rest = c.path[0], c.path[1:]
    where = f"op {rest[0]}" + (f" {'.'.join(rest[1:])}" if rest[1:] else "") \
        if sect == "ops" and rest else f"{sect} {'.'.join(rest)}".strip()
    if c.old is None:
        return f"{c.case}: {where}: added ({_v(c.new)})"
    if c.new is None:
        return f"{c.case}: {where}: removed (was {_v(c.old)})"
    rel = c.relative
    tail = f" ({_pct(rel)})" if rel is not None else ""
    return f"{c.case}: {where}: {_v(c.old, c.new)} -> {_v(c.new, c.old)}{tail}"


def render_diff(changes: list[Change], snapshot: str = "", *, updated: bool = False) -> str:
    """The gate's message: a summary line, one line per change, how to update (or, after an
    update, what the update changed)."""
    where = f" ({snapshot})" if snapshot else ""
    if not changes:
        return f"count gate: no change{where}\n"
    cases = len({c.case for c in changes})
    verb = "updated, " if updated else ""
    lines = [f"count gate: {verb}{len(changes)} change(s) in {cases} case(s){where}"]
    ops = list(dict.fromkeys(c.path[1] for c in changes if len(c.path) > 1 and
                             c.path[0] == "ops"))
    if ops:
        lines.append(f"ops changed: {', '.join(ops)}")
    lines += ["  " + describe(c) for c in changes]
    if not updated:
        lines.append(f"if the change is intended, update the snapshot: {UPDATE_COMMAND}")
    return "\n".join(lines) + "\n"


def change_rows(changes: list[Change]) -> list[dict[str, Any]]:
    """Machine-readable changes (for --format json/csv)."""
    rows = []
    for c in changes:
        sect = c.path[0] if c.path else "case"
        op = c.path[1] if sect == "ops" and len(c.path) > 1 else None
        fld = ".".join(c.path[2:] if op else c.path[1:])
        rows.append({"case": c.case, "section": sect, "op": op, "field": fld or None,
                     "old": c.old, "new": c.new, "relative_change": c.relative,
                     "description": describe(c)})
    return rows


# ---- the snapshot file ---------------------------------------------------------------------

def dumps(doc: Mapping[str, Any]) -> str:
    """JSON with one op (or one by-kind table) per line: small, stable, diffs read well."""

    def fmt(v: Any, depth: int) -> str:
        if isinstance(v, dict) and depth < 4 and v:
            pad = "  " * (depth + 1)
            items = [f"{pad}{json.dumps(k)}: {fmt(x, depth + 1)}" for k, x in v.items()]
            return "{\n" + ",\n".join(items) + "\n" + "  " * depth + "}"
        return json.dumps(v, allow_nan=False)

    return fmt(dict(doc), 0) + "\n"


def default_snapshot() -> Path:
    """tests/snapshots/counts.json of the repository this perfscope was imported from."""
    return Path(__file__).resolve().parents[2] / "tests" / "snapshots" / "counts.json"


def load_snapshot(path: Path) -> dict[str, Any]:
    from perfscope.errors import InputError

    if not path.is_file():
        raise InputError(f"--snapshot {path}: no snapshot there; create it with "
                         f"`{UPDATE_COMMAND}` (or pass --snapshot PATH)")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"--snapshot {path}: not readable JSON ({e}); restore it from git "
                         f"or rewrite it with `{UPDATE_COMMAND}`") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise InputError(f"--snapshot {path}: not a {SCHEMA} document; rewrite it with "
                         f"`{UPDATE_COMMAND}`")
    return doc


def write_snapshot(path: Path, doc: Mapping[str, Any]) -> None:
    from perfscope.io import write_atomic

    write_atomic(path, dumps(doc), what="--snapshot")
