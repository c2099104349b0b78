"""perfscope bench: the bench/1 JSON contract, CSV, --save, bad input and exit codes."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import types

import pytest
from typer.testing import CliRunner

from perfscope.errors import MeasureError
from perfscope.measure import ceilings as C
from perfscope.specs.loading import load_hw

torch = pytest.importorskip("torch")
MIB = 2**20


@pytest.fixture
def app(monkeypatch, tmp_path):
    monkeypatch.setattr(C, "CPU_GEMM_SIZES_QUICK", (128, 256))
    monkeypatch.setattr(C, "bandwidth_array_bytes", lambda device, quick: 8 * MIB)
    monkeypatch.setenv("PERFSCOPE_LOCAL_HW", str(tmp_path / "local.toml"))
    from perfscope.cli.app import app

    return app


def run(app, *args):
    r = CliRunner().invoke(app, ["bench", *args])
    return r


def test_ceilings_json_schema(app):
    r = run(app, "ceilings", "--quick", "--format", "json", "--dtype", "fp32,fp8",
            "--no-sweep", "--device", "cpu", "--threads", "1")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["schema"] == "perfscope.bench/1"
    assert doc["quick"] is True and doc["threads"] == 1
    assert doc["device"]["kind"] == "cpu" and doc["device"]["physical_cores"] >= 1
    assert "torch" in doc["libraries"] and "python" in doc["libraries"]
    assert doc["argv"] == sys.argv and isinstance(doc["command"], str)  # this process
    names = {c["name"] for c in doc["ceilings"]["values"]}
    assert {"gemm.fp32", "memory.copy", "memory.triad"} <= names
    for c in doc["ceilings"]["values"]:
        assert c["low"] <= c["value"] <= c["high"]
        assert set(c["stats"]) >= {"median_s", "p20_s", "p80_s", "n", "cv"}
    p = doc["ceilings"]["points"][0]
    assert set(p) >= {"name", "kind", "dtype", "shape", "stats", "flops", "bytes",
                      "achieved_flops_per_s", "achieved_bytes_per_s"}
    # the dtype the CPU lacks is one skipped line, the rest ran
    assert any("fp8" in s["message"] for s in doc["skipped"])
    assert "telemetry" not in doc["device"]  # no NVML on a CPU: absent, nothing failed


def test_save_writes_a_loadable_spec(app, tmp_path):
    out = tmp_path / "box.toml"
    r = run(app, "ceilings", "--quick", "--format", "json", "--no-sweep", "--save", str(out))
    assert r.exit_code == 0, r.output
    hw = load_hw(str(out))
    doc = json.loads(r.stdout)
    g = next(c for c in doc["ceilings"]["values"] if c["name"] == "gemm.fp32")
    assert hw.tensor_flops("fp32", "empirical")[0] == pytest.approx(g["value"], rel=1e-5)
    assert doc["ceilings"]["saved_spec"] == str(out)


def test_ops_csv_with_unknown_op(app, tmp_path):
    out = tmp_path / "box.toml"
    assert run(app, "ceilings", "--quick", "--no-sweep", "--format", "json", "--save",
               str(out)).exit_code == 0
    r = run(app, "ops", "--model", "qwen2.5-0.5b", "--hw", str(out), "--phase", "decode",
            "--context-len", "32", "--op", "attn.norm,nope", "--no-sweep", "--quick",
            "--format", "csv", "--threads", "1")
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert [x["name"] for x in rows] == ["attn.norm"]
    assert rows[0]["section"] == "ops" and rows[0]["phase"] == "decode"
    assert float(rows[0]["predicted_time_s"]) > 0 and float(rows[0]["pct_of_roof"]) > 0
    assert "unknown op for qwen2.5-0.5b" in r.stderr


def test_table_format(app):
    r = run(app, "ceilings", "--quick", "--no-sweep", "--dtype", "fp32")
    assert r.exit_code == 0 and "gemm.fp32" in r.stdout


def test_nothing_ran_is_an_error(app, monkeypatch):
    fake = types.ModuleType("perfscope.measure.comm")

    def boom(quick, world_size, backend):
        raise RuntimeError("no second rank")

    fake.run_comm_benchmarks = boom  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "perfscope.measure.comm", fake)
    r = run(app, "comm", "--format", "json")
    assert isinstance(r.exception, MeasureError) and r.exception.exit_code == 1
    assert "collectives: no second rank; skipped" in r.stderr


def test_bad_format_exits_2_before_measuring():
    r = subprocess.run([sys.executable, "-m", "perfscope", "bench", "ceilings", "--format",
                        "xml"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "--format 'xml'" in r.stderr and r.stdout == ""


def test_cli_import_does_not_import_torch():
    code = "import sys, perfscope.cli.app; print('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60)
    assert r.stdout.strip() == "False", r.stderr


def test_comm_results_sit_beside_the_link_ceiling():
    from perfscope.cli.bench import against_link

    rows = [{"op": "all_reduce", "size_bytes": 2**30, "busbw_bytes_s": 367.6e9}]
    out = against_link(rows, "nvlink4")
    # NVLink 4: 450 GB/s per direction per GPU (DS-097); 367.6 GB/s ring busbw (MB-046)
    assert out[0]["link_bandwidth_bytes_s"] == 450e9
    assert out[0]["fraction_of_link"] == pytest.approx(367.6 / 450)
    assert out[0]["link_empirical_busbw_bytes_s"] == pytest.approx(367.6e9, rel=0.01)
