"""Feed-forward sub-layers: the dense (gated or plain) MLP and the mixture of experts."""

from __future__ import annotations

from perfscope.analytic.common import ACT_FLOPS, Ctx, elementwise, gemm
from perfscope.analytic.ops import Op


def expected_experts(n_experts: int, top_k: int, tokens: float) -> float:
    """Distinct experts touched when ``tokens`` tokens each pick ``top_k`` of ``n_experts``
    uniformly without replacement: E * (1 - (1 - k/E)^tokens)."""
    if tokens <= 0:
        return 0.0
    return n_experts * (1.0 - (1.0 - top_k / n_experts) ** tokens)


def _act(c: Ctx, name: str, tokens: float, width: int, layer: int) -> Op:
    # gated: act(gate) * up -> reads 2 x width, writes width; sized by the MLP width
    per = ACT_FLOPS.get(c.m.activation, 4)
    impl = {"activation": c.m.activation, "gated": c.m.gated_mlp}
    if c.m.gated_mlp:
        return elementwise(c, name, tokens, width, layer, flops_per=per + 1, n_in=2,
                           feeds_gemm=True, impl=impl)
    return elementwise(c, name, tokens, width, layer, flops_per=per, n_in=1, feeds_gemm=True,
                       impl=impl)


def mlp_ops(c: Ctx, layer: int, width: int | None = None, prefix: str = "mlp",
            tokens: float | None = None) -> list[Op]:
    """Dense MLP on one rank (the TP all-reduce after it is added by the layer builder)."""
    m = c.m
    I = width if width is not None else c.sh.intermediate
    N = c.N if tokens is None else tokens
    up = 2 * I if m.gated_mlp else I
    ops = [gemm(c, f"{prefix}.gate_up_proj" if m.gated_mlp else f"{prefix}.up_proj", N, up,
                m.hidden, layer, bias=m.mlp_bias),
           _act(c, f"{prefix}.act", N, I, layer),
           gemm(c, f"{prefix}.down_proj", N, m.hidden, I, layer, bias=m.mlp_bias)]
    return ops


def moe_ops(c: Ctx, layer: int) -> list[Op]:
    m, sh = c.m, c.sh
    e = m.moe
    assert e is not None
    N, h = c.N, m.hidden
    E, k = e.n_experts, e.top_k
    router = gemm(c, "moe.router", N, E, h, layer, head=True)
    # deepseek-v3 scores experts with a sigmoid and picks top-k within the best groups;
    # the others softmax the router logits and take the top-k
    routing = "sigmoid_group_topk" if e.router_bias else "softmax_topk"
    topk = elementwise(c, "moe.topk", N, E, layer, flops_per=6, n_in=1, n_out=0,
                       impl={"routing": routing, "top_k": k, "experts": E})
    ops = [router, topk]
    # Routed experts on this rank: assignments spread evenly over the EP groups; each
    # touched expert's weights are read once (expected distinct experts under uniform routing).
    assigned = N * k / sh.ep
    touched = expected_experts(E, k, N) / sh.ep
    I = sh.expert_intermediate
    up = 2 * I if m.gated_mlp else I
    per_expert = assigned / touched if touched else 0.0
    ops.append(gemm(c, "moe.experts_gate_up", per_expert, up, h, layer, groups=touched,
                    tokens=assigned))
    ops.append(_act(c, "moe.experts_act", assigned, I, layer))
    ops.append(gemm(c, "moe.experts_down", per_expert, h, I, layer, groups=touched,
                    tokens=assigned))
    # weighted sum of each token's k expert outputs: k multiply-adds per element
    ops.append(elementwise(c, "moe.combine", N, h, layer, flops_per=2 * k, n_in=k / sh.ep + 1,
                           impl={"combine": "weighted_sum", "top_k": k}))
    if e.shared_intermediate:
        ops += mlp_ops(c, layer, sh.shared_intermediate, prefix="moe.shared")
        if e.shared_expert_gate:
            ops.append(gemm(c, "moe.shared_gate", N, 1, h, layer, head=True))
    return ops
