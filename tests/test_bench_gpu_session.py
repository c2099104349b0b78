"""benchmarks/gpu_session.sh, read without a GPU: each GPU maps to its own spec (an H200 NVL
is not an H200 SXM), every measuring step runs under a timeout, the script parses, and each
step reaches the program it names (run against stand-ins for nvidia-smi and python3)."""

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
            if re.search(r"(^|\s)(python3 -m perfscope|python3 -m pytest|python3 benchmarks/)", ln)
            and not ln.strip().startswith("#")]
    assert runs and all(ln.startswith("step ") for ln in runs), runs
    assert "timeout --kill-after" in text and "DEADLINE_S" in text


def _fake_gpu_machine(tmp_path: Path) -> tuple[dict, Path]:
    """A PATH whose nvidia-smi names an H200 and whose python3 logs its arguments."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    log = tmp_path / "calls.log"
    (bin_ / "nvidia-smi").write_text("#!/bin/sh\necho 'NVIDIA H200'\n")
    (bin_ / "python3").write_text(f"#!/bin/sh\necho \"$*\" >> {log}\n")
    for f in bin_.iterdir():
        f.chmod(0o755)
    env = {"PATH": f"{bin_}:/usr/bin:/bin", "OUT": str(tmp_path / "out"), "HOME": str(tmp_path)}
    return env, log


def test_every_step_reaches_its_program(tmp_path):
    """A step runs under timeout(1), which executes programs, not shell functions: the first
    session on an H200 found every `perfscope` step calling procps' ps through a function
    named ps. Each step must reach python3 with its own arguments."""
    env, log = _fake_gpu_machine(tmp_path)
    r = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True,
                       timeout=120, cwd=SCRIPT.parents[1])
    assert r.returncode == 0, r.stderr
    calls = log.read_text().splitlines()
    perfscope = [c for c in calls if c.startswith("-m perfscope ")]
    labels = re.findall(r'^step \d+ "([a-z0-9-]+)"', SCRIPT.read_text(), re.M)
    assert len(perfscope) == sum(1 for ln in SCRIPT.read_text().splitlines()
                                 if re.match(r'step \d+ "[a-z0-9-]+" python3 -m perfscope', ln))
    assert any(c.startswith("-m perfscope bench ceilings --device cuda") for c in perfscope)
    assert all("--hw h200-sxm" in c for c in perfscope if " ops " in c or "profile" in c)
    # every step ran (none skipped at the deadline, none failed to start)
    assert r.stderr.count("[exit 0,") == len(labels), r.stderr


def test_only_runs_the_named_steps(tmp_path):
    env, log = _fake_gpu_machine(tmp_path)
    r = subprocess.run(["bash", str(SCRIPT)], env={**env, "ONLY": "ceilings kernels"},
                       capture_output=True, text=True, timeout=120, cwd=SCRIPT.parents[1])
    assert r.returncode == 0, r.stderr
    calls = [c for c in log.read_text().splitlines() if c.startswith("-m perfscope")]
    assert [c.split()[2:4] for c in calls] == [["bench", "ceilings"], ["bench", "kernels"]]


def test_bundle_packs_the_results_into_one_file(tmp_path):
    """The device tool fetches at most 8 files from $OUT and a full session writes more:
    BUNDLE=1 packs them into one archive, with the log beside it."""
    import tarfile

    env, log = _fake_gpu_machine(tmp_path)
    bin_ = Path(env["PATH"].split(":")[0])
    # this python3 stand-in writes the file a step names after -o / --json / --save
    (bin_ / "python3").write_text(
        "#!/bin/bash\n"
        f"echo \"$*\" >> {log}\n"
        "while [ $# -gt 0 ]; do case $1 in -o|--json|--save) echo '{}' > \"$2\";; esac; "
        "shift; done\n")
    r = subprocess.run(["bash", str(SCRIPT)], env={**env, "BUNDLE": "1"}, capture_output=True,
                       text=True, timeout=120, cwd=SCRIPT.parents[1])
    assert r.returncode == 0, r.stderr
    out = Path(env["OUT"])
    names = sorted(p.name for p in out.iterdir())
    stamp = names[0].rsplit("-", 1)[1].split(".")[0]
    assert names == [f"gpu-session-NVIDIA-H200-{stamp}.log",
                     f"gpu-session-NVIDIA-H200-{stamp}.tar.gz"]
    with tarfile.open(out / names[1]) as t:
        packed = {Path(m).name for m in t.getnames() if m.endswith((".json", ".toml"))}
    assert f"ceilings-NVIDIA-H200-{stamp}.json" in packed and len(packed) > 8
    assert "[exit 0," in (out / names[0]).read_text()
