"""perfscope profile (the default branch) and perfscope roofline as a user runs them: every
format, with and without -o, at 80 columns through a pipe; mistakes caught before any work."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCI = re.compile(r"\d\.?\d*[eE][+-]?\d")


def run(*args: str, cwd: Path = ROOT, pre: tuple[str, ...] = (), timeout: int = 300):
    e = {k: v for k, v in os.environ.items() if k not in ("PERFSCOPE_DEBUG",)}
    e |= {"COLUMNS": "80", "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, *pre, "-m", "perfscope", *args], capture_output=True,
                       text=True, cwd=cwd, env=e, timeout=timeout)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def narrow(text: str) -> bool:
    return all(len(line) <= 80 for line in text.splitlines())


def one_line_error(r, *words: str) -> None:
    assert r.returncode != 0 and r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("perfscope: error:"), r.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


def test_default_writes_the_dated_report_and_a_summary(tmp_path):
    t0 = time.time()
    r = run("profile", "--no-measure", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    day = time.strftime("%Y-%m-%d")
    path = tmp_path / "reports" / f"llama-3.1-8b_h100-sxm_{day}.html"
    assert path.is_file() and path.stat().st_size > 1_000_000  # plotly.js is inside
    assert f"report: reports/llama-3.1-8b_h100-sxm_{day}.html" in r.stdout
    for words in ("TTFT", "TPOT", "tokens/s per GPU", "tokens/s per user", "spec (upper bound)",
                  "empirical (expected)", "memory per GPU", "largest batch that fits",
                  "compute-bound"):
        assert words in r.stdout, words
    assert narrow(r.stdout) and narrow(r.stderr) and not SCI.search(r.stdout)
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == [path.name]
    assert time.time() - t0 < 60  # a hang guard only: the < 5 s goal is not a unit test


def test_output_path_and_several_devices(tmp_path):
    out = tmp_path / "r.html"
    r = run("profile", "--no-measure", "--hw", "v100-sxm2-32gb,a100-sxm-80gb,h100-sxm,h200-sxm",
            "--batch", "8", "--batches", "1,8,64", "-o", str(out))
    assert r.returncode == 0, r.stderr
    html = out.read_text()
    for name in ("Tesla V100", "A100", "H100", "H200"):
        assert name in r.stdout and name in html
    assert 'id="devices"' in html  # the side-by-side comparison
    assert narrow(r.stdout)


def test_json_is_the_reports_numbers(tmp_path):
    r = run("profile", "--no-measure", "-f", "json", "--batch", "4", "--batches", "1,4,16",
            "--isl", "1024", "--osl", "128", "--tp", "2")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["schema"] == "perfscope.report/1" and d["measured"] is None
    dev = d["devices"][0]
    s = dev["summary"]["spec"]
    # the roofline steps behind the figures are the phases' analyses
    assert s["prefill_step_s"] == dev["phases"]["prefill"]["totals"]["time_s"]
    assert s["decode_step_s"] == dev["phases"]["decode"]["totals"]["time_s"]
    # the serving figures: 4 clients each get 128 tokens per end-to-end latency, on 2 GPUs;
    # TPOT over the 127 tokens after the first, and never below the bare decode step
    assert s["engine"] == "neutral"
    assert s["tokens_per_s_per_gpu"] == pytest.approx(4 * 128 / s["e2e_s"] / 2)
    assert s["tokens_per_s_per_user"] == pytest.approx(1 / s["tpot_s"])
    assert s["e2e_s"] == pytest.approx(s["ttft_s"] + 127 * s["tpot_s"])
    assert s["tpot_s"] > s["decode_step_s"]
    assert dev["phases"]["decode"]["scenario"]["context_len"] == 1024 + 127 // 2
    assert dev["summary"]["empirical"]["tpot_s"] >= s["tpot_s"]
    assert [x["batch"] for x in dev["sweep"] if x["ceiling"] == "spec"] == [1, 4, 16]
    assert any(o["kind"] == "comm" for o in dev["phases"]["decode"]["ops"])
    out = tmp_path / "r.json"
    w = run("profile", "--no-measure", "-f", "json", "--batch", "4", "--batches", "1,4,16",
            "--isl", "1024", "--osl", "128", "--tp", "2", "-o", str(out))
    assert w.returncode == 0 and w.stdout == ""
    got = json.loads(out.read_text())
    assert got["devices"] == d["devices"]


def test_csv_and_table(tmp_path):
    r = run("profile", "--no-measure", "-f", "csv", "--hw", "h100-sxm,a100-sxm-80gb",
            "--batches", "1,8,64")
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert len(rows) == 2 * 4 * 2  # devices x (sweep + the operating batch 16) x ceilings
    assert {row["hardware"] for row in rows} == {"h100-sxm", "a100-sxm-80gb"}
    assert sum(row["operating"] == "True" for row in rows) == 4
    t = run("profile", "--no-measure", "-f", "table")
    assert t.returncode == 0 and narrow(t.stdout) and "mlp.gate_up_proj" in t.stdout
    out = tmp_path / "t.txt"
    assert run("profile", "--no-measure", "-f", "table", "-o", str(out)).returncode == 0
    assert "mlp.gate_up_proj" in out.read_text()


def test_bench_document_fills_the_measured_sections(tmp_path):
    from test_report_browser import BENCH_DOC

    doc = tmp_path / "b.json"
    doc.write_text(json.dumps(BENCH_DOC))
    out = tmp_path / "r.html"
    r = run("profile", "--bench", str(doc), "-o", str(out))  # --bench alone does not measure
    assert r.returncode == 0, r.stderr
    html = out.read_text()
    assert 'id="measured"' in html and "Test CPU" in html and "add_rmsnorm.fused.torch" in html
    assert "measured on Test CPU" in r.stdout


MEASURED = ROOT / "reports" / "measured"


def test_bench_files_of_one_gpu_session_merge(tmp_path):
    """A GPU session writes one file per section (benchmarks/gpu_session.sh): --bench takes
    several of one device and fills the report from all of them; the ops of a prefill and a
    decode file stand side by side."""
    from perfscope.cli.profile_report import merge_bench

    files = [MEASURED / f"{n}-NVIDIA-H200-20261130.json"
             for n in ("ceilings", "ops-decode-b1", "ops-prefill2048", "kernels")]
    docs = [json.loads(f.read_text()) for f in files]
    m = merge_bench(list(zip(files, docs, strict=True)))
    assert m["ceilings"] == docs[0]["ceilings"] and m["kernels"] == docs[3]["kernels"]
    assert len(m["ops"]["points"]) == len(docs[1]["ops"]["points"]) + len(
        docs[2]["ops"]["points"])
    assert [s["phase"] for s in m["ops"]["scenarios"]] == ["decode", "prefill"]
    assert m["duration_s"] == pytest.approx(sum(d["duration_s"] for d in docs))
    assert all(d["command"] in m["command"] for d in docs)  # the report shows every run
    out = tmp_path / "r.html"
    r = run("profile", "--hw", "h200-sxm", "-o", str(out),
            *[a for f in files for a in ("--bench", str(f))])
    assert r.returncode == 0, r.stderr
    assert "Measured on NVIDIA H200" in out.read_text()
    n_ops = len(m["ops"]["points"])
    assert f"measured on NVIDIA H200: {len(m['ceilings']['values'])} ceilings, {n_ops} ops" \
        in r.stdout
    # a section twice, or another device's file: refused, nothing written
    bad = tmp_path / "bad.html"
    one_line_error(run("profile", "--bench", str(files[0]), "--bench", str(files[0]),
                       "-o", str(bad)), "already holds the ceilings")
    from test_report_browser import BENCH_DOC

    cpu = tmp_path / "cpu.json"
    cpu.write_text(json.dumps(BENCH_DOC))
    one_line_error(run("profile", "--bench", str(files[1]), "--bench", str(cpu),
                       "-o", str(bad)), "Test CPU", "NVIDIA H200", "one device")
    assert not bad.exists()


def test_default_lengths_fit_a_short_context():
    """GPT-2 holds 1,024 tokens: the default 2,048 + 256 workload is fitted into it (7/8 prompt,
    1/8 output) and said on stderr; lengths the user typed are refused instead (below)."""
    r = run("profile", "--model", "gpt2", "--hw", "v100-sxm2", "--no-measure", "-f", "json",
            "--batches", "1,4")
    assert r.returncode == 0, r.stderr
    assert "gpt2 holds 1,024 tokens: prompt 896 + output 128" in r.stderr
    sc = json.loads(r.stdout)["devices"][0]["phases"]["prefill"]["scenario"]
    assert sc["seq_len"] == 896
    one_line_error(run("profile", "--model", "gpt2", "--osl", "256", "--no-measure"),
                   "--isl 2048", "1024-token context")


@pytest.mark.parametrize("args,words", [
    (["--hw", "h100-sxm,v100-sxm2-32gb", "--weight-dtype", "bf16"], ["v100", "bf16"]),
    (["--isl", "131000"], ["--isl", "131072"]),
    (["--batches", "1,x"], ["--batches"]),
    (["--batch", "0"], ["--batch"]),
    (["--format", "xml"], ["--format"]),
    (["--measure-sections", "ceilings,gpu"], ["gpu"]),
    (["--bench", "/no/such.json"], ["--bench"]),
    (["--hw", "no-such-gpu"], ["no-such-gpu"]),
])
def test_mistakes_are_one_line_before_any_work(tmp_path, args, words):
    r = run("profile", *args, "-o", str(tmp_path / "r.html"), timeout=60)
    one_line_error(r, *words)
    assert list(tmp_path.iterdir()) == []


def test_missing_output_folder_fails_before_measuring(tmp_path):
    t0 = time.time()
    r = run("profile", "-f", "json", "-o", str(tmp_path / "nope" / "r.json"), timeout=60)
    one_line_error(r, "--output", "does not exist")
    assert time.time() - t0 < 30  # nothing was measured


def test_without_torch_the_error_names_the_extra(tmp_path):
    # torch made unimportable: find_spec sees None in sys.modules
    code = ("import sys; sys.modules['torch'] = None; from perfscope.cli import main; "
            "sys.argv = ['perfscope', 'profile', '-o', sys.argv[1]]; main()")
    e = {k: v for k, v in os.environ.items() if k != "PERFSCOPE_DEBUG"} | {
        "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "r.html")],
                       capture_output=True, text=True, env=e, timeout=60)
    one_line_error(r, "torch", "perfscope[measure]", "--no-measure")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_measured_profile_places_this_machine_beside_the_predictions(tmp_path):
    """A real measurement (quick) of a small model's ops on this machine."""
    pytest.importorskip("torch")
    out = tmp_path / "r.json"
    r = run("profile", "--model", "qwen2.5-0.5b", "--isl", "512", "--osl", "64", "-f", "json",
            "-o", str(out), timeout=600)
    assert r.returncode == 0, r.stderr
    d = json.loads(out.read_text())
    m = d["measured"]
    assert m["schema"] == "perfscope.bench/1"
    assert {c["name"].split(".")[0] for c in m["ceilings"]["values"]} >= {"gemm", "memory"}
    pts = m["ops"]["points"]
    assert pts and m["ops"]["model"] == "qwen2.5-0.5b"
    names = {o["name"] for ph in d["devices"][0]["phases"].values() for o in ph["ops"]}
    for p in pts:  # each joins an analytic op and carries its prediction on this machine
        assert p["stats"]["median_s"] > 0 and p["predicted_time_s"] > 0
        assert p["name"] in names
    bench = tmp_path / "bench.json"  # the same measurements, rendered into the HTML report
    bench.write_text(json.dumps(m))
    page = tmp_path / "r.html"
    r = run("profile", "--model", "qwen2.5-0.5b", "--bench", str(bench), "-o", str(page))
    assert r.returncode == 0, r.stderr
    html = page.read_text()
    assert 'id="measured"' in html and "measured roofline" in html
    assert all(p["name"] in html for p in pts)


def test_roofline_every_output(tmp_path):
    for suffix, magic in ((".svg", b"<?xml"), (".png", b"\x89PNG"), (".pdf", b"%PDF"),
                          (".html", b"<!DOCTYPE html>")):
        out = tmp_path / f"fig{suffix}"
        r = run("roofline", "--hw", "a100-sxm-80gb,h100-sxm", "--batch", "16", "-o", str(out))
        assert r.returncode == 0, r.stderr
        assert out.read_bytes().startswith(magic)
    r = run("roofline", "--phase", "decode", cwd=tmp_path)  # without -o: reports/
    assert r.returncode == 0, r.stderr
    assert [p.name for p in (tmp_path / "reports").iterdir()] == [
        "llama-3.1-8b_h100-sxm_decode_roofline.svg"]
    one_line_error(run("roofline", "-o", str(tmp_path / "fig.gif")), "--out", ".svg")
    one_line_error(run("roofline", "-o", str(tmp_path / "no" / "fig.svg")), "does not exist")


def test_recommendations_and_pareto_are_the_recommenders(tmp_path):
    """The report's advice is perfscope recommend for the profiled model on its first device,
    on the layout's GPU count (tp x pp), with the profile's lengths, engine and targets: the
    same search run directly gives the same top choice and Pareto front."""
    from perfscope.api import Scenario, load_hw, load_model
    from perfscope.cli.profile_report import pareto_figure, recommendations
    from perfscope.recommend import RecommendRequest, recommend
    from perfscope.report.study import build_study

    m, hw = load_model("llama-3.1-8b"), load_hw("h100-sxm")
    st = build_study(m, [hw], Scenario(tp=2), batch=8, isl=1024, osl=128, batches=(1, 8),
                     engine="sglang", tpot_target_s=0.03)
    recs = recommendations(st)
    direct = recommend(RecommendRequest(m, hw, 2, 1024, 128, None, 0.03, engine="sglang",
                                        max_concurrency=512))
    assert recs is not None and recs[0]["rule"] == "recommend.summary"
    assert "2 x NVIDIA H100" in recs[0]["message"] and "sglang" in recs[0]["message"]
    assert direct.message in recs[0]["message"]
    assert [r["rule"] for r in recs[1:]] == [r.rule for r in direct.recommendations]
    fig = pareto_figure(st)
    assert fig is not None
    front = next(t for t in fig["data"] if t.get("name") == "Pareto front")
    assert list(front["x"]) == pytest.approx([c.tokens_per_s_per_user for c in direct.pareto])
    # the report carries both sections
    out = tmp_path / "r.html"
    r = run("profile", "--no-measure", "--tp", "2", "--batch", "8", "--batches", "1,8",
            "--isl", "1024", "--osl", "128", "--engine", "sglang", "--tpot", "0.03",
            "-o", str(out))
    assert r.returncode == 0, r.stderr
    html = out.read_text()
    assert 'id="recommendations"' in html and 'id="pareto"' in html
    assert "recommend.summary" in html


def test_engine_and_targets_are_checked_first():
    one_line_error(run("profile", "--no-measure", "--engine", "tgi"), "--engine")
    one_line_error(run("profile", "--no-measure", "--tpot", "-1"), "--tpot")
