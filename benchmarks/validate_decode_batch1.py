"""Batch-1 decode: perfscope's predicted tokens/s against published gpt-fast measurements.

Reads the `3-llm-decode-batch1` records of ../shared/reference/published-figures.json (A100-80GB,
several models, bf16 / int8 / int4 weight-only, TP 1-8) and prints prediction, measurement and
their ratio side by side, with spec and with empirical ceilings. Batch-1 decode streams the
weights once per token, so it sits on the bandwidth roof: a first check of latency predictions.

    python benchmarks/validate_decode_batch1.py [--reference PATH]
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from perfscope.api import Scenario, analyze, load_hw, load_model

# ../shared beside the checkout (or beside the folder of worktrees holding it)
DEFAULT_REF = next((p / "shared/reference/published-figures.json"
                    for p in Path(__file__).resolve().parents[2:4]
                    if (p / "shared/reference/published-figures.json").is_file()),
                   Path(__file__).resolve().parents[2] / "shared/reference/published-figures.json")
MODELS = {"Llama-2-7B": "llama-2-7b", "Llama-2-70B": "llama-2-70b", "Llama-3.1-8B": "llama-3.1-8b",
          "Llama-3.1-70B": "llama-3.1-70b", "Llama-3.1-405B": "llama-3.1-405b",
          "Mixtral-8x7B": "mixtral-8x7b"}


def parse(rec: dict) -> dict | None:
    """'Llama-2-7B int4 weight-only g32 TP2' -> model, weight dtype, group, tp."""
    text = f"{rec['model']} {rec.get('precision') or ''} {rec.get('parallelism') or ''}"
    model = next((v for k, v in MODELS.items() if text.startswith(k + " ")), None)
    if model is None or "verifier" in text or "A100" not in rec["hardware"]:
        return None
    dtype = "int4" if "int4" in text else "int8" if "int8" in text else "bf16"
    g = re.search(r"g(\d+)", text)
    tp = re.search(r"TP(\d+)", text)
    return {"model": model, "weight_dtype": dtype, "group": int(g.group(1)) if g else None,
            "tp": int(tp.group(1)) if tp else 1, "measured": float(rec["value"]), "id": rec["id"],
            "label": text.strip()}


def predict(case: dict, ceiling: str, context: int = 100) -> float | None:
    # gpt-fast generates 200 tokens after a 5-token prompt: ~100 cached tokens on average
    sc = Scenario(phase="decode", batch=1, context_len=context, weight_dtype=case["weight_dtype"],
                  group_size=case["group"], tp=case["tp"], ceiling=ceiling)
    a = analyze(load_model(case["model"]), load_hw("a100-sxm-80gb"), sc)
    if not a.memory.fits:
        return None
    return 1.0 / a.totals.time_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", type=Path, default=DEFAULT_REF)
    args = ap.parse_args()
    recs = [r for r in json.loads(args.reference.read_text())
            if r["category"] == "3-llm-decode-batch1"]
    cases = [c for c in map(parse, recs) if c]
    print(f"{'id':8} {'case':42} {'measured':>9} {'spec':>8} {'ratio':>6} {'empir.':>8} "
          f"{'ratio':>6}")
    ratios = []
    for c in cases:
        spec, emp = predict(c, "spec"), predict(c, "empirical")
        r1 = spec / c["measured"] if spec else float("nan")
        r2 = emp / c["measured"] if emp else float("nan")
        if emp:
            ratios.append(r2)
        print(f"{c['id']:8} {c['label']:42} {c['measured']:9.1f} "
              f"{spec or float('nan'):8.1f} {r1:6.2f} {emp or float('nan'):8.1f} {r2:6.2f}")
    if ratios:
        within = sum(1 for r in ratios if abs(r - 1) <= 0.15)
        mean_abs = sum(abs(r - 1) for r in ratios) / len(ratios)
        print(f"\nempirical ceilings: {within}/{len(ratios)} within 15%, "
              f"mean |error| {mean_abs:.1%} (predicted / measured tokens/s)")


if __name__ == "__main__":
    main()
