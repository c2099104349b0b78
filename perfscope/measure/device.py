"""What was measured on: CPU description, GPU properties, NVML telemetry, library versions.

Every reader is best effort: a field that cannot be read is absent from the result, and no
function here raises because NVML, a GPU or a /sys file is missing. pynvml and torch are
imported inside functions.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
from collections.abc import Callable
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
    """torch's view of a CUDA device plus NVML telemetry (absent fields where unreadable)."""
    import torch

    dev = torch.device(device)
    p = torch.cuda.get_device_properties(dev)
    d: dict[str, Any] = {
        "kind": "cuda", "name": p.name, "index": dev.index or 0,
        "capability": f"{p.major}.{p.minor}", "sm_count": p.multi_processor_count,
        "memory_bytes": int(p.total_memory),
    }
    l2 = getattr(p, "L2_cache_size", None)
    if l2:
        d["l2_bytes"] = int(l2)
    bus = None
    if hasattr(p, "pci_bus_id"):
        bus = f"{getattr(p, 'pci_domain_id', 0):08x}:{p.pci_bus_id:02x}:" \
              f"{getattr(p, 'pci_device_id', 0):02x}.0"
    tel = nvml_telemetry(dev.index or 0, pci_bus_id=bus)
    if tel:
        d["telemetry"] = tel
    return d


def describe_device(device: str) -> dict[str, Any]:
    return describe_cuda(device) if device.startswith("cuda") else describe_cpu()


# ---- NVML ---------------------------------------------------------------------------------

_THROTTLE_NAMES = (
    ("GpuIdle", "gpu_idle"), ("ApplicationsClocksSetting", "applications_clocks_setting"),
    ("SwPowerCap", "sw_power_cap"), ("HwSlowdown", "hw_slowdown"), ("SyncBoost", "sync_boost"),
    ("SwThermalSlowdown", "sw_thermal_slowdown"), ("HwThermalSlowdown", "hw_thermal_slowdown"),
    ("HwPowerBrakeSlowdown", "hw_power_brake_slowdown"),
    ("DisplayClockSetting", "display_clock_setting"),
)


def decode_throttle(mask: int, nvml: Any) -> list[str]:
    """Names of the clock-throttle reasons set in an NVML bitmask."""
    out = []
    for suffix, name in _THROTTLE_NAMES:
        bit = getattr(nvml, f"nvmlClocksThrottleReason{suffix}", None)
        if bit is None:
            bit = getattr(nvml, f"nvmlClocksEventReason{suffix}", None)
        if bit and mask & int(bit):
            out.append(name)
    return out


def _try(d: dict[str, Any], key: str, read: Callable[[], Any]) -> None:
    with contextlib.suppress(Exception):  # any NVML error: the field is simply absent
        d[key] = read()


def nvml_telemetry(index: int = 0, pci_bus_id: str | None = None) -> dict[str, Any]:
    """Clocks, power, temperature, throttle reasons, PCIe link and NVLink state; {} without NVML.

    ``pci_bus_id`` finds the NVML device that CUDA calls ``index`` (they differ under
    CUDA_VISIBLE_DEVICES); without it the NVML index is used.
    """
    try:
        import pynvml as nv

        nv.nvmlInit()
    except Exception:
        return {}
    try:
        try:
            h = nv.nvmlDeviceGetHandleByPciBusId(pci_bus_id) if pci_bus_id else \
                nv.nvmlDeviceGetHandleByIndex(index)
        except Exception:
            h = nv.nvmlDeviceGetHandleByIndex(index)
        t: dict[str, Any] = {}

        def name() -> str:
            n = nv.nvmlDeviceGetName(h)
            return n.decode() if isinstance(n, bytes) else str(n)

        _try(t, "name", name)
        _try(t, "driver_version", lambda: str(nv.nvmlSystemGetDriverVersion()))
        _try(t, "sm_clock_mhz", lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM))
        _try(t, "sm_clock_max_mhz", lambda: nv.nvmlDeviceGetMaxClockInfo(h, nv.NVML_CLOCK_SM))
        _try(t, "mem_clock_mhz", lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_MEM))
        _try(t, "mem_clock_max_mhz",
             lambda: nv.nvmlDeviceGetMaxClockInfo(h, nv.NVML_CLOCK_MEM))
        _try(t, "power_w", lambda: nv.nvmlDeviceGetPowerUsage(h) / 1000.0)
        _try(t, "power_limit_w", lambda: nv.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0)
        _try(t, "temperature_c",
             lambda: nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU))

        def throttle() -> list[str]:
            get = getattr(nv, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
                nv.nvmlDeviceGetCurrentClocksThrottleReasons
            return decode_throttle(int(get(h)), nv)

        _try(t, "throttle_reasons", throttle)
        _try(t, "pcie_gen", lambda: nv.nvmlDeviceGetCurrPcieLinkGeneration(h))
        _try(t, "pcie_gen_max", lambda: nv.nvmlDeviceGetMaxPcieLinkGeneration(h))
        _try(t, "pcie_width", lambda: nv.nvmlDeviceGetCurrPcieLinkWidth(h))
        _try(t, "pcie_width_max", lambda: nv.nvmlDeviceGetMaxPcieLinkWidth(h))

        def nvlink() -> dict[str, Any]:
            active, version = 0, None
            for link in range(int(getattr(nv, "NVML_NVLINK_MAX_LINKS", 18))):
                try:
                    if nv.nvmlDeviceGetNvLinkState(h, link):
                        active += 1
                        if version is None:
                            version = nv.nvmlDeviceGetNvLinkVersion(h, link)
                except Exception:
                    break  # links past the device's count raise
            return {"active_links": active, "version": version}

        _try(t, "nvlink", nvlink)
        return t
    finally:
        with contextlib.suppress(Exception):
            nv.nvmlShutdown()


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
