"""Gemma 3's language model (``gemma3_text``, and the multimodal ``gemma3`` through its
``text_config``) against the transformers reference model built from the same config on the
meta device (tests/reference_counts.py): parameters, KV cache, prefill and decode GEMM and
attention FLOPs. The window is cut to 512 so the sliding layers matter at these lengths.
"""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from perfscope.api import Scenario, analyze, load_hw, load_model  # noqa: E402
from perfscope.errors import SpecError  # noqa: E402

rc = pytest.importorskip("tests.reference_counts")

WINDOW = 512


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    from transformers import Gemma3TextConfig

    out = tmp_path_factory.mktemp("gemma3")
    Gemma3TextConfig(sliding_window=WINDOW).save_pretrained(out)
    return out / "config.json"


def _json(path, **kw) -> dict:
    return analyze(load_model(str(path)), load_hw("h200-sxm"), Scenario(**kw)).to_json()


def _sum(j: dict, kind: str, skip: tuple[str, ...] = ()) -> float:
    return sum(o["flops"] * o["count"] for o in j["ops"]
               if o["kind"] == kind and not o["name"].startswith(skip))


def test_structure_as_transformers_builds_it(config):
    m = load_model(str(config))
    # five sliding layers to one global (Gemma3TextConfig.__post_init__, pattern 6)
    assert sorted(set(range(26)) - m.sliding_layers) == [5, 11, 17, 23]
    assert m.sliding_window == WINDOW and m.qk_norm and m.norms_per_layer == 4
    assert m.embed_scale and not m.logit_softcap
    assert m.params == rc.ref_params(config)


@pytest.mark.parametrize(("batch", "seq"), [(1, 128), (2, 1000)])
def test_kv_cache_matches_reference(config, batch, seq):
    j = _json(config, phase="prefill", batch=batch, seq_len=seq, kv_dtype="bf16")
    ref = rc.ref_kv_cache_elements(config, batch, seq) * 2
    # beyond the window transformers keeps window - 1 tokens, perfscope the window: 22 of
    # 26 layers one token in 512 apart
    assert j["memory"]["kv_cache_bytes"] == pytest.approx(ref, rel=2e-3 if seq > WINDOW
                                                          else 1e-12)


@pytest.mark.parametrize(("batch", "seq"), [(1, 256), (2, 1024)])
def test_prefill_flops_match_flop_counter(config, batch, seq):
    j = _json(config, phase="prefill", batch=batch, seq_len=seq, attention="unfused")
    ref = rc.ref_gemm_flops(config, batch, seq)
    assert _sum(j, "gemm", ("lm_head",)) == pytest.approx(ref.linear_flops, rel=1e-9)
    lm = next(o for o in j["ops"] if o["name"] == "lm_head")
    assert lm["flops"] * seq == pytest.approx(ref.lm_head_flops, rel=1e-9)
    assert _sum(j, "attention") == pytest.approx(ref.attention_flops, rel=1e-9)


@pytest.mark.parametrize(("batch", "context"), [(1, 300), (3, 1000)])
def test_decode_flops_match_flop_counter(config, batch, context):
    j = _json(config, phase="decode", batch=batch, context_len=context, attention="unfused")
    ref = rc.ref_decode_flops(config, batch, context)
    assert _sum(j, "gemm", ("lm_head",)) == pytest.approx(ref.linear_flops, rel=1e-9)
    assert _sum(j, "attention") == pytest.approx(ref.attention_flops, rel=1e-9)


def test_multimodal_gemma3_analyses_its_language_model(config, tmp_path):
    from transformers import Gemma3Config, Gemma3TextConfig

    text = Gemma3TextConfig.from_pretrained(config.parent)
    Gemma3Config(text_config=text.to_dict()).save_pretrained(tmp_path)
    m = load_model(str(tmp_path / "config.json"))
    assert m.text_of == "gemma3" and m.params == load_model(str(config)).params


def test_bidirectional_gemma3_is_refused(config, tmp_path):
    raw = json.loads(config.read_text()) | {"use_bidirectional_attention": True}
    path = tmp_path / "emb.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(SpecError, match="use_bidirectional_attention"):
        load_model(str(path))
