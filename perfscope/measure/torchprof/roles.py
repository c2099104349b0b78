"""Which analytic op each module and each op call of a transformers model stands for.

Two steps, both pure (no torch): ``module_roles`` reads the module tree once (names and class
names, as ``named_modules`` gives them) and gives every module a role: a leaf that computes one
analytic op entirely (``q_proj`` -> ``attn.qkv_proj``) or a container whose own ops need a
second look (the attention module runs rotary, the attention core, the cache update and layout
changes itself). ``classify`` then names the analytic op of one op call from its module, the
function it ran in (``rotary``, ``attention``, ``kv_cache``, ``mask``: set by perfscope's
wrappers), the op and its occurrence. Calls that no analytic op accounts for get a
``framework.*`` name: the time the roofline model does not see.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from perfscope.measure.torchprof.ops import (
    ACTIVATIONS,
    ADDS,
    COPIES,
    FLOP_OPS,
    MULS,
    SCATTERS,
    SDPA,
    SOFTMAX,
    VIEWS,
    op_class,
)

# what each framework.* row holds (shown in tables and reports)
FRAMEWORK_ROWS = {
    "framework.overhead": "step time inside no op: Python, module calls, dispatch, launch gaps",
    "framework.kv_cache": "KV-cache update (DynamicCache concatenates: it rewrites the cache)",
    "framework.copy": "copies, casts and concatenations (contiguous, dtype casts; repeat_kv "
                      "outside eager attention)",
    "framework.layout": "views and reshapes: no data moves, dispatch time only",
    "framework.mask": "attention-mask construction",
    "framework.rotary_tables": "rotary cos/sin tables recomputed every step",
    "framework.inputs": "position ids and other model-level glue",
    "framework.moe_dispatch": "expert routing bookkeeping: one-hot, where, token gather",
    "framework.other": "ops in modules perfscope does not recognise",
}

_LAYER = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)(?:\.|$)")
_LAYER_SELF = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)$")

_ATTN = {"self_attn", "attn", "attention", "self_attention"}
_MLP = {"mlp", "feed_forward", "ffn", "block_sparse_moe", "moe"}
_EMBED = {"embed_tokens", "wte", "embed_in", "word_embeddings"}
_POS = {"wpe", "embed_positions"}
_FINAL = {"norm", "ln_f", "final_layernorm", "final_layer_norm", "final_norm"}
_QKV = {"k_proj", "v_proj", "qkv_proj", "c_attn", "query_key_value", "Wqkv"}
_O = {"o_proj", "out_proj", "dense", "c_proj"}
_UP = {"gate_proj", "up_proj", "gate_up_proj", "c_fc", "fc1", "w1", "w3"}
_DOWN = {"down_proj", "c_proj", "fc2", "w2"}
_ACT = {"act_fn", "act", "activation_fn", "act_layer"}
_MLA = {"q_a_proj": "attn.q_a_proj", "q_a_layernorm": "attn.q_a_norm",
        "q_b_proj": "attn.q_b_proj", "kv_a_proj_with_mqa": "attn.kv_a_proj",
        "kv_a_layernorm": "attn.kv_a_norm", "kv_b_proj": "attn.kv_b_proj"}


@dataclass(frozen=True, slots=True)
class ModuleRole:
    """``role``: the analytic op every call inside this module belongs to (None: look at the
    call). ``container``: root | model | layer | attention | mlp | moe | router | experts."""

    role: str | None
    container: str
    layer: int | None = None
    prefix: str = "mlp"  # MLP containers: "mlp", "moe.shared" or "moe.experts"


@dataclass(frozen=True, slots=True)
class ArchInfo:
    """What the classifier needs to know about the model (from its ModelSpec)."""

    hidden: int
    gated_mlp: bool = True
    unfused_attention: bool = False  # eager: score / softmax / value, else one attn.core
    embed_scale: bool = False
    mla: bool = False
    sliding_layers: frozenset[int] = frozenset()
    tag_windows: bool = False  # the analytic graph names attn ops @sliding / @global


def layer_of(path: str) -> int | None:
    m = _LAYER.search(path)
    return int(m.group(1)) if m else None


def module_roles(modules: Iterable[tuple[str, str]], info: ArchInfo) -> dict[str, ModuleRole]:
    """Roles of all modules from ``(path, class name)`` pairs, parents before children (the
    order of ``named_modules``); the root's path is ""."""
    mods = list(modules)
    children: dict[str, set[str]] = {}
    for path, _ in mods:
        if path:
            parent, _, leaf = path.rpartition(".")
            children.setdefault(parent, set()).add(leaf)
    out: dict[str, ModuleRole] = {}
    for path, cls in mods:
        if not path:
            out[path] = ModuleRole(None, "root")
            continue
        parent, _, leaf = path.rpartition(".")
        out[path] = _role(leaf, cls, out.get(parent, ModuleRole(None, "root")),
                          children.get(path, set()), children.get(parent, set()), path, info)
    return out


def _role(leaf: str, cls: str, pc: ModuleRole, kids: set[str], siblings: set[str], path: str,
          info: ArchInfo) -> ModuleRole:
    layer = layer_of(path)
    if pc.role is not None:  # inside a leaf: the same op (a norm's or a projection's parts)
        return pc
    c = pc.container
    if c in ("root", "model"):
        if _LAYER_SELF.search(path):
            return ModuleRole(None, "layer", layer)
        if leaf in _EMBED:
            return ModuleRole("embed", c)
        if leaf in _POS:
            return ModuleRole("pos_embed", c)
        if leaf == "lm_head":
            return ModuleRole("lm_head", c)
        if leaf == "rotary_emb":
            return ModuleRole("framework.rotary_tables", c)
        if leaf in _FINAL:
            return ModuleRole("final_norm", c)
        return ModuleRole(None, "model")
    if c == "layer":
        return _in_layer(leaf, cls, kids, siblings, layer, info)
    if c == "attention":
        if leaf == "q_proj":
            return ModuleRole("attn.q_proj" if info.mla else "attn.qkv_proj", c, layer)
        if leaf in _QKV:
            return ModuleRole("attn.qkv_proj", c, layer)
        if leaf in _O:
            return ModuleRole("attn.o_proj", c, layer)
        if leaf in ("q_norm", "k_norm"):
            return ModuleRole("attn.qk_norm", c, layer)
        if leaf in _MLA:
            return ModuleRole(_MLA[leaf], c, layer)
        if leaf == "rotary_emb":
            return ModuleRole("framework.rotary_tables", c, layer)
        return ModuleRole(None, c, layer)
    if c in ("mlp", "experts"):
        p = pc.prefix
        if p == "moe.experts" and leaf.isdigit():
            return ModuleRole(None, "mlp", layer, p)
        up = "gate_up_proj" if info.gated_mlp else "up_proj"
        names = {"moe.experts": ("moe.experts_gate_up", "moe.experts_down", "moe.experts_act")}
        u, d, a = names.get(p, (f"{p}.{up}", f"{p}.down_proj", f"{p}.act"))
        if leaf in _UP:
            return ModuleRole(u, c, layer)
        if leaf in _DOWN:
            return ModuleRole(d, c, layer)
        if leaf in _ACT:
            return ModuleRole(a, c, layer)
        return ModuleRole(None, c, layer, p)
    if c == "moe":
        if leaf in ("gate", "router"):
            if cls.endswith("Linear"):
                return ModuleRole("moe.router", c, layer)
            return ModuleRole(None, "router", layer)
        if leaf == "experts":
            return ModuleRole(None, "experts", layer, "moe.experts")
        if leaf in ("shared_expert", "shared_experts", "shared_mlp"):
            return ModuleRole(None, "mlp", layer, "moe.shared")
        if leaf == "shared_expert_gate":
            return ModuleRole("moe.shared_gate", c, layer)
        return ModuleRole(None, c, layer)
    if c == "router":
        return ModuleRole("moe.router" if cls.endswith("Linear") else None, c, layer)
    return ModuleRole(None, c, layer, pc.prefix)


def _in_layer(leaf: str, cls: str, kids: set[str], siblings: set[str], layer: int | None,
              info: ArchInfo) -> ModuleRole:
    if leaf in _ATTN:
        return ModuleRole(None, "attention", layer)
    if leaf in _MLP:
        if "experts" in kids:
            return ModuleRole(None, "moe", layer)
        return ModuleRole(None, "mlp", layer, "mlp")
    if leaf in ("input_layernorm", "ln_1", "self_attn_layer_norm", "attention_norm"):
        return ModuleRole("attn.norm", "layer", layer)
    if leaf == "post_attention_layernorm":
        gemma2 = "pre_feedforward_layernorm" in siblings
        return ModuleRole("attn.post_norm" if gemma2 else "mlp.norm", "layer", layer)
    if leaf in ("pre_feedforward_layernorm", "ln_2", "final_layer_norm", "ffn_norm"):
        return ModuleRole("mlp.norm", "layer", layer)
    if leaf == "post_feedforward_layernorm":
        return ModuleRole("mlp.post_norm", "layer", layer)
    if leaf in ("fc1", "fc2", "activation_fn"):  # OPT: the MLP lives in the layer itself
        up = "mlp.gate_up_proj" if info.gated_mlp else "mlp.up_proj"
        return ModuleRole({"fc1": up, "fc2": "mlp.down_proj"}.get(leaf, "mlp.act"), "layer",
                          layer)
    return ModuleRole(None, "layer", layer)


def _window(role: str, layer: int | None, info: ArchInfo) -> str:
    if not info.tag_windows or layer is None:
        return role
    return role + ("@sliding" if layer in info.sliding_layers else "@global")


def classify(mr: ModuleRole | None, tag: str | None, op: str, index: int, dim: int | None,
             info: ArchInfo) -> str:
    """The analytic op (or ``framework.*`` row) of one op call.

    ``mr``: the role of the innermost module the call ran in (None: outside the model);
    ``tag``: the innermost perfscope-wrapped function around it; ``op``: normalised name;
    ``index``: how many calls of the same op class came before it in the same module call and
    function; ``dim``: the last dimension of its first tensor input."""
    if tag == "mask":
        return "framework.mask"
    if tag == "kv_cache":
        return "framework.kv_cache"
    if tag == "repeat_kv":
        # eager GQA/MQA materialises K/V per query head: the analytic attn.repeat_kv op; the
        # fused paths (SDPA's own GQA, flash) have no such op, so it is framework overhead
        return _window("attn.repeat_kv", mr.layer if mr else None, info) \
            if info.unfused_attention else "framework.copy"
    if mr is None:
        return "framework.other"
    if mr.role is not None:
        return mr.role
    c = mr.container
    if c == "attention" or tag in ("rotary", "attention"):
        role = _attention(tag, op, index, info)
        attn_core = role.startswith(("attn.core", "attn.score", "attn.softmax", "attn.value"))
        return _window(role, mr.layer, info) if attn_core else role
    if op in VIEWS:
        return "framework.layout"
    if c == "router":
        return "moe.router" if op in FLOP_OPS else "moe.topk"
    if c == "experts":
        return _experts(op, dim, info)
    if c == "moe":
        if op in SOFTMAX or op in ("topk", "sigmoid", "div", "div_", "sum", "truediv"):
            return "moe.topk"
        if op in MULS or op in ADDS:
            return "moe.combine"
        return "framework.copy" if op in COPIES else "framework.moe_dispatch"
    if op in COPIES:
        return "framework.copy"
    if c == "mlp":
        if mr.prefix == "moe.experts":
            return _experts(op, dim, info)
        if op in MULS or op in ACTIVATIONS:
            return f"{mr.prefix}.act"
        return "framework.other"
    if c == "layer":
        if op_class(op) == "add" and index < 2:
            return ("attn.residual", "mlp.residual")[index]
        return "framework.other"
    if c == "model":
        if info.embed_scale and op in MULS:
            return "embed"  # gemma scales the embeddings by sqrt(hidden) in the model
        return "framework.inputs"
    return "framework.other"


def _attention(tag: str | None, op: str, index: int, info: ArchInfo) -> str:
    if tag == "rotary":
        return "attn.rotary"
    if op in SDPA:
        return "attn.core"
    if op in FLOP_OPS:
        if not info.unfused_attention:
            return "attn.core"
        return ("attn.score", "attn.value")[index] if index < 2 else "framework.other"
    if op in VIEWS:
        return "framework.layout"
    if op in COPIES:
        return "framework.copy"
    if tag == "attention":
        return "attn.softmax" if info.unfused_attention else "attn.core"
    if op in MULS or op in ADDS or op in ("neg", "sub"):
        return "attn.rotary"  # no rotary wrapper for this model: its elementwise ops
    return "framework.other"


def _experts(op: str, dim: int | None, info: ArchInfo) -> str:
    if op in FLOP_OPS:
        return "moe.experts_gate_up" if dim == info.hidden else "moe.experts_down"
    if op in ACTIVATIONS:
        return "moe.experts_act"
    if op in MULS:
        return "moe.combine" if dim == info.hidden else "moe.experts_act"
    if op in SCATTERS or op in ADDS:
        return "moe.combine"
    if op in VIEWS:
        return "framework.layout"
    return "framework.moe_dispatch"


def arch_info(spec: Any, *, unfused_attention: bool) -> ArchInfo:
    """ArchInfo of a perfscope ModelSpec."""
    return ArchInfo(hidden=spec.hidden, gated_mlp=spec.gated_mlp,
                    unfused_attention=unfused_attention, embed_scale=spec.embed_scale,
                    mla=spec.mla is not None, sliding_layers=frozenset(spec.sliding_layers),
                    tag_windows=len(spec.window_groups) > 1)


def make_classifier(modules: Iterable[tuple[str, str]],
                    info: ArchInfo) -> Callable[[str, str | None, str, int, int | None], str]:
    """``classify`` bound to one model's module roles: (module path, tag, op, index, dim)."""
    table = module_roles(modules, info)

    def classify_call(module: str, tag: str | None, op: str, index: int,
                      dim: int | None) -> str:
        return classify(table.get(module), tag, op, index, dim, info)

    return classify_call
