"""NVML telemetry of the GPU being measured: a snapshot, and a sampler that runs while a
measurement does (clocks, power, temperature, throttle reasons).

The GPU is found by its PCI bus id, which torch and NVML agree on, never by an index: CUDA's
device 0 is NVML's device 3 under ``CUDA_VISIBLE_DEVICES=3``. Every reader is best effort: a
field that cannot be read is absent, and nothing here raises because NVML is missing.
pynvml is imported inside functions.
"""

from __future__ import annotations

import contextlib
import statistics
import threading
from collections.abc import Callable
from typing import Any

SAMPLE_INTERVAL_S = 0.01

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


def pci_bus_id(device: str) -> str | None:
    """NVML's bus id ("00000000:18:00.0") of a torch CUDA device, None where torch lacks it."""
    import torch

    p = torch.cuda.get_device_properties(torch.device(device))
    if not hasattr(p, "pci_bus_id"):
        return None
    return f"{getattr(p, 'pci_domain_id', 0):08X}:{p.pci_bus_id:02X}:" \
           f"{getattr(p, 'pci_device_id', 0):02X}.0"


def _nvml() -> Any:
    """pynvml, initialised, or None."""
    try:
        import pynvml as nv

        nv.nvmlInit()
    except Exception:  # no package, no driver, no permission: telemetry is simply absent
        return None
    return nv


def _try(d: dict[str, Any], key: str, read: Callable[[], Any]) -> None:
    with contextlib.suppress(Exception):  # any NVML error: the field is simply absent
        d[key] = read()


def _throttle_mask(nv: Any, h: Any) -> int:
    get = getattr(nv, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
        nv.nvmlDeviceGetCurrentClocksThrottleReasons
    return int(get(h))


def sample(nv: Any, h: Any) -> dict[str, Any]:
    """One reading: SM and memory clocks (MHz), power (W), temperature (C), throttle mask."""
    s: dict[str, Any] = {}
    _try(s, "sm_clock_mhz", lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM))
    _try(s, "mem_clock_mhz", lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_MEM))
    _try(s, "power_w", lambda: nv.nvmlDeviceGetPowerUsage(h) / 1000.0)  # NVML reports mW
    _try(s, "temperature_c", lambda: nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU))
    _try(s, "throttle_mask", lambda: _throttle_mask(nv, h))
    return s


def summarize_samples(samples: list[dict[str, Any]], nv: Any) -> dict[str, Any]:
    """Min/median/max of clocks, median/max power, max temperature, and every throttle
    reason seen while the measurement ran (``gpu_idle`` left out: idle gaps between calls)."""
    out: dict[str, Any] = {"samples": len(samples)}
    for key in ("sm_clock_mhz", "mem_clock_mhz"):
        vals = [s[key] for s in samples if key in s]
        if vals:
            out[key] = {"min": min(vals), "median": statistics.median(vals), "max": max(vals)}
    power = [s["power_w"] for s in samples if "power_w" in s]
    if power:
        out["power_w"] = {"median": statistics.median(power), "max": max(power)}
    temp = [s["temperature_c"] for s in samples if "temperature_c" in s]
    if temp:
        out["temperature_c_max"] = max(temp)
    masks = [s["throttle_mask"] for s in samples if "throttle_mask" in s]
    if masks:
        seen: set[str] = set()
        for m in masks:
            seen.update(decode_throttle(m, nv))
        out["throttle_reasons"] = sorted(seen - {"gpu_idle"})
    return out


class TelemetrySampler:
    """Reads NVML every ``interval_s`` on a background thread while a measurement runs.

    ``with TelemetrySampler(bus_id) as t: ...`` then ``t.summary()``; one reading is taken at
    the start and one at the end, so even a short measurement has two. Without NVML (or
    without the bus id) the summary says why telemetry is absent.
    """

    def __init__(self, bus_id: str | None, interval_s: float = SAMPLE_INTERVAL_S,
                 nvml: Any = None):
        self.bus_id, self.interval_s = bus_id, interval_s
        self._nv = nvml
        self._h: Any = None
        self._samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._owns_nvml = nvml is None
        self.why_absent = ""

    def __enter__(self) -> TelemetrySampler:
        if self.bus_id is None:
            self.why_absent = "no PCI bus id for this device (torch too old)"
            return self
        nv = self._nv or _nvml()
        if nv is None:
            self.why_absent = "NVML is not available (pip install nvidia-ml-py)"
            return self
        self._nv = nv
        try:
            self._h = nv.nvmlDeviceGetHandleByPciBusId(self.bus_id)
        except Exception as e:  # never fall back to an index: it may name another GPU
            self.why_absent = f"NVML has no device at bus id {self.bus_id} ({e})"
            self._shutdown()
            return self
        self._samples.append(sample(nv, self._h))
        self._thread = threading.Thread(target=self._run, name="perfscope-nvml", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._samples.append(sample(self._nv, self._h))

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._samples.append(sample(self._nv, self._h))
            self._shutdown()

    def _shutdown(self) -> None:
        if self._owns_nvml and self._nv is not None:
            with contextlib.suppress(Exception):
                self._nv.nvmlShutdown()

    def summary(self) -> dict[str, Any]:
        if self._h is None:
            return {"absent": self.why_absent}
        return {"pci_bus_id": self.bus_id, **summarize_samples(self._samples, self._nv)}


def nvml_snapshot(bus_id: str | None) -> dict[str, Any]:
    """Clocks and their maxima, power and its limit, temperature, throttle reasons, PCIe link
    and NVLink state of the GPU at ``bus_id``, read once; {} without NVML or a bus id."""
    if bus_id is None:
        return {}
    nv = _nvml()
    if nv is None:
        return {}
    try:
        try:
            h = nv.nvmlDeviceGetHandleByPciBusId(bus_id)
        except Exception:
            return {}
        t: dict[str, Any] = {"pci_bus_id": bus_id}

        def name() -> str:
            n = nv.nvmlDeviceGetName(h)
            return n.decode() if isinstance(n, bytes) else str(n)

        _try(t, "name", name)
        _try(t, "driver_version", lambda: str(nv.nvmlSystemGetDriverVersion()))
        t.update({k: v for k, v in sample(nv, h).items() if k != "throttle_mask"})
        _try(t, "sm_clock_max_mhz", lambda: nv.nvmlDeviceGetMaxClockInfo(h, nv.NVML_CLOCK_SM))
        _try(t, "mem_clock_max_mhz",
             lambda: nv.nvmlDeviceGetMaxClockInfo(h, nv.NVML_CLOCK_MEM))
        _try(t, "power_limit_w", lambda: nv.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0)
        _try(t, "throttle_reasons", lambda: decode_throttle(_throttle_mask(nv, h), nv))
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


def sampler_for(device: str) -> TelemetrySampler | None:
    """A sampler for a CUDA ``device``; None on a CPU."""
    if not device.startswith("cuda"):
        return None
    return TelemetrySampler(pci_bus_id(device))

