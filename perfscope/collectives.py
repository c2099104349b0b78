"""What a collective costs: the links a group of ranks crosses, and NCCL's own cost model.

Topology. A group of ``ranks`` GPUs spaced ``stride`` apart in the global numbering (TP ranks
are consecutive; PP peers are tp x attn_dp apart) spans nodes of ``gpus_per_node`` GPUs. Inside
a node, members of one scale-up domain talk over the scale-up link: through a switch every GPU
keeps its full per-GPU rate, in a mesh each peer pair has its own share (rate / (domain - 1),
so a group of g uses g - 1 shares). A group spanning domains of a node crosses the host link
(PCIe), whose one x16 link per GPU is the ring's bottleneck hop. A group spanning nodes crosses
the scale-out link; with one NIC per GPU, NCCL runs a ring per NIC, so the node's crossing
carries members-per-node x NIC rate (MB-057: 381.8 GB/s busbw on 4 nodes of 8 x 50 GB/s).

Cost. The time of one collective is NCCL's tuner model (github:NVIDIA/nccl src/graph/tuning.cc
@b6475625, ncclTopoTuneModel and ncclTopoGetAlgoTime): for ring and tree and each protocol
(LL: 8-byte lines with a flag, low latency, 1/4 of the bus rate for all-reduce; LL128: 120 of
128 bytes; Simple: full rate, more latency), time = latency + bytes / algorithm bandwidth,
latency = baseLat + steps x hwLat of the link class, and the cheapest pair is chosen, as NCCL
does. Left out: NVLS/CollNet (switch offload), the per-channel bandwidth caps (they need NCCL's
channel count) and the channel-count reduction for tiny messages.

Ceilings. ``spec``: the wire rate of the bottleneck hop, NCCL's latencies, nothing else.
``empirical``: the bottleneck's measured ring efficiency (busbw / wire rate; derived where the
link was not measured, see perfscope.specs.ceilings).

Eager calls. A benchmark that calls each collective from the host (nccl-tests, torch's
all_reduce in a loop) also pays the host-side enqueue and launch of every call and the skew
between ranks: ``eager=True`` adds COLLECTIVE_OVERHEAD_S, calibrated on such measurements.
``analyze`` does not: serving engines capture decode steps in CUDA graphs, where that host cost
is gone (the per-kernel overhead of --ceiling empirical is also the in-graph one), and the
published CUDA-graph TP decode runs (gpt-fast on 8 x A100, LLM-009..LLM-023) are matched only
without it (benchmarks/validate_decode_batch1.py).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import NamedTuple

from perfscope.analytic.ops import Op
from perfscope.errors import InputError
from perfscope.specs.links import LinkSpec, Topology

TUNING_SOURCE = "github:NVIDIA/nccl src/graph/tuning.cc @b6475625fbcaa2c3c0e50eed2fa1255d7514d4a2"
US = 1e-6
GBPS = 1e9
PROTOCOLS = ("LL", "LL128", "Simple")
# baseLat[algorithm][protocol], us: once per collective
BASE_LAT = {"tree": {"LL": 6.8, "LL128": 14.0, "Simple": 0.0},
            "ring": {"LL": 6.6, "LL128": 14.0, "Simple": 8.4}}
# hwLat[class][algorithm][protocol], us: per ring step (tree: per level); NVLINK, PCI, NET rows
HW_LAT = {"nvlink": {"tree": {"LL": 0.6, "LL128": 1.25, "Simple": 28.0},
                     "ring": {"LL": 0.6, "LL128": 1.9, "Simple": 3.4}},
          "pci": {"tree": {"LL": 1.0, "LL128": 1.9, "Simple": 28.0},
                  "ring": {"LL": 1.0, "LL128": 2.5, "Simple": 5.7}},
          "net": {"tree": {"LL": 5.0, "LL128": 8.5, "Simple": 28.0},
                  "ring": {"LL": 2.7, "LL128": 4.0, "Simple": 14.0}}}
# llMaxBws, GB/s: the LL protocol's total bus-rate cap. One node: by GPU (Volta 39.0, Ampere and
# Hopper 87.7; NCCL at this commit files Blackwell under Hopper). More nodes: by CPU vendor;
# perfscope takes the Intel row (39.0 on 2 nodes, 20.4 beyond). RCCL applies no such cap.
LL_MAX_ONE_NODE = {"volta": 39.0, "ampere": 87.7, "hopper": 87.7, "blackwell": 87.7}
LL_MAX_NODES = {2: 39.0}
LL_MAX_MANY_NODES = 20.4
LL128_ARCHS = ("volta", "ampere", "hopper")  # NCCL enables LL128 by default on sm70/80/90 only
# treeCorrectionFactor[protocol][log2(bytes / 64)]: trees run below the model at medium sizes
TREE_CORRECTION = {
    "LL": (1.0, 1.0, 1.0, 1.0, .9, .8, .7, .7, .7, .7, .6, .5, .4, .4, .5, .6, .7, .8, .9, 1.0,
           1.0, 1.0, 1.0),
    "LL128": (1.0, 1.0, 1.0, 1.0, 1.0, .9, .8, .8, .8, .7, .6, .6, .6, .6, .6, .6, .8, .9, .9,
              .9, .9, 1.0, 1.0),
    "Simple": (.9, .9, .9, .9, .9, .9, .9, .8, .7, .6, .6, .5, .5, .5, .5, .6, .7, .8, .7, .7,
               .8, .9, .9)}
NET_OVERHEAD_US = 1.0  # getNetOverhead: per inter-node ring step, Intel host (AMD: 2.0); x3 Simple
P2P_LL_THRESHOLD = 16384  # bytes: NCCL sends point-to-point messages up to this size with LL

# Fixed cost of one eager collective call beyond NCCL's own model (eager=True, empirical only):
# host-side enqueue and launch of the call and the skew between ranks. Calibrated on the
# Azure ND A100 v4 nccl-tests all-reduce curve (NCCL 2.18.5, 8 x A100-SXM4-80GB,
# github:Azure/AI-benchmarking-guide Azure_Results/ND_A100_v4_results.md @3bb66ca): measured
# minus modelled time at 1-64 KiB is 29.8, 29.7, 27.0, 28.2, 27.3, 25.9, 25.5 us, median 27.3.
# Checked on MB-039 (43.83 us at 32 KiB on another 8 x A100: predicted 43.3) and MB-057 (8 x B200,
# 47.8 us at 32 KiB, torch all_reduce in a loop). Inside a CUDA graph the host part disappears.
COLLECTIVE_OVERHEAD_S = 27.3e-6


class GroupPath(NamedTuple):
    """The links one group's collective crosses (rates per GPU and direction, spec)."""

    ranks: int
    nodes: int
    per_node: int  # group members in each node
    intra: LinkSpec | None  # link between members of a node (None: one member per node)
    intra_bytes_s: float  # what each member gets on it (mesh: its share of the peers)
    nic: LinkSpec | None  # scale-out link (None inside one node)
    nic_bytes_s: float  # one NIC per GPU
    bottleneck: LinkSpec  # the link that bounds a ring over the group
    ring_bytes_s: float  # the ring's bus rate: min over its hops
    latency_class: str  # NCCL latency class of the intra-node steps


class CommCost(NamedTuple):
    time_s: float
    bus_bytes_s: float  # the bus rate the model used (after efficiency, before protocol)
    link: str  # name of the bottleneck link
    source: str  # "spec" | "measured" | "derived": where the bus rate came from
    algorithm: str  # "ring/LL", "tree/Simple", "p2p/Simple", ...
    overhead_s: float  # COLLECTIVE_OVERHEAD_S when charged (eager calls, empirical)


def group_path(topo: Topology, ranks: int, stride: int = 1) -> GroupPath:
    """The links a group of ``ranks`` GPUs, ``stride`` apart, crosses (first rank aligned to a
    node: groups are laid out from rank 0, TP innermost)."""
    if ranks < 2:
        raise InputError(f"a collective needs 2 or more ranks, got {ranks}")
    if stride < 1:
        raise InputError(f"rank stride must be >= 1, got {stride}")
    per_node_gpus = topo.gpus_per_node
    span = (ranks - 1) * stride + 1
    if span <= per_node_gpus:
        nodes, per_node = 1, ranks
    else:
        per_node = max(1, min(ranks, -(-per_node_gpus // stride)))
        nodes = -(-ranks // per_node)
    intra: LinkSpec | None = None
    intra_rate = math.inf
    if per_node > 1:
        reach = (per_node - 1) * stride + 1  # GPUs a node's members span
        up = topo.scale_up
        if up is not None and reach <= topo.scale_up_domain:
            intra = up
            intra_rate = up.bandwidth_bytes_s if topo.scale_up_kind == "switch" else \
                up.bandwidth_bytes_s / (topo.scale_up_domain - 1) * (per_node - 1)
        else:
            intra = topo.host
            if intra is None:
                raise InputError(f"a group of {ranks} GPUs (stride {stride}) crosses GPUs not "
                                 "joined by the scale-up link, and the spec has no host link; "
                                 "add links.host to the spec")
            intra_rate = intra.bandwidth_bytes_s
    nic = None
    nic_rate = math.inf
    if nodes > 1:
        nic = topo.scale_out
        if nic is None:
            raise InputError(f"a group of {ranks} GPUs (stride {stride}) spans {nodes} nodes of "
                             f"{per_node_gpus} GPUs, and the spec has no network link; add "
                             "links.network, or keep groups inside a node")
        nic_rate = nic.bandwidth_bytes_s
    crossing = per_node * nic_rate  # one ring per NIC: the node's NICs share the crossing
    if intra is not None and intra_rate <= crossing:
        bottleneck, ring = intra, intra_rate
    else:
        assert nic is not None
        bottleneck, ring = nic, crossing
    lat_class = intra.latency_class if intra is not None else "net"
    return GroupPath(ranks, nodes, per_node, intra, intra_rate, nic, nic_rate, bottleneck, ring,
                     lat_class)


# ---- NCCL's model -------------------------------------------------------------------------

def _ll_max(arch: str | None, nodes: int) -> float | None:
    if arch not in LL_MAX_ONE_NODE:
        return None  # not an NVIDIA GPU: RCCL has no LL cap
    if nodes == 1:
        return LL_MAX_ONE_NODE[arch] * GBPS
    return LL_MAX_NODES.get(nodes, LL_MAX_MANY_NODES) * GBPS


def _log2i(n: int) -> int:
    return n.bit_length() - 1 if n > 0 else 0


def nccl_time(collective: str, nbytes: float, ranks: int, nodes: int, bus_bytes_s: float,
              latency_class: str, arch: str | None) -> tuple[float, str]:
    """Seconds for one all_reduce / all_gather / reduce_scatter of ``nbytes`` (NCCL's count:
    the per-rank buffer for all-reduce, the whole gathered buffer for all-gather) and the
    algorithm/protocol NCCL's tuner would pick, on a bus rate ``bus_bytes_s``."""
    p = ranks
    allreduce = collective == "all_reduce"
    nsteps = 2 * (p - 1) if allreduce else p - 1
    n_inter = (2 * nodes if nodes > 1 else 0) if allreduce else nodes - 1
    ppn = p / nodes
    llmax = _ll_max(arch, nodes)
    ll128 = arch in LL128_ARCHS and latency_class == "nvlink"
    log_size = _log2i(int(nbytes) >> 6)
    best = (math.inf, "")
    for algo in (("ring", "tree") if allreduce else ("ring",)):
        for proto in PROTOCOLS:
            if proto == "LL128" and not ll128:
                continue
            bus = bus_bytes_s
            intra = HW_LAT[latency_class][algo][proto]
            inter = HW_LAT["net"][algo][proto]
            if algo == "ring":
                if proto == "LL":  # 8-byte lines, 4 of data: 1/4 of the rate (1/3 one-way)
                    bus *= 0.25 if (nodes > 1 or allreduce) else 1 / 3
                    bus = min(bus, llmax) if llmax else bus
                elif proto == "LL128":  # 120 of every 128 bytes carry data
                    bus *= 0.7 if ppn < 2 else 0.92
                alg = bus * p / nsteps  # bus bandwidth -> algorithm bandwidth
                if nodes > 1:  # inter-node rings still launch nsteps x net overhead
                    intra = max(intra, NET_OVERHEAD_US * (3 if proto == "Simple" else 1))
                lat = BASE_LAT[algo][proto] + (nsteps - n_inter) * intra + n_inter * inter
                if proto == "Simple" and nodes > 1 and allreduce:  # plateau effect of ring
                    lat *= 1.4 if arch in ("ampere", "hopper", "blackwell") else 1.9
            else:
                bus *= 0.92
                if proto == "LL":
                    bus /= 3.8
                    bus = min(bus, llmax) if llmax else bus
                elif proto == "LL128":
                    bus *= 7 / 9 if nodes == 1 else 120 / 128
                alg = bus * 0.5
                if log_size < 23:
                    alg *= TREE_CORRECTION[proto][log_size]
                lat = BASE_LAT[algo][proto] + 2 * ((p // nodes - 1) * intra +
                                                   _log2i(nodes) * inter)
            t = lat * US + nbytes / alg
            if t < best[0]:
                best = (t, f"{algo}/{proto}")
    return best


def p2p_time(nbytes: float, bus_bytes_s: float, latency_class: str, arch: str | None,
             nodes: int) -> tuple[float, str]:
    """One send/recv (a one-step ring): LL up to NCCL_P2P_LL_THRESHOLD bytes, else Simple."""
    proto = "LL" if nbytes <= P2P_LL_THRESHOLD else "Simple"
    cls = "net" if nodes > 1 else latency_class
    bus = bus_bytes_s
    if proto == "LL":
        llmax = _ll_max(arch, nodes)
        bus = min(bus / 3, llmax) if llmax else bus / 3
    lat = BASE_LAT["ring"][proto] + HW_LAT[cls]["ring"][proto]
    return lat * US + nbytes / bus, f"p2p/{proto}"


def all_to_all_time(nbytes: float, path: GroupPath,
                    efficiency: float) -> tuple[float, str, LinkSpec]:
    """All-to-all of ``nbytes`` per rank: (p-1)/p of it leaves each rank, to every peer at
    once (NCCL runs it as grouped send/recv). Intra-node shares go over the intra link, the
    rest over the rank's own NIC; the slower of the two bounds the time (and names the link).
    Each peer's share is sent with LL (1/3 of the rate) up to 16 KiB, else Simple."""
    p = path.ranks
    local = (path.per_node - 1) / p * nbytes
    remote = (p - path.per_node) / p * nbytes
    t_local = local / (path.intra_bytes_s * efficiency) if local else 0.0
    t_remote = remote / (path.nic_bytes_s * efficiency) if remote else 0.0
    link = path.intra if t_local >= t_remote and path.intra is not None else path.nic
    assert link is not None
    cls = "net" if path.nodes > 1 else path.latency_class
    proto = "LL" if nbytes / p <= P2P_LL_THRESHOLD else "Simple"
    lat = BASE_LAT["ring"][proto] + HW_LAT[cls]["ring"][proto]
    t_bw = max(t_local, t_remote) * (3 if proto == "LL" else 1)
    return lat * US + t_bw, f"all_to_all/{proto}", link


# ---- the cost of one comm op ----------------------------------------------------------------

def link_bytes(op: Op) -> float:
    """Bytes each rank puts on its link (nccl-tests 'bus' bytes)."""
    p = op.ranks
    if op.comm == "all_reduce":
        return op.comm_bytes * 2 * (p - 1) / p
    if op.comm in ("all_gather", "reduce_scatter", "all_to_all"):
        return op.comm_bytes * (p - 1) / p
    return op.comm_bytes


def link_steps(op: Op) -> int:
    """Latency-bound steps of the ring algorithm."""
    p = op.ranks
    if op.comm == "all_reduce":
        return 2 * (p - 1)
    if op.comm in ("all_gather", "reduce_scatter", "all_to_all"):
        return p - 1
    return 1


def comm_cost(op: Op, topo: Topology, ceiling: str = "spec") -> CommCost:
    """Time of one instance of the comm op ``op`` on ``topo`` inside a captured step (no eager
    call overhead); the group's kind and spacing come from ``op.impl`` ({"group": "tp",
    "stride": 1}) as the constructors in perfscope.analytic.parallel record them."""
    impl = op.impl or {}
    return collective_cost(topo, op.comm or "p2p", float(op.comm_bytes), op.ranks,
                           int(impl.get("stride", 1)), ceiling)


@lru_cache(maxsize=4096)
def collective_cost(topo: Topology, collective: str, nbytes: float, ranks: int,
                    stride: int = 1, ceiling: str = "spec", eager: bool = False) -> CommCost:
    """Time of one ``collective`` of ``nbytes`` (NCCL's count: the per-rank buffer; for
    all-gather the gathered buffer) over ``ranks`` GPUs ``stride`` apart on ``topo``.
    ``eager``: called from the host one by one, as benchmarks do (adds, under the empirical
    ceiling, COLLECTIVE_OVERHEAD_S)."""
    if topo.scale_up is None and topo.host is None and topo.scale_out is None:
        raise InputError("the hardware spec has no [links]: communication between GPUs "
                         "cannot be timed; add [links] to the spec")
    path = group_path(topo, ranks, stride)
    eff, source, overhead = 1.0, "spec", 0.0
    if ceiling == "empirical":
        from perfscope.specs.ceilings import link_efficiency

        c = link_efficiency(path.bottleneck)
        eff, source = c.value, c.source
        overhead = COLLECTIVE_OVERHEAD_S if eager else 0.0
    bus = path.ring_bytes_s * eff
    arch = topo.architecture
    link = path.bottleneck
    if collective in ("all_reduce", "all_gather", "reduce_scatter"):
        t, algo = nccl_time(collective, nbytes, ranks, path.nodes, bus, path.latency_class, arch)
    elif collective == "all_to_all":
        t, algo, link = all_to_all_time(nbytes, path, eff)
        bus = (path.intra_bytes_s if link is path.intra else path.nic_bytes_s) * eff
    elif collective == "p2p":
        t, algo = p2p_time(nbytes, bus, path.latency_class, arch, path.nodes)
    else:
        raise InputError(f"unknown collective {collective!r}; use all_reduce, all_gather, "
                         "reduce_scatter, all_to_all or p2p")
    return CommCost(t + overhead, bus, link.name, source, algo, overhead)
