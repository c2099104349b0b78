"""Hardware and interconnect specs, read from TOML (see hw_specs/README.md for the schema).

Dense and with-sparsity tensor peaks are kept in separate fields; the roofline only ever uses
dense. A dtype the device cannot run at speed is absent, and asking for it raises
UnsupportedDtypeError naming the dtypes it has.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from perfscope.errors import SpecError, UnsupportedDtypeError
from perfscope.specs._toml import Fields

GB = 1e9
GIB = 2**30
MIB = 2**20
TERA = 1e12

HW_SCHEMA = "perfscope.hw/1"
LINK_SCHEMA = "perfscope.link/1"
LINK_KINDS = ("nvlink", "pcie", "infiniband", "ethernet", "infinity_fabric")
CEILINGS = ("spec", "empirical")


@dataclass(frozen=True, slots=True)
class Peak:
    """Peak rates of one dtype in FLOP/s (integer dtypes: OP/s). None where the unit lacks it."""

    dtype: str
    tensor_dense: float | None
    tensor_sparse: float | None
    vector: float | None
    source: str


@dataclass(frozen=True, slots=True)
class LinkSpec:
    """A link between devices. Bandwidth is per direction, per GPU (all its links together)."""

    name: str
    display_name: str
    kind: str
    bandwidth_bytes_s: float
    latency_s: float  # per ring step
    source: str
    # achieved all-reduce bus bandwidth (nccl-tests convention) on this link, when published
    empirical_busbw_bytes_s: float | None = None
    empirical_source: str | None = None
    file: str = ""
    base_latency_s: float = 0.0  # once per collective (NCCL's baseLat)

    def bandwidth(self, ceiling: str = "spec") -> float:
        if ceiling == "empirical" and self.empirical_busbw_bytes_s:
            return self.empirical_busbw_bytes_s
        return self.bandwidth_bytes_s


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
    memory_bytes: float
    memory_bandwidth_bytes_s: float
    memory_source: str
    l2_bytes: float
    sm_count: int
    peaks: Mapping[str, Peak]
    gpu_link: LinkSpec | None  # device-to-device inside a node (NVLink, or PCIe without it)
    host_link: LinkSpec | None
    network_link: LinkSpec | None
    gpus_per_node: int
    empirical: Empirical | None
    file: str = ""
    aliases: tuple[str, ...] = ()

    # ---- ceilings -------------------------------------------------------------------
    def dtypes(self) -> list[str]:
        return [d for d, p in self.peaks.items() if p.tensor_dense or p.vector]

    def tensor_flops(self, dtype: str, ceiling: str = "spec") -> tuple[float, str]:
        """Dense tensor-unit peak for ``dtype`` and which ceiling it came from."""
        p = self.peaks.get(dtype)
        if p is None or not (p.tensor_dense or p.vector):
            have = ", ".join(self.dtypes())
            raise UnsupportedDtypeError(
                f"{self.display_name} has no {dtype} support at speed; choose one of: {have}")
        if ceiling == "empirical" and self.empirical and dtype in self.empirical.gemm_flops:
            return self.empirical.gemm_flops[dtype], "empirical"
        if p.tensor_dense:
            return p.tensor_dense, "spec"
        assert p.vector is not None
        return p.vector, "spec"  # no tensor unit for this dtype (fp32 GEMMs, V100 fp32)

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
        if ceiling == "empirical" and self.empirical and self.empirical.memory_bandwidth_bytes_s:
            return self.empirical.memory_bandwidth_bytes_s, "empirical"
        return self.memory_bandwidth_bytes_s, "spec"

    def has_dtype(self, dtype: str) -> bool:
        p = self.peaks.get(dtype)
        return p is not None and bool(p.tensor_dense or p.vector)


# ---- loading ------------------------------------------------------------------------------

def _schema(f: Fields, expected: str) -> None:
    s = f.get("schema", str)
    if s != expected:
        raise SpecError(f.file, "schema", f"is {s!r}", f"set schema = {expected!r}")


def parse_link(data: Mapping, file: str) -> LinkSpec:
    f = Fields(data, file)
    _schema(f, LINK_SCHEMA)
    kind = f.get("kind", str)
    if kind not in LINK_KINDS:
        raise SpecError(file, "kind", f"unknown link kind {kind!r}",
                        f"use one of {', '.join(LINK_KINDS)}")
    emp = f.table("empirical")
    busbw = esrc = None
    if emp is not None:
        busbw = emp.num("allreduce_busbw_gb_s") * GB
        esrc = emp.get("source", str)
        emp.done()
    link = LinkSpec(
        name=f.get("name", str),
        display_name=f.get("display_name", str),
        kind=kind,
        bandwidth_bytes_s=f.num("bandwidth_per_direction_gb_s") * GB,
        latency_s=f.num("latency_us", 5.0) * 1e-6,
        source=f.get("source", str),
        empirical_busbw_bytes_s=busbw,
        empirical_source=esrc,
        file=file,
        base_latency_s=(f.num("base_latency_us", None) or 0.0) * 1e-6,
    )
    f.get("bidirectional_gb_s", (int, float), None)  # informative only
    f.get("latency_source", str, None)
    f.get("notes", str, None)
    f.done()
    return link


def parse_hw(data: Mapping, file: str, resolve_link) -> HardwareSpec:
    """``resolve_link(name, file, field)`` returns the LinkSpec of a link name or path."""
    f = Fields(data, file)
    _schema(f, HW_SCHEMA)
    mem = f.table("memory", required=True)
    assert mem is not None
    gib = mem.num("capacity_gib", None)
    gb = mem.num("capacity_gb", None)
    if (gib is None) == (gb is None):
        raise SpecError(file, "memory.capacity_gib", "give exactly one of capacity_gib or "
                        "capacity_gb", None)
    capacity = gib * GIB if gib is not None else gb * GB
    bw = mem.num("bandwidth_gb_s") * GB
    msrc = mem.get("source", str)
    mem.get("type", str, None)
    mem.done()

    chip = f.table("chip", required=True)
    assert chip is not None
    sm = int(chip.num("sm_count"))
    l2 = chip.num("l2_mib") * MIB
    chip.num("boost_clock_mhz", None)
    chip.get("source", str)
    chip.get("architecture", str, None)
    chip.done()

    peaks_t = f.table("peak", required=True)
    assert peaks_t is not None
    peaks: dict[str, Peak] = {}
    from perfscope.units import DTYPE_BITS

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

    links = f.table("links")
    gpu_link = host_link = net_link = None
    gpus_per_node = 1
    if links is not None:
        for key in ("gpu_to_gpu", "host", "network"):
            v = links.get(key, str, None)
            if v is not None:
                link = resolve_link(v, file, f"links.{key}")
                if key == "gpu_to_gpu":
                    gpu_link = link
                elif key == "host":
                    host_link = link
                else:
                    net_link = link
        gpus_per_node = int(links.num("gpus_per_node", 8))
        links.done()
    if gpu_link is None:
        gpu_link = host_link  # GPUs without NVLink talk over PCIe

    empirical = None
    et = f.table("empirical")
    if et is not None:
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
            gt.done()
        ko = et.table("kernel_overhead")
        ko_s = ko_src = None
        if ko is not None:
            ko_s = ko.num("us") * 1e-6
            ko_src = ko.get("source", str)
            ko.done()
        mt = et.table("memory")
        mbw = msrc2 = None
        if mt is not None:
            mbw = mt.num("bandwidth_gb_s") * GB
            msrc2 = mt.get("source", str)
            mt.get("kind", str, None)
            mt.done()
        et.done()
        empirical = Empirical(MappingProxyType(gemm), MappingProxyType(gsrc), mbw, msrc2,
                              ko_s, ko_src)

    aliases = tuple(f.get("aliases", list, []))
    spec = HardwareSpec(
        name=f.get("name", str),
        display_name=f.get("display_name", str),
        vendor=f.get("vendor", str),
        memory_bytes=capacity,
        memory_bandwidth_bytes_s=bw,
        memory_source=msrc,
        l2_bytes=l2,
        sm_count=sm,
        peaks=MappingProxyType(peaks),
        gpu_link=gpu_link,
        host_link=host_link,
        network_link=net_link,
        gpus_per_node=gpus_per_node,
        empirical=empirical,
        file=file,
        aliases=aliases,
    )
    f.get("notes", str, None)
    f.done()
    return spec


def spec_dirs() -> list[Path]:
    """Built-in spec folder first; PERFSCOPE_SPEC_PATH entries (os.pathsep separated) after."""
    import os

    here = Path(__file__).resolve().parent.parent
    dirs = [d for d in (here / "hw_specs", here.parent / "hw_specs") if d.is_dir()][:1]
    extra = os.environ.get("PERFSCOPE_SPEC_PATH", "")
    dirs += [Path(p) for p in extra.split(os.pathsep) if p]
    return dirs
