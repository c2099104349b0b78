"""Op runners: the computation each analytic op stands for, chosen by its ``impl``.

``build_runner(op, device)`` dispatches on the op's kind and its ``impl`` attributes (norm
type, activation, rotary dims, routing, combine, ...), never on its name. An op whose
computation perfscope has no faithful kernel for raises ``Skip`` with the reason: timing a
stand-in and reporting it as the op would be wrong.
"""

from __future__ import annotations

from perfscope.analytic.ops import Op
from perfscope.measure.runners.common import Runner, no_kernel

__all__ = ["Runner", "build_runner"]


def build_runner(op: Op, device: str, *, embed_cap: int | None = None) -> Runner:
    """The runner of ``op`` on ``device``; Skip when there is no faithful kernel."""
    from perfscope.measure.runners import attention, gemm, moe, norm, pointwise

    impl = dict(op.impl or {})
    if not impl:
        raise no_kernel(op, "the analytic op carries no implementation attributes (Op.impl), "
                            "so what it computes is unknown")
    if op.kind == "gemm":
        return gemm.gemm_runner(op, device)
    if op.kind == "attention":
        return attention.attention_runner(op, device)
    if op.kind == "norm":
        return norm.norm_runner(op, device)
    if op.kind == "softmax" and impl.get("op") == "softmax":
        return pointwise.softmax_runner(op, device)
    if op.kind == "embedding" and impl.get("op") == "embedding":
        return pointwise.embedding_runner(op, device, embed_cap or pointwise.EMBED_TABLE_CAP)
    if op.kind == "elementwise":
        if "activation" in impl:
            return pointwise.activation_runner(op, device)
        if "rotary_dim" in impl:
            return pointwise.rotary_runner(op, device)
        if "routing" in impl:
            return moe.routing_runner(op, device)
        if "combine" in impl:
            return moe.combine_runner(op, device)
        if impl.get("op") == "add":
            return pointwise.add_runner(op, device)
        if impl.get("op") == "quant_per_token":
            return pointwise.quant_runner(op, device)
        if impl.get("op") == "repeat_kv":
            return attention.repeat_kv_runner(op, device)
        if impl.get("op") == "cast":
            raise no_kernel(op, "the cast of the cached latent to the up-projection's input "
                                "dtype: the op does not say the cache dtype or how many of its "
                                "rows come from the cache, so what it reads is unknown")
    raise no_kernel(op, f"no runner for a {op.kind} op computing {impl}")
