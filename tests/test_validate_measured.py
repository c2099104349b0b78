"""benchmarks/validate_measured.py: every committed GPU measurement is re-predicted and printed
beside its measurement; an empty folder is a one-line error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "validate_measured.py"
MEASURED = ROOT / "reports" / "measured"


def test_every_measurement_is_printed_beside_a_prediction():
    r = subprocess.run([sys.executable, str(SCRIPT), "--ops"], capture_output=True, text=True,
                       timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    for f in sorted(MEASURED.glob("*.json")):
        doc = json.loads(f.read_text())
        if doc.get("schema") == "perfscope.decode-step/1":
            rows = [ln for ln in lines if ln.startswith(f.stem[:47])]
            assert len(rows) == len(doc["rows"]), f.name
            for ln, row in zip(rows, doc["rows"], strict=True):
                # measured ms as recorded, and a ratio that is predicted / that
                cols = ln.split()
                assert float(cols[-3]) == round(row["measured_s"] * 1e3, 3)
                assert float(cols[-1]) == round(float(cols[-2]) / float(cols[-3]), 2)
        elif doc.get("schema") == "perfscope.bench/1" and (doc.get("ops") or {}).get("points"):
            assert any(ln.startswith(f.stem[:39]) for ln in lines), f.name


def test_an_empty_folder_is_refused(tmp_path):
    r = subprocess.run([sys.executable, str(SCRIPT), "--dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no JSON" in r.stderr
