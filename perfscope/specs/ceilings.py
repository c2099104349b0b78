"""Empirical ceilings: measured where the part was measured, derived by a stated rule where not.

``--ceiling empirical`` must never mix an achieved figure with 100% of a datasheet peak (that
made compute-bound prefill 20% faster on H200 than on the same GH100 compute in H100, and A100
int8 run at 100% of spec next to bf16 at 87%). A figure missing on a part is derived from an
*efficiency* (achieved / spec) measured elsewhere, first match wins:

GEMM rate of dtype d on device D (efficiency x D's peak for d):
  1. measured on D for d ([empirical.gemm.d] in D's file)                          measured
  2. measured for d on built-in devices of D's architecture (median)               derived
  3. measured on D for a dtype of d's class (16-bit float, 8-bit, 4-bit, ...)      derived
  4. measured for d's class on built-in devices of D's architecture (median)       derived
  5. measured on D for the dtype nearest in width (ties: bf16, fp16, fp8, int8, ...) derived
  6. the same on D's architecture (median over its devices)                        derived
  7. the median of every GEMM efficiency measured on the built-in devices          derived
HBM bandwidth: 1. measured on D; 2. median efficiency of D's architecture; 3. median of all.
Kernel overhead: 1. fitted on D; 2. the fit of D's architecture; 3. the median of all fits.
Link bus bandwidth (all-reduce busbw / spec rate): 1. measured on the link; 2. the median of
links of the same reach (scale-up: NVLink, Infinity Fabric; host: PCIe; scale-out: InfiniBand,
Ethernet); 3. the median of all measured links.

"Built-in" means the files shipped in hw_specs/ only, so a derived figure does not change with
what is on PERFSCOPE_SPEC_PATH. Every result carries a note naming what it came from.
"""

from __future__ import annotations

import re
import statistics
from functools import lru_cache
from typing import NamedTuple

from perfscope.errors import SpecError
from perfscope.specs.hardware import HardwareSpec, LinkSpec

DTYPE_CLASS = {"bf16": "16-bit float", "fp16": "16-bit float", "fp8": "8-bit", "int8": "8-bit",
               "fp4": "4-bit", "int4": "4-bit", "tf32": "tf32", "fp32": "fp32", "fp64": "fp64"}
PREFERENCE = ("bf16", "fp16", "fp8", "int8", "tf32", "fp32", "fp4", "int4", "fp64")
REACH = {"nvlink": "scale-up", "infinity_fabric": "scale-up", "pcie": "host",
         "infiniband": "scale-out", "ethernet": "scale-out"}
_LEADING_IDS = re.compile(r"^(?:(?:DS|MB|LLM|GEMM)-\d{3}(?:\.\.(?:DS|MB|LLM|GEMM)-\d{3})?"
                          r"[,;]? ?)+")


class Ceiling(NamedTuple):
    value: float  # FLOP/s, bytes/s, seconds, or (links) an efficiency in (0, 1]
    source: str  # "spec" | "measured" | "derived"
    note: str  # what it came from


def _cite(source: str | None) -> str:
    """The reference ids a source string opens with, else its first words."""
    if not source:
        return "no source"
    m = _LEADING_IDS.match(source)
    if m:
        return m.group(0).strip(" ,;")
    return source[:80].rstrip() + ("..." if len(source) > 80 else "")


class _Fig(NamedTuple):
    device: str
    arch: str | None
    what: str  # dtype, "memory" or "kernel_overhead"
    value: float  # efficiency (or seconds for kernel overhead)
    source: str


@lru_cache(maxsize=1)
def _builtin_figures() -> tuple[_Fig, ...]:
    """Every measured figure of the built-in device files, as efficiencies."""
    from perfscope.specs.hardware import builtin_spec_dir
    from perfscope.specs.loading import load_hw_file

    root = builtin_spec_dir()
    out: list[_Fig] = []
    for path in sorted((root / "gpus").glob("*.toml")) if root else []:
        hw = load_hw_file(str(path))
        e = hw.empirical
        if e is None:
            continue
        for dt, achieved in e.gemm_flops.items():
            out.append(_Fig(hw.name, hw.architecture, dt, achieved / hw.peaks[dt].gemm,
                            e.gemm_sources[dt]))
        if e.memory_bandwidth_bytes_s:
            out.append(_Fig(hw.name, hw.architecture, "memory",
                            e.memory_bandwidth_bytes_s / hw.memory_bandwidth_bytes_s,
                            e.memory_source or ""))
        if e.kernel_overhead_s is not None:
            out.append(_Fig(hw.name, hw.architecture, "kernel_overhead", e.kernel_overhead_s,
                            e.kernel_overhead_source or ""))
    return tuple(out)


@lru_cache(maxsize=1)
def _builtin_links() -> tuple[LinkSpec, ...]:
    from perfscope.specs.hardware import builtin_spec_dir
    from perfscope.specs.loading import load_link_file

    root = builtin_spec_dir()
    return tuple(load_link_file(str(p)) for p in
                 (sorted((root / "links").glob("*.toml")) if root else []))


def _median(figs: list[_Fig], what: str) -> tuple[float, str]:
    v = statistics.median(f.value for f in figs)
    on = ", ".join(f"{f.device} {_cite(f.source)}" for f in figs)
    return v, f"{what}: {on}"


def _none_found(hw: HardwareSpec, what: str) -> SpecError:
    return SpecError(hw.file or hw.name, f"empirical.{what}", "no measured figure to derive "
                     "an empirical ceiling from (the built-in specs are missing)",
                     f"add [empirical.{what}] to the spec or use --ceiling spec")


@lru_cache(maxsize=1024)
def tensor_ceiling(hw: HardwareSpec, dtype: str) -> Ceiling:
    """Empirical GEMM rate of ``dtype`` on ``hw`` (FLOP/s), by the rule in the module doc."""
    peak = hw.peak(dtype).gemm
    e = hw.empirical
    if e is not None and dtype in e.gemm_flops:
        return Ceiling(e.gemm_flops[dtype], "measured", _cite(e.gemm_sources[dtype]))
    measured = e.gemm_flops if e is not None else {}
    sources = e.gemm_sources if e is not None else {}
    own = [_Fig(hw.name, hw.architecture, d, measured[d] / hw.peaks[d].gemm, sources[d])
           for d in _nearest(dtype, measured)]
    peers = [f for f in _builtin_figures() if f.what in DTYPE_CLASS]
    arch = [f for f in peers if hw.architecture and f.arch == hw.architecture]
    cls = DTYPE_CLASS[dtype]
    rules = (
        (lambda: [f for f in arch if f.what == dtype], f"{dtype} on {hw.architecture}"),
        (lambda: [f for f in own if DTYPE_CLASS[f.what] == cls][:1],
         f"{cls} ({{d}}) on this device"),
        (lambda: _first_dtype([f for f in arch if DTYPE_CLASS[f.what] == cls], dtype),
         f"{cls} ({{d}}) on {hw.architecture}"),
        (lambda: own[:1], "{d} on this device"),
        (lambda: _first_dtype(arch, dtype), f"{{d}} on {hw.architecture}"),
        (lambda: peers, "every GEMM measured on a built-in device"),
    )
    for pick, label in rules:
        figs = pick()
        if figs:
            eff, on = _median(figs, label.replace("{d}", figs[0].what))
            return Ceiling(eff * peak, "derived", f"{eff:.1%} of the {dtype} peak, the "
                           f"efficiency measured for {on}")
    raise _none_found(hw, f"gemm.{dtype}")


def _nearest(dtype: str, dtypes) -> list[str]:
    """``dtypes`` nearest in width to ``dtype`` first (ties: bf16, fp16, fp8, int8, ...)."""
    from perfscope.units import DTYPE_BITS

    return sorted(dtypes, key=lambda d: (abs(DTYPE_BITS[d] - DTYPE_BITS[dtype]),
                                         PREFERENCE.index(d)))


def _first_dtype(figs: list[_Fig], dtype: str) -> list[_Fig]:
    """The figures of the measured dtype nearest in width to ``dtype``."""
    order = _nearest(dtype, {f.what for f in figs})
    return [f for f in figs if f.what == order[0]] if order else []


@lru_cache(maxsize=1024)
def memory_ceiling(hw: HardwareSpec) -> Ceiling:
    """Empirical HBM bandwidth (bytes/s)."""
    e = hw.empirical
    if e is not None and e.memory_bandwidth_bytes_s:
        return Ceiling(e.memory_bandwidth_bytes_s, "measured", _cite(e.memory_source))
    figs = [f for f in _builtin_figures() if f.what == "memory"]
    arch = [f for f in figs if hw.architecture and f.arch == hw.architecture]
    for pick, label in ((arch, f"read bandwidth on {hw.architecture}"),
                        (figs, "read bandwidth on every built-in device")):
        if pick:
            eff, on = _median(pick, label)
            return Ceiling(eff * hw.memory_bandwidth_bytes_s, "derived",
                           f"{eff:.1%} of the spec bandwidth, the efficiency measured for {on}")
    raise _none_found(hw, "memory")


@lru_cache(maxsize=1024)
def kernel_overhead_ceiling(hw: HardwareSpec) -> Ceiling:
    """Fixed time every kernel costs beyond its roofline time (seconds)."""
    e = hw.empirical
    if e is not None and e.kernel_overhead_s is not None:
        return Ceiling(e.kernel_overhead_s, "measured", _cite(e.kernel_overhead_source))
    figs = [f for f in _builtin_figures() if f.what == "kernel_overhead"]
    arch = [f for f in figs if hw.architecture and f.arch == hw.architecture]
    for pick, label in ((arch, f"the fit on {hw.architecture}"),
                        (figs, "no fit for this architecture; the median fit of the built-in "
                               "devices")):
        if pick:
            v, on = _median(pick, label)
            return Ceiling(v, "derived", f"{v * 1e6:.1f} us per kernel, {on}")
    raise _none_found(hw, "kernel_overhead")


@lru_cache(maxsize=1024)
def link_efficiency(link: LinkSpec) -> Ceiling:
    """Achieved ring all-reduce bus bandwidth as a fraction of the link's spec rate."""
    eff = link.measured_efficiency
    if eff is not None:
        return Ceiling(eff, "measured", _cite(link.empirical_source))
    measured = [(k, k.measured_efficiency) for k in _builtin_links()]
    every = [(k, e) for k, e in measured if e is not None]
    same = [(k, e) for k, e in every if REACH[k.kind] == REACH[link.kind]]
    for pick, label in ((same, f"{REACH[link.kind]} links"), (every, "every built-in link")):
        if pick:
            v = statistics.median(e for _, e in pick)
            on = ", ".join(f"{k.name} {_cite(k.empirical_source)}" for k, _ in pick)
            return Ceiling(v, "derived", f"{v:.1%} of the wire rate, the ring all-reduce "
                           f"efficiency measured on {label}: {on}")
    raise SpecError(link.file or link.name, "empirical", "no measured bus bandwidth to derive "
                    "from", "add [empirical] to the link or use --ceiling spec")


def describe(hw: HardwareSpec, ceiling: str, dtypes: list[str] | None = None) -> dict:
    """Every ceiling of ``hw`` under ``ceiling`` with its source, for JSON and `hw show`."""
    dts = dtypes if dtypes is not None else hw.dtypes()
    if ceiling != "empirical":
        return {"ceiling": ceiling,
                "memory_bandwidth_bytes_s": _row(Ceiling(hw.memory_bandwidth_bytes_s, "spec",
                                                         _cite(hw.memory_source))),
                "gemm_flops_per_s": {d: _row(Ceiling(hw.peak(d).gemm, "spec",
                                                     _cite(hw.peaks[d].source))) for d in dts},
                "kernel_overhead_s": _row(Ceiling(0.0, "spec", "none on the spec roofline"))}
    return {"ceiling": ceiling,
            "memory_bandwidth_bytes_s": _row(memory_ceiling(hw)),
            "gemm_flops_per_s": {d: _row(tensor_ceiling(hw, d)) for d in dts},
            "kernel_overhead_s": _row(kernel_overhead_ceiling(hw))}


def _row(c: Ceiling) -> dict:
    return {"value": c.value, "source": c.source, "note": c.note}
