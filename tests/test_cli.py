"""The public CLI as a real subprocess: error boundary, JSON/CSV contracts, spec files.
Expectations come from the contract and independent arithmetic, never from the program's output.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
H100_TOML = ROOT / "hw_specs" / "gpus" / "h100-sxm.toml"
LLAMA2_JSON = ROOT / "workloads" / "models" / "llama-2-7b.json"
KINDS = {"gemm", "attention", "norm", "elementwise", "softmax", "embedding", "comm"}
BUILTIN_GPUS = {"a100-pcie-80gb", "a100-sxm-40gb", "a100-sxm-80gb", "b200", "h100-nvl",
                "h100-pcie", "h100-sxm", "h200-nvl", "h200-sxm", "l40s", "mi300x",
                "v100-pcie-16gb", "v100-sxm2-16gb", "v100-sxm2-32gb"}


def cli(*args, env: dict | None = None, pre: tuple = ()):
    e = {k: v for k, v in os.environ.items() if k not in ("PERFSCOPE_DEBUG", "PERFSCOPE_SPEC_PATH")}
    e.update(env or {})
    return subprocess.run([sys.executable, *pre, "-m", "perfscope", *map(str, args)],
                          capture_output=True, text=True, env=e, cwd=ROOT, timeout=120)


def strict_json(text: str):
    def bad(c):
        raise AssertionError(f"non-finite number {c} in JSON")
    return json.loads(text, parse_constant=bad)


def ok_json(*args, **kw):
    r = cli(*args, **kw)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    return strict_json(r.stdout)


@functools.cache
def hw_show(name: str) -> dict:
    return ok_json("hw", "show", name, "--format", "json")


# ---------------------------------------------------------------- 1. the error boundary

def _write_bad_files(tmp: Path) -> None:
    text = H100_TOML.read_text()
    (tmp / "syntax.toml").write_text('schema = "perfscope.hw/1"\nname = [broken\n')
    no_mem = re.sub(r"(?ms)^\[memory\]\n.*?(?=^\[)", "", text)
    assert "[memory]" not in no_mem and "bandwidth_gb_s = 3350" not in no_mem
    (tmp / "partial.toml").write_text(no_mem)
    (tmp / "typo.toml").write_text(text.replace("bandwidth_gb_s = 3350", "bandwith_gb_s = 3350"))
    (tmp / "extra.toml").write_text(text.replace("bandwidth_gb_s = 3350",
                                                 "bandwidth_gb_s = 3350\nbandwith_gb_s = 3350"))
    (tmp / "binary.toml").write_bytes(b"\xff\xfe\x00not utf-8")
    cfg = json.loads(LLAMA2_JSON.read_text())
    (tmp / "syntax.json").write_text('{"model_type": "llama",\n')
    (tmp / "nohidden.json").write_text(json.dumps({k: v for k, v in cfg.items()
                                                   if k != "hidden_size"}))
    (tmp / "mamba.json").write_text(json.dumps(cfg | {"model_type": "mamba"}))
    (tmp / "binary.json").write_bytes(b"\xff\xfe\x00not utf-8")


# (id, args with {t} = tmp folder, substrings the one error line must contain)
BAD = [
    ("hw-syntax", ["--hw", "{t}/syntax.toml"], ["{t}/syntax.toml"]),
    ("hw-partial", ["--hw", "{t}/partial.toml"], ["{t}/partial.toml", "memory"]),
    ("hw-typo-key", ["--hw", "{t}/typo.toml"], ["{t}/typo.toml", "bandwith_gb_s"]),
    ("hw-extra-key", ["--hw", "{t}/extra.toml"], ["{t}/extra.toml", "bandwith_gb_s"]),
    ("hw-not-utf8", ["--hw", "{t}/binary.toml"], ["{t}/binary.toml"]),
    ("model-syntax", ["--model", "{t}/syntax.json"], ["{t}/syntax.json"]),
    ("model-partial", ["--model", "{t}/nohidden.json"], ["{t}/nohidden.json", "hidden_size"]),
    ("model-type", ["--model", "{t}/mamba.json"], ["{t}/mamba.json", "mamba", "llama"]),
    ("model-not-utf8", ["--model", "{t}/binary.json"], ["{t}/binary.json"]),
    ("batch-0", ["--batch", "0"], ["--batch"]),
    ("batch-neg", ["--batch", "-4"], ["--batch"]),
    ("batch-abc", ["--batch", "abc"], ["--batch"]),
    ("tp-0", ["--tp", "0"], ["--tp"]),
    ("seq-beyond-ctx", ["--model", "llama-2-7b", "--seq-len", "5000"], ["--seq-len", "4096"]),
    ("decode-beyond-ctx", ["--model", "llama-2-7b", "--phase", "decode", "--seq-len", "1",
                           "--context-len", "4096"], ["--context-len", "4097"]),
    ("a100-fp8-math", ["--hw", "a100-sxm-80gb", "--weight-dtype", "fp8", "--act-dtype", "fp8"],
     ["--act-dtype", "fp8"]),
    ("v100-bf16", ["--hw", "v100-sxm2-32gb", "--weight-dtype", "bf16"], ["--weight-dtype", "bf16"]),
    ("v100-kv-fp8", ["--hw", "v100-sxm2-32gb", "--kv-dtype", "fp8"], ["--kv-dtype", "fp8"]),
    ("dtype-fp9", ["--weight-dtype", "fp9"], ["--weight-dtype", "fp9"]),
    ("tp-3", ["--model", "llama-3.1-8b", "--tp", "3"], ["--tp"]),
    ("ep-dense", ["--model", "llama-3.1-8b", "--ep", "2"], ["--ep"]),
    ("hw-unknown", ["--hw", "no-such-gpu"], ["no-such-gpu", "h100-sxm", "mi300x"]),
    ("model-unknown", ["--model", "no-such-llm"], ["no-such-llm", "llama-3.1-8b", "gpt2"]),
    ("model-missing", ["--model", "{t}/missing/config.json"], ["{t}/missing/config.json"]),
    ("hw-missing", ["--hw", "{t}/missing.toml"], ["{t}/missing.toml"]),
    ("format-xml", ["--format", "xml"], ["--format", "xml"]),
    ("phase-training", ["--phase", "training"], ["--phase", "training"]),
    ("unknown-flag", ["--no-such-flag"], ["--no-such-flag"]),
]


def assert_one_line_error(r, expect: list[str]) -> None:
    assert "Traceback" not in r.stdout + r.stderr, r.stderr
    assert r.returncode != 0
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("perfscope: error:"), lines[0]
    for s in expect:
        assert s in lines[0], (s, lines[0])


@pytest.mark.parametrize("args,expect", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_input_one_line(tmp_path, args, expect):
    _write_bad_files(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    fill = [a.format(t=tmp_path) for a in args]
    r = cli("analyze", "--model", "llama-3.1-8b", "--seq-len", "512", *fill,
            "-o", out / "result.json")
    assert_one_line_error(r, [s.format(t=tmp_path) for s in expect])
    assert list(out.iterdir()) == []  # neither the file nor a temp file


def test_output_into_a_directory_is_one_line(tmp_path):
    r = cli("analyze", "--model", "gpt2", "--seq-len", "64", "--format", "json", "-o", tmp_path)
    assert_one_line_error(r, ["--output", str(tmp_path)])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args,expect", [
    (["hw", "show", "no-such-gpu"], ["no-such-gpu"]),
    (["models", "show", "no-such-llm"], ["no-such-llm"]),
    (["hw", "list", "--format", "xml"], ["--format"]),
])
def test_bad_input_other_commands(args, expect):
    assert_one_line_error(cli(*args), expect)


def test_tp_16_with_8_kv_heads_replicates():
    d = ok_json("analyze", "--model", "llama-3.1-8b", "--tp", "16", "--seq-len", "512",
                "--format", "json")
    assert d["scenario"]["tp"] == 16


# ---------------------------------------------------------------- 2. perfscope.analysis/1

NUM = (int, float)
SCENARIOS = {
    "dense-prefill": ["--model", "llama-3.1-8b", "--phase", "prefill", "--batch", "2",
                      "--seq-len", "1024"],
    "dense-decode": ["--model", "llama-3.1-8b", "--phase", "decode", "--batch", "16",
                     "--seq-len", "1", "--context-len", "2048"],
    "moe-prefill": ["--model", "qwen3-30b-a3b", "--phase", "prefill", "--batch", "1",
                    "--seq-len", "2048"],
    "moe-decode": ["--model", "qwen3-30b-a3b", "--phase", "decode", "--batch", "8",
                   "--seq-len", "1", "--context-len", "1024"],
    "mla-prefill": ["--model", "deepseek-v3", "--hw", "h200-sxm", "--tp", "8", "--phase",
                    "prefill", "--batch", "1", "--seq-len", "1024"],
    "mla-decode": ["--model", "deepseek-v3", "--hw", "h200-sxm", "--tp", "8", "--phase",
                   "decode", "--batch", "32", "--seq-len", "1", "--context-len", "4096"],
    "fp8-decode": ["--model", "llama-3.1-8b", "--weight-dtype", "fp8", "--kv-dtype", "fp8",
                   "--phase", "decode", "--batch", "64", "--seq-len", "1", "--context-len", "512"],
    "tp2-pp2-decode": ["--model", "llama-3.1-8b", "--tp", "2", "--pp", "2", "--phase", "decode",
                       "--batch", "4", "--seq-len", "1", "--context-len", "1000"],
    "tp2-pp2-prefill": ["--model", "qwen3-30b-a3b", "--tp", "2", "--pp", "2", "--phase",
                        "prefill", "--batch", "2", "--seq-len", "512"],
}


def _flag(args: list[str], name: str, default):
    return type(default)(args[args.index(name) + 1]) if name in args else default


def check_types(d: dict) -> None:
    def typed(obj, spec, where):
        assert isinstance(obj, dict), where
        for k, t in spec.items():
            assert k in obj, f"{where}.{k} missing"
            v = obj[k]
            if t is bool:
                ok = isinstance(v, bool)
            else:
                ok = (v is None or isinstance(v, int)) if t == "int|null" else isinstance(v, t)
                ok = ok and not isinstance(v, bool)
            assert ok, f"{where}.{k}={v!r} not {t}"
    assert d["schema"] == "perfscope.analysis/1"
    typed(d["model"], {"name": str, "params": int, "active_params": int}, "model")
    typed(d["hardware"], {"name": str}, "hardware")
    typed(d["scenario"], {"phase": str, "batch": int, "seq_len": int, "context_len": int,
                          "tp": int, "pp": int}, "scenario")
    typed(d["totals"], {"flops": NUM, "bytes": NUM, "time_s": NUM, "bound": str,
                        "flops_by_kind": dict, "bytes_by_kind": dict}, "totals")
    typed(d["memory"], {"weights_bytes": NUM, "kv_cache_bytes": NUM, "activation_peak_bytes": NUM,
                        "total_bytes": NUM, "capacity_bytes": NUM, "fits": bool}, "memory")
    assert isinstance(d["ops"], list) and d["ops"]
    for op in d["ops"]:
        typed(op, {"name": str, "kind": str, "layer": "int|null", "count": int, "flops": NUM,
                   "bytes_read": NUM, "bytes_written": NUM, "intensity": NUM,
                   "attainable_flops_per_s": NUM, "time_s": NUM, "bound": str}, op["name"])
        assert op["kind"] in KINDS and op["bound"] in {"memory", "compute", "comm"}, op
        assert op["count"] >= 1
    assert d["totals"]["bound"] in {"memory", "compute", "comm"}
    for by in ("flops_by_kind", "bytes_by_kind"):
        assert set(d["totals"][by]) <= KINDS
        assert all(isinstance(v, NUM) for v in d["totals"][by].values())


def close(a: float, b: float, rel: float = 1e-9) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-30)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_analysis_contract(name):
    args = SCENARIOS[name]
    d = ok_json("analyze", *args, "--format", "json")
    check_types(d)
    hw = hw_show(_flag(args, "--hw", "h100-sxm"))
    sc, t, mem, ops = d["scenario"], d["totals"], d["memory"], d["ops"]
    tp, pp = _flag(args, "--tp", 1), _flag(args, "--pp", 1)
    phase = _flag(args, "--phase", "prefill")
    assert (sc["phase"], sc["batch"], sc["seq_len"], sc["tp"], sc["pp"]) == (
        phase, _flag(args, "--batch", 1), _flag(args, "--seq-len", 0), tp, pp)
    if phase == "decode":
        assert sc["context_len"] == _flag(args, "--context-len", 0)
    assert d["hardware"]["name"] == hw["name"]
    assert 0 < d["model"]["active_params"] <= d["model"]["params"]
    if name.startswith(("moe", "mla")):
        assert d["model"]["active_params"] < d["model"]["params"] / 5

    op_flops = sum(o["flops"] * o["count"] for o in ops)
    op_bytes = sum((o["bytes_read"] + o["bytes_written"]) * o["count"] for o in ops)
    assert close(t["time_s"], sum(o["time_s"] * o["count"] for o in ops))
    if pp == 1:
        assert close(t["flops"], op_flops) and close(t["bytes"], op_bytes)
        assert close(sum(t["flops_by_kind"].values()), t["flops"])
        assert close(sum(t["bytes_by_kind"].values()), t["bytes"])
    else:  # the busiest of pp stages holds at least 1/pp of the work, at most all of it
        assert op_flops / pp * (1 - 1e-9) <= t["flops"] <= op_flops * (1 + 1e-9)
    assert t["time_s"] > 0 and t["flops"] > 0 and t["bytes"] > 0
    if tp > 1 or pp > 1:
        assert any(o["kind"] == "comm" and o["time_s"] > 0 for o in ops)

    peaks = {p["dtype"]: max(p["tensor_dense_flops_per_s"] or 0, p["vector_flops_per_s"] or 0)
             for p in hw["peaks"]}
    bw = hw["memory_bandwidth_bytes_s"]
    for o in ops:
        b = o["bytes_read"] + o["bytes_written"]
        if b > 0:
            assert close(o["intensity"], o["flops"] / b), o["name"]
        if o["kind"] == "comm":
            continue
        peak = peaks.get(o.get("dtype"), max(peaks.values()))
        assert 0 <= o["attainable_flops_per_s"] <= peak * (1 + 1e-9), o["name"]
        assert o["attainable_flops_per_s"] <= o["intensity"] * bw * (1 + 1e-9), o["name"]
        assert o["time_s"] >= b / bw * (1 - 1e-9), o["name"]  # not faster than HBM
        assert o["time_s"] >= o["flops"] / peak * (1 - 1e-9), o["name"]

    assert close(mem["total_bytes"],
                 mem["weights_bytes"] + mem["kv_cache_bytes"] + mem["activation_peak_bytes"])
    assert close(mem["capacity_bytes"], hw["memory_bytes"])
    assert mem["fits"] == (mem["total_bytes"] <= 0.9 * mem["capacity_bytes"])  # default reserve


def test_dense_memory_matches_hand_arithmetic():
    # Llama-3.1-8B: 32 layers, 8 KV heads x 128, bf16; 8,030,261,248 params (HF safetensors)
    d = ok_json("analyze", *SCENARIOS["dense-decode"], "--format", "json")
    assert d["model"]["params"] == 8_030_261_248
    assert close(d["memory"]["weights_bytes"], 2 * 8_030_261_248, 1e-3)
    per_token = 2 * 32 * 8 * 128 * 2  # K and V, layers, KV heads, head_dim, bytes
    assert close(d["memory"]["kv_cache_bytes"], per_token * (2048 + 1) * 16)
    p = ok_json("analyze", *SCENARIOS["dense-prefill"], "--format", "json")
    assert close(p["memory"]["kv_cache_bytes"], per_token * 1024 * 2)


# ---------------------------------------------------------------- 3. other formats, -o

FMT_ARGS = ["analyze", *SCENARIOS["moe-decode"]]


def test_csv_and_table_show_every_op():
    doc = ok_json(*FMT_ARGS, "--format", "json")
    ops = doc["ops"]
    r = cli(*FMT_ARGS, "--format", "csv")
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    op_rows = [row for row in rows if row["row"] == "op"]
    assert len(op_rows) == len(ops)
    cols = {"name", "kind", "layer", "count", "flops", "bytes_read", "bytes_written",
            "intensity", "attainable_flops_per_s", "time_s", "bound"}
    assert cols <= set(rows[0])
    assert [row["name"] for row in op_rows] == [o["name"] for o in ops]
    for row, o in zip(op_rows, ops, strict=True):
        assert float(row["time_s"]) == pytest.approx(o["time_s"], rel=1e-9)
    # the CSV carries the step's totals and memory, not only op rows
    total = next(row for row in rows if row["row"] == "total")
    assert float(total["time_s"]) == pytest.approx(
        sum(o["time_s"] * o["count"] for o in ops), rel=1e-9)
    assert total["bound"] == doc["totals"]["bound"]
    kinds = {row["name"]: float(row["total_time_s"]) for row in rows if row["row"] == "kind"}
    for kind in {o["kind"] for o in ops}:
        assert kinds[kind] == pytest.approx(
            sum(o["time_s"] * o["count"] for o in ops if o["kind"] == kind), rel=1e-9)
    mem = {row["name"]: row for row in rows if row["row"] == "memory"}
    parts = sum(float(mem[k]["bytes"]) for k in ("weights", "kv_cache", "activation_peak"))
    assert float(mem["total"]["bytes"]) == pytest.approx(parts, rel=1e-12)
    assert float(mem["capacity"]["bytes"]) == doc["memory"]["capacity_bytes"]
    assert mem["total"]["fits"] == str(doc["memory"]["fits"])
    r = cli(*FMT_ARGS, "--format", "table")
    assert r.returncode == 0, r.stderr
    assert [o["name"] for o in ops if o["name"] not in r.stdout] == []  # none cut short


def test_output_file_is_the_stdout_json(tmp_path):
    stdout_json = ok_json(*FMT_ARGS, "--format", "json")
    r = cli(*FMT_ARGS, "--format", "json", "-o", tmp_path / "out.json")
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temp file left
    assert strict_json((tmp_path / "out.json").read_text()) == stdout_json


# ---------------------------------------------------------------- 4. built-in and user specs

def test_builtin_lists_and_h100_peak():
    assert {r["name"] for r in ok_json("hw", "list", "--format", "json")} >= BUILTIN_GPUS
    names = {r["name"] for r in ok_json("models", "list", "--format", "json")}
    stems = {p.stem for p in (ROOT / "workloads" / "models").glob("*.json")}
    assert len(stems) >= 10 and stems <= names
    bf16 = next(p for p in hw_show("h100-sxm")["peaks"] if p["dtype"] == "bf16")
    dense = bf16["tensor_dense_flops_per_s"]
    assert dense == pytest.approx(989.4e12, rel=0.01)  # NVIDIA: 1,979 "with sparsity" / 2
    assert bf16["tensor_sparse_flops_per_s"] == pytest.approx(2 * dense, rel=1e-3)


RUN = ["analyze", "--model", "llama-3.1-8b", "--phase", "decode", "--batch", "4",
       "--seq-len", "1", "--context-len", "512", "--tp", "2", "--format", "json"]


def test_user_toml_path_equals_builtin(tmp_path):
    mine = tmp_path / "copy.toml"
    shutil.copy(H100_TOML, mine)
    builtin = ok_json(*RUN, "--hw", "h100-sxm")
    user = ok_json(*RUN, "--hw", mine)
    assert user["totals"] == builtin["totals"] and user["memory"] == builtin["memory"]
    assert user["ops"] == builtin["ops"]


def test_spec_path_device(tmp_path):
    text = re.sub(r'(?m)^name = "h100-sxm"$', 'name = "my-gpu"', H100_TOML.read_text())
    text = re.sub(r"(?m)^aliases = .*\n", "", text)
    (tmp_path / "my-gpu.toml").write_text(text)
    env = {"PERFSCOPE_SPEC_PATH": str(tmp_path)}
    d = ok_json(*RUN, "--hw", "my-gpu", env=env)
    assert d["hardware"]["name"] == "my-gpu"
    assert d["totals"] == ok_json(*RUN, "--hw", "h100-sxm")["totals"]
    assert "my-gpu" in {r["name"] for r in ok_json("hw", "list", "--format", "json", env=env)}


# ---------------------------------------------------------------- 5. help and cold start

def test_help_and_no_heavy_imports_on_the_analytic_path():
    h = cli("analyze", "--help")
    assert h.returncode == 0 and "--model" in h.stdout and "--hw" in h.stdout
    r = cli("analyze", "--model", "gpt2", "--seq-len", "128", "--format", "json",
            pre=("-X", "importtime"))
    assert r.returncode == 0, r.stderr[-2000:]
    strict_json(r.stdout)
    mods = {line.rsplit("|", 1)[1].strip() for line in r.stderr.splitlines()
            if line.startswith("import time:") and line.count("|") == 2}
    assert "perfscope.analysis" in mods  # the parse works
    tops = {m.split(".")[0] for m in mods}
    assert not tops & {"torch", "numpy", "pandas"}, tops & {"torch", "numpy", "pandas"}


# ---------------------------------------------------------------- scenario files

@pytest.mark.parametrize("path", sorted((ROOT / "workloads" / "scenarios").glob("*.toml")))
def test_builtin_scenarios_run_with_their_values(path):
    import tomllib

    spec = tomllib.loads(path.read_text())
    d = ok_json("analyze", "--scenario", path.stem, "--format", "json")
    assert d["model"]["name"] == spec["model"] and d["hardware"]["name"] == spec["hw"]
    for key in ("phase", "batch"):
        assert d["scenario"][key] == spec[key]
    if spec["phase"] == "decode":
        assert d["scenario"]["context_len"] == spec["context_len"]


def test_scenario_flags_override_the_file(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text('model = "llama-2-7b"\nhw = "a100-sxm-80gb"\nphase = "decode"\nbatch = 4\n'
                 'context_len = 1000\nkv_dtype = "int8"\n')
    d = ok_json("analyze", "--scenario", f, "--batch", "16", "--format", "json")
    assert d["scenario"]["batch"] == 16 and d["scenario"]["context_len"] == 1000
    assert d["scenario"]["kv_dtype"] == "int8" and d["model"]["name"] == "llama-2-7b"
    # Llama-2-7B: 32 layers x 2 x 32 heads x 128 x 1 byte per cached token
    assert d["memory"]["kv_cache_bytes"] == 16 * 1001 * 32 * 2 * 32 * 128


def test_scenario_file_with_unknown_key_is_one_line(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text('model = "llama-2-7b"\nhw = "a100-sxm-80gb"\nbatchsize = 4\n')
    r = cli("analyze", "--scenario", f)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "batchsize" in lines[0] and str(f) in lines[0]


def test_hw_links_lists_the_interconnects_with_their_published_rates():
    rows = {r["name"]: r for r in ok_json("hw", "links", "--format", "json")}
    assert {"pcie3-x16", "pcie4-x16", "pcie5-x16", "nvlink2", "nvlink3", "nvlink4", "nvlink5",
            "ib-hdr", "ib-ndr"} <= set(rows)
    # per direction per GPU: NVLink 4 450 GB/s (DS-097), PCIe 5.0 x16 63 GB/s (DS-104)
    assert rows["nvlink4"]["bandwidth_bytes_s"] == 450e9
    assert rows["pcie5-x16"]["bandwidth_bytes_s"] == pytest.approx(63e9, rel=0.01)


def test_default_lengths_are_cut_to_a_short_context():
    """GPT-2 holds 1,024 tokens: the default 2,048-token prompt is cut to fit (said on
    stderr); a length the user typed is refused instead."""
    r = cli("analyze", "--model", "gpt2", "--hw", "h100-sxm", "--format", "json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["scenario"]["seq_len"] == 1024
    assert "gpt2 holds 1,024 tokens" in r.stderr
    r = cli("analyze", "--model", "gpt2", "--hw", "h100-sxm", "--phase", "decode",
            "--format", "json")
    assert json.loads(r.stdout)["scenario"]["context_len"] == 1023
    r = cli("analyze", "--model", "gpt2", "--hw", "h100-sxm", "--seq-len", "2048")
    assert r.returncode == 2 and "1024-token context" in r.stderr
