"""The Triton kernels' tests (tests/triton_kernel_cases.py) on this machine: in this process
on a GPU; on a CPU through Triton's interpreter in a fresh process with TRITON_INTERPRET=1,
which must be set before triton is first imported (transformers imports it in other tests).
Every case must pass there: none may be skipped. CI runs them this way.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
if importlib.util.find_spec("triton") is None:
    pytest.skip("triton is not installed (pip install triton)", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]
CASES = "tests/triton_kernel_cases.py"

if torch.cuda.is_available():
    from tests.triton_kernel_cases import *  # noqa: F403  (the cases, compiled for the GPU)
else:
    def test_triton_kernels_through_the_interpreter():
        env = {**os.environ, "TRITON_INTERPRET": "1"}
        r = subprocess.run([sys.executable, "-m", "pytest", CASES, "-p",
                            "no:cacheprovider", "-rfEs"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=900)
        tail = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr[-2000:]
        assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
        passed = re.search(r"(\d+) passed", tail)
        # add+RMSNorm 3 shapes x 2 dtypes, attention 3 cases x 2 dtypes x 3 launches,
        # split-KV 3 cases x 7 (split count, dtype, launch), the heuristic against one pass
        # 3 cases, bad num_splits, bad launches, the while-loop variant, the version rule:
        # 6 + 18 + 21 + 3 + 1 + 1 + 1 + 1
        assert passed and int(passed.group(1)) == 52, tail
        assert not re.search(r"skipped|failed|error", tail), tail  # all ran, all passed
