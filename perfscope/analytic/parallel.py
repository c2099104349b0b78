"""How TP / PP / EP split a model over GPUs, and the communication ops that follow.

TP shards attention heads and MLP columns Megatron-style; when TP exceeds the KV heads, each
rank keeps one KV head (replicated, as vLLM does). MLA's latent cache is shared by all heads,
so every TP rank holds all of it. EP spreads experts over the TP ranks of a stage (ep divides
tp); each expert is then split over tp/ep ranks. PP cuts the layers into contiguous stages.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

from perfscope.analytic.ops import Op
from perfscope.specs.model import ModelSpec
from perfscope.specs.scenario import Scenario, field_error


class Shard(NamedTuple):
    """How one GPU's share of the model is shaped (per-rank widths: a counting.Split)."""

    tp: int
    pp: int
    ep: int
    attn_dp: int  # attention data-parallel groups per pipeline stage
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
    if m.moe is None:
        if ep != 1:
            raise field_error("ep", ep, f"{m.name} has no experts; leave ep at 1")
    else:
        if tp % ep:
            raise field_error("ep", ep, f"must divide tp {tp}: experts are spread over the "
                              "tensor-parallel ranks of a stage")
        if m.moe.n_experts % ep:
            raise field_error("ep", ep, f"does not divide the {m.moe.n_experts} experts of "
                              f"{m.name}")
        split = tp // ep
        if m.moe.expert_intermediate % split:
            raise field_error("ep", ep, f"tp {tp} / ep {ep} = {split} does not divide the "
                              f"expert width {m.moe.expert_intermediate}; raise ep")
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
    return Shard(tp, pp, ep, attn_dp, m.n_heads // tp, kv, m.intermediate // tp, e_i, experts,
                 shared_i, -(-m.vocab // tp), tuple(stages))


def _comm(name: str, collective: str, msg_bytes: float, ranks: int, count: int,
          layer: int | None) -> Op:
    return tuple.__new__(Op, (name, "comm", layer, count, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, "",
                              "link", {"bytes": int(msg_bytes), "ranks": ranks}, 0.0,
                              collective, msg_bytes, ranks, {"collective": collective}))


def all_reduce(name: str, msg_bytes: float, ranks: int, count: int, layer: int | None) -> Op:
    """Ring all-reduce of ``msg_bytes`` per rank: each rank sends and receives 2(p-1)/p of it."""
    return _comm(name, "all_reduce", msg_bytes, ranks, count, layer)


def all_gather(name: str, msg_bytes: float, ranks: int, count: int, layer: int | None) -> Op:
    """Ring all-gather; ``msg_bytes`` is the gathered size: (p-1)/p of it crosses each link."""
    return _comm(name, "all_gather", msg_bytes, ranks, count, layer)


def p2p(name: str, msg_bytes: float, count: int) -> Op:
    return _comm(name, "p2p", msg_bytes, 2, count, None)


def link_bytes(op: Op) -> float:
    """Bytes each rank puts on its link (nccl-tests 'bus' bytes)."""
    p = op.ranks
    if op.comm == "all_reduce":
        return op.comm_bytes * 2 * (p - 1) / p
    if op.comm in ("all_gather", "reduce_scatter", "all_to_all"):
        return op.comm_bytes * (p - 1) / p
    return op.comm_bytes


def link_steps(op: Op) -> int:
    """Latency-bound steps of the ring algorithm."""
    p = op.ranks
    if op.comm == "all_reduce":
        return 2 * (p - 1)
    if op.comm in ("all_gather", "reduce_scatter", "all_to_all"):
        return p - 1
    return 1
