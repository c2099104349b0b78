"""perfscope's counts against independent counts from the transformers reference models.

The reference models are built from the shipped config.json files on torch's meta device
(tests/reference_counts.py): exact parameter counts, the KV-cache tensors a real forward leaves
behind, and FlopCounterMode's matmul FLOPs. Where FlopCounterMode is blind (grouped MoE expert
matmuls) or counts differently from a serving engine (LM head on every position, eager attention
over the full S x S), the test says so and bridges with a hand derivation.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from perfscope.api import Scenario, analyze, load_hw, load_model  # noqa: E402
from perfscope.errors import SpecError  # noqa: E402
from perfscope.specs.model import model_files  # noqa: E402

rc = pytest.importorskip("tests.reference_counts")

MODELS = sorted(p.stem for p in model_files())
CONFIG = {p.stem: p for p in model_files()}
HW = "h200-sxm"  # 141 GB: room for the prefill shapes below; fits is not under test here


def _json(name: str, **kw) -> dict:
    return analyze(load_model(name), load_hw(HW), Scenario(**kw)).to_json()


def _gemm(j: dict, *, skip: tuple[str, ...] = ()) -> float:
    return sum(o["flops"] * o["count"] for o in j["ops"]
               if o["kind"] == "gemm" and not o["name"].startswith(skip))


def _bias_flops(j: dict) -> float:
    """Bias adds perfscope counts in its GEMMs (m x n each) that FlopCounterMode does not."""
    m = load_model(j["model"]["name"])
    out = 0.0
    for o in j["ops"]:
        sh = o["shape"]
        if o["kind"] != "gemm":
            continue
        bias = (o["name"] == "attn.qkv_proj" and m.qkv_bias) or \
            (o["name"] == "attn.o_proj" and m.o_bias) or \
            (o["name"].startswith("mlp.") and m.mlp_bias)
        if bias:
            out += sh["m"] * sh["n"] * o["count"]
    return out


@pytest.mark.parametrize("name", MODELS)
def test_params_match_reference_exactly(name):
    assert load_model(name).params == rc.ref_params(CONFIG[name])


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize(("batch", "seq"), [(1, 128), (3, 1000)])
def test_kv_cache_bytes_match_reference(name, batch, seq):
    j = _json(name, phase="prefill", batch=batch, seq_len=seq, kv_dtype="bf16")
    ref = rc.ref_kv_cache_elements(CONFIG[name], batch, seq) * 2  # bf16
    assert j["memory"]["kv_cache_bytes"] == pytest.approx(ref, rel=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mistral-7b", "phi-3-mini"])
def test_kv_cache_beyond_the_window(name):
    # transformers keeps window-1 tokens (the next token attends to those plus itself);
    # perfscope keeps the window: the two differ by one token in thousands
    m = load_model(name)
    seq = m.sliding_window + 500
    j = _json(name, phase="prefill", batch=1, seq_len=seq, kv_dtype="bf16")
    ref = rc.ref_kv_cache_elements(CONFIG[name], 1, seq) * 2
    assert j["memory"]["kv_cache_bytes"] == pytest.approx(ref, rel=5e-4)
    full = 2 * m.n_layers * m.n_kv_heads * m.head_dim * seq * 2
    assert j["memory"]["kv_cache_bytes"] < full * 0.9  # the window really capped it


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize(("batch", "seq"), [(1, 256), (2, 1024)])
def test_prefill_gemm_flops_match_flop_counter(name, batch, seq):
    m = load_model(name)
    j = _json(name, phase="prefill", batch=batch, seq_len=seq, attention="unfused")
    ref = rc.ref_gemm_flops(CONFIG[name], batch, seq)
    # FlopCounterMode does not see routed experts (grouped matmuls on data-dependent
    # routing): compare those against the hand count 2 x tokens x top_k x (3 h I_e)
    ours = _gemm(j, skip=("lm_head", "moe.experts", "moe.router")) - _bias_flops(j)
    assert ours == pytest.approx(ref.linear_flops, rel=1e-9)
    assert _gemm(j, skip=()) - _gemm(j, skip=("moe.router",)) == \
        pytest.approx(ref.router_flops, rel=1e-9)
    # transformers applies the LM head to every position, serving engines to the last one
    lm = next(o for o in j["ops"] if o["name"] == "lm_head")
    assert lm["flops"] * seq == pytest.approx(ref.lm_head_flops, rel=1e-9)
    if m.moe:
        n_moe = sum(1 for i in range(m.n_layers) if m.is_moe_layer(i))
        hand = 2 * batch * seq * m.moe.top_k * 3 * m.hidden * m.moe.expert_intermediate * n_moe
        experts = sum(o["flops"] * o["count"] for o in j["ops"]
                      if o["name"].startswith("moe.experts_") and o["kind"] == "gemm")
        assert experts == pytest.approx(hand, rel=1e-9)
    # eager attention: the full S x S score matrix, exactly what the unfused path counts
    attn = sum(o["flops"] * o["count"] for o in j["ops"] if o["kind"] == "attention")
    assert attn == pytest.approx(ref.attention_flops, rel=1e-9)


@pytest.mark.parametrize("name", ["llama-3.1-8b", "qwen2.5-7b", "deepseek-v3", "gemma-2-9b"])
def test_flash_prefill_does_half_the_eager_attention_work(name):
    seq = 1024
    ref = rc.ref_gemm_flops(CONFIG[name], 1, seq)
    j = _json(name, phase="prefill", batch=1, seq_len=seq)
    attn = j["totals"]["flops_by_kind"]["attention"]
    # causal: query i sees i + 1 keys -> S(S+1)/2 of the S^2 products
    assert attn == pytest.approx(ref.attention_flops * (seq + 1) / (2 * seq), rel=1e-9)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize(("batch", "context"), [(1, 300), (4, 1000)])
def test_decode_flops_match_flop_counter(name, batch, context):
    m = load_model(name)
    # transformers' MLA decode up-projects the cached latent (no absorption): compare like
    # with like here; the absorbed form is checked by hand in test_modelling_rules
    j = _json(name, phase="decode", batch=batch, context_len=context, attention="unfused",
              mla_absorb=False if m.mla else None)
    ref = rc.ref_decode_flops(CONFIG[name], batch, context)
    ours = _gemm(j, skip=("lm_head", "moe.experts", "moe.router")) - _bias_flops(j)
    assert ours == pytest.approx(ref.linear_flops, rel=1e-9)
    lm = next(o for o in j["ops"] if o["name"] == "lm_head")
    assert lm["flops"] == pytest.approx(ref.lm_head_flops, rel=1e-9)  # one token: the same
    attn = sum(o["flops"] * o["count"] for o in j["ops"] if o["kind"] == "attention")
    assert attn == pytest.approx(ref.attention_flops, rel=1e-9)
    assert j["memory"]["kv_cache_bytes"] == pytest.approx(
        2 * rc.ref_kv_cache_elements(CONFIG[name], batch, context + 1), rel=1e-12)
    if m.moe is None:
        flash = _json(name, phase="decode", batch=batch, context_len=context)
        # one query: causal flash does the same work as the unfused pass
        assert flash["totals"]["flops_by_kind"]["attention"] == pytest.approx(attn, rel=1e-12)


# ---- configs as users have them (issue 6, item 7) ---------------------------------------------

def _transformers_classes():
    from transformers import CONFIG_MAPPING

    from perfscope.specs.model.hf_defaults import DEFAULTS

    return {mt: CONFIG_MAPPING[mt] for mt in DEFAULTS}


def test_defaults_and_aliases_are_the_installed_transformers_ones():
    from perfscope.specs.model.adapters import ADAPTERS
    from perfscope.specs.model.hf_defaults import ALIASES, DEFAULTS

    assert set(DEFAULTS) == set(ADAPTERS)
    for mt, cls in _transformers_classes().items():
        assert ALIASES.get(mt, {}) == dict(getattr(cls, "attribute_map", {})), mt
        fields = cls.__dataclass_fields__
        names = dict(getattr(cls, "attribute_map", {}))
        names.update({v: k for k, v in names.items()})  # either name of an alias pair
        for key, value in DEFAULTS[mt].items():
            field = key if key in fields else names.get(key)
            assert field in fields, (mt, key)
            assert fields[field].default == value, (mt, key, fields[field].default, value)


def _saved_by_transformers(path, tmp_path):
    """The config as transformers (the installed version) writes it back out."""
    cfg = rc.load_config(path)
    out = tmp_path / "saved"
    cfg.save_pretrained(out)
    return out / "config.json"


def _shape(m):
    skip = {"name", "source", "text_of", "quant", "layer_groups", "window_groups",
            "ffn_groups", "_hash"}
    return {f: getattr(m, f) for f in m.__dataclass_fields__ if f not in skip}


@pytest.mark.parametrize("name", MODELS)
def test_configs_saved_by_recent_transformers_load_the_same(name, tmp_path):
    # transformers 5 renames fields on save (num_experts -> num_local_experts for qwen3_moe,
    # rope_theta -> rope_parameters, torch_dtype -> dtype, deepseek's head_dim = rope dim)
    saved = _saved_by_transformers(CONFIG[name], tmp_path)
    assert _shape(load_model(str(saved))) == _shape(load_model(name))


def _attrs_from_transformers(cfg) -> dict:
    """The fields perfscope derives, as the transformers modelling code reads them."""
    heads = cfg.num_attention_heads
    act = getattr(cfg, "hidden_activation", None) or getattr(cfg, "hidden_act", None) or \
        getattr(cfg, "activation_function", None)
    out = {"max_position": cfg.max_position_embeddings, "n_heads": heads,
           "tied_embeddings": cfg.tie_word_embeddings, "activation": act}
    if cfg.model_type not in ("gpt2", "opt", "deepseek_v3"):
        out["n_kv_heads"] = cfg.num_key_value_heads
        out["head_dim"] = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    return out


@pytest.mark.parametrize("name", MODELS)
def test_fields_left_out_take_the_transformers_default(name, tmp_path):
    import json

    from perfscope.specs.model.hf_defaults import DEFAULTS, STRUCTURAL

    raw = json.loads(CONFIG[name].read_text())
    mt = raw["model_type"]
    for key in [k for k in DEFAULTS[mt] if k in raw and k not in STRUCTURAL]:
        cut = {k: v for k, v in raw.items() if k != key}
        path = tmp_path / f"{key}.json"
        path.write_text(json.dumps(cut))
        theirs = _attrs_from_transformers(rc.load_config(path))
        if theirs["n_heads"] % theirs.get("n_kv_heads", 1):  # e.g. gemma-2b: 16 KV of 8 heads
            with pytest.raises(SpecError, match="num_key_value_heads"):
                load_model(str(path))
            continue
        ours = load_model(str(path))
        assert {k: getattr(ours, k) for k in theirs} == theirs, key


LLAVA_15_7B = {  # llava-hf/llava-1.5-7b-hf config.json as saved by transformers 4.36: the
    # text_config keeps only what differs from LlamaConfig's defaults
    "architectures": ["LlavaForConditionalGeneration"], "ignore_index": -100,
    "image_token_index": 32000, "model_type": "llava", "pad_token_id": 32001,
    "projector_hidden_act": "gelu",
    "text_config": {"_name_or_path": "lmsys/vicuna-7b-v1.5",
                    "architectures": ["LlamaForCausalLM"], "max_position_embeddings": 4096,
                    "model_type": "llama", "rms_norm_eps": 1e-05, "torch_dtype": "float16",
                    "vocab_size": 32064},
    "tie_word_embeddings": False, "torch_dtype": "float16", "vocab_size": 32064,
    "vision_config": {"hidden_size": 1024, "image_size": 336, "intermediate_size": 4096,
                      "model_type": "clip_vision_model", "num_attention_heads": 16,
                      "num_hidden_layers": 24, "patch_size": 14, "projection_dim": 768,
                      "vocab_size": 32000},
    "vision_feature_layer": -2, "vision_feature_select_strategy": "default",
}


def test_multimodal_wrapper_analyses_its_language_model(tmp_path):
    import json

    from transformers import AutoConfig, AutoModelForImageTextToText

    path = tmp_path / "llava.json"
    path.write_text(json.dumps(LLAVA_15_7B))
    m = load_model(str(path))
    assert m.text_of == "llava" and m.model_type == "llama"
    cfg = AutoConfig.for_model(**LLAVA_15_7B)
    with torch.device("meta"):
        ref = AutoModelForImageTextToText.from_config(cfg)
    lm = sum(p.numel() for p in ref.model.language_model.parameters()) + \
        sum(p.numel() for p in ref.lm_head.parameters())
    assert m.params == lm  # the language model only: vision tower and projector left out
    j = analyze(m, load_hw(HW), Scenario(phase="decode", context_len=100)).to_json()
    assert j["model"]["language_model_of"] == "llava"


@pytest.mark.parametrize(("wrapper", "name"), [("llava", "llama-3.1-8b"),
                                               ("mistral3", "mistral-7b")])
def test_wrapper_saved_by_transformers_5(wrapper, name, tmp_path):
    from transformers import CONFIG_MAPPING

    text = rc.load_config(CONFIG[name]).to_dict()
    CONFIG_MAPPING[wrapper](text_config=text).save_pretrained(tmp_path)
    m = load_model(str(tmp_path / "config.json"))
    assert m.text_of == wrapper and _shape(m) == _shape(load_model(name))
