"""Interconnect specs (one TOML per link) and the topology a device file wires them into.

A link file gives a technology's rate per GPU and direction; the device file says how its GPUs
are joined: a scale-up link (NVLink, Infinity Fabric) inside a domain of GPUs, either through a
switch (NVSwitch: any subset of the domain gets the full per-GPU rate) or as a mesh of
point-to-point links (MI300X xGMI, NVLink bridges: the per-GPU rate is split evenly over the
domain's other GPUs); the host link (PCIe) between GPUs of a node outside a domain; and the
scale-out link (one NIC per GPU) between nodes. ``perfscope.collectives`` picks the links a
group of ranks crosses. See hw_specs/README.md for the schema.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from perfscope.errors import SpecError
from perfscope.specs._toml import Fields

GB = 1e9
LINK_SCHEMA = "perfscope.link/1"
LINK_KINDS = ("nvlink", "pcie", "infiniband", "ethernet", "infinity_fabric")
SCALE_UP_KINDS = ("switch", "mesh")
# which of NCCL's three latency classes (src/graph/tuning.cc hwLat: NVLINK, PCI, NET) a link
# kind belongs to; RCCL keeps NCCL's tables and puts xGMI in the NVLink row (see collectives)
LATENCY_CLASS = {"nvlink": "nvlink", "infinity_fabric": "nvlink", "pcie": "pci",
                 "infiniband": "net", "ethernet": "net"}


@dataclass(frozen=True, slots=True)
class LinkSpec:
    """A link between devices. Bandwidth is per direction, per GPU (all its links together)."""

    name: str
    display_name: str
    kind: str  # one of LINK_KINDS
    bandwidth_bytes_s: float
    source: str
    # achieved ring all-reduce bus bandwidth (nccl-tests convention) and the spec rate of the
    # path it was measured over (per GPU and direction): their ratio is the link's efficiency
    empirical_busbw_bytes_s: float | None = None
    empirical_path_bytes_s: float | None = None
    empirical_source: str | None = None
    links_per_gpu: int | None = None  # informative: e.g. 18 NVLink 4 links of 25 GB/s
    file: str = ""

    @property
    def latency_class(self) -> str:
        return LATENCY_CLASS[self.kind]

    @property
    def measured_efficiency(self) -> float | None:
        """Measured busbw / spec rate of the path it ran over, or None when unmeasured."""
        if self.empirical_busbw_bytes_s is None:
            return None
        return self.empirical_busbw_bytes_s / (self.empirical_path_bytes_s or
                                               self.bandwidth_bytes_s)


@dataclass(frozen=True, slots=True)
class Topology:
    """How a device's GPUs are joined (hashable: collective costs are cached on it)."""

    scale_up: LinkSpec | None  # links.gpu_to_gpu
    scale_up_kind: str  # "switch" | "mesh" | "none"
    scale_up_domain: int  # GPUs joined by scale_up (1 without it)
    host: LinkSpec | None  # links.host: PCIe between GPUs of a node outside a domain
    scale_out: LinkSpec | None  # links.network: one NIC per GPU
    gpus_per_node: int
    architecture: str | None  # NCCL's per-architecture constants depend on it
    # collective costs are cached on the topology: hash it once, not on every lookup
    _hash: int = field(init=False, repr=False, compare=False, default=0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.scale_up, self.scale_up_kind,
                                                self.scale_up_domain, self.host, self.scale_out,
                                                self.gpus_per_node, self.architecture)))

    def __hash__(self) -> int:
        return self._hash

    def describe(self) -> dict:
        return {"scale_up": self.scale_up.name if self.scale_up else None,
                "scale_up_kind": self.scale_up_kind, "scale_up_domain": self.scale_up_domain,
                "host": self.host.name if self.host else None,
                "scale_out": self.scale_out.name if self.scale_out else None,
                "gpus_per_node": self.gpus_per_node}




def _schema(f: Fields, expected: str) -> None:
    s = f.get("schema", str)
    if s != expected:
        raise SpecError(f.file, "schema", f"is {s!r}", f"set schema = {expected!r}")


_LATENCY_KEYS = ("latency_us", "base_latency_us", "latency_source")


def parse_link(data: Mapping, file: str) -> LinkSpec:
    f = Fields(data, file)
    _schema(f, LINK_SCHEMA)
    kind = f.get("kind", str)
    if kind not in LINK_KINDS:
        raise SpecError(file, "kind", f"unknown link kind {kind!r}",
                        f"use one of {', '.join(LINK_KINDS)}")
    for key in _LATENCY_KEYS:
        if key in data:
            raise SpecError(file, key, "latency is no longer a link figure: perfscope's "
                            "collective model takes it per link kind from NCCL's own tuning "
                            "constants (perfscope/collectives.py)", f"remove `{key}`")
    bw = f.num("bandwidth_per_direction_gb_s") * GB
    n_links = f.get("links_per_gpu", int, None)
    per_link = f.num("per_link_gb_s", None)
    if (n_links is None) != (per_link is None):
        raise SpecError(file, "links_per_gpu", "give links_per_gpu and per_link_gb_s together",
                        None)
    if n_links is not None and abs(n_links * per_link * GB - bw) > 0.01 * bw:
        raise SpecError(file, "bandwidth_per_direction_gb_s",
                        f"is not links_per_gpu x per_link_gb_s = {n_links * per_link:g}",
                        "fix one of the three")
    emp = f.table("empirical")
    busbw = path = esrc = None
    if emp is not None:
        busbw = emp.num("allreduce_busbw_gb_s") * GB
        p = emp.num("path_gb_s", None)
        path = p * GB if p is not None else None
        emp.get("ranks", int, None)  # informative: the group the figure was measured on
        esrc = emp.get("source", str)
        emp.done()
        if busbw > (path or bw) * 1.0001:
            raise SpecError(file, "empirical.allreduce_busbw_gb_s",
                            f"{busbw / GB:g} GB/s exceeds the {(path or bw) / GB:g} GB/s the "
                            "path can carry (a ring cannot beat the wire; NVLS/SHARP figures "
                            "can, so they do not belong here)",
                            "use a ring (NVLS off) measurement, or set path_gb_s")
    link = LinkSpec(
        name=f.get("name", str),
        display_name=f.get("display_name", str),
        kind=kind,
        bandwidth_bytes_s=bw,
        source=f.get("source", str),
        empirical_busbw_bytes_s=busbw,
        empirical_path_bytes_s=path,
        empirical_source=esrc,
        links_per_gpu=n_links,
        file=file,
    )
    f.get("bidirectional_gb_s", (int, float), None)  # informative only
    f.get("notes", str, None)
    f.done()
    return link


def parse_topology(links: Fields | None, file: str, resolve_link,
                   architecture: str | None) -> Topology:
    """The [links] table of a device file; ``resolve_link(name, file, field)`` -> LinkSpec."""
    if links is None:
        return Topology(None, "none", 1, None, None, 1, architecture)
    got = {}
    for key in ("gpu_to_gpu", "host", "network"):
        v = links.get(key, str, None)
        got[key] = resolve_link(v, file, f"links.{key}") if v is not None else None
    per_node = links.get("gpus_per_node", int)
    if per_node < 1:
        raise SpecError(file, "links.gpus_per_node", f"must be >= 1, got {per_node}", None)
    up = got["gpu_to_gpu"]
    kind = links.get("gpu_to_gpu_topology", str, None)
    domain = links.get("gpu_to_gpu_domain", int, None)
    if up is None:
        if kind is not None or domain is not None:
            raise SpecError(file, "links.gpu_to_gpu_topology", "set without links.gpu_to_gpu",
                            "name the link or drop the topology keys")
        kind, domain = "none", 1
    else:
        if kind is None or domain is None:
            missing = "gpu_to_gpu_topology" if kind is None else "gpu_to_gpu_domain"
            raise SpecError(file, f"links.{missing}", "missing: a scale-up link needs its "
                            "topology (switch or mesh) and domain (GPUs it joins)",
                            f"add `{missing} = ...` (see hw_specs/README.md)")
        if kind not in SCALE_UP_KINDS:
            raise SpecError(file, "links.gpu_to_gpu_topology", f"unknown topology {kind!r}",
                            f"use one of {', '.join(SCALE_UP_KINDS)}")
        if domain < 2 or domain > per_node or per_node % domain:
            raise SpecError(file, "links.gpu_to_gpu_domain",
                            f"{domain} must be >= 2 and divide gpus_per_node = {per_node}", None)
    for key in ("host", "network"):
        lk = got[key]
        if lk is not None and key == "network" and lk.latency_class != "net":
            raise SpecError(file, "links.network", f"{lk.name} is a {lk.kind} link",
                            "name an infiniband or ethernet link")
    links.done()
    return Topology(up, kind, domain, got["host"], got["network"], per_node, architecture)
