"""Feed-forward sub-layers: the dense (gated or plain) MLP and the mixture of experts."""

from __future__ import annotations

from perfscope.analytic.common import ACT_FLOPS, Ctx, Site, elementwise, experts, linear
from perfscope.analytic.ops import Op


def expected_experts(n_experts: int, top_k: int, tokens: float) -> float:
    """Distinct experts touched when ``tokens`` tokens each pick ``top_k`` of ``n_experts``
    uniformly without replacement: E * (1 - (1 - k/E)^tokens)."""
    if tokens <= 0:
        return 0.0
    return n_experts * (1.0 - (1.0 - top_k / n_experts) ** tokens)


def _act(c: Ctx, name: str, tokens: float, width: int, at: Site) -> Op:
    # gated: act(gate) * up -> reads 2 x width, writes width; sized by the MLP width
    m = c.model
    per = ACT_FLOPS.get(m.activation, 4)
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
    m, sh = c.model, c.shard
    e = m.moe
    assert e is not None
    tokens = c.tokens
    n_experts, k = e.n_experts, e.top_k
    router = linear(c, "moe.router", tokens, at)
    # deepseek-v3 scores experts with a sigmoid and picks top-k within the best groups;
    # the others softmax the router logits and take the top-k
    routing = "sigmoid_group_topk" if e.router_bias else "softmax_topk"
    topk = elementwise(c, "moe.topk", tokens, n_experts, at, flops_per=6, n_in=1, n_out=0,
                       impl={"routing": routing, "top_k": k, "experts": n_experts})
    ops = [router, topk]
    # Routed experts on this rank: assignments spread evenly over the EP groups; each
    # touched expert's weights are read once (expected distinct experts under uniform routing).
    assigned = tokens * k / sh.ep
    touched = expected_experts(n_experts, k, tokens) / sh.ep
    ops.append(experts(c, "moe.experts_gate_up", assigned, touched, at))
    ops.append(_act(c, "moe.experts_act", assigned, sh.expert_intermediate, at))
    ops.append(experts(c, "moe.experts_down", assigned, touched, at))
    # weighted sum of each token's k expert outputs: k multiply-adds per element
    ops.append(elementwise(c, "moe.combine", tokens, m.hidden, at, flops_per=2 * k,
                           n_in=k / sh.ep + 1, impl={"combine": "weighted_sum", "top_k": k}))
    if e.shared_intermediate:
        ops += mlp_ops(c, at, prefix="moe.shared")
        if e.shared_expert_gate:
            ops.append(linear(c, "moe.shared_gate", tokens, at))
    return ops
