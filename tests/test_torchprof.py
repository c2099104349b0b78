"""perfscope profile --torch-model / --module on CPU: a Llama-style model (2 layers, scaled
widths) and Qwen2.5-0.5B at its real widths (2 layers), prefill and decode, built with
transformers from their configs with random weights.

The FLOP checks are against hand derivations written here (2 FLOPs per multiply-add over the
shapes of the config), and the profiled counts (torch's FlopCounterMode) must equal the
analytic ones op by op. Timings are not asserted (a shared CPU is noisy); that measured and
predicted times sit side by side, that the time adds up and that the trace opens are.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from perfscope.analysis import analyze  # noqa: E402
from perfscope.measure.torchprof.profile import (  # noqa: E402
    ProfileOptions,
    fit_from_profiles,
    profile_module,
    profile_transformers,
)
from perfscope.specs.loading import load_hw  # noqa: E402
from perfscope.specs.model import model_dirs  # noqa: E402

# Llama-3.1-8B's config with scaled widths: GQA 4:1, head_dim 128, SwiGLU, llama3 rope
H, HEADS, KV, D, I, V, L = 512, 4, 1, 128, 1792, 4096, 2
B, S, C = 2, 32, 48  # batch, prompt, cached tokens before the decode step
OPTS = dict(batch=B, seq_len=S, context_len=C, warmup=1, repeat=3, threads=1, device="cpu")
# a CPU-like spec for the predictions (the --hw path; other tests take the quick measurement)
SPEC = """schema = "perfscope.hw/1"
name = "test-cpu"
display_name = "test CPU"
vendor = "test"
[memory]
capacity_gb = 16
bandwidth_gb_s = 20
source = "test"
[chip]
sm_count = 2
l2_mib = 32
source = "test"
[peak.fp32]
vector_tflops = 0.1
source = "test"
"""


def _llama_config(tmp: Path) -> Path:
    cfg = json.loads((model_dirs()[0] / "llama-3.1-8b.json").read_text())
    cfg.update(hidden_size=H, num_attention_heads=HEADS, num_key_value_heads=KV, head_dim=D,
               intermediate_size=I, vocab_size=V, num_hidden_layers=L)
    path = tmp / "llama-style.json"
    path.write_text(json.dumps(cfg))
    return path


@pytest.fixture(scope="module")
def no_local_spec(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("PERFSCOPE_LOCAL_HW", str(tmp_path_factory.mktemp("hw") / "none.toml"))
    yield
    mp.undo()


@pytest.fixture(scope="module")
def llama_cfg(tmp_path_factory) -> Path:
    return _llama_config(tmp_path_factory.mktemp("cfg"))


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hw") / "test-cpu.toml"
    path.write_text(SPEC)
    return path


@pytest.fixture(scope="module")
def eager(llama_cfg, spec_file):
    return profile_transformers(str(llama_cfg), ProfileOptions(
        attn="eager", trace=True, hw=str(spec_file), **OPTS))


@pytest.fixture(scope="module")
def sdpa(llama_cfg, spec_file):
    return profile_transformers(str(llama_cfg), ProfileOptions(attn="sdpa", hw=str(spec_file),
                                                               **OPTS))


def _rows(result, phase):
    return {o["name"]: o for o in result.to_json()["ops"] if o["phase"] == phase}


def _hand_gemm_flops(tokens: int, logits_rows: int) -> dict[str, float]:
    """2 x rows x in x out per projection, times the layers."""
    return {"attn.qkv_proj": 2 * tokens * H * (HEADS + 2 * KV) * D * L,
            "attn.o_proj": 2 * tokens * HEADS * D * H * L,
            "mlp.gate_up_proj": 2 * tokens * H * 2 * I * L,
            "mlp.down_proj": 2 * tokens * I * H * L,
            "lm_head": 2 * logits_rows * H * V}  # last position of each sequence only


@pytest.mark.parametrize(("phase", "tokens", "keys"), [("prefill", B * S, S),
                                                       ("decode", B, C + 1)])
def test_eager_gemm_and_attention_flops_equal_analytic(eager, phase, tokens, keys):
    rows = _rows(eager, phase)
    counted = [r for r in rows.values() if r["kind"] in ("gemm", "attention")]
    assert {r["name"] for r in counted} == {*_hand_gemm_flops(1, 1), "attn.score",
                                            "attn.value"}
    for r in counted:
        assert r["flops_check"] == "equal", r
        assert r["profiled_flops"] == r["analytic_flops"]
    for name, flops in _hand_gemm_flops(tokens, B).items():
        assert rows[name]["profiled_flops"] == flops, name
    # eager attention: the full new-tokens x keys score matrix, QK^T then PV
    per = 2 * B * HEADS * (tokens // B) * keys * D * L
    assert rows["attn.score"]["profiled_flops"] == per
    assert rows["attn.value"]["profiled_flops"] == per


def test_sdpa_flops_against_the_causal_analytic_count(sdpa):
    pre, dec = _rows(sdpa, "prefill"), _rows(sdpa, "decode")
    for name, flops in _hand_gemm_flops(B * S, B).items():
        assert pre[name]["profiled_flops"] == pre[name]["analytic_flops"] == flops
    # torch's SDPA formula counts the whole S x S square (QK^T and PV); the analytic flash
    # count is causal: query i sees i + 1 keys -> S(S+1)/2 of the S^2 products
    square = 2 * B * HEADS * S * S * 2 * D * L
    core = pre["attn.core"]
    assert core["profiled_flops"] == square
    assert core["analytic_flops"] == pytest.approx(square * (S + 1) / (2 * S), rel=1e-12)
    assert core["flops_check"] == "differs" and "causal" in core["note"]
    # one query per sequence in decode: nothing is masked, the counts agree
    assert dec["attn.core"]["profiled_flops"] == 2 * B * HEADS * (C + 1) * 2 * D * L
    assert dec["attn.core"]["flops_check"] == "equal"
    assert any("sdpa_flop_count" in n for n in sdpa.notes)


@pytest.mark.parametrize("phase", ["prefill", "decode"])
def test_measured_and_predicted_side_by_side(eager, spec_file, phase):
    j = eager.to_json()
    ph = next(p for p in j["phases"] if p["phase"] == phase)
    rows = [o for o in j["ops"] if o["phase"] == phase]
    analytic = [o for o in rows if o["predicted_time_s"] is not None]
    # the same scenario analysed independently gives the same predictions, op by op
    a = analyze(_spec(eager), load_hw(str(spec_file)), _scenario(ph))
    assert [o["name"] for o in analytic] == [p.op.name for p in a.points]
    for o, p in zip(analytic, a.points, strict=True):
        assert o["predicted_time_s"] == pytest.approx(p.time_s * p.op.count, rel=1e-12)
        assert o["measured_time_s"] > 0 and o["calls"] > 0, o["name"]  # every op was seen
        assert o["count"] == L or o["name"] in ("embed", "final_norm", "lm_head")
    framework = {o["name"]: o for o in rows if o["predicted_time_s"] is None}
    assert "framework.overhead" in framework and "framework.kv_cache" in framework
    assert "framework.other" not in framework  # every Llama module and op is recognised
    # the rows add up to the uninstrumented step (the overhead row takes the rest)
    others = sum(o["measured_time_s"] for o in rows if o["name"] != "framework.overhead")
    step = ph["step_time_s"]["median_s"]
    assert framework["framework.overhead"]["measured_time_s"] == pytest.approx(
        max(0.0, step - others), rel=1e-9, abs=1e-12)
    assert ph["predicted_time_s"] == pytest.approx(a.totals.time_s, rel=1e-12)
    assert set(ph["efficiency_by_kind"]) >= {"gemm", "attention", "norm"}


def _spec(result):
    from perfscope.measure.torchprof.build import hf_config_dict
    from perfscope.specs.model import model_from_config, read_config

    return model_from_config(hf_config_dict(read_config(Path(result.model["config"])), None),
                             result.model["name"])


def _scenario(ph):
    from perfscope.specs.scenario import Scenario

    s = ph["scenario"]
    return Scenario(phase=s["phase"], batch=s["batch"], seq_len=s["seq_len"],
                    context_len=s["context_len"], weight_dtype="fp32", act_dtype="fp32",
                    kv_dtype="fp32", attention=s["attention"], fused_norm=s["fused_norm"])


def test_trace_opens_in_a_trace_viewer(eager):
    data = json.loads(eager.trace_json)
    assert isinstance(data["traceEvents"], list) and data["traceEvents"]
    names = {e.get("name", "") for e in data["traceEvents"]}
    assert {f"perfscope.step::{p}#{i}" for p in ("prefill", "decode") for i in range(3)} <= names
    assert "perfscope.module::model.layers.1.self_attn.q_proj" in names


def test_modules_and_aten_ops_tables(eager):
    j = eager.to_json()
    mods = {(m["phase"], m["module"]): m for m in j["modules"]}
    q = mods[("prefill", "model.layers.0.self_attn.q_proj")]
    assert q["type"] == "Linear" and q["flops"] == 2 * B * S * H * HEADS * D
    assert q["bytes"] == 4 * (B * S * H + H * HEADS * D + B * S * HEADS * D)  # x, W, y fp32
    attn = mods[("prefill", "model.layers.0.self_attn")]
    assert attn["time_s"] >= q["time_s"]  # a module's time includes its children's
    assert any(a["op"] == "aten::linear" and a["calls"] == 7 * L + 1 for a in j["aten_ops"]
               if a["phase"] == "prefill")


def test_calibration_from_profiles_applies_back(eager, sdpa, tmp_path):
    cal = fit_from_profiles([eager, sdpa])
    assert cal.hardware == eager.hardware["name"] and cal.dtype == "fp32"
    assert {"gemm", "attention", "norm", "elementwise"} <= set(cal.kinds)
    assert cal.fit_error["steps"] == 4
    # a calibrated profile carries calibrated_time_s on every analytic row
    from perfscope.calibration import calibration_from_json

    again = calibration_from_json(json.loads(json.dumps(cal.to_json())))
    assert again.kinds["gemm"].scale == pytest.approx(cal.kinds["gemm"].scale)


@pytest.fixture(scope="module")
def qwen(no_local_spec):
    # Qwen2.5-0.5B at its real widths (896 hidden, 14 heads, 2 KV heads, 4864 MLP, 151936
    # vocabulary), two layers, prefill only
    return profile_transformers("qwen2.5-0.5b", ProfileOptions(
        layers=2, batch=1, seq_len=16, phases=("prefill",), warmup=1, repeat=2, threads=1,
        device="cpu"))


def test_real_widths_with_biases(qwen):
    h, heads, kv, d, inter, n = 896, 14, 2, 64, 4864, 16
    rows = _rows(qwen, "prefill")
    qkv = rows["attn.qkv_proj"]
    gemm = 2 * n * h * (heads + 2 * kv) * d * 2
    # Qwen2 has q/k/v biases: FlopCounterMode counts 2mnk, the analytic count adds m x n
    assert qkv["profiled_flops"] == gemm
    assert qkv["analytic_flops"] == gemm + n * (heads + 2 * kv) * d * 2
    assert qkv["flops_check"] == "differs" and "bias" in qkv["note"]
    assert rows["mlp.gate_up_proj"]["profiled_flops"] == 2 * n * h * 2 * inter * 2
    assert rows["lm_head"]["profiled_flops"] == rows["lm_head"]["analytic_flops"] == \
        2 * h * 151936
    assert qwen.model["layers"] == 2 and qwen.model["params"] == qwen.model["analytic_params"]


# ---- the user's own module -------------------------------------------------------------

@pytest.mark.parametrize("factory", ["tests.torchprof_factory:make",
                                     "tests.torchprof_factory:make_dict"])
def test_user_module(factory, no_local_spec):
    from tests.torchprof_factory import BATCH, HIDDEN, SEQ, WIDTH

    r = profile_module(factory, ProfileOptions(device="cpu", warmup=1, repeat=2, threads=1))
    j = r.to_json()
    rows = {o["name"]: o for o in j["ops"]}
    tokens = BATCH * SEQ
    assert rows["up"]["profiled_flops"] == 2 * tokens * WIDTH * HIDDEN
    assert rows["down"]["profiled_flops"] == 2 * tokens * HIDDEN * WIDTH
    assert rows["up"]["kind"] == "gemm" and rows["norm"]["kind"] == "norm"
    assert rows["(root)"]["ops"] == ["add"]  # the residual, called by the block itself
    for name in ("up", "down", "norm", "act"):
        assert rows[name]["measured_time_s"] > 0 and rows[name]["predicted_time_s"] > 0
        assert rows[name]["roofline_fraction"] is not None
    # inputs + outputs of each torch call, fp32: y = x W^T + b reads x, W, b and writes y
    assert rows["up"]["profiled_bytes"] == 4 * (tokens * WIDTH + HIDDEN * WIDTH + HIDDEN +
                                                tokens * HIDDEN)


# ---- CUDA: kernels through CUPTI (skipped without a GPU) ------------------------------------

@pytest.mark.gpu
def test_cuda_kernels_attributed(llama_cfg):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    r = profile_transformers(str(llama_cfg), ProfileOptions(
        device="cuda", dtype="bf16", attn="sdpa", batch=B, seq_len=S, context_len=C,
        warmup=2, repeat=3))
    j = r.to_json()
    assert j["kernels"] and all(k["time_s"] > 0 for k in j["kernels"])
    for phase in ("prefill", "decode"):
        rows = _rows(r, phase)
        for name, flops in _hand_gemm_flops(B * S if phase == "prefill" else B, B).items():
            assert rows[name]["profiled_flops"] == rows[name]["analytic_flops"] == flops
            assert rows[name]["measured_time_s"] > 0  # its kernels' time
    assert j["hardware"]["dtype"] == "bf16" and j["device"]["kind"] == "cuda"


@pytest.mark.parametrize("strict", [False, True])
def test_grouped_query_sdpa_counted_per_query_head(monkeypatch, strict):
    """SDPA with 4 query heads over 1 K/V head (``enable_gqa``, as transformers calls it on
    CUDA) costs QK^T and PV for every query head. torch < 2.13's ``sdpa_flop_count`` asserted
    equal head counts, which stopped the CUDA profile on an H200 (torch 2.11): ``strict``
    stands in for that formula."""
    import torch.utils.flop_counter as fc

    from perfscope.measure.torchprof.instrument import Scopes, count_flops_and_bytes

    if strict:
        def old_formula(q, k, v):
            assert q[1] == k[1] == v[1], "sdpa_flop_count: query/key/value shapes are incompatible"
            return 2 * 2 * q[0] * q[1] * q[2] * k[2] * q[3]

        monkeypatch.setattr(fc, "sdpa_flop_count", old_formula)
    b, hq, hkv, s, d = 2, 4, 1, 8, 16
    q, k, v = torch.randn(b, hq, s, d), torch.randn(b, hkv, s, d), torch.randn(b, hkv, s, d)
    records, _, _ = count_flops_and_bytes(
        lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, enable_gqa=True),
        Scopes())
    # QK^T: b*hq*s*s dot products of length d; PV the same; 2 FLOPs per multiply-add
    assert sum(r.flops for r in records) == 2 * (2 * b * hq * s * s * d)
