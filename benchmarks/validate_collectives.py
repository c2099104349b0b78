"""Collective cost model vs published measurements, side by side with ratios.

Every collective record of hw_specs/references.json (category 2-microbench-collective) is
predicted with perfscope.collectives under both ceilings, as the eager calls the benchmarks
make (nccl-tests and torch's all_reduce loop launch each call from the host: eager=True adds
the calibrated per-call overhead). ``empirical`` is the one to compare with a measurement
(measured link efficiency); ``spec`` is the ideal. ``analyze`` times collectives inside a
captured step: the "graph" column, without the per-call overhead.
Records measured with NVLS (NVLink SHARP, switch offload) are shown but flagged: the model is
ring/tree only. A second table repeats the comparison on the Azure ND A100 v4 all-reduce curve
whose small sizes calibrated COLLECTIVE_OVERHEAD_S (it is not a reference record).

    python benchmarks/validate_collectives.py
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import NamedTuple

from perfscope.collectives import COLLECTIVE_OVERHEAD_S, collective_cost
from perfscope.specs.loading import load_hw

REFERENCES = Path(__file__).resolve().parents[1] / "hw_specs" / "references.json"
KI, MI, GI = 2**10, 2**20, 2**30


class Case(NamedTuple):
    rid: str
    hw: str
    collective: str
    ranks: int
    nbytes: int  # nccl-tests size: the per-rank buffer (all-gather: the gathered buffer)
    busbw_gb_s: float  # measured bus bandwidth (ring or, if nvls, NVLS)
    time_us: float | None  # measured time where the record gives it
    nvls: bool  # measured with NVLS: not modelled
    note: str = ""


def bus_factor(collective: str, p: int) -> float:
    return 2 * (p - 1) / p if collective == "all_reduce" else (p - 1) / p


# How to read each record (their value fields mix several figures; the numbers are copied from
# the record's value and notes). Where a record also gives the NVLS-off (ring) figure, that one
# is compared.
def cases(records: dict[str, dict]) -> list[Case]:
    def v(rid: str) -> float:
        return float(records[rid]["value"])

    a100 = [("MB-039", 32 * KI, 43.83), ("MB-040", MI, 101.9), ("MB-041", 16 * MI, 276.6),
            ("MB-042", 128 * MI, 1327.6), ("MB-043", GI, 8203.9), ("MB-044", 16 * GI, 127997)]
    out = [Case(rid, "a100-sxm-80gb", "all_reduce", 8, n, v(rid), t, False)
           for rid, n, t in a100]
    out += [
        Case("MB-045", "h200-sxm", "all_reduce", 8, 16 * GI, v("MB-045"), None, True),
        Case("MB-046", "h200-sxm", "all_reduce", 8, 16 * GI, v("MB-046"), None, False),
        Case("MB-047", "h200-sxm", "all_reduce", 4, 8 * GI, v("MB-047"), None, False),
        Case("MB-048", "h200-sxm", "all_reduce", 5, 8 * GI, 364.4, None, False, "NVLS off"),
        Case("MB-049", "h200-sxm", "all_reduce", 8, 8 * GI, 365.6, None, False, "NVLS off"),
        Case("MB-050", "h200-sxm", "all_reduce", 8, 16 * GI, v("MB-050"), None, True),
        Case("MB-051", "h200-sxm", "all_reduce", 8, 16 * GI, v("MB-051"), None, False),
        Case("MB-052", "h200-sxm", "all_gather", 8, 16 * GI, v("MB-052"), None, False),
        Case("MB-053", "h200-sxm", "reduce_scatter", 8, 16 * GI, v("MB-053"), None, False),
        Case("MB-054", "h100-sxm", "all_reduce", 8, 4 * GI, v("MB-054"), None, True),
        Case("MB-055", "b200", "all_reduce", 4, 8 * GI, v("MB-055"), None, False),
        Case("MB-056", "b200", "all_reduce", 8, 8 * GI, 682.2, None, False, "NVLS off"),
        Case("MB-057", "b200", "all_reduce", 8, 16 * GI, 845.67, None, True, "1 node"),
        Case("MB-057", "b200", "all_reduce", 8, 32 * KI, 1.20, None, True, "1 node"),
        Case("MB-057", "b200", "all_reduce", 8, MI, 36.06, None, True, "1 node"),
        Case("MB-057", "b200", "all_reduce", 32, 16 * GI, 381.80, None, False,
             "4 nodes, EFA 8 x 50 GB/s a node"),
        Case("MB-057", "b200", "all_reduce", 32, 32 * KI, 0.01, None, False,
             "4 nodes: an outlier (5.7 ms)"),
        Case("MB-057", "b200", "all_reduce", 32, MI, 5.37, None, False, "4 nodes"),
        Case("MB-058", "mi300x", "all_reduce", 2, 4 * GI, 47.671, None, False, "one xGMI link"),
        Case("MB-058", "mi300x", "all_reduce", 8, 4 * GI, 312.912, None, False),
        Case("MB-059", "h200-sxm", "all_reduce", 8, 4 * 10**9, 3722.778 / 8, None, True,
             "1 x 4 GB"),
        Case("MB-059", "h200-sxm", "all_reduce", 8, 4 * 10**6, 1146.127 / 8, None, False,
             "1000 x 4 MB, back to back"),
    ]
    return out


# Azure ND A100 v4, nccl-tests all_reduce_perf in place, NCCL 2.18.5, 8 x A100-SXM4-80GB: bus
# bandwidth (GB/s) by size (github:Azure/AI-benchmarking-guide
# Azure_Results/ND_A100_v4_results.md @3bb66ca). Sizes as the table prints them ("65K" = 64 KiB).
AZURE_A100 = [(KI, 0.04), (2 * KI, 0.08), (4 * KI, 0.17), (8 * KI, 0.33), (16 * KI, 0.67),
              (32 * KI, 1.37), (64 * KI, 2.70), (128 * KI, 5.15), (256 * KI, 10.11),
              (512 * KI, 19.24), (MI, 36.22), (2 * MI, 53.54), (4 * MI, 71.43), (8 * MI, 89.99),
              (16 * MI, 109.22), (32 * MI, 132.77), (64 * MI, 166.63), (128 * MI, 174.18),
              (256 * MI, 213.87), (512 * MI, 221.58), (GI, 228.10), (2 * GI, 230.22),
              (4 * GI, 230.48), (8 * GI, 231.58)]


def size(n: int) -> str:
    for unit, k in (("GiB", GI), ("MiB", MI), ("GB", 10**9), ("MB", 10**6), ("KiB", KI)):
        if n >= k and n % k == 0:
            return f"{n // k}{unit}"
    return f"{n}B"


def predict(c: Case, ceiling: str, eager: bool = True):
    return collective_cost(load_hw(c.hw).topology, c.collective, float(c.nbytes), c.ranks, 1,
                           ceiling, eager)


def main() -> None:
    records = {r["id"]: r for r in json.loads(REFERENCES.read_text())["records"]
               if r["category"] == "2-microbench-collective"}
    print("Collective records (hw_specs/references.json): measured vs predicted time, "
          "ratio = predicted / measured")
    head = (f"{'record':7} {'hw':13} {'op':14} {'p':>2} {'size':>7} {'meas us':>10} "
            f"{'emp us':>10} {'ratio':>6} {'spec us':>10} {'ratio':>6} {'graph us':>10}  "
            "algorithm / link")
    print(head)
    print("-" * len(head))
    seen: set[str] = set()
    ring_ratios = []
    for c in cases(records):
        seen.add(c.rid)
        f = bus_factor(c.collective, c.ranks)
        meas = c.time_us if c.time_us is not None else c.nbytes * f / (c.busbw_gb_s * 1e9) * 1e6
        e, s, g = predict(c, "empirical"), predict(c, "spec"), predict(c, "empirical", False)
        re_, rs = e.time_s * 1e6 / meas, s.time_s * 1e6 / meas
        flag = "NVLS measured, ring modelled" if c.nvls else ""
        note = "; ".join(x for x in (c.note, flag) if x)
        if not c.nvls and "outlier" not in c.note:
            ring_ratios.append(re_)
        print(f"{c.rid:7} {c.hw:13} {c.collective:14} {c.ranks:>2} {size(c.nbytes):>7} "
              f"{meas:10.1f} {e.time_s * 1e6:10.1f} {re_:6.2f} {s.time_s * 1e6:10.1f} "
              f"{rs:6.2f} {g.time_s * 1e6:10.1f}  {e.algorithm} / {e.link}"
              f"{'  (' + note + ')' if note else ''}")
    missing = sorted(set(records) - seen)
    if missing:
        print(f"records not compared: {', '.join(missing)}")
    print(f"ring records (outlier and NVLS excluded): empirical ratio median "
          f"{statistics.median(ring_ratios):.2f}, range {min(ring_ratios):.2f}-"
          f"{max(ring_ratios):.2f} over {len(ring_ratios)} rows")

    print()
    print("Azure ND A100 v4 all-reduce curve (8 GPUs; <= 64 KiB calibrated "
          f"COLLECTIVE_OVERHEAD_S = {COLLECTIVE_OVERHEAD_S * 1e6:.1f} us)")
    print(f"{'size':>7} {'meas us':>10} {'emp us':>10} {'ratio':>6}  algorithm")
    topo = load_hw("a100-sxm-80gb").topology
    for n, busbw in AZURE_A100:
        meas = n * bus_factor("all_reduce", 8) / (busbw * 1e9) * 1e6
        e = collective_cost(topo, "all_reduce", float(n), 8, 1, "empirical", True)
        print(f"{size(n):>7} {meas:10.1f} {e.time_s * 1e6:10.1f} {e.time_s * 1e6 / meas:6.2f}  "
              f"{e.algorithm}")


if __name__ == "__main__":
    main()
