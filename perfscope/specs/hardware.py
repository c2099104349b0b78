"""Hardware specs, read from TOML (see hw_specs/README.md for the schema).

Dense and with-sparsity tensor peaks are kept in separate fields; the roofline only ever uses
dense. A dtype the device cannot run at speed is absent, and asking for it raises
UnsupportedDtypeError naming the dtypes it has.

Every ceiling says where it came from: ``"spec"`` (the datasheet peak, ``--ceiling spec``),
``"measured"`` (an achieved figure on this part, ``[empirical]`` in its file) or ``"derived"``
(no measurement on this part: an efficiency measured elsewhere, by the rule in
``perfscope.specs.ceilings``). ``--ceiling empirical`` never mixes measured figures with 100%
of spec.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from perfscope.errors import SpecError, UnsupportedDtypeError
from perfscope.specs._toml import Fields
from perfscope.specs.links import (
    GB,
    LINK_KINDS,
    LINK_SCHEMA,
    LinkSpec,
    Topology,
    parse_link,
    parse_topology,
)

__all__ = ["CEILINGS", "GB", "GIB", "HW_SCHEMA", "LINK_KINDS", "LINK_SCHEMA", "MIB", "TERA",
           "Empirical", "HardwareSpec", "LinkSpec", "Peak", "Topology", "parse_hw",
           "parse_link", "spec_dirs"]

GIB = 2**30
MIB = 2**20
TERA = 1e12

HW_SCHEMA = "perfscope.hw/1"
CEILINGS = ("spec", "empirical")
ARCHITECTURES = ("volta", "ampere", "ada", "hopper", "blackwell", "cdna3")


@dataclass(frozen=True, slots=True)
class Peak:
    """Peak rates of one dtype in FLOP/s (integer dtypes: OP/s). None where the unit lacks it."""

    dtype: str
    tensor_dense: float | None
    tensor_sparse: float | None
    vector: float | None
    source: str

    @property
    def gemm(self) -> float:
        """The rate a GEMM in this dtype runs at: the dense tensor peak, else the vector one."""
        return self.tensor_dense or self.vector or 0.0


@dataclass(frozen=True, slots=True)
class Empirical:
    """Achieved ceilings from published (or our own) measurements, each with its source."""

    gemm_flops: Mapping[str, float] = field(default_factory=dict)
    gemm_sources: Mapping[str, str] = field(default_factory=dict)
    memory_bandwidth_bytes_s: float | None = None
    memory_source: str | None = None
    # fixed time each kernel costs beyond its roofline time (launch gap, ramp-up, tail)
    kernel_overhead_s: float | None = None
    kernel_overhead_source: str | None = None


@dataclass(frozen=True, slots=True)
class HardwareSpec:
    name: str
    display_name: str
    vendor: str
    memory_bytes: float  # what the driver exposes (nvidia-smi total): the fit checks use it
    memory_bandwidth_bytes_s: float
    memory_source: str
    l2_bytes: float
    sm_count: int
    peaks: Mapping[str, Peak]
    topology: Topology
    empirical: Empirical | None
    file: str = ""
    aliases: tuple[str, ...] = ()
    architecture: str | None = None
    memory_nominal_bytes: float = 0.0  # the vendor's capacity figure
    memory_driver_source: str | None = None  # None: no driver figure, capacity is nominal
    # empirical ceilings are cached per spec: hash it once (its mappings are read-only views)
    _hash: int = field(init=False, repr=False, compare=False, default=0)

    def __post_init__(self) -> None:
        e = self.empirical
        emp = None if e is None else (tuple(sorted(e.gemm_flops.items())),
                                      e.memory_bandwidth_bytes_s, e.kernel_overhead_s)
        object.__setattr__(self, "_hash", hash((self.name, self.file, self.memory_bytes,
                                                self.memory_bandwidth_bytes_s,
                                                tuple(self.peaks.values()), self.topology,
                                                emp, self.architecture)))

    def __hash__(self) -> int:
        return self._hash

    # ---- links (the topology's, under their old names) -----------------------------------
    @property
    def gpu_link(self) -> LinkSpec | None:
        """Device-to-device link inside a node: the scale-up link, else the host link."""
        return self.topology.scale_up or self.topology.host

    @property
    def host_link(self) -> LinkSpec | None:
        return self.topology.host

    @property
    def network_link(self) -> LinkSpec | None:
        return self.topology.scale_out

    @property
    def gpus_per_node(self) -> int:
        return self.topology.gpus_per_node

    # ---- ceilings -------------------------------------------------------------------
    def dtypes(self) -> list[str]:
        return [d for d, p in self.peaks.items() if p.tensor_dense or p.vector]

    def has_dtype(self, dtype: str) -> bool:
        p = self.peaks.get(dtype)
        return p is not None and bool(p.tensor_dense or p.vector)

    def peak(self, dtype: str) -> Peak:
        p = self.peaks.get(dtype)
        if p is None or not (p.tensor_dense or p.vector):
            have = ", ".join(self.dtypes())
            raise UnsupportedDtypeError(
                f"{self.display_name} has no {dtype} support at speed; choose one of: {have}")
        return p

    def tensor_flops(self, dtype: str, ceiling: str = "spec") -> tuple[float, str]:
        """GEMM rate for ``dtype`` (dense tensor peak; the vector peak where the dtype has no
        tensor path, e.g. fp32) and where it came from: spec | measured | derived."""
        p = self.peak(dtype)
        if ceiling == "empirical":
            from perfscope.specs.ceilings import tensor_ceiling

            c = tensor_ceiling(self, dtype)
            return c.value, c.source
        return p.gemm, "spec"

    def vector_flops(self, dtype: str) -> float:
        """Non-tensor peak for elementwise work in ``dtype`` (falls back to fp32's)."""
        p = self.peaks.get(dtype)
        if p is not None and p.vector:
            return p.vector
        fp32 = self.peaks.get("fp32")
        if fp32 is not None and fp32.vector:
            return fp32.vector
        return min(p.tensor_dense for p in self.peaks.values() if p.tensor_dense) / 8

    def memory_bandwidth(self, ceiling: str = "spec") -> tuple[float, str]:
        if ceiling == "empirical":
            from perfscope.specs.ceilings import memory_ceiling

            c = memory_ceiling(self)
            return c.value, c.source
        return self.memory_bandwidth_bytes_s, "spec"

    def kernel_overhead(self, ceiling: str = "spec") -> tuple[float, str]:
        """Fixed time per kernel: none on the spec roofline (the ideal)."""
        if ceiling == "empirical":
            from perfscope.specs.ceilings import kernel_overhead_ceiling

            c = kernel_overhead_ceiling(self)
            return c.value, c.source
        return 0.0, "spec"


# ---- loading ------------------------------------------------------------------------------

def _schema(f: Fields, expected: str) -> None:
    s = f.get("schema", str)
    if s != expected:
        raise SpecError(f.file, "schema", f"is {s!r}", f"set schema = {expected!r}")


def _memory(f: Fields, file: str) -> tuple[float, float, float, str, str | None]:
    mem = f.table("memory", required=True)
    assert mem is not None
    gib = mem.num("capacity_gib", None)
    gb = mem.num("capacity_gb", None)
    if (gib is None) == (gb is None):
        raise SpecError(file, "memory.capacity_gib", "give exactly one of capacity_gib or "
                        "capacity_gb", None)
    nominal = gib * GIB if gib is not None else gb * GB
    drv = mem.num("driver_total_mib", None)
    drv_src = mem.get("driver_source", str, None)
    if (drv is None) != (drv_src is None):
        raise SpecError(file, "memory.driver_total_mib", "give driver_total_mib and "
                        "driver_source together", None)
    if drv is not None and drv * MIB > nominal * 1.0001:
        raise SpecError(file, "memory.driver_total_mib", f"{drv:g} MiB exceeds the nominal "
                        f"capacity ({nominal / MIB:g} MiB)", "check both figures")
    bw = mem.num("bandwidth_gb_s") * GB
    msrc = mem.get("source", str)
    mem.get("type", str, None)
    mem.done()
    return nominal, drv * MIB if drv is not None else nominal, bw, msrc, drv_src


def _peaks(f: Fields, file: str) -> dict[str, Peak]:
    from perfscope.units import DTYPE_BITS

    peaks_t = f.table("peak", required=True)
    assert peaks_t is not None
    peaks: dict[str, Peak] = {}
    for dt in peaks_t.keys():  # noqa: SIM118 (Fields, not a dict)
        if dt not in DTYPE_BITS:
            raise SpecError(file, f"peak.{dt}", "unknown dtype",
                            f"use one of {', '.join(DTYPE_BITS)}")
        p = peaks_t.table(dt)
        assert p is not None
        td = p.num("tensor_dense_tflops", None)
        ts = p.num("tensor_sparse_tflops", None)
        vec = p.num("vector_tflops", None)
        if td is None and vec is None:
            raise SpecError(file, f"peak.{dt}", "needs tensor_dense_tflops or vector_tflops",
                            "remove the table if the device lacks the dtype")
        if td is not None and ts is not None and ts < td:
            raise SpecError(file, f"peak.{dt}.tensor_sparse_tflops",
                            "is below the dense figure", "sparse figures are 2x dense")
        peaks[dt] = Peak(dt, td * TERA if td else None, ts * TERA if ts else None,
                         vec * TERA if vec else None, p.get("source", str))
        p.done()
    peaks_t.done()
    return peaks


def _empirical(f: Fields, file: str, peaks: Mapping[str, Peak], bw: float) -> Empirical | None:
    et = f.table("empirical")
    if et is None:
        return None
    gemm: dict[str, float] = {}
    gsrc: dict[str, str] = {}
    gt = et.table("gemm")
    if gt is not None:
        for dt in gt.keys():  # noqa: SIM118
            if dt not in peaks:  # typo or a dtype the device lacks: never silently ignored
                raise SpecError(file, f"empirical.gemm.{dt}",
                                f"no [peak.{dt}] table for this dtype",
                                "use a dtype the device has, spelled as in [peak]")
            g = gt.table(dt)
            assert g is not None
            gemm[dt] = g.num("tflops") * TERA
            gsrc[dt] = g.get("source", str)
            g.done()
            peak = peaks[dt].gemm
            if gemm[dt] > peak * 1.0001:  # a measurement above the peak means a wrong peak
                raise SpecError(file, f"empirical.gemm.{dt}.tflops",
                                f"{gemm[dt] / TERA:g} TFLOPS exceeds the {peak / TERA:g} "
                                f"TFLOPS peak in [peak.{dt}]",
                                "an achieved rate cannot beat the peak: fix the peak or the "
                                "measurement")
        gt.done()
    ko = et.table("kernel_overhead")
    ko_s = ko_src = None
    if ko is not None:
        ko_s = ko.num("us") * 1e-6
        ko_src = ko.get("source", str)
        ko.done()
    mt = et.table("memory")
    mbw = msrc = None
    if mt is not None:
        mbw = mt.num("bandwidth_gb_s") * GB
        msrc = mt.get("source", str)
        mt.get("kind", str, None)
        mt.done()
        if mbw > bw * 1.0001:
            raise SpecError(file, "empirical.memory.bandwidth_gb_s",
                            f"{mbw / GB:g} GB/s exceeds the {bw / GB:g} GB/s peak in [memory]",
                            "an achieved bandwidth cannot beat the peak: fix one of them")
    et.done()
    return Empirical(MappingProxyType(gemm), MappingProxyType(gsrc), mbw, msrc, ko_s, ko_src)


def parse_hw(data: Mapping, file: str, resolve_link) -> HardwareSpec:
    """``resolve_link(name, file, field)`` returns the LinkSpec of a link name or path."""
    f = Fields(data, file)
    _schema(f, HW_SCHEMA)
    nominal, usable, bw, msrc, drv_src = _memory(f, file)

    chip = f.table("chip", required=True)
    assert chip is not None
    sm = int(chip.num("sm_count"))
    l2 = chip.num("l2_mib") * MIB
    chip.num("boost_clock_mhz", None)
    chip.get("source", str)
    arch = chip.get("architecture", str, None)
    if arch is not None and arch not in ARCHITECTURES:
        raise SpecError(file, "chip.architecture", f"unknown architecture {arch!r}",
                        f"use one of {', '.join(ARCHITECTURES)} (or leave it out)")
    chip.done()

    peaks = _peaks(f, file)
    topology = parse_topology(f.table("links"), file, resolve_link, arch)
    empirical = _empirical(f, file, peaks, bw)

    aliases = tuple(f.get("aliases", list, []))
    spec = HardwareSpec(
        name=f.get("name", str),
        display_name=f.get("display_name", str),
        vendor=f.get("vendor", str),
        memory_bytes=usable,
        memory_bandwidth_bytes_s=bw,
        memory_source=msrc,
        l2_bytes=l2,
        sm_count=sm,
        peaks=MappingProxyType(peaks),
        topology=topology,
        empirical=empirical,
        file=file,
        aliases=aliases,
        architecture=arch,
        memory_nominal_bytes=nominal,
        memory_driver_source=drv_src,
    )
    f.get("notes", str, None)
    f.done()
    return spec


def spec_dirs() -> list[Path]:
    """Built-in spec folder first; PERFSCOPE_SPEC_PATH entries (os.pathsep separated) after."""
    builtin = builtin_spec_dir()
    return ([builtin] if builtin else []) + user_spec_dirs()


def builtin_spec_dir() -> Path | None:
    """hw_specs/ of the wheel (perfscope/hw_specs) or of a source checkout."""
    here = Path(__file__).resolve().parent.parent
    return next((d for d in (here / "hw_specs", here.parent / "hw_specs") if d.is_dir()), None)


def user_spec_dirs() -> list[Path]:
    import os

    extra = os.environ.get("PERFSCOPE_SPEC_PATH", "")
    return [Path(p) for p in extra.split(os.pathsep) if p]
