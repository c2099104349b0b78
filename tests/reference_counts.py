"""Independent reference counts taken from the Hugging Face `transformers` implementation.

This is a helper module for tests (it is not collected as a test file). Given a
``config.json`` path (e.g. ``workloads/models/llama-3.1-8b.json``) it builds the
transformers model on the ``meta`` device -- no weights, no memory, no download --
and reads counts off the real module tree and a real (meta) forward pass:

* :func:`ref_params` -- unique parameters.
* :func:`ref_kv_cache_elements` -- elements held by the KV cache after a prefill.
* :func:`ref_gemm_flops` -- matmul FLOPs of a prefill forward, split by kind.

Every count is obtained by *running* transformers code, not by re-deriving
formulas from the config, so it is independent of perfscope's analytic model.
The forward pass runs on the meta device: shapes propagate, nothing is computed,
so even DeepSeek-V3 or Llama-3.1-405B at long sequence lengths take seconds.

Conventions shared by all functions:

* Keys starting with ``_perfscope`` are dropped from the config before loading;
  ``quantization_config`` is dropped too (DeepSeek-V3 ships fp8 weights, but the
  architecture, and therefore every count here, does not depend on it).
* Attention is forced to ``"eager"``: its QK^T and PV products are plain
  ``aten.bmm`` calls that FlopCounterMode sees (SDPA on CPU/meta is counted as 0).
* Multi-token-prediction layers (DeepSeek-V3 ``num_nextn_predict_layers``) are not
  built by transformers and so are in none of the counts.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

# Nothing may download: set before transformers is imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import transformers
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

__all__ = [
    "GemmFlops",
    "build_meta_model",
    "load_config",
    "ref_decode_flops",
    "ref_gemm_flops",
    "ref_kv_cache_elements",
    "ref_kv_cache_shapes",
    "ref_params",
]


def load_config(path: str | os.PathLike[str]) -> transformers.PretrainedConfig:
    """Load a config.json exactly as ``from_pretrained`` would, offline.

    Drops ``_perfscope*`` keys and ``quantization_config``; forces eager attention.
    """
    raw = json.loads(Path(path).read_text())
    raw = {k: v for k, v in raw.items()
           if not k.startswith("_perfscope") and k != "quantization_config"}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "config.json").write_text(json.dumps(raw))
        cfg = AutoConfig.from_pretrained(tmp)
    cfg._attn_implementation = "eager"
    return cfg


@functools.lru_cache(maxsize=4)
def _cached_model(path: str) -> PreTrainedModel:
    cfg = load_config(path)
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
    model.eval()
    return model


def build_meta_model(path: str | os.PathLike[str]) -> PreTrainedModel:
    """The ``AutoModelForCausalLM`` for ``path`` on the meta device (cached, eval mode)."""
    return _cached_model(str(Path(path).resolve()))


def ref_params(path: str | os.PathLike[str]) -> int:
    """Unique parameter count: ``sum(p.numel() for p in model.parameters())``.

    ``parameters()`` yields a tied tensor once, so tied input/output embeddings
    (GPT-2, Gemma, Qwen2.5-0.5B, ...) are counted once. Buffers (rotary inv_freq)
    are not parameters. MTP layers are excluded (not built, see module docstring).
    """
    return sum(p.numel() for p in build_meta_model(path).parameters())


def _prefill(model: PreTrainedModel, batch: int, seq_len: int, use_cache: bool) -> Any:
    ids = torch.zeros(batch, seq_len, dtype=torch.long, device="meta")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model(input_ids=ids, use_cache=use_cache)


def ref_kv_cache_shapes(path: str | os.PathLike[str], batch: int,
                        seq_len: int) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Per-layer ``(keys.shape, values.shape)`` of the cache a meta prefill leaves."""
    out = _prefill(build_meta_model(path), batch, seq_len, use_cache=True)
    cache = out.past_key_values
    shapes: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    for layer in cache.layers:
        shapes.append((tuple(layer.keys.shape), tuple(layer.values.shape)))
    return shapes


def ref_kv_cache_elements(path: str | os.PathLike[str], batch: int, seq_len: int) -> int:
    """Elements (not bytes) in the KV cache after one prefill of ``batch x seq_len`` tokens.

    Obtained by actually running the forward on the meta device with
    ``use_cache=True`` and summing ``keys.numel() + values.numel()`` over the
    ``DynamicCache`` layers (transformers 5.x). What that holds, as observed:

    * standard / GQA attention: ``2 * batch * kv_heads * seq_len * head_dim`` per layer;
    * sliding-window layers (Mistral-7B-v0.1, Phi-3-mini, Gemma-2 local layers):
      ``DynamicSlidingWindowLayer`` keeps ``min(seq_len, sliding_window - 1)``
      tokens -- note the ``- 1`` (4095 for a 4096 window, 2046 for Phi-3's 2047):
      the next token attends to ``window - 1`` cached tokens plus itself.
      Gemma-2 alternates sliding/full layers (``config.layer_types``);
    * DeepSeek-V3 (MLA): transformers caches the compressed latent, keys of shape
      ``(batch, 1, seq, kv_lora_rank=512)`` and values ``(batch, 1, seq,
      qk_rope_head_dim=64)``, i.e. ``576`` elements per token per layer -- the same
      latent cache serving engines (vLLM/SGLang MLA) keep.
    """
    return sum(int(torch.Size(k).numel()) + int(torch.Size(v).numel())
               for k, v in ref_kv_cache_shapes(path, batch, seq_len))


@dataclass(frozen=True)
class GemmFlops:
    """FLOPs (2 per multiply-add) of one prefill forward of ``batch x seq_len`` tokens,
    as counted by ``torch.utils.flop_counter.FlopCounterMode`` on the meta device.

    Fields (all FLOPs for the whole batch):

    * ``linear_flops`` -- ``aten.mm``/``aten.addmm`` of every ``nn.Linear`` (and GPT-2
      ``Conv1D``) except the LM head: q/k/v/o (incl. MLA q_a/q_b/kv_a/kv_b), dense
      MLPs and DeepSeek shared experts. Bias adds are not counted.
    * ``lm_head_flops`` -- the LM head, which HF applies to **all** ``batch*seq_len``
      positions; serving engines apply it to the last token of each sequence only,
      so subtract this (and add ``2*batch*hidden*vocab``) to compare with them.
    * ``attention_flops`` -- everything counted inside ``*Attention`` modules other
      than their Linear children: the eager ``QK^T`` and ``PV`` ``aten.bmm``. Eager
      attention computes the **full** ``seq x seq`` score matrix (the causal mask is
      applied afterwards), i.e. ``2 * 2*b*heads*s*s*head_dim`` per layer, twice the
      causal-only count. For DeepSeek-V3 it is the non-absorbed MLA form
      (QK^T with ``qk_nope+qk_rope=192``, PV with ``v_head_dim=128``, 128 heads).
    * ``router_flops`` -- MoE router/gate projections (``*Router`` modules).
    * ``other_flops`` -- anything else FlopCounterMode saw (expected ~0).
    * ``total_flops`` -- ``FlopCounterMode.get_total_flops()``.
    * ``has_routed_experts`` -- True if the model has ``*Experts`` modules. Their
      matmuls are **not** in any field: FlopCounterMode is blind to them here
      (transformers 5 experts are batched parameter tensors dispatched per routed
      token; on the meta device the data-dependent ``nonzero`` routing selects no
      expert, and grouped-mm kernels are not counted either). ``experts_flops_seen``
      records what was seen (0 in practice).
    * ``by_op`` -- total FLOPs per aten op name, for debugging.

    Not counted anywhere: SDPA/flash kernels (hence eager), elementwise ops,
    norms, softmax, rotary embeddings, MTP layers.
    """

    linear_flops: float
    lm_head_flops: float
    attention_flops: float
    router_flops: float
    other_flops: float
    total_flops: float
    has_routed_experts: bool
    experts_flops_seen: float = 0.0
    by_op: dict[str, float] = field(default_factory=dict)


def _is_linear(mod: nn.Module) -> bool:
    return isinstance(mod, nn.Linear) or type(mod).__name__ == "Conv1D"


def ref_gemm_flops(path: str | os.PathLike[str], batch: int, seq_len: int) -> GemmFlops:
    """Prefill GEMM FLOPs of the HF forward, split as described in :class:`GemmFlops`.

    Runs the full-depth model on the meta device (FlopCounterMode counts mm/addmm/bmm
    from shapes alone; verified against hand-computed q_proj and QK^T counts).
    """
    model = build_meta_model(path)
    counter = FlopCounterMode(display=False)
    with counter:
        # use_cache=True as in the KV-cache probe: with use_cache=False the mask code
        # takes a packed-sequence check that calls .item() (impossible on meta).
        # The cache adds no matmuls to a prefill.
        _prefill(model, batch, seq_len, use_cache=True)
    return _split(model, counter)


def _split(model: PreTrainedModel, counter: FlopCounterMode) -> GemmFlops:
    counts = counter.get_flop_counts()
    root = type(model).__name__

    def inclusive(name: str) -> float:
        key = f"{root}.{name}" if name else root
        return float(sum(counts.get(key, {}).values()))

    lm_head = model.get_output_embeddings()
    linear = lm = attention = router = experts = 0.0
    has_experts = False
    for name, mod in model.named_modules():
        cls = type(mod).__name__
        if cls.endswith("Experts"):
            has_experts = True
            experts += inclusive(name)
        elif "Router" in cls:
            router += inclusive(name)
        elif mod is lm_head:
            lm += inclusive(name)
        elif _is_linear(mod):
            linear += inclusive(name)
        elif cls.endswith("Attention"):
            children = sum(inclusive(f"{name}.{c}") for c, sub in mod.named_modules()
                           if c and _is_linear(sub))
            attention += inclusive(name) - children
    total = float(counter.get_total_flops())
    by_op = {str(op): float(v) for op, v in counts.get("Global", {}).items()}
    return GemmFlops(
        linear_flops=linear, lm_head_flops=lm, attention_flops=attention,
        router_flops=router, other_flops=total - linear - lm - attention - router - experts,
        total_flops=total, has_routed_experts=has_experts, experts_flops_seen=experts,
        by_op=by_op,
    )


def ref_decode_flops(path: str | os.PathLike[str], batch: int, context: int) -> GemmFlops:
    """Like :func:`ref_gemm_flops` for one decode step: ``context`` tokens are prefilled
    (outside the counter), then one new token per sequence runs under FlopCounterMode.

    transformers' MLA decode is the non-absorbed form: it up-projects every cached latent
    with kv_b_proj at each step (so its linear count grows with the context)."""
    model = build_meta_model(path)
    out = _prefill(model, batch, context, use_cache=True)
    ids = torch.zeros(batch, 1, dtype=torch.long, device="meta")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model(input_ids=ids, past_key_values=out.past_key_values, use_cache=True)
    return _split(model, counter)
