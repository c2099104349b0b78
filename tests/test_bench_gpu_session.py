"""benchmarks/gpu_session.sh, read without a GPU: each GPU maps to its own spec (an H200 NVL
is not an H200 SXM), every measuring step runs under a timeout, and the script parses."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from perfscope.specs.loading import load_hw

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_session.sh"
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


@pytest.mark.parametrize("name,spec", [
    ("NVIDIA H200", "h200-sxm"), ("NVIDIA H200 NVL", "h200-nvl"),
    ("NVIDIA H100 80GB HBM3", "h100-sxm"), ("NVIDIA H100 NVL", "h100-nvl"),
    ("NVIDIA H100 PCIe", "h100-pcie"), ("NVIDIA A100-SXM4-40GB", "a100-sxm-40gb"),
    ("NVIDIA A100-SXM4-80GB", "a100-sxm-80gb"), ("NVIDIA A100 80GB PCIe", "a100-pcie-80gb"),
    ("NVIDIA L40S", "l40s"), ("Tesla T4", "local"),
])
def test_each_gpu_gets_its_own_spec(name, spec):
    out = subprocess.run(["bash", str(SCRIPT), "--spec-for", name], capture_output=True,
                         text=True, timeout=30, check=True).stdout.strip()
    assert out == spec
    if spec != "local":
        assert load_hw(spec).name == spec  # a spec perfscope ships


def test_every_measuring_step_has_a_timeout():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True, timeout=30)
    text = SCRIPT.read_text()
    runs = [ln.strip() for ln in text.splitlines()
            if re.search(r"(^|\s)(ps bench|python3 -m pytest|python3 benchmarks/)", ln)
            and not ln.strip().startswith("#")]
    assert runs and all(ln.startswith("step ") for ln in runs), runs
    assert "timeout --kill-after" in text and "DEADLINE_S" in text
