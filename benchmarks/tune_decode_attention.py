"""Sweep the Triton decode-attention launch and split count over batch and context (CUDA).

    python benchmarks/tune_decode_attention.py --json out.json [--quick] [--cases 1x4096,...]

(``--device cpu`` with TRITON_INTERPRET=1 and small ``--cases`` runs the same code through
Triton's interpreter: a dry run of the script, not a timing.)

The measurements behind ``paged_attention.DECODE_LAUNCH`` (tokens per tile, tl.dot or fp32
broadcast products, warps, stages) and ``decode_splits``' constants. For each case (batch x
context, every sequence that long; Llama-3-8B's attention: 32 query heads, 8 KV heads, head
dim 128, bf16, pages of 16 tokens) every launch runs one pass and 2, 4, ... 64 splits (up to
the tiles a sequence has, and no more programs than 64 per SM), and the default call
(``DECODE_LAUNCH`` with the heuristic's splits). Each configuration is timed by
``perfscope.measure.timing.benchmark`` (L2 flushed before every call) and its output checked
against the torch paged reference in fp32 (``--ragged``: lengths spread as in serving,
where the longest sequences' programs make the tail). Printed per case: the fastest
configuration, the default's time (before and after the sweep of that case) and its ratio to
the fastest, the earlier kernel (fp32 products, a page a tile, its splits by the same rule)
beside it, and the KV bytes per second of each. A benchmark, not a test: nothing here
asserts a speed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from perfscope.measure.kernels import paged_attention as pa

HEADS, KV_HEADS, HEAD_DIM, PAGE = 32, 8, 128, 16
CASES = ((1, 4096), (1, 32768), (8, 4096), (8, 32768), (32, 8192), (128, 2048), (128, 8192),
         (256, 4096))
QUICK_CASES = ((1, 8192), (32, 8192), (128, 8192))
LAUNCHES = {
    "scalar16w4": pa.DecodeLaunch(16, mma=False, num_warps=4),  # the kernel before tl.dot
    "mma16w4": pa.DecodeLaunch(16, num_warps=4),
    "mma32w4": pa.DecodeLaunch(32, num_warps=4),
    "mma32w8": pa.DecodeLaunch(32, num_warps=8),
    "mma64w4": pa.DecodeLaunch(64, num_warps=4),
    "mma64w8": pa.DecodeLaunch(64, num_warps=8),
    "mma128w8": pa.DecodeLaunch(128, num_warps=8),
    "mma32w4s2": pa.DecodeLaunch(32, num_warps=4, num_stages=2),
    "mma64w8s2": pa.DecodeLaunch(64, num_warps=8, num_stages=2),
}
OLD = "scalar16w4"
MAX_PROGRAMS_PER_SM = 64


def split_counts(batch: int, ctx: int, tile: int, sms: int) -> list[int]:
    tiles = -(-ctx // tile)
    out = [s for s in (1, 2, 4, 8, 16, 32, 64)
           if s <= tiles and (s == 1 or batch * KV_HEADS * s <= MAX_PROGRAMS_PER_SM * sms)]
    return out


def run_case(batch: int, ctx: int, sms: int, quick: bool, progress: Any,
             device: str, ragged: bool = False) -> dict[str, Any]:
    import torch

    from perfscope.measure.checks import random_tensor
    from perfscope.measure.kernels import triton_kernels as tk
    from perfscope.measure.kernels.bench import ragged_lengths
    from perfscope.measure.timing import benchmark

    lens = ragged_lengths(batch, max(1, ctx // 32), ctx) if ragged else [ctx] * batch
    kv = pa.make_paged_kv(lens, kv_heads=KV_HEADS, head_dim=HEAD_DIM, block_size=PAGE,
                          dtype=torch.bfloat16, device=device, seed=7)
    q = random_tensor((batch, HEADS, HEAD_DIM), torch.bfloat16, device, seed=8)
    ref = pa.paged_attention_torch(q.float(), kv.k_pool.float(), kv.v_pool.float(),
                                   kv.block_table, kv.seq_lens)
    counts = pa.attention_decode_counts(lens, heads=HEADS, kv_heads=KV_HEADS,
                                        head_dim=HEAD_DIM, act_bytes=2, block_size=PAGE)
    budget = {"warmup_s": 0.01, "budget_s": 0.03 if quick else 0.08, "min_runs": 5,
              "max_runs": 50}
    rows = []

    def timed(name: str, launch: pa.DecodeLaunch, splits: int | None) -> dict[str, Any]:
        def call() -> Any:
            return tk.paged_attention_triton(q, kv.k_pool, kv.v_pool, kv.block_table,
                                             kv.seq_lens, num_splits=splits, launch=launch)

        err = float((call().float() - ref).abs().max())
        stats = benchmark(call, device=device, **budget)
        ran = splits or tk.decode_num_splits(q, kv.block_table.shape[1] * PAGE,
                                             launch.block_n, KV_HEADS)
        row = {"launch": name, "block_n": launch.block_n, "mma": launch.mma,
               "num_warps": launch.num_warps, "num_stages": launch.num_stages,
               "num_splits": ran, "heuristic": splits is None, "median_s": stats.median_s,
               "p20_s": stats.p20_s, "p80_s": stats.p80_s,
               "kv_gbps": counts.bytes / stats.median_s / 1e9, "max_abs_err": err}
        if err > 3e-2:
            row["error"] = f"max |out - fp32 torch| {err:.3g} > 0.03"
        rows.append(row)
        progress(f"  {batch}x{ctx} {name} splits {ran}{' (auto)' if splits is None else ''}:"
                 f" {stats.median_s * 1e6:.1f} us, {row['kv_gbps']:.0f} GB/s, err {err:.2g}")
        return row

    for name, launch in LAUNCHES.items():
        first = timed(name, launch, None)  # the default call, before and after the splits:
        for s in split_counts(batch, ctx, launch.block_n, sms):
            timed(name, launch, s)
        last = timed(name, launch, None)  # the two differ by the drift over the sweep
        rows.pop()  # last
        first["then_median_s"] = last["median_s"]
        if "error" in last:
            first.setdefault("error", last["error"])
    ok = [r for r in rows if "error" not in r and not r["heuristic"]]
    best = min(ok, key=lambda r: r["median_s"]) if ok else None
    default = next(r for r in rows if r["heuristic"] and r["launch"] == _default_name())
    old = next(r for r in rows if r["heuristic"] and r["launch"] == OLD)
    return {"batch": batch, "context": ctx, "ragged": ragged, "tokens": sum(lens),
            "kv_bytes": counts.bytes, "rows": rows,
            "best": best, "default": default, "old": old}


def parse_cases(text: str) -> tuple[tuple[int, int], ...]:
    """``"1x4096,128x8192"`` -> ((1, 4096), (128, 8192)); ValueError naming a bad item."""
    out = []
    for item in text.split(","):
        parts = item.strip().split("x")
        if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise ValueError(f"{item!r} is not BATCHxCONTEXT with positive integers "
                             "(e.g. 32x8192)")
        out.append((int(parts[0]), int(parts[1])))
    return tuple(out)


def warm_gpu(torch: Any, seconds: float = 2.0) -> None:
    """Matrix products for ``seconds``, so the first cases do not run at idle clocks (in an
    earlier sweep the first few short cases of a process timed up to 2x slower)."""
    a = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(20):
            a @ a
        torch.cuda.synchronize()


def _default_name() -> str:
    for name, launch in LAUNCHES.items():
        if launch == pa.DECODE_LAUNCH:
            return name
    raise SystemExit(f"DECODE_LAUNCH {pa.DECODE_LAUNCH} is not among the swept launches")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", default=None, help="write every timing here")
    p.add_argument("--quick", action="store_true", help="three cases, shorter timing")
    p.add_argument("--cases", default=None, help="BATCHxCONTEXT,... (default: the sweep's)")
    p.add_argument("--launches", default=None,
                   help=f"comma-separated names among {', '.join(LAUNCHES)} (default: all)")
    p.add_argument("--ragged", action="store_true",
                   help="lengths uniform in [context / 32, context], the longest = context")
    p.add_argument("--device", default="cuda", help="cuda; cpu only under TRITON_INTERPRET=1")
    a = p.parse_args(argv)
    if a.launches:
        keep = a.launches.split(",")
        unknown = [n for n in keep if n not in LAUNCHES]
        if unknown:
            print(f"error: unknown launch {', '.join(unknown)}; choose from "
                  f"{', '.join(LAUNCHES)}", file=sys.stderr)
            return 2
        for name in list(LAUNCHES):
            if name not in keep and name not in (OLD, _default_name()):
                del LAUNCHES[name]
    if a.json and not os.path.isdir(os.path.dirname(os.path.abspath(a.json))):
        print(f"error: --json {a.json}: its folder does not exist; create it first or choose "
              "another path (checked before the sweep, so no timing is lost)", file=sys.stderr)
        return 2
    try:
        cases = parse_cases(a.cases) if a.cases else (QUICK_CASES if a.quick else CASES)
    except ValueError as e:
        print(f"error: --cases {a.cases!r}: {e}", file=sys.stderr)
        return 2
    import torch

    if a.device == "cuda" and not torch.cuda.is_available():
        print("error: this sweep needs a CUDA GPU (or --device cpu under TRITON_INTERPRET=1)",
              file=sys.stderr)
        return 2
    if a.device == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        print("error: --device cpu runs Triton's interpreter: set TRITON_INTERPRET=1",
              file=sys.stderr)
        return 2
    if a.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        name, sms = props.name, props.multi_processor_count
    else:
        from perfscope.measure.kernels.triton_kernels import ASSUMED_SM_COUNT

        name, sms = "cpu (Triton interpreter)", ASSUMED_SM_COUNT
    _default_name()
    t0 = time.perf_counter()
    out = []

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    if a.device == "cuda":
        warm_gpu(torch)
    for batch, ctx in cases:
        out.append(run_case(batch, ctx, sms, a.quick, progress, a.device, a.ragged))
        if a.device == "cuda":
            torch.cuda.empty_cache()  # the case's KV pools went with run_case's frame
    print(f"{'ragged ' if a.ragged else ''}batch x longest context")
    print(f"{'case':>10} {'fastest':>22} {'us':>8} {'GB/s':>6} | {'default':>9} {'us':>8} "
          f"{'again':>8} {'GB/s':>6} {'x best':>6} | {'old':>5} {'us':>8} {'GB/s':>6} "
          f"{'old/def':>7}")
    for c in out:
        b, d, o = c["best"], c["default"], c["old"]
        best = f"{b['launch']}/{b['num_splits']}" if b else "none passed"
        bus = f"{b['median_s'] * 1e6:8.1f} {b['kv_gbps']:6.0f}" if b else f"{'-':>8} {'-':>6}"
        print(f"{c['batch']:>4}x{c['context']:<5} {best:>22} {bus} | "
              f"{'split ' + str(d['num_splits']):>9} {d['median_s'] * 1e6:8.1f} "
              f"{d['then_median_s'] * 1e6:8.1f} "
              f"{d['kv_gbps']:6.0f} {d['median_s'] / b['median_s'] if b else 0:6.2f} | "
              f"{o['num_splits']:>5} {o['median_s'] * 1e6:8.1f} {o['kv_gbps']:6.0f} "
              f"{o['median_s'] / d['median_s']:7.2f}")
    failed = [(c["batch"], c["context"], r["launch"], r["num_splits"], r["error"])
              for c in out for r in c["rows"] if "error" in r]
    for f in failed:
        print(f"WRONG RESULT {f}", file=sys.stderr)
    if a.json:
        doc = {"schema": "perfscope.tune_decode_attention/1", "device": name,
               "sms": sms, "torch": torch.__version__,
               "triton": __import__("triton").__version__,
               "shape": {"heads": HEADS, "kv_heads": KV_HEADS, "head_dim": HEAD_DIM,
                         "page": PAGE, "dtype": "bf16"},
               "ragged": a.ragged, "default_launch": _default_name(),
               "split_rule": {"programs_per_sm": pa.SPLIT_PROGRAMS_PER_SM, "rounded": "down",
                              "min_split_tiles": pa.MIN_SPLIT_BLOCKS,
                              "max_splits": pa.MAX_SPLITS},
               "duration_s": time.perf_counter() - t0,
               "cases": out}
        from perfscope.errors import InputError
        from perfscope.io import write_atomic

        try:
            write_atomic(a.json, json.dumps(doc, indent=1), what="--json")  # never half-written
        except InputError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
