"""Feed-forward sub-layers: the dense (gated or plain) MLP and the mixture of experts."""

from __future__ import annotations

from perfscope.analytic.common import Ctx, Site, elementwise, experts, linear
from perfscope.analytic.expert_load import busiest_rank, expected_experts
from perfscope.analytic.ops import Op
from perfscope.analytic.parallel import all_gather, all_to_all, reduce_scatter
from perfscope.specs.model.activations import ACT_FLOPS

__all__ = ["expected_experts", "mlp_ops", "moe_ops"]  # expected_experts: kept for callers


def _act(c: Ctx, name: str, tokens: float, width: int, at: Site) -> Op:
    # gated: act(gate) * up -> reads 2 x width, writes width; sized by the MLP width
    m = c.model
    per = ACT_FLOPS[m.activation]
    impl = {"activation": m.activation, "gated": m.gated_mlp}
    if m.gated_mlp:
        return elementwise(c, name, tokens, width, at, flops_per=per + 1, n_in=2,
                           feeds_gemm=True, impl=impl)
    return elementwise(c, name, tokens, width, at, flops_per=per, n_in=1, feeds_gemm=True,
                       impl=impl)


def mlp_ops(c: Ctx, at: Site, prefix: str = "mlp") -> list[Op]:
    """Dense MLP on one rank (the TP all-reduce after it is added by the layer builder);
    ``prefix`` "moe.shared" for the shared experts of an MoE layer."""
    m = c.model
    up = c.weights[f"{prefix}.gate_up_proj" if m.gated_mlp else f"{prefix}.up_proj"]
    width = up.weight.rows // (2 if m.gated_mlp else 1)
    tokens = c.tokens
    return [linear(c, up.weight.name, tokens, at),
            _act(c, f"{prefix}.act", tokens, width, at),
            linear(c, f"{prefix}.down_proj", tokens, at)]


def moe_ops(c: Ctx, at: Site) -> list[Op]:
    """Router, routed experts on the busiest EP rank, the weighted sum, shared experts; under
    attention DP also the dispatch to the experts and the combine back (``moe_comm``)."""
    m, sh = c.model, c.shard
    e = m.moe
    assert e is not None
    tokens, h = c.tokens, m.hidden
    n_experts, k = e.n_experts, e.top_k
    # each GPU routes the tokens of its attention group
    router = linear(c, "moe.router", tokens, at)
    # deepseek-v3 scores experts with a sigmoid and picks top-k within the best groups;
    # the others softmax the router logits and take the top-k
    routing = "sigmoid_group_topk" if e.router_bias else "softmax_topk"
    route = {"routing": routing, "top_k": k, "experts": n_experts,
             "norm_topk_prob": e.norm_topk_prob}
    if e.router_bias:  # transformers' DeepseekV3TopkRouter fields
        route |= {"n_group": e.n_group, "topk_group": e.topk_group,
                  "routed_scaling_factor": e.routed_scaling_factor}
    topk = elementwise(c, "moe.topk", tokens, n_experts, at, flops_per=6, n_in=1, n_out=0,
                       impl=route)
    ops = [router, topk]
    # The step waits for the busiest EP rank: the most distinct experts touched (weights
    # streamed) and the most token-expert assignments (FLOPs, activations) over the ep ranks,
    # for all the tokens the MoE layer sees (every attention-DP group's)
    load = busiest_rank(n_experts, k, sh.ep, c.all_tokens)
    touched, assigned = load.experts_max, load.assignments_max
    if sh.attn_dp > 1:
        sent = -(-tokens // sh.tp)  # the GPU's share of its group's tokens
        ops.append(_exchange(c, at, "ep.dispatch", sent * k, assigned, c.gemm_in_bytes, False))
    ops.append(experts(c, "moe.experts_gate_up", assigned, touched, at))
    ops.append(_act(c, "moe.experts_act", assigned, sh.expert_intermediate, at))
    ops.append(experts(c, "moe.experts_down", assigned, touched, at))
    impl = {"combine": "weighted_sum", "top_k": k}
    if sh.attn_dp > 1:
        ops.append(_exchange(c, at, "ep.combine", sent * k, assigned, c.act_bytes, True))
        # each of the GPU's tokens sums its k expert outputs (read k, write 1)
        ops.append(elementwise(c, "moe.combine", sent, h, at, flops_per=2 * k, n_in=k,
                               impl=impl))
    else:
        # every rank sums the outputs of its own experts for all tokens; the TP all-reduce
        # after the layer adds the ranks up (k multiply-adds per element in all)
        ops.append(elementwise(c, "moe.combine", tokens, h, at, flops_per=2 * k,
                               n_in=assigned / tokens + 1 if tokens else 1, impl=impl))
    if e.shared_intermediate:
        ops += mlp_ops(c, at, prefix="moe.shared")
        if e.shared_expert_gate:
            ops.append(linear(c, "moe.shared_gate", tokens, at))
    return ops


def _exchange(c: Ctx, at: Site, name: str, picks: int, assigned: float, elem_bytes: float,
              back: bool) -> Op:
    """Tokens to their experts (dispatch) or their outputs back (combine), over all the
    GPUs of the stage. all_to_all: each GPU sends each of its tokens once per expert
    (k copies, to each of the moe_tp GPUs an expert is split over; DeepEP's low-latency
    mode, TensorRT-LLM's alltoall) and the busiest receives every assignment of its EP rank:
    the larger of the two sizes it. allgather_reducescatter (vLLM's default): every GPU
    gathers every token of the stage, and reduce-scatters their outputs."""
    sh, h = c.shard, c.model.hidden
    gpus = sh.tp * sh.attn_dp
    if c.scenario.moe_comm == "all_to_all":
        size = max(picks * sh.moe_tp, assigned) * h * elem_bytes  # ``picks``: tokens x k
        return all_to_all(name, size, gpus, at.count, at.layer, group="ep", stride=1)
    everything = c.all_tokens * h * elem_bytes
    if back:
        return reduce_scatter(name, everything, gpus, at.count, at.layer, group="ep", stride=1)
    return all_gather(name, everything, gpus, at.count, at.layer, group="ep", stride=1)
