"""Terminal output a user can read at any width: COLUMNS respected, columns chosen by width,
numbers never wrapped or written in scientific notation, rows by share with subtotals by
kind, TTFT/TPOT named, ridge points, MLA/MoE shapes. Every command, every format, with and
without -o, through a pipe."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from perfscope.report import fmt as F

ROOT = Path(__file__).resolve().parents[1]
SCI = re.compile(r"\d\.?\d*[eE][+-]?\d")


def run(*args: str, columns: int | None = 80, cwd: Path = ROOT, env: dict | None = None):
    e = {k: v for k, v in os.environ.items() if k not in ("PERFSCOPE_DEBUG", "COLUMNS")}
    if columns:
        e["COLUMNS"] = str(columns)
    e.update(env or {})
    e["PYTHONPATH"] = str(ROOT)
    r = subprocess.run([sys.executable, "-m", "perfscope", *args], capture_output=True,
                       text=True, cwd=cwd, env=e, timeout=300)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def widest(text: str) -> int:
    return max((len(line) for line in text.splitlines()), default=0)


# ---------------------------------------------------------------- formatting

@pytest.mark.parametrize("value,unit,text", [
    (1.23e12, "FLOP", "1.23 TFLOP"), (999.7e9, "B/s", "1.00 TB/s"), (0.5, "", "0.500"),
    (12_345_678, "FLOP", "12.3 MFLOP"), (0, "FLOP", "0 FLOP"), (4.2e-5, "", "0.0000420")])
def test_si(value, unit, text):
    assert F.si(value, unit) == text


@pytest.mark.parametrize("value,text", [
    (0.00731, "7.31 ms"), (2.5e-7, "250 ns"), (3600.0, "3,600 s"), (0.99996e-3, "1.00 ms"),
    (5e-6, "5.00 µs")])
def test_seconds(value, text):
    assert F.seconds(value) == text


def test_bytes_never_print_an_exponent():
    assert F.nbytes(1002 * 2**20) == "0.979 GiB"  # not '1e+03 MiB'
    assert F.nbytes(80 * 2**30) == "80.0 GiB"
    for e in range(-12, 16):
        for m in (1.0, 3.3, 9.99):
            x = m * 10.0 ** e
            for text in (F.si(x, "B"), F.num(x), F.seconds(x), F.nbytes(x), F.pct(x)):
                assert not SCI.search(text), text


# ---------------------------------------------------------------- width

@pytest.mark.parametrize("columns", [60, 80, 120, 200])
def test_analyze_table_fits_the_width(columns):
    r = run("analyze", "--model", "qwen3-30b-a3b", "--phase", "decode", "--batch", "8",
            "--context-len", "1024", "--tp", "2", columns=columns)
    assert r.returncode == 0, r.stderr
    assert widest(r.stdout) <= columns
    ops = json.loads(run("analyze", "--model", "qwen3-30b-a3b", "--phase", "decode",
                         "--batch", "8", "--context-len", "1024", "--tp", "2",
                         "-f", "json").stdout)["ops"]
    for o in ops:  # every name whole, on one line with its share
        line = next(ln for ln in r.stdout.splitlines() if ln.strip().startswith(o["name"] + " "))
        assert re.search(r"\d+\.\d%|<0\.1%", line), line
    assert not SCI.search(r.stdout)
    wide = "FLOP/B" in r.stdout and "attainable" in r.stdout
    if columns >= 200:  # columns are chosen by width
        assert wide and "shape" in r.stdout
    if columns <= 80:
        assert not wide


def test_pipe_without_columns_is_a_wide_page():
    r = run("analyze", columns=None)
    assert r.returncode == 0 and "attainable" in r.stdout


def test_rows_by_share_with_subtotals_by_kind():
    r = run("analyze", "--phase", "decode", "--batch", "32", "--context-len", "4096",
            columns=200)
    rows = []
    text = r.stdout.splitlines()
    start = next(i for i, ln in enumerate(text) if set(ln.strip()) == {"-"})
    end = next(i for i, ln in enumerate(text) if ln.startswith(("TPOT", "TTFT")))
    for line in text[start + 1:end]:
        m = re.match(r"^(\s*)(\S+).*?\s(\d+\.\d)%", line)
        if m:
            rows.append((len(m.group(1)) > 0, m.group(2), float(m.group(3))))
    kinds = [(n, s) for child, n, s in rows if not child]
    assert [s for _, s in kinds] == sorted((s for _, s in kinds), reverse=True)
    assert {"gemm", "attention"} <= {n for n, _ in kinds}
    groups: list[list[float]] = []
    for child, _, s in rows:
        if not child:
            groups.append([s])
        else:
            groups[-1].append(s)
    for g in groups:
        children = g[1:]
        assert children == sorted(children, reverse=True)
        assert sum(children) == pytest.approx(g[0], abs=0.05 * len(children) + 0.05)


def test_step_lines_name_ttft_tpot_and_both_ceilings():
    d = run("analyze", "--phase", "decode", "--batch", "8").stdout
    assert "TPOT" in d and "spec ceilings (upper-bound speed)" in d
    assert "empirical ceilings (expected speed)" in d and "tokens/s per user" in d
    p = run("analyze", "--phase", "prefill").stdout
    assert "TTFT" in p and ("per GPU" in p or "(1 GPU)" in p)


# ---------------------------------------------------------------- every command

COMMANDS = [
    ["--help"], ["analyze", "--help"], ["profile", "--help"], ["roofline", "--help"],
    ["analyze"], ["analyze", "--batch", "1,8,64,256", "--phase", "decode"],
    ["analyze", "--weight-dtype", "bf16,fp8,int4", "--phase", "decode", "--batch", "8"],
    ["analyze", "--model", "llama-3.1-70b", "--phase", "decode", "--batch", "32",
     "--tp", "1,2,4,8"],
    ["hw", "list"], ["hw", "show", "h100-sxm"], ["hw", "links"], ["models", "list"],
    ["models", "show", "deepseek-v3"], ["models", "show", "qwen3-30b-a3b"],
]


@pytest.mark.parametrize("args", COMMANDS, ids=[" ".join(a) for a in COMMANDS])
def test_80_columns_through_a_pipe(args):
    r = run(*args)
    assert r.returncode == 0, r.stderr
    assert widest(r.stdout) <= 80 and widest(r.stderr) <= 80
    assert not SCI.search(r.stdout)


SPEC_COMMANDS = [["hw", "list"], ["hw", "show", "h100-sxm"], ["hw", "links"],
                 ["models", "list"], ["models", "show", "deepseek-v3"],
                 ["analyze", "--batch", "1,8"]]


@pytest.mark.parametrize("args", SPEC_COMMANDS, ids=[" ".join(a) for a in SPEC_COMMANDS])
@pytest.mark.parametrize("fmt", ["table", "json", "csv"])
def test_every_format_with_and_without_output(tmp_path, args, fmt):
    r = run(*args, "-f", fmt)
    assert r.returncode == 0, r.stderr
    out = tmp_path / f"out.{fmt}"
    w = run(*args, "-f", fmt, "-o", str(out))
    assert w.returncode == 0, w.stderr
    assert w.stdout == "" and out.is_file()
    text = out.read_text()
    if fmt == "json":
        assert json.loads(text) == json.loads(r.stdout)
    elif fmt == "csv":
        assert text == r.stdout and list(csv.DictReader(io.StringIO(text)))
    else:
        assert text.strip() and not SCI.search(text)
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # no temp files


def test_show_commands_default_to_the_same_format():
    hw = run("hw", "show", "h100-sxm").stdout
    model = run("models", "show", "llama-3.1-8b").stdout
    for text in (hw, model):
        with pytest.raises(ValueError):
            json.loads(text)  # a table, like every other command's default


def test_hw_show_prints_ridge_points():
    text = run("hw", "show", "h100-sxm").stdout
    ridge = 989.4e12 / 3.35e12  # bf16 dense tensor / HBM (spec)
    assert f"{ridge:.0f} FLOP/B" in text
    d = json.loads(run("hw", "show", "h100-sxm", "-f", "json").stdout)
    bf16 = next(r for r in d["ridge_points"] if r["dtype"] == "bf16" and r["unit"] == "tensor"
                and r["ceiling"] == "spec")
    assert bf16["intensity"] == pytest.approx(ridge)


def test_models_show_mla_and_moe_shapes():
    text = run("models", "show", "deepseek-v3").stdout
    # DeepSeek-V3 config.json: kv_lora_rank 512, qk_rope_head_dim 64, 61 layers, 256 experts
    assert "512" in text and "256 routed, top 8" in text
    per_token = 61 * (512 + 64) * 2  # latent + rotary key, 16-bit, every layer
    assert F.nbytes(per_token) in text
    d = json.loads(run("models", "show", "deepseek-v3", "-f", "json").stdout)
    assert d["mla"]["kv_lora_rank"] == 512 and d["moe"]["experts"] == 256
    assert d["kv_bytes_per_token_16bit"] == per_token
    q = json.loads(run("models", "show", "qwen3-30b-a3b", "-f", "json").stdout)
    assert q["moe"]["top_k"] == 8 and "mla" not in q


def test_models_list_shows_full_names():
    text = run("models", "list").stdout
    for p in (ROOT / "workloads" / "models").glob("*.json"):
        assert re.search(rf"^{re.escape(p.stem)}\s", text, re.M), p.stem


def test_version_and_short_help():
    from perfscope import __version__

    assert run("--version").stdout.strip() == f"perfscope {__version__}"
    h = run("-h")
    assert h.returncode == 0 and "profile" in h.stdout and "roofline" in h.stdout
    assert run("analyze", "-h").returncode == 0


# ---------------------------------------------------------------- analyze with lists

def test_sweep_json_and_csv():
    # Volta has no fp8 at all (not even as a storage format engines dequantize): refused
    d = json.loads(run("analyze", "--hw", "h100-sxm,v100-sxm2-32gb", "--phase", "decode",
                       "--batch", "1,64", "--weight-dtype", "fp16,fp8", "--tp", "2",
                       "-f", "json").stdout)
    assert d["schema"] == "perfscope.sweep/1"
    assert d["axes"] == {"hardware": ["h100-sxm", "v100-sxm2-32gb"], "batch": [1, 64],
                         "weight_dtype": ["fp16", "fp8"]}
    assert d["fixed"]["tp"] == 2 and len(d["points"]) == 8
    errs = [p for p in d["points"] if p["error"]]
    assert len(errs) == 2 and all("fp8" in p["error"] for p in errs)
    for p in d["points"]:
        if not p["error"]:
            assert p["tokens_per_s_per_gpu"] == pytest.approx(p["tokens_per_s"] / 2)
            assert p["tokens_per_s_per_user"] == pytest.approx(1 / p["time_s"])
    r = run("analyze", "--batch", "1,8", "-f", "csv")
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert len(rows) == 2 and "time_gemm_s" in rows[0] and "memory_total_bytes" in rows[0]


def test_sweep_table_marks_points_that_cannot_run():
    r = run("analyze", "--hw", "v100-sxm2-32gb", "--weight-dtype", "fp16,fp8", "--phase",
            "decode", "--batch", "8")
    assert r.returncode == 0, r.stderr
    assert "n/a" in r.stdout and "fp8" in r.stdout


@pytest.mark.parametrize("args,flag", [(["--batch", "1,x"], "--batch"),
                                       (["--batch", "8,0"], "--batch"),
                                       (["--weight-dtype", "bf16,fp9"], "--weight-dtype"),
                                       (["--hw", "h100-sxm,nope"], "nope")])
def test_bad_list_is_one_line(args, flag):
    r = run("analyze", *args)
    assert r.returncode != 0 and r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and flag in lines[0]
