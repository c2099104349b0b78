"""What was measured on: CPU description, GPU properties, NVML telemetry, library versions.

Every reader is best effort: a field that cannot be read is absent from the result, and no
function here raises because NVML, a GPU or a /sys file is missing. NVML telemetry lives in
``telemetry``; torch is imported inside functions.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
from pathlib import Path
from typing import Any

_SIZE = re.compile(r"^\s*(\d+)\s*([KMG]?)", re.IGNORECASE)
_MULT = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}


def parse_size(text: str) -> int | None:
    """'32768K' -> 33554432 (sysfs cache sizes); None when unreadable."""
    m = _SIZE.match(text)
    return int(m.group(1)) * _MULT[m.group(2).upper()] if m else None


def cpu_caches(root: str = "/sys/devices/system/cpu/cpu0/cache") -> dict[int, int]:
    """Data/unified cache bytes by level as seen from one core ({1: 32768, 2: ..., 3: ...})."""
    out: dict[int, int] = {}
    base = Path(root)
    if not base.is_dir():
        return out
    for idx in sorted(base.glob("index*")):
        try:
            if (idx / "type").read_text().strip() == "Instruction":
                continue
            level = int((idx / "level").read_text())
            size = parse_size((idx / "size").read_text())
        except (OSError, ValueError):
            continue
        if size:
            out[level] = size
    return out


def cpu_model_name(cpuinfo: str = "/proc/cpuinfo") -> str:
    try:
        for line in Path(cpuinfo).read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def physical_cores() -> int:
    """Distinct (package, core) pairs among usable CPUs; the CPU count when unreadable."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
    seen = set()
    for c in cpus:
        topo = Path(f"/sys/devices/system/cpu/cpu{c}/topology")
        try:
            seen.add((topo.joinpath("physical_package_id").read_text().strip(),
                      topo.joinpath("core_id").read_text().strip()))
        except OSError:
            seen.add(("?", str(c)))
    return max(1, len(seen))


def memory_total_bytes(meminfo: str = "/proc/meminfo") -> int | None:
    try:
        for line in Path(meminfo).read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024  # reported in kB (KiB)
    except (OSError, ValueError, IndexError):
        pass
    return None


def describe_cpu() -> dict[str, Any]:
    """Model name, usable and physical cores, torch threads, caches, memory."""
    d: dict[str, Any] = {"kind": "cpu", "name": cpu_model_name(), "arch": platform.machine()}
    try:
        d["logical_cpus"] = len(os.sched_getaffinity(0))
    except AttributeError:
        d["logical_cpus"] = os.cpu_count()
    d["physical_cores"] = physical_cores()
    try:
        import torch

        d["torch_threads"] = int(torch.get_num_threads())
    except ImportError:
        pass
    caches = cpu_caches()
    if caches:
        d["cache_bytes"] = {f"l{k}": v for k, v in sorted(caches.items())}
    mem = memory_total_bytes()
    if mem:
        d["memory_bytes"] = mem
    if hasattr(os, "getloadavg"):  # > cores means other processes shared the CPU
        d["load_average_1m"] = round(os.getloadavg()[0], 2)
    return d


def describe_cuda(device: str) -> dict[str, Any]:
    """torch's view of a CUDA device plus an NVML snapshot found by its PCI bus id."""
    import torch

    from perfscope.measure.telemetry import nvml_snapshot, pci_bus_id

    dev = torch.device(device)
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    p = torch.cuda.get_device_properties(index)
    d: dict[str, Any] = {
        "kind": "cuda", "name": p.name, "index": index,
        "capability": f"{p.major}.{p.minor}", "sm_count": p.multi_processor_count,
        "memory_bytes": int(p.total_memory),
    }
    l2 = getattr(p, "L2_cache_size", None)
    if l2:
        d["l2_bytes"] = int(l2)
    bus = pci_bus_id(f"cuda:{index}")
    if bus:
        d["pci_bus_id"] = bus
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        d["cuda_visible_devices"] = visible
    tel = nvml_snapshot(bus)
    if tel:
        d["telemetry"] = tel
    return d


def describe_device(device: str) -> dict[str, Any]:
    return describe_cuda(device) if device.startswith("cuda") else describe_cpu()


# ---- software -----------------------------------------------------------------------------

def library_versions() -> dict[str, str]:
    """Python, perfscope, torch (with its CUDA build), numpy, pynvml: whichever are present."""
    import importlib.metadata as md

    from perfscope import __version__

    v = {"python": platform.python_version(), "perfscope": __version__}
    for dist, key in (("torch", "torch"), ("numpy", "numpy"), ("nvidia-ml-py", "nvidia-ml-py"),
                      ("triton", "triton")):
        with contextlib.suppress(md.PackageNotFoundError):
            v[key] = md.version(dist)
    try:
        import torch

        if torch.version.cuda:
            v["cuda"] = str(torch.version.cuda)
    except ImportError:
        pass
    return v
