"""Write measured ceilings as a perfscope.hw/1 spec of the local device, and read it back.

The spec's peak figures are the measured ones too (a CPU has no published tensor peak that
torch could reach, and a GPU's spec sheet is not known here), each source saying so; the
`empirical` block holds the same measurements for ``--ceiling empirical``. On a CPU, sm_count
is the physical core count and l2_mib the last-level cache (the CPU's analogue of a GPU's L2:
the largest cache all cores share).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from perfscope.errors import MeasureError
from perfscope.measure.ceilings import CeilingsResult
from perfscope.specs.hardware import HardwareSpec
from perfscope.specs.loading import LOCAL_NAME, local_spec_path

TENSOR_DTYPES = ("tf32", "bf16", "fp16", "fp8", "int8")
__all__ = ["LOCAL_NAME", "load_local_spec", "local_spec_path", "save_hw"]


def _q(s: str) -> str:
    return json.dumps(s)  # a JSON string is a valid TOML basic string


def _vendor(desc: dict[str, Any]) -> str:
    if desc.get("kind") == "cuda":
        return "nvidia"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("vendor_id"):
                v = line.split(":", 1)[1].strip()
                return {"AuthenticAMD": "amd", "GenuineIntel": "intel"}.get(v, v.lower())
    except OSError:
        pass
    return "unknown"


def hw_toml(res: CeilingsResult, desc: dict[str, Any], *, name: str = LOCAL_NAME,
            when: str | None = None) -> str:
    """The TOML text of a perfscope.hw/1 spec built from measured ceilings."""
    gemm = res.gemm()
    bw = res.bandwidth()
    if not gemm or bw is None:
        raise MeasureError("cannot write a hardware spec: no GEMM ceiling or no bandwidth was "
                           "measured (see the skipped lines above)")
    when = when or time.strftime("%Y-%m-%d", time.gmtime())
    cpu = desc.get("kind") != "cuda"
    tool = f"measured by `perfscope bench ceilings` on {when}"
    if cpu:
        cores = int(desc.get("physical_cores") or 1)
        caches = desc.get("cache_bytes") or {}
        llc = max(caches.values()) if caches else 32 * 2**20
        threads = desc.get("torch_threads")
        display = f"{desc.get('name', 'CPU')}, {cores} cores (measured)"
        chip_src = (f"/sys: {cores} physical cores as sm_count; l2_mib is the last-level "
                    f"cache (L{max(int(k[1:]) for k in caches) if caches else 3})")
    else:
        cores = int(desc["sm_count"])
        llc = int(desc.get("l2_bytes") or 0)
        threads = None
        display = f"{desc.get('name', 'GPU')} (measured)"
        chip_src = "torch.cuda.get_device_properties (multi_processor_count, L2_cache_size)"
    mem = int(desc.get("memory_bytes") or 0)
    if mem <= 0:
        raise MeasureError("cannot write a hardware spec: device memory size unknown")
    bw_src = (f"{tool}: STREAM {bw.name.split('.')[1]} over {bw.shape.get('elements', 0)} "
              f"fp32 elements, bytes read + written, best of {len(bw.rounds) or 1} rounds "
              f"(worst round {bw.low / 1e9:.1f} GB/s, best p20 {bw.high / 1e9:.1f})")
    lines = [
        f"# Measured spec of this machine. {tool}.",
        "# Peak figures are the measured ceilings (no published figure is used).",
        'schema = "perfscope.hw/1"',
        f"name = {_q(name)}",
        f"display_name = {_q(display)}",
        f"vendor = {_q(_vendor(desc))}",
    ]
    if threads:
        lines.append(f"notes = {_q(f'CPU ceilings measured with {threads} torch threads')}")
    lines += [
        "",
        "[memory]",
        f"capacity_gb = {mem / 1e9:.3f}",
        f"bandwidth_gb_s = {bw.value / 1e9:.2f}",
        f"source = {_q(bw_src + ('; capacity from /proc/meminfo' if cpu else ''))}",
        "",
        "[chip]",
        f"sm_count = {cores}",
        f"l2_mib = {llc / 2**20:.3f}",
        f"source = {_q(chip_src)}",
    ]
    for dt, c in gemm.items():
        tf = c.value / 1e12
        how = " with fast accumulation" if c.name.endswith("fast_accum") else ""
        src = (f"{tool}: best torch GEMM {c.shape['m']}x{c.shape['n']}x{c.shape['k']} {dt}"
               f"{how}, best of {len(c.rounds) or 1} rounds (worst round "
               f"{c.low / 1e12:.4g} TFLOP/s, best p20 {c.high / 1e12:.4g})")
        key = "tensor_dense_tflops" if (not cpu and dt in TENSOR_DTYPES) else "vector_tflops"
        lines += ["", f"[peak.{dt}]", f"{key} = {tf:.6g}", f"source = {_q(src)}"]
    lines += ["", "[empirical.memory]", f"bandwidth_gb_s = {bw.value / 1e9:.2f}",
              f"kind = {_q(bw.name.split('.')[1])}", f"source = {_q(bw_src)}"]
    for dt, c in gemm.items():
        shape = f"{c.shape['m']}x{c.shape['n']}x{c.shape['k']}"
        lines += ["", f"[empirical.gemm.{dt}]", f"tflops = {c.value / 1e12:.6g}",
                  f"source = {_q(f'{tool}: GEMM {shape}, best of {len(c.rounds) or 1} rounds')}"]
    return "\n".join(lines) + "\n"


def parse_spec_text(text: str, file: str = "<measured>") -> HardwareSpec:
    """A HardwareSpec from TOML text, through the same strict parser as spec files."""
    import tomllib

    from perfscope.specs.hardware import parse_hw
    from perfscope.specs.loading import _resolve_link

    return parse_hw(tomllib.loads(text), file, _resolve_link)


def save_path(path: str | Path) -> tuple[Path, bool]:
    """Where ``--save`` writes and whether it may create the folder: "local" is the default
    local spec (its folder perfscope's own); any other path must have an existing folder."""
    local = str(path) == LOCAL_NAME
    return (local_spec_path() if local else Path(path)), local


def check_save_path(path: str | Path) -> None:
    """Fail before measuring when ``--save`` could not be written (InputError)."""
    from perfscope.errors import InputError

    p, local = save_path(path)
    if local:
        return
    if p.is_dir():
        raise InputError(f"--save {p}: is a folder; give a .toml file name")
    if not p.parent.is_dir():
        raise InputError(f"--save {p}: the folder {p.parent} does not exist; create it first "
                         "or choose another path")


def save_hw(path: str | Path, res: CeilingsResult, desc: dict[str, Any]) -> Path:
    """Save the measured spec (``path`` "local": the default local spec path); it is parsed
    before writing, so a saved file always loads. A write that fails raises."""
    from perfscope.io import write_atomic

    p, local = save_path(path)
    text = hw_toml(res, desc, name=LOCAL_NAME if local else (p.stem or LOCAL_NAME))
    parse_spec_text(text, str(p))
    return write_atomic(p, text, what="--save", make_parents=local)


def load_local_spec() -> HardwareSpec | None:
    """The saved local spec, or None when none has been saved."""
    p = local_spec_path()
    if not p.is_file():
        return None
    from perfscope.specs.loading import load_hw

    return load_hw(str(p))
