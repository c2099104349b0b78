"""One set of defaults and validation for the Python API and the CLI (issue 6, item 9)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from perfscope import Scenario, analyze, load_hw, load_model
from perfscope.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


def test_package_docstring_example_runs():
    # perfscope/__init__.py shows exactly this call
    a = analyze(load_model("llama-3.1-8b"), load_hw("h100-sxm"), Scenario(phase="decode"))
    assert a.scenario.context_len == 2048  # the documented default context
    assert a.scenario.tokens_after == 2049


def test_defaults_are_the_documented_ones():
    s = Scenario()
    assert (s.phase, s.batch, s.seq_len, s.context_len) == ("prefill", 1, 2048, 0)
    assert Scenario(phase="decode", seq_len=500).context_len == 500  # decode: seq_len cached
    assert Scenario(phase="chunked_prefill").context_len == 0
    assert Scenario(phase="decode", context_len=7).context_len == 7


def test_cli_and_api_agree_on_defaults():
    r = subprocess.run([sys.executable, "-m", "perfscope", "analyze", "--phase", "decode",
                        "--format", "json"], capture_output=True, text=True, cwd=ROOT,
                       check=True)
    cli = json.loads(r.stdout)
    api = analyze(load_model("llama-3.1-8b"), load_hw("h100-sxm"),
                  Scenario(phase="decode")).to_json()
    assert cli["scenario"] == api["scenario"]
    assert cli["totals"]["time_s"] == api["totals"]["time_s"]


@pytest.mark.parametrize(("kw", "words"), [
    (dict(batch=-3), ["batch -3", "whole number >= 1", "(--batch)"]),
    (dict(batch=2.5), ["batch 2.5", "(--batch)"]),
    (dict(batch=True), ["batch True"]),
    (dict(tp=0), ["tp 0", "(--tp)"]),
    (dict(attn_dp=0), ["attn_dp 0", "(--attn-dp)"]),
    (dict(seq_len=0), ["seq_len 0", "(--seq-len)"]),
    (dict(phase="training"), ["phase 'training'", "prefill, decode", "(--phase)"]),
    (dict(phase="decode", context_len=0), ["context_len 0", "cached token", "(--context-len)"]),
    (dict(context_len=100), ["context_len 100", "chunked_prefill"]),
    (dict(weight_dtype="fp9"), ["weight_dtype 'fp9'", "(--weight-dtype)"]),
    (dict(kv_dtype="int4"), ["kv_dtype 'int4'", "not valid here", "(--kv-dtype)"]),
    (dict(memory_reserve=1.0), ["memory_reserve 1.0", "(--reserve)"]),
    (dict(group_size=0), ["group_size 0", "(--group-size)"]),
    (dict(attention="paged"), ["attention 'paged'", "(--attention)"]),
    (dict(ceiling="measured"), ["ceiling 'measured'", "(--ceiling)"]),
])
def test_bad_values_fail_on_construction_naming_the_field(kw, words):
    with pytest.raises(InputError) as e:
        Scenario(**kw)
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, (w, msg)


def test_values_are_normalised():
    s = Scenario(batch=np.int64(4), weight_dtype="BFloat16", kv_dtype="e4m3")
    assert s.batch == 4 and type(s.batch) is int
    assert (s.weight_dtype, s.kv_dtype) == ("bf16", "fp8")


def test_model_dependent_errors_name_the_field():
    with pytest.raises(InputError, match=r"tp 3: .*attention heads.*\(--tp\)"):
        analyze(load_model("llama-3.1-8b"), load_hw("h100-sxm"), Scenario(tp=3))
    with pytest.raises(InputError, match=r"seq_len 5000: 5000 tokens exceed the 4096"):
        analyze(load_model("llama-2-7b"), load_hw("h100-sxm"), Scenario(seq_len=5000))


def test_short_reprs_say_what_matters():
    a = analyze(load_model("llama-3.1-70b"), load_hw("h100-sxm"),
                Scenario(phase="decode", batch=8, context_len=1024))
    r = repr(a)
    assert r.startswith("Analysis(llama-3.1-70b on ") and len(r) < 200
    assert "memory-bound" in r and "does NOT fit" in r and "ms" in r
    m = repr(load_model("qwen3-30b-a3b"))
    assert "30.53B params" in m and "48 layers" in m and "MoE 128x top-8" in m and len(m) < 120
