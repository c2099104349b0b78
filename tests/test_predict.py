"""perfscope predict: the perfscope.predict/1 contract, bad input, and the CLI in every format."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from perfscope import load_hw, load_model
from perfscope.errors import InputError
from perfscope.serving.engines import get_engine, load_engines
from perfscope.serving.predict import Layout, Workload, predict

CONTRACT = ("schema", "model", "hardware", "config", "ttft_s", "tpot_s", "e2e_s",
            "tokens_per_s_per_gpu", "tokens_per_s_per_user", "memory_per_gpu_bytes", "fits",
            "ceiling", "uncertainty")
ARGS = ["--model", "llama-3.1-8b", "--hw", "h100-sxm", "--isl", "1000", "--osl", "200",
        "--concurrency", "16"]


def test_contract_fields_and_their_meaning():
    m, hw = load_model("llama-3.1-70b"), load_hw("h100-sxm")
    p = predict(m, hw, Layout(tp=4), Workload(1024, 512, 32), engine="vllm",
                weight_dtype="fp8")
    d = p.to_json()
    for k in CONTRACT:
        assert k in d
    assert d["schema"] == "perfscope.predict/1"
    assert d["ceiling"] == "empirical" and d["fits"] is True
    # tpot follows the serving-benchmark convention: (e2e - ttft) / (osl - 1)
    assert d["tpot_s"] == pytest.approx((d["e2e_s"] - d["ttft_s"]) / (512 - 1))
    assert d["tokens_per_s_per_user"] == pytest.approx(1 / d["tpot_s"])
    # closed loop: 32 users each get 512 tokens per e2e, over 4 GPUs
    assert d["tokens_per_s_per_gpu"] == pytest.approx(32 * 512 / d["e2e_s"] / 4)
    assert d["config"]["weight_dtype"] == "fp8" and d["config"]["engine"] == "vllm"
    u = d["uncertainty"]
    assert u["engine"] == "vllm" and 0 < u["tpot_mape"] < 1
    assert u["tpot_s_range"][0] < d["tpot_s"] < u["tpot_s_range"][1]
    # the band is the prediction divided and multiplied by (1 + the engine's error)
    assert u["tpot_s_range"][0] * (1 + u["tpot_mape"]) == pytest.approx(d["tpot_s"])
    assert u["ttft_s_range"][1] == pytest.approx(d["ttft_s"] * (1 + u["ttft_mape"]))
    assert any("H100" in n for n in u["notes"])  # outside the calibration devices
    json.dumps(d, allow_nan=False)


def test_ttft_includes_queueing_and_grows_with_concurrency():
    m, hw = load_model("llama-3.1-8b"), load_hw("h100-sxm")
    ttft = [predict(m, hw, Layout(), Workload(4000, 200, c)).ttft_s for c in (1, 8, 64)]
    assert ttft[0] < ttft[1] < ttft[2]
    one = predict(m, hw, Layout(), Workload(4000, 200, 8))
    assert one.ttft_burst_s > one.ttft_s  # the whole burst queued is the worst case


@pytest.mark.parametrize("num_prompts", [16, 16 * 7, 1000])
def test_num_prompts_sets_how_much_of_the_run_is_the_first_wave(num_prompts):
    # a closed loop of c = 16 clients and N prompts: each client sends R = N / 16 requests, the
    # first of them in the queued burst, the other R - 1 staggered, so the run's mean TTFT is
    # (burst + (R - 1) x later) / R (no request waits for a KV slot at this concurrency)
    m, hw = load_model("llama-3.1-8b"), load_hw("h100-sxm")
    p = predict(m, hw, Layout(), Workload(1000, 200, 16, num_prompts=num_prompts))
    assert p.queue_s == 0.0 and p.ttft_burst_s > 2 * p.ttft_steady_s
    R = num_prompts / 16
    assert p.ttft_s == pytest.approx((p.ttft_burst_s + (R - 1) * p.ttft_steady_s) / R)
    b = p.to_json()["benchmark"]
    assert b["source"] == "num_prompts" and b["total_requests"] == num_prompts
    assert p.to_json()["config"]["num_prompts"] == num_prompts
    # unset, the calibration's convention applies (engines.toml [fit.benchmark])
    plain = predict(m, hw, Layout(), Workload(1000, 200, 16)).to_json()["benchmark"]
    assert plain["source"] == "calibration" and plain["num_prompts"] is None


def test_num_prompts_over_replicas_and_its_errors():
    m, hw = load_model("llama-3.1-8b"), load_hw("h100-sxm")
    # two replicas share the run: 8 clients and 50 prompts each, as one replica of that size
    two = predict(m, hw, Layout(dp=2), Workload(1000, 200, 16, num_prompts=100))
    one = predict(m, hw, Layout(), Workload(1000, 200, 8, num_prompts=50))
    assert two.ttft_s == pytest.approx(one.ttft_s)
    for w, match in ((Workload(1000, 200, 16, num_prompts=8), "below --concurrency 16"),
                     (Workload(1000, 200, 1, rate=2.0, num_prompts=8), "--rate"),
                     (Workload(1000, 200, 1, num_prompts=0), "--num-prompts 0")):
        with pytest.raises(InputError, match=match):
            predict(m, hw, Layout(), w)


def test_replicas_split_the_traffic():
    m, hw = load_model("llama-3.1-8b"), load_hw("h100-sxm")
    a = predict(m, hw, Layout(dp=2), Workload(1024, 256, 16))
    b = predict(m, hw, Layout(), Workload(1024, 256, 8))
    assert a.tpot_s == pytest.approx(b.tpot_s) and a.ttft_s == pytest.approx(b.ttft_s)
    assert a.tokens_per_s_per_gpu == pytest.approx(b.tokens_per_s_per_gpu)


def test_spec_ceiling_is_the_faster_bound():
    m, hw = load_model("llama-3.1-8b"), load_hw("h100-sxm")
    emp = predict(m, hw, Layout(), Workload(2048, 256, 16))
    spec = predict(m, hw, Layout(), Workload(2048, 256, 16), ceiling="spec")
    assert spec.tpot_s < emp.tpot_s and spec.ceiling == "spec"
    assert any("bound" in n for n in spec.uncertainty["notes"])


def test_extrapolation_notes_name_what_the_calibration_did_not_see():
    def notes(model: str, hw: str) -> list[str]:
        return predict(load_model(model), load_hw(hw), Layout(tp=8),
                       Workload(1024, 128, 8)).uncertainty["notes"]

    assert any("llama-3.1-8b was not among the calibration models" in n
               for n in notes("llama-3.1-8b", "h100-sxm"))
    assert any("H100" in n and "calibration devices" in n for n in notes("llama-3.1-8b",
                                                                       "h100-sxm"))
    # the rows ran Qwen3-235B's FP8 checkpoint: the bf16 one is the same model
    assert not any("calibration" in n for n in notes("qwen3-235b-a22b", "h200-sxm"))


def test_engines_differ_and_are_documented():
    tab = load_engines()
    assert {"neutral", "trtllm", "vllm", "sglang"} <= set(tab.engines)
    assert tab.fit_date and tab.source
    assert get_engine("TensorRT-LLM").name == "trtllm"
    assert not get_engine("sglang").mixed_batches and get_engine("vllm").chunked_prefill
    # vLLM's MoE decode streams every expert (observed on the calibration's rows), no other
    assert get_engine("vllm").moe_streams_all_experts == ("fp8",)
    assert not any(get_engine(e).moe_streams_all_experts for e in ("neutral", "trtllm",
                                                                      "sglang"))
    with pytest.raises(InputError, match="use one of"):
        get_engine("tgi")


def test_model_that_does_not_fit_says_so():
    p = predict(load_model("llama-3.1-405b"), load_hw("a100-sxm-80gb"), Layout(tp=2),
                Workload(1024, 256, 1))
    assert not p.fits and p.max_concurrency == 0
    assert any("does not fit" in n for n in p.uncertainty["notes"])


@pytest.mark.parametrize("kw, match", [
    (dict(workload=Workload(1024, 1, 1)), "--osl"),
    (dict(workload=Workload(0, 10, 1)), "--isl"),
    (dict(workload=Workload(1024, 10, 0)), "--concurrency"),
    (dict(workload=Workload(120000, 20000, 1)), "context"),
    (dict(layout=Layout(tp=3)), r"tp 3: .*\(--tp\)"),
])
def test_bad_input_is_one_clear_error(kw, match):
    m, hw = load_model("llama-3.1-8b"), load_hw("h100-sxm")
    args = dict(layout=Layout(), workload=Workload(1024, 128, 1)) | kw
    with pytest.raises(InputError, match=match):
        predict(m, hw, args["layout"], args["workload"])


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    e = dict(os.environ, COLUMNS="80") | (env or {})
    return subprocess.run([sys.executable, "-m", "perfscope", *args], capture_output=True,
                          text=True, env=e, timeout=120)


@pytest.mark.parametrize("fmt", ["table", "json", "csv"])
def test_cli_every_format_stdout_and_file(fmt, tmp_path):
    r = run("predict", *ARGS, "--format", fmt)
    assert r.returncode == 0, r.stderr
    out = tmp_path / f"p.{fmt}"
    r2 = run("predict", *ARGS, "--format", fmt, "-o", str(out))
    assert r2.returncode == 0 and r2.stdout == ""
    assert out.read_text() == r.stdout
    if fmt == "json":
        assert json.loads(r.stdout)["schema"] == "perfscope.predict/1"
    elif fmt == "csv":
        head, row = r.stdout.strip().splitlines()
        assert "ttft_s" in head.split(",") and len(row.split(",")) == len(head.split(","))
    else:
        assert "TTFT" in r.stdout and "TPOT" in r.stdout
        assert max(len(line) for line in r.stdout.splitlines()) <= 80


def test_cli_bad_input_one_line_no_traceback():
    r = run("predict", *ARGS[:4], "--osl", "1")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "--osl" in r.stderr
    r = run("predict", *ARGS, "--engine", "nope")
    assert r.returncode != 0 and "--engine" in r.stderr
    # 0 is refused, not read as the default of 1
    r = run("predict", *ARGS[:4], "--concurrency", "0")
    assert r.returncode == 2 and r.stdout == "" and "--concurrency 0" in r.stderr


def test_engines_file_is_strict(tmp_path):
    from perfscope.errors import SpecError
    from perfscope.serving.engines import engines_file, to_toml

    good = engines_file().read_text()
    bad = tmp_path / "typo.toml"
    bad.write_text(good.replace("max_num_seqs = 1024", "max_num_seq = 1024", 1))
    with pytest.raises(SpecError, match="max_num_seq"):
        load_engines(str(bad))
    wild = tmp_path / "wild.toml"
    wild.write_text(re.sub(r"\nbandwidth_efficiency = [0-9.e-]+", "\nbandwidth_efficiency = 7.0",
                           good, count=1))
    with pytest.raises(SpecError, match="physical range"):
        load_engines(str(wild))
    # what the calibration writes reads back to the same table
    again = tmp_path / "again.toml"
    again.write_text(to_toml(load_engines()))
    assert load_engines(str(again)).engines == load_engines().engines


def test_request_rate_is_an_open_loop():
    """--rate: the concurrency is what the rate sustains (Little's law over all replicas);
    the throughput is the arrival rate; too high a rate is a clear answer with the most the
    layout serves, not a queue growing without end."""
    m, hw = load_model("llama-3.1-70b"), load_hw("h100-sxm")
    p = predict(m, hw, Layout(tp=4, dp=2), Workload(1024, 512, rate=3.0))
    d = p.to_json()
    assert d["config"]["request_rate_per_s"] == 3.0 and d["config"]["concurrency"] is None
    assert d["config"]["in_flight"] == pytest.approx(3.0 * d["e2e_s"], rel=1e-4)
    assert d["tokens_per_s_per_gpu"] == pytest.approx(3.0 * 512 / 8, rel=1e-4)
    assert d["benchmark"]["kind"] == "open"
    json.dumps(d, allow_nan=False)
    with pytest.raises(InputError, match=r"--rate 500: .*at most .* over 2 replica"):
        predict(m, hw, Layout(tp=4, dp=2), Workload(1024, 512, rate=500.0))
    with pytest.raises(InputError, match="--rate"):
        predict(m, hw, Layout(tp=4), Workload(1024, 512, rate=-1.0))


def test_cli_rate_in_every_format(tmp_path):
    for fmt in ("table", "json", "csv"):
        r = run("predict", *ARGS[:8], "--rate", "2", "--format", fmt)
        assert r.returncode == 0, r.stderr
    assert "requests/s (Poisson)" in run("predict", *ARGS[:8], "--rate", "2").stdout
    r = run("predict", *ARGS, "--rate", "2")  # ARGS carries --concurrency
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1
    assert "--rate and --concurrency" in r.stderr


def test_cli_num_prompts_in_every_format():
    for fmt in ("table", "json", "csv"):
        r = run("predict", *ARGS, "--num-prompts", "160", "--format", fmt)
        assert r.returncode == 0, r.stderr
        if fmt == "table":
            assert "160 prompts in the run, 10 per client" in r.stdout
            assert "(--num-prompts)" in r.stdout
            assert max(len(line) for line in r.stdout.splitlines()) <= 80
        elif fmt == "json":
            assert json.loads(r.stdout)["config"]["num_prompts"] == 160
    r = run("predict", *ARGS, "--num-prompts", "4")  # ARGS carries --concurrency 16
    assert r.returncode == 2 and r.stdout == "" and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "--num-prompts 4" in r.stderr


def test_moe_efficiencies_apply_to_fine_grained_experts_only():
    """The engines' MoE efficiencies were fitted on DeepSeek-V3 and Qwen3-235B, whose experts
    are narrower than the hidden size; Mixtral's 14,336-wide experts are dense-sized GEMMs.
    Published check (LLM-025, gpt-fast README @32971d3, 8 x A100-80GB at 330 W): Mixtral-8x7B
    int8 weight-only on one GPU, batch 1, 97.92 tokens/s."""
    from perfscope.serving.fitting import fine_grained_experts

    assert fine_grained_experts(load_model("deepseek-v3"))
    assert fine_grained_experts(load_model("qwen3-235b-a22b-fp8"))
    assert not fine_grained_experts(load_model("mixtral-8x7b"))
    assert not fine_grained_experts(load_model("llama-3.1-8b"))
    p = predict(load_model("mixtral-8x7b"), load_hw("a100-sxm-80gb"), Layout(),
                Workload(8, 200, 1), weight_dtype="int8")
    assert 0.75 < (1 / p.tpot_s) / 97.92 < 1.25


def test_cli_default_lengths_fit_a_short_context():
    """GPT-2 holds 1,024 tokens: the default 1,024 + 1,024 becomes half the context each (said
    on stderr); lengths the user typed are refused instead."""
    r = run("predict", "--model", "gpt2", "--hw", "v100-sxm2", "--format", "json")
    assert r.returncode == 0, r.stderr
    c = json.loads(r.stdout)["config"]
    assert (c["isl"], c["osl"]) == (512, 512) and "gpt2 holds 1,024 tokens" in r.stderr
    r = run("predict", "--model", "gpt2", "--isl", "1000", "--osl", "100")
    assert r.returncode != 0 and "1024-token context" in r.stderr


def test_vllm_fp8_moe_streams_every_expert_and_says_so():
    """vLLM prices its fp8 experts as streamed whole each step (engines.toml): the decode
    step barely moves between 2 and 16 requests, where SGLang's grows with the experts the
    tokens touch (128 experts, top 8: 15 of them at 2 tokens, 82 at 16); the prediction
    says which behaviour it assumed."""
    m, hw = load_model("qwen3-235b-a22b-fp8"), load_hw("h200-sxm")

    def step(engine, c):
        p = predict(m, hw, Layout(tp=4), Workload(4000, 500, c), engine=engine)
        return p.decode_step_s, p.uncertainty["notes"]

    (v2, notes), (v16, _) = step("vllm", 2), step("vllm", 16)
    (s2, other), (s16, _) = step("sglang", 2), step("sglang", 16)
    assert v16 / v2 < 1.15 < s16 / s2
    assert any("streams every expert" in n for n in notes)
    assert not any("streams every expert" in n for n in other)


def test_uncertainty_band_stays_positive_where_the_error_exceeds_100_percent():
    """TensorRT-LLM's held-out TTFT error is above 100% (engines.toml): a band of
    prediction x (1 -+ error) would start below zero."""
    p = predict(load_model("llama-3.1-8b"), load_hw("h100-sxm"), Layout(),
                Workload(1024, 256, 1), engine="trtllm")
    u = p.uncertainty
    assert u["ttft_mape"] > 1
    assert 0 < u["ttft_s_range"][0] < p.ttft_s < u["ttft_s_range"][1]
