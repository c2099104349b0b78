"""perfscope's predictions now against the GPU measurements in reports/measured/.

Those files were measured once on a lent GPU; this script predicts the same ops and steps with
the model as it is today and prints measured, predicted and their ratio side by side, so a
modelling change shows at once what it does against real hardware:

- ``ops-*.json`` (``perfscope bench ops``): every op instance, re-predicted on the roof the
  run used, joined by op name (the batch sweep's GEMMs at their own batch); and the step as
  the sum of count x instance time.
- ``decode-step-*.json`` / ``decode-compiled-*.json`` (``benchmarks/bench_decode_step.py``):
  whole steps.

    python benchmarks/validate_measured.py [--dir reports/measured] [--ops]

``--ops`` also prints every op row. Ratios are predicted / measured.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from perfscope.api import Scenario, analyze, load_hw, load_model

ROOT = Path(__file__).resolve().parents[1]
SCENARIO_KEYS = ("phase", "batch", "seq_len", "context_len", "weight_dtype", "act_dtype",
                 "kv_dtype", "attention")


def _points(model: str, hw: str, scenario: dict, ceiling: str, batch: int | None = None):
    kw = {k: scenario[k] for k in SCENARIO_KEYS if scenario.get(k) is not None}
    if batch is not None:
        kw["batch"] = batch
    a = analyze(load_model(model), load_hw(hw), Scenario(**kw, ceiling=ceiling))
    return {p.op.name: p for p in a.points}


def ops_rows(doc: dict) -> list[dict]:
    """One row per measured op instance: measured and re-predicted seconds, and its count."""
    ops = doc["ops"]
    (scenario,) = ops["scenarios"]  # one scenario per file (perfscope bench ops --phase X)
    cache: dict[int | None, dict] = {}
    rows = []
    for p in ops["points"]:
        ex = p.get("extra") or {}
        sb = ex.get("sweep_batch")
        if sb not in cache:
            cache[sb] = _points(ops["model"], ops["hardware"], scenario, ops["ceiling"], sb)
        pred = cache[sb].get(p["name"])
        if pred is None:
            continue
        rows.append({"op": p["name"] + (f" b={sb}" if sb else ""), "sweep": sb is not None,
                     "count": pred.op.count, "measured_s": p["stats"]["median_s"],
                     "predicted_s": pred.time_s})
    return rows


def step_rows(doc: dict) -> list[dict]:
    m, hw = load_model(doc["model"]), load_hw(doc["hw"])
    out = []
    for r in doc["rows"]:
        n = r["tokens"]
        sc = (Scenario(phase="decode", batch=r["batch"], context_len=n, ceiling="empirical")
              if r["phase"] == "decode" else
              Scenario(phase="prefill", batch=r["batch"], seq_len=n, ceiling="empirical"))
        out.append({**r, "predicted_s": analyze(m, hw, sc).totals.time_s})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=ROOT / "reports" / "measured")
    ap.add_argument("--ops", action="store_true", help="print every op row")
    args = ap.parse_args()
    files = sorted(args.dir.glob("*.json"))
    if not files:
        print(f"validate_measured: no JSON in {args.dir}", file=sys.stderr)
        raise SystemExit(2)
    print("whole steps (predicted / measured)")
    print(f"{'file':<48}{'phase':>8}{'batch':>6}{'measured ms':>13}{'predicted':>11}{'ratio':>7}")
    for f in files:
        doc = json.loads(f.read_text())
        if doc.get("schema") != "perfscope.decode-step/1":
            continue
        for r in step_rows(doc):
            print(f"{f.stem[:47]:<48}{r['phase']:>8}{r['batch']:>6}"
                  f"{r['measured_s'] * 1e3:>13.3f}{r['predicted_s'] * 1e3:>11.3f}"
                  f"{r['predicted_s'] / r['measured_s']:>7.2f}")
    print("\nops (perfscope bench ops): the step as the sum of its ops, and the ops' spread")
    print(f"{'file':<40}{'ops':>5}{'step meas':>11}{'pred':>9}{'ratio':>7}"
          f"{'median':>8}{'p10':>6}{'p90':>6}")
    for f in files:
        doc = json.loads(f.read_text())
        if doc.get("schema") != "perfscope.bench/1" or not (doc.get("ops") or {}).get("points"):
            continue
        rows = ops_rows(doc)
        step = [r for r in rows if not r["sweep"]]
        meas = sum(r["count"] * r["measured_s"] for r in step)
        pred = sum(r["count"] * r["predicted_s"] for r in step)
        ratios = sorted(r["predicted_s"] / r["measured_s"] for r in rows)
        dec = statistics.quantiles(ratios, n=10) if len(ratios) > 1 else ratios * 9
        print(f"{f.stem[:39]:<40}{len(rows):>5}{meas * 1e3:>9.3f}ms{pred * 1e3:>7.3f}ms"
              f"{pred / meas:>7.2f}{statistics.median(ratios):>8.2f}{dec[0]:>6.2f}"
              f"{dec[-1]:>6.2f}")
        if args.ops:
            for r in rows:
                print(f"    {r['op']:<28}{r['measured_s'] * 1e6:>10.1f}us"
                      f"{r['predicted_s'] * 1e6:>10.1f}us"
                      f"{r['predicted_s'] / r['measured_s']:>7.2f}")


if __name__ == "__main__":
    main()
