"""The roofline the profiled ops are placed on: the measured ceilings of the device profiled.

In order: ``--hw`` when given; else the saved local spec (``perfscope bench ceilings --save
local``) when it was measured on this device and has the dtype; else a quick measurement here
(one GEMM size, one copy size: about a second; noisier than ``bench ceilings``, and said so).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from perfscope.measure.device import describe_device
from perfscope.specs.hardware import HardwareSpec, Peak
from perfscope.specs.links import Topology


def _median_time(fn: Any, sync: Any, n: int) -> float:
    fn()
    sync()
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def quick_spec(device: str, dtype: str, desc: dict[str, Any]) -> HardwareSpec:
    """A HardwareSpec from a quick GEMM and copy measurement on ``device``."""
    import torch

    from perfscope.measure.torchprof.build import torch_dtype

    cuda = device.startswith("cuda")
    dev = torch.device(device)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(dev)

    n = 4096 if cuda else 1024
    dt = torch_dtype(dtype)
    mats = [torch.randn(n, n, device=dev).to(dt) for _ in range(2)]
    t = _median_time(lambda: mats[0] @ mats[1], sync, 10 if cuda else 5)
    gemm = 2.0 * n**3 / t  # 2 FLOPs per multiply-add
    mats.clear()
    cache = int(desc.get("l2_bytes") or max((desc.get("cache_bytes") or {"l3": 32 * 2**20})
                                            .values()))
    elems = max(4 * cache // 4, 2**24) if not cuda else 2**28
    buf = [torch.full((elems,), 1.0, device=dev) for _ in range(2)]
    tc = _median_time(lambda: buf[1].copy_(buf[0]), sync, 10 if cuda else 5)
    bw = 2.0 * elems * 4 / tc  # read + write, STREAM convention
    buf.clear()
    when = time.strftime("%Y-%m-%d", time.gmtime())
    src = (f"quick measurement by perfscope profile on {when}: {n}^3 {dtype} GEMM, median; "
           "noisier than `perfscope bench ceilings`")
    peak = Peak(dtype, tensor_dense=gemm if cuda else None, tensor_sparse=None,
                vector=None if cuda else gemm, source=src)
    return HardwareSpec(
        name="local", display_name=f"{desc.get('name', device)} (quick measurement)",
        vendor="nvidia" if cuda else "", memory_bytes=float(desc.get("memory_bytes") or 0),
        memory_bandwidth_bytes_s=bw,
        memory_source=f"quick copy of {elems} fp32 elements, bytes read + written, median",
        l2_bytes=float(cache), sm_count=int(desc.get("sm_count") or
                                            desc.get("physical_cores") or 1),
        peaks={dtype: peak}, topology=Topology(None, "none", 1, None, None, 1, None),
        empirical=None, file="")


def device_hardware(device: str, dtype: str, hw: str | HardwareSpec | None
                    ) -> tuple[HardwareSpec, str, dict[str, Any]]:
    """(spec for predictions, where it came from, description of the device profiled).
    ``hw``: a spec name or file, a HardwareSpec, or None for this device's ceilings."""
    from perfscope.specs.loading import LOCAL_NAME, load_hw, local_spec_path

    desc = describe_device(device)
    if isinstance(hw, HardwareSpec):
        return hw, f"given: {hw.display_name}", desc
    if hw:
        return load_hw(hw), f"--hw {hw}", desc
    path = local_spec_path()
    if path.is_file():
        spec = load_hw(LOCAL_NAME)
        name = str(desc.get("name", ""))
        same = bool(name) and spec.display_name.startswith(name)
        if same and spec.has_dtype(dtype):
            return spec, f"local spec {path}", desc
        why = "measured on another device" if not same else f"has no {dtype} ceiling"
        return quick_spec(device, dtype, desc), \
            f"quick measurement (the local spec {path} {why})", desc
    return quick_spec(device, dtype, desc), \
        "quick measurement (no local spec: `perfscope bench ceilings --save local` " \
        "saves a better one)", desc
