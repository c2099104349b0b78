"""How TP / PP / EP / attention-DP split a model over GPUs, and the communication ops.

TP shards attention heads and MLP columns Megatron-style; when TP exceeds the KV heads, each
rank keeps one KV head (replicated, as vLLM does). MLA's latent cache is shared by all heads,
so every TP rank holds all of it. PP cuts the layers into contiguous stages.

Attention data parallelism (``attn_dp``, as vLLM ``--data-parallel-size`` with
``--enable-expert-parallel``, SGLang ``--enable-dp-attention``, TensorRT-LLM
``enable_attention_dp`` serve DeepSeek-V3 and Qwen3-MoE): a pipeline stage has
G = tp x attn_dp GPUs. Attention, dense feed-forward layers and shared experts are replicated
over the attn_dp groups, each running TP = tp on its own ceil(batch / attn_dp) sequences
(vLLM docs, "Data Parallel Deployment": data parallel for the attention layers, expert or
tensor parallel for the expert layers; the non-expert layers of a DP rank run inside its own
TP group). Routed experts spread over all G GPUs: EP = ep groups of E / ep experts, each
expert split over G / ep GPUs (MoE-TP); ep must divide G. With attn_dp = 1 that is the
classic layout: experts over the TP ranks (ep divides tp), every rank sees every token, and
the TP all-reduce after the MoE layer sums the experts' outputs.

Every comm op says which group it runs in and how far apart its ranks are (GPUs numbered
stage by stage, a stage's attention-DP groups side by side, TP ranks consecutive):
``tp`` (size tp, stride 1), ``ep`` (the whole stage: size tp x attn_dp, stride 1),
``pp`` (stage to stage: stride tp x attn_dp).
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

from perfscope.analytic.ops import Op
from perfscope.errors import InputError
from perfscope.specs.model import ModelSpec
from perfscope.specs.scenario import Scenario, field_error


class Shard(NamedTuple):
    """How one GPU's share of the model is shaped (per-rank widths: a counting.Split)."""

    tp: int
    pp: int
    ep: int
    attn_dp: int  # attention data-parallel groups per pipeline stage
    moe_tp: int  # GPUs one routed expert is split over: tp x attn_dp / ep
    heads: int  # attention (query) heads per rank
    kv_heads: int  # KV heads per rank
    intermediate: int  # dense MLP width per rank
    expert_intermediate: int  # one expert's width per rank
    experts: int  # experts held per rank
    shared_intermediate: int
    vocab: int  # vocab rows per rank (embedding and LM head)
    stages: tuple[range, ...]  # layer ranges of the PP stages


def _divisors(n: int) -> str:
    return ", ".join(str(d) for d in range(1, n + 1) if n % d == 0 and d <= 64)


def shard(m: ModelSpec, s: Scenario) -> Shard:
    """How the model splits over the GPUs of ``s`` (pure in the model and the degrees)."""
    return _shard(m, s.tp, s.pp, s.ep, s.attn_dp)


@lru_cache(maxsize=256)
def _shard(m: ModelSpec, tp: int, pp: int, ep: int, attn_dp: int) -> Shard:
    if m.n_heads % tp:
        raise field_error("tp", tp, f"does not divide the {m.n_heads} attention heads of "
                          f"{m.name}; use one of {_divisors(m.n_heads)}")
    if m.n_kv_heads % tp and tp % m.n_kv_heads:
        raise field_error("tp", tp, f"and the {m.n_kv_heads} KV heads of {m.name} do not "
                          "divide one another; pick a TP degree that does")
    if m.intermediate % tp:
        raise field_error("tp", tp, f"does not divide the MLP width {m.intermediate} of "
                          f"{m.name}")
    if pp > m.n_layers:
        raise field_error("pp", pp, f"exceeds the {m.n_layers} layers of {m.name}")
    e_i = shared_i = experts = 0
    stage = tp * attn_dp  # GPUs of a pipeline stage
    split = 1
    if m.moe is None:
        if ep != 1:
            raise field_error("ep", ep, f"{m.name} has no experts; leave ep at 1")
    else:
        if stage % ep:
            what = f"tp {tp}" if attn_dp == 1 else f"tp x attn_dp = {stage}"
            raise field_error("ep", ep, f"must divide {what}: experts are spread over the "
                              f"{stage} GPUs of a stage")
        if m.moe.n_experts % ep:
            raise field_error("ep", ep, f"does not divide the {m.moe.n_experts} experts of "
                              f"{m.name}")
        split = stage // ep
        if m.moe.expert_intermediate % split:
            raise field_error("ep", ep, f"{stage} GPUs / ep {ep} = {split} does not divide "
                              f"the expert width {m.moe.expert_intermediate}; raise ep")
        e_i = m.moe.expert_intermediate // split
        experts = m.moe.n_experts // ep
        shared_i = m.moe.shared_intermediate // tp if m.moe.shared_intermediate else 0
    kv = max(1, m.n_kv_heads // tp)
    # vLLM's get_pp_indices: even split, the remainder goes to the last stages
    base, extra = divmod(m.n_layers, pp)
    stages, start = [], 0
    for i in range(pp):
        n = base + (1 if i >= pp - extra else 0)
        stages.append(range(start, start + n))
        start += n
    return Shard(tp, pp, ep, attn_dp, split, m.n_heads // tp, kv, m.intermediate // tp, e_i,
                 experts, shared_i, -(-m.vocab // tp), tuple(stages))


GROUPS = ("tp", "ep", "pp", "dp")


def _comm(name: str, collective: str, msg_bytes: float, ranks: int, count: int,
          layer: int | None, group: str = "tp", stride: int = 1) -> Op:
    """A comm op; ``Op.impl`` records the collective, the group kind and the spacing of the
    group's ranks in the global numbering, from which perfscope.collectives picks the links.

    Ranks are numbered TP innermost: a TP group is consecutive (stride 1); the data-parallel-
    attention / expert group spans the tp x attn_dp GPUs of a pipeline stage (stride 1);
    PP peers are tp x attn_dp apart; DP replicas tp x attn_dp x pp apart.
    """
    if group not in GROUPS:
        raise InputError(f"comm group {group!r} of {name}: use one of {', '.join(GROUPS)}")
    return tuple.__new__(Op, (name, "comm", layer, count, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, "",
                              "link", {"bytes": int(msg_bytes), "ranks": ranks}, 0.0,
                              collective, msg_bytes, ranks,
                              {"collective": collective, "group": group, "stride": stride}))


def all_reduce(name: str, msg_bytes: float, ranks: int, count: int, layer: int | None, *,
               group: str = "tp", stride: int = 1) -> Op:
    """All-reduce of ``msg_bytes`` per rank (a ring moves 2(p-1)/p of it over each link)."""
    return _comm(name, "all_reduce", msg_bytes, ranks, count, layer, group, stride)


def all_gather(name: str, msg_bytes: float, ranks: int, count: int, layer: int | None, *,
               group: str = "tp", stride: int = 1) -> Op:
    """All-gather; ``msg_bytes`` is the gathered size: (p-1)/p of it crosses each link."""
    return _comm(name, "all_gather", msg_bytes, ranks, count, layer, group, stride)


def reduce_scatter(name: str, msg_bytes: float, ranks: int, count: int, layer: int | None, *,
                   group: str = "tp", stride: int = 1) -> Op:
    """Reduce-scatter of ``msg_bytes`` per rank (the input): (p-1)/p of it crosses each link."""
    return _comm(name, "reduce_scatter", msg_bytes, ranks, count, layer, group, stride)


def all_to_all(name: str, msg_bytes: float, ranks: int, count: int, layer: int | None, *,
               group: str = "ep", stride: int = 1) -> Op:
    """All-to-all (MoE dispatch / combine): each rank sends ``msg_bytes`` split over the
    group, (p-1)/p of it to its peers."""
    return _comm(name, "all_to_all", msg_bytes, ranks, count, layer, group, stride)


def p2p(name: str, msg_bytes: float, count: int, *, group: str = "pp", stride: int = 1,
        layer: int | None = None) -> Op:
    """One send/recv of ``msg_bytes`` between two ranks ``stride`` apart (PP: tp x attn_dp)."""
    return _comm(name, "p2p", msg_bytes, 2, count, layer, group, stride)
