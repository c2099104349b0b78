"""NVML telemetry against a fake NVML: the GPU is found by PCI bus id, never by an index, and
clocks, power, temperature and throttle reasons are sampled while the measurement runs."""

from __future__ import annotations

import sys
import time
import types

import pytest

from perfscope.measure import telemetry as T

BUS = "00000000:18:00.0"


class FakeNVML(types.SimpleNamespace):
    """pynvml's surface as the sampler uses it; clocks drop and power rises over time."""

    NVML_CLOCK_SM, NVML_CLOCK_MEM, NVML_TEMPERATURE_GPU = 0, 1, 0
    nvmlClocksThrottleReasonGpuIdle = 0x1
    nvmlClocksThrottleReasonSwPowerCap = 0x4
    nvmlClocksThrottleReasonHwSlowdown = 0x8

    def __init__(self, devices=(BUS,)):
        super().__init__(calls=[], devices=list(devices), reads=0, inits=0, shutdowns=0)

    def nvmlInit(self):
        self.inits += 1

    def nvmlShutdown(self):
        self.shutdowns += 1

    def nvmlDeviceGetHandleByPciBusId(self, bus):
        self.calls.append(("bus", bus))
        if bus not in self.devices:
            raise RuntimeError("NVML_ERROR_NOT_FOUND")
        return ("handle", bus)

    def nvmlDeviceGetHandleByIndex(self, i):  # must never be used: it can name another GPU
        self.calls.append(("index", i))
        return ("handle", f"index {i}")

    def nvmlDeviceGetClockInfo(self, h, kind):
        self.reads += 1
        return (1980 - 10 * min(self.reads, 30)) if kind == self.NVML_CLOCK_SM else 2619

    def nvmlDeviceGetPowerUsage(self, h):
        return 300_000 + 1000 * min(self.reads, 400)  # mW

    def nvmlDeviceGetTemperature(self, h, kind):
        return 60 + min(self.reads, 20) // 2

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, h):
        return 0x1 | (0x4 if self.reads > 3 else 0)


def test_sampler_reads_during_the_measurement_by_bus_id():
    nv = FakeNVML()
    with T.TelemetrySampler(BUS, interval_s=0.002, nvml=nv) as s:
        time.sleep(0.05)
    t = s.summary()
    assert ("bus", BUS) in nv.calls and not any(c[0] == "index" for c in nv.calls)
    assert t["pci_bus_id"] == BUS and t["samples"] >= 5  # start, during, end
    sm = t["sm_clock_mhz"]
    assert sm["min"] < sm["median"] < sm["max"] == 1970  # clocks fell while it ran
    assert t["mem_clock_mhz"]["max"] == 2619
    assert t["power_w"]["max"] > t["power_w"]["median"] >= 300.0  # mW -> W
    assert t["temperature_c_max"] >= 60
    assert t["throttle_reasons"] == ["sw_power_cap"]  # seen mid-run; gpu_idle left out


def test_sampler_never_falls_back_to_an_index():
    nv = FakeNVML(devices=["00000000:3B:00.0"])
    with T.TelemetrySampler(BUS, nvml=nv) as s:
        pass
    assert "no device at bus id" in s.summary()["absent"]
    assert not any(c[0] == "index" for c in nv.calls)
    assert T.TelemetrySampler(None).__enter__().summary() == {
        "absent": "no PCI bus id for this device (torch too old)"}


def test_sampler_without_nvml(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    with T.TelemetrySampler(BUS) as s:
        pass
    assert "NVML is not available" in s.summary()["absent"]


def test_sampler_shuts_nvml_down_when_it_opened_it(monkeypatch):
    nv = FakeNVML()
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    with T.TelemetrySampler(BUS, interval_s=0.001):
        time.sleep(0.005)
    assert nv.inits == 1 and nv.shutdowns == 1


def test_pci_bus_id_from_torch_properties(monkeypatch):
    torch = pytest.importorskip("torch")
    props = types.SimpleNamespace(pci_domain_id=0, pci_bus_id=0x18, pci_device_id=0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda dev: props)
    assert T.pci_bus_id("cuda:0") == BUS
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda dev: types.SimpleNamespace())
    assert T.pci_bus_id("cuda:0") is None


def test_snapshot_uses_the_bus_id(monkeypatch):
    nv = FakeNVML()
    nv.nvmlDeviceGetName = lambda h: b"NVIDIA H200"
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    snap = T.nvml_snapshot(BUS)
    assert snap["name"] == "NVIDIA H200" and snap["pci_bus_id"] == BUS
    assert snap["sm_clock_mhz"] == 1970 and snap["power_w"] >= 300
    assert not any(c[0] == "index" for c in nv.calls)
    assert T.nvml_snapshot(None) == {}


def test_throttle_decoding_old_and_new_names():
    new = types.SimpleNamespace(nvmlClocksEventReasonSwThermalSlowdown=0x20)
    assert T.decode_throttle(0x20, new) == ["sw_thermal_slowdown"]
    assert T.decode_throttle(0x4 | 0x8, FakeNVML()) == ["sw_power_cap", "hw_slowdown"]
