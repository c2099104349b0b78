"""perfscope bench as a user runs it: every command in every --format, with and without -o,
at 80 columns, in a pipe, on real (small, quick) measurements; and the failures that must
fail, with their exit status.

The bare ``bench`` and each subcommand but ``comm`` measure for real once (tiny shapes); the
collectives' real results come from the bare ``bench`` (spawning ranks costs seconds, and
tests/test_comm.py runs them too). Each result is then rendered by the CLI in every format,
with and without -o (run_bench returns the recorded real result there, so the 15 x 2
renderings cost no more measuring).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import json
import os
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

torch = pytest.importorskip("torch")

from perfscope.errors import MeasureError  # noqa: E402
from perfscope.measure import ceilings as C  # noqa: E402
from perfscope.measure import opcases, session  # noqa: E402
from perfscope.measure.kernels import bench as KB  # noqa: E402
from perfscope.specs.loading import load_hw  # noqa: E402

MIB = 2**20
COMMANDS = {  # name -> (argv after `perfscope bench`, sections it reports)
    "bench": ([], {"ceilings", "ops", "kernels", "comm"}),
    "ceilings": (["ceilings", "--dtype", "fp32,fp8", "--no-sweep", "--rounds", "2"],
                 {"ceilings"}),
    "ops": (["ops", "--phase", "both", "--seq-len", "32", "--context-len", "32",
             "--op", "attn.norm,attn.core,attn.o_proj,mlp.act,embed"], {"ops"}),
    "kernels": (["kernels"], {"kernels"}),
    "comm": (["comm", "--world-size", "2"], {"comm"}),
}
COMMON = ["--quick", "--threads", "1", "--no-progress"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Tiny shapes everywhere, and a private local-spec path."""
    mp = pytest.MonkeyPatch()
    mp.setattr(C, "CPU_GEMM_SIZES_QUICK", (128, 256))
    mp.setattr(C, "bandwidth_array_bytes", lambda device, quick: 8 * MIB)
    mp.setattr(opcases, "TARGET_CALL_S", 0.002)  # ops scaled to ~2 ms a call
    mp.setitem(KB.NORM_SHAPES, ("cpu", True), KB.NormShape(64, 256))
    mp.setitem(KB.DECODE_SHAPES, ("cpu", True), KB.DecodeShape(3, 4, 2, 16, 1, 40, 16))
    # the bare `bench` has no shape flags: its ops section times a few short ops
    mp.setattr(session, "OpsOptions", functools.partial(
        session.OpsOptions, seq_len=16, context_len=16, sweep=False,
        only=("attn.norm", "attn.core", "mlp.act", "attn.o_proj")))
    mp.setenv("PERFSCOPE_LOCAL_HW", str(tmp_path_factory.mktemp("hw") / "local.toml"))
    from perfscope.cli.app import app

    yield app
    mp.undo()


def invoke(app, args, **kw):
    return CliRunner().invoke(app, ["bench", *args], **kw)


@pytest.fixture(scope="module")
def real(env):
    """Each command run once for real (JSON); name -> (BenchResult, document)."""
    out = {}
    for name, (args, _) in COMMANDS.items():
        if name == "comm":
            continue
        got: list = []
        real_run = session.run_bench

        def spy(*a, got=got, real_run=real_run, **k):
            got.append(real_run(*a, **k))
            return got[-1]

        session.run_bench = spy
        t0 = time.time()
        try:
            r = invoke(env, [*args, *COMMON, "--format", "json"], env={"COLUMNS": "80"})
        finally:
            session.run_bench = real_run
        print(f"bench {name}: {time.time() - t0:.1f} s")
        assert r.exit_code == 0, r.output
        out[name] = (got[0], json.loads(r.stdout))
    whole = out["bench"][0]  # the collectives of the bare run, as `bench comm` reports them
    comm = dataclasses.replace(whole, sections={"comm": whole.sections["comm"]}, ceilings=None,
                               points=[], kernels=[], skipped=[])
    out["comm"] = (comm, comm.to_json())
    return out


def test_comm_command_passes_its_options(env, real, monkeypatch):
    seen = {}

    def spy(sections, **kw):
        seen.update(kw, sections=sections)
        return real["comm"][0]

    monkeypatch.setattr(session, "run_bench", spy)
    r = invoke(env, ["comm", "--world-size", "3", "--backend", "gloo", "--link", "nvlink4",
                     *COMMON, "--format", "json"])
    assert r.exit_code == 0, r.output
    assert seen["sections"] == ("comm",) and seen["quick"] is True and seen["threads"] == 1
    assert seen["comm"] == session.CommOptions(world_size=3, backend="gloo", link="nvlink4")


def test_each_command_measures_its_sections(real):
    for name, (_, sections) in COMMANDS.items():
        res, doc = real[name]
        assert doc["schema"] == "perfscope.bench/1" and doc["quick"] is True
        assert doc["threads"] == 1 and doc["device"]["kind"] == "cpu"
        present = {s for s in session.SECTIONS if s in doc}
        assert present == sections, name
        for s in sections:
            assert doc[s]["duration_s"] > 0
        assert res.ran > 0


def test_ceilings_document(real):
    res, doc = real["ceilings"]
    values = {c["name"]: c for c in doc["ceilings"]["values"]}
    assert {"gemm.fp32", "memory.copy", "memory.triad"} <= set(values)
    for c in values.values():
        assert len(c["rounds"]) == 2 and c["low"] <= c["value"] <= c["high"]
        assert c["value"] == max(c["rounds"])
    assert any("fp8" in s["message"] for s in doc["skipped"])  # the CPU lacks it: a skip
    assert "telemetry" not in doc["device"]
    for p in doc["ceilings"]["points"]:
        assert p["stats"]["n"] >= 5 and p["stats"]["method"] == "perf_counter"
    assert res.local_hw is not None and res.local_hw.memory_bandwidth("empirical")[0] > 0


def test_ops_document_joins_points_to_the_analytic_ops(real):
    res, doc = real["ops"]
    names = {p["name"] for p in doc["ops"]["points"]}
    assert {"attn.norm", "attn.core", "attn.o_proj", "mlp.act", "embed"} <= names
    sweep = sorted(p["extra"]["sweep_batch"] for p in doc["ops"]["points"]
                   if "sweep_batch" in p["extra"])
    assert sweep == [4, 16, 64, 256]  # the decode GEMM over batch sizes (quick set)
    assert doc["ops"]["roof"] == "measured on this machine"
    for p in doc["ops"]["points"]:
        ex = p["extra"]
        assert ex["impl"] and ex["op_impl"] and ex["check_max_rel_err"] < 1e-3
        assert p["predicted_time_s"] > 0 and isinstance(ex["above_roof"], bool)
        if ex["above_roof"]:
            assert "measured low" in doc["ops"]["roof_note"]
    # the library view: points with predictions, the local spec, the device
    assert {p.name for p in res.points} == names
    assert all(p.predicted_time_s and p.achieved_bytes_per_s > 0 for p in res.points)
    assert res.local_hw is not None and res.device["kind"] == "cpu"


def test_kernels_document_has_decode_attention(real):
    _, doc = real["kernels"]
    names = {p["name"] for p in doc["kernels"]["points"]}
    assert {"decode_attention.paged.torch", "add_rmsnorm.fused.torch"} <= names
    assert any("triton" in s["message"] for s in doc["skipped"])  # no CUDA: said why


def test_comm_document_reads_like_nccl_tests(real):
    _, doc = real["comm"]
    sec = doc["comm"]
    assert sec["backend"] == "gloo" and sec["device"] == "cpu" and sec["ranks"] == 2
    for r in sec["results"]:
        assert {"op", "size_bytes", "median_s", "algbw_bytes_s", "busbw_bytes_s"} <= set(r)
        assert r["algbw_bytes_s"] == pytest.approx(r["size_bytes"] / r["median_s"])


# ---- every command x every format x stdout or -o, at 80 columns ------------------------

@pytest.mark.parametrize("name", list(COMMANDS))
@pytest.mark.parametrize("fmt", ["table", "json", "csv"])
@pytest.mark.parametrize("to_file", [False, True], ids=["stdout", "file"])
def test_every_command_in_every_format(env, real, monkeypatch, tmp_path, name, fmt, to_file):
    res, doc = real[name]
    monkeypatch.setattr(session, "run_bench", lambda *a, **k: res)
    out = tmp_path / f"out.{fmt}"
    args = [*COMMANDS[name][0], *COMMON, "--format", fmt] + (["-o", str(out)] if to_file
                                                             else [])
    r = invoke(env, args, env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    if to_file:
        assert r.stdout == "" and f"wrote {out}" in r.stderr
        text = out.read_text()
    else:
        text = r.stdout
    assert text.strip()
    if fmt == "json":
        assert json.loads(text) == json.loads(json.dumps(res.to_json())) == doc
    elif fmt == "csv":
        _check_csv(text, COMMANDS[name][1])
    else:
        _check_table(text, COMMANDS[name][1], width=120 if to_file else 80)


def _check_csv(text: str, sections: set[str]) -> None:
    rows = list(csv.reader(io.StringIO(text)))
    head, body = rows[0], rows[1:]
    assert body and all(len(r) == len(head) for r in body)  # complete rows
    recs = [dict(zip(head, r, strict=True)) for r in body]
    assert {r["section"] for r in recs} == sections
    assert "median_s" in head
    for r in recs:
        assert float(r["median_s"]) > 0
        if r["section"] == "comm":
            assert float(r["size_bytes"]) > 0 and float(r["busbw_bytes_per_s"]) > 0
            assert float(r["algbw_bytes_per_s"]) > 0 and r["ranks"] == "2"
        if r["section"] == "ops" and r["kind"] != "ceiling":
            assert float(r["predicted_time_s"]) > 0 and r["impl"]


TITLES = {"ceilings": "measured ceilings", "ops": "ops of qwen2.5-0.5b",
          "kernels": "reference kernels", "comm": "collectives: gloo between 2 CPU processes"}


def _check_table(text: str, sections: set[str], width: int) -> None:
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width
    for s in sections:
        assert TITLES[s] in text
    if "comm" in sections:
        assert "algbw" in text and "busbw" in text and "B/s" in text and "KiB" in text
    if "kernels" in sections:
        # decode attention has no q_len: its shape prints (this raised KeyError before)
        assert "decode_attention.paged" in text and "b3 kv<=40" in text and "h4/2 d16" in text


# ---- a real run in a plain pipe ------------------------------------------------------------

def test_real_run_in_a_pipe_at_80_columns(real, tmp_path):
    """A fresh process, stdout and stderr pipes, COLUMNS=80, the local roof the one saved
    from the ceilings measured above."""
    from perfscope.measure.hwspec import hw_toml

    res, _ = real["ceilings"]
    spec = tmp_path / "local.toml"
    spec.write_text(hw_toml(res.ceilings, res.device))
    env = {**os.environ, "COLUMNS": "80", "PERFSCOPE_LOCAL_HW": str(spec)}
    r = subprocess.run([sys.executable, "-m", "perfscope", "bench", "ops", "--quick",
                        "--op", "attn.norm,mlp.act", "--seq-len", "16", "--context-len", "16",
                        "--threads", "1"],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    assert "ops of qwen2.5-0.5b, prefill" in r.stdout and "mlp.act" in r.stdout
    assert max(len(line) for line in r.stdout.splitlines()) <= 80
    # no terminal: no bars, one line for the section with its time
    assert "\x1b[" not in r.stderr and "\r" not in r.stderr
    assert f"the local roof is the saved spec {spec}" in r.stderr
    assert "perfscope bench: ops done in" in r.stderr


# ---- failures that must fail ------------------------------------------------------------

def main(argv, capsys) -> tuple[int, str, str]:
    """The real entry point: its one error boundary, exit status, stdout and stderr."""
    from perfscope.cli import main as cli_main

    with pytest.raises(SystemExit) as e:
        cli_main(["bench", *argv])
        raise SystemExit(0)
    out, err = capsys.readouterr()
    return int(e.value.code or 0), out, err


def test_save_to_a_missing_folder_fails_before_measuring(env, capsys):
    t0 = time.time()
    code, out, err = main(["ceilings", "--quick", "--save", "/proc/nope/x.toml"], capsys)
    assert code == 2 and out == ""
    assert err.strip() == ("perfscope: error: --save /proc/nope/x.toml: the folder /proc/nope "
                           "does not exist; create it first or choose another path")
    assert time.time() - t0 < 10  # nothing was measured first


def test_save_writes_a_loadable_spec(real, env, tmp_path, monkeypatch):
    out = tmp_path / "box.toml"
    r = invoke(env, ["ceilings", *COMMON, "--dtype", "fp32", "--no-sweep", "--rounds", "1",
                     "--format", "json", "--save", str(out)])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    g = next(c for c in doc["ceilings"]["values"] if c["name"] == "gemm.fp32")
    assert load_hw(str(out)).tensor_flops("fp32", "empirical")[0] == \
        pytest.approx(g["value"], rel=1e-5)
    assert doc["ceilings"]["saved_spec"] == str(out)


def test_unknown_dtype_is_bad_input(env, capsys):
    code, _, err = main(["ceilings", "--quick", "--dtype", "fp7", "--threads", "1"], capsys)
    assert code == 2 and "--dtype fp7: unknown" in err


def test_an_import_error_inside_perfscope_is_an_error(env, monkeypatch, capsys):
    def broken(*a, **k):
        raise ModuleNotFoundError("No module named 'perfscope.measure.kernels.gone'",
                                  name="perfscope.measure.kernels.gone")

    monkeypatch.setattr(KB, "run_kernel_benchmarks", broken)
    code, _, err = main(["kernels", *COMMON], capsys)
    assert code == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith("perfscope: error: reference kernels failed: ModuleNotFoundError")
    assert "not available" not in err and "optional package" not in err


def test_a_missing_optional_package_is_a_skip(env, monkeypatch, capsys):
    def no_triton(*a, **k):
        raise ModuleNotFoundError("No module named 'triton'", name="triton")

    monkeypatch.setattr(KB, "run_kernel_benchmarks", no_triton)
    code, out, err = main(["kernels", *COMMON, "--format", "json"], capsys)
    assert code == 1  # a skip, and then nothing ran
    assert "needs the optional package triton" in err and "no benchmark ran" in err
    assert json.loads(out)["skipped"]  # the document still says what was skipped


def test_a_failing_collective_is_an_error_not_a_skip(env, monkeypatch, capsys):
    from perfscope.measure import comm

    def boom(*a, **k):
        raise MeasureError("all_reduce over 2 gloo ranks (port 1) failed: RuntimeError: x")

    monkeypatch.setattr(comm, "run_comm_benchmarks", boom)
    code, _, err = main(["comm", *COMMON], capsys)
    assert code == 2 and "all_reduce over 2 gloo ranks" in err


def test_a_wrong_result_fails_the_command(env, monkeypatch, capsys):
    from perfscope.measure import gemm as G

    real_fn = G.Gemm.fn
    monkeypatch.setattr(G.Gemm, "fn", lambda self, d: (lambda x, p: real_fn(self, d)(x, p) + 1))
    code, out, err = main(["ceilings", *COMMON, "--dtype", "fp32", "--no-sweep", "--rounds",
                           "1"], capsys)
    assert code == 2 and out == "" and "wrong result" in err


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
    rows = [{"op": "all_reduce", "size_bytes": 2**30, "busbw_bytes_s": 367.6e9}]
    out = session.against_link(rows, "nvlink4")
    # NVLink 4: 450 GB/s per direction per GPU (DS-097); 367.6 GB/s ring busbw (MB-046)
    assert out[0]["link_bandwidth_bytes_s"] == 450e9
    assert out[0]["fraction_of_link"] == pytest.approx(367.6 / 450)
    assert out[0]["link_empirical_busbw_bytes_s"] == pytest.approx(367.6e9, rel=0.01)


def test_ops_options_reach_run_bench(env, real, monkeypatch, capsys):
    seen = {}

    def spy(sections, **kw):
        seen.update(kw)
        return real["ops"][0]

    monkeypatch.setattr(session, "run_bench", spy)
    r = invoke(env, ["ops", "--attention", "unfused", "--weight-dtype", "int8", "--act-dtype",
                     "int8", "--hw", "h100-sxm", "--phase", "decode", "--batch", "4",
                     *COMMON, "--format", "json"])
    assert r.exit_code == 0, r.output
    o = seen["ops"]
    assert (o.attention, o.phases, o.batch, seen["hw"]) == ("unfused", ("decode",), 4,
                                                            "h100-sxm")
    assert o.dtypes == {"weight_dtype": "int8", "act_dtype": "int8", "kv_dtype": None}
    code, _, err = main(["ops", "--attention", "paged"], capsys)
    assert code == 2 and "--attention 'paged': use flash or unfused" in err
