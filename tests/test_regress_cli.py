"""perfscope regress on the command line: exit codes, formats, errors. Two shell commands
whose difference is a sleep (immune to CPU load) stand in for two revisions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from perfscope.cli import main

FAST = ["--min-rounds", "6", "--rounds", "12", "--max-time", "8", "--cpus", "none"]


def _run(capsys, *args: str) -> tuple[int, str, str]:
    try:
        main(["regress", *args])
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_regression_exits_1_with_the_json_contract(capsys) -> None:
    code, out, _ = _run(capsys, "--baseline-cmd", "sleep 0.02", "--candidate-cmd",
                        "sleep 0.05", *FAST, "--format", "json")
    doc = json.loads(out)
    assert code == 1
    assert doc["schema"] == "perfscope.regress/1" and doc["verdict"] == "regression"
    (b,) = doc["benchmarks"]
    assert {"name", "verdict", "ratio", "ci_low", "ci_high"} <= set(b)
    assert b["verdict"] == "regression" and b["ci_low"] > 1.05 and b["ratio"] > 1.2
    assert doc["baseline"] == {"ref": "sleep 0.02", "commit": None, "kind": "cmd"}
    assert doc["exit_code"] == 1 and doc["settings"]["threads"] == 1


def test_improvement_exits_0_and_table_fits_80_columns(capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = _run(capsys, "--baseline-cmd", "sleep 0.05", "--candidate-cmd",
                        "sleep 0.02", *FAST)
    assert code == 0
    assert "improvement" in out
    assert max(len(line) for line in out.splitlines()) <= 80


def test_csv_to_a_file(capsys, tmp_path: Path) -> None:
    f = tmp_path / "r.csv"
    code, out, err = _run(capsys, "--baseline-cmd", "sleep 0.02", "--candidate-cmd",
                          "sleep 0.05", *FAST, "--format", "csv", "-o", str(f))
    assert code == 1 and out == ""
    header, row = f.read_text().splitlines()
    assert header.startswith("name,verdict,ratio,ci_low,ci_high")
    assert row.startswith("command,regression,")
    assert "regression" in err  # the verdict is logged on stderr when data goes elsewhere


@pytest.mark.parametrize(("args", "msg"), [
    ((), "--baseline: required"),
    (("--baseline", "HEAD", "--threshold", "3"), "--threshold"),
    (("--baseline", "HEAD", "--cpus", "999"), "--cpus"),
    (("--baseline", "HEAD", "--workers", "0"), "--workers 0"),
    (("--baseline", "no-such-ref-xyz"), "not a directory and not a commit"),
    (("--baseline", "HEAD", "--format", "xml"), "--format"),
    (("--baseline", "HEAD", "--suite", "nope.py"), "no benchmark suite"),
    (("--baseline", "HEAD", "--bench", "no_such_bench", "--quick"), "not in the suite"),
])
def test_usage_errors_exit_2_in_one_line(capsys, args: tuple[str, ...], msg: str) -> None:
    code, out, err = _run(capsys, *args)
    assert out == ""
    assert code == 2
    assert msg in err
    errors = [line for line in err.splitlines() if line.startswith("perfscope: error:")]
    assert len(errors) == 1 and err.splitlines()[-1] == errors[0]
    assert "Traceback" not in err
