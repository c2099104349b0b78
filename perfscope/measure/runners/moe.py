"""Mixture-of-experts runners: routing (which experts each token goes to, with what weight)
and the weighted combine of the experts' outputs.

The routing op's ``impl`` carries transformers' config fields: ``norm_topk_prob`` (renormalize
the top-k weights to sum to one), and for DeepSeek-V3 ``n_group``, ``topk_group`` and
``routed_scaling_factor``.

- ``softmax_topk`` (Mixtral, Qwen2-MoE, Qwen3-MoE): probabilities = softmax(logits) in
  float32, the top-k, renormalized when ``norm_topk_prob`` (Mixtral always; the Qwen-MoE
  configs say, and default to no).
- ``sigmoid_group_topk`` (DeepSeek-V3): scores = sigmoid(logits); experts are chosen by
  scores + e_score_correction_bias within the ``topk_group`` best of ``n_group`` expert
  groups (a group scores the sum of its top two); weights are the chosen scores, renormalized
  when ``norm_topk_prob``, times ``routed_scaling_factor``. Without the group counts on the op
  it is skipped.
- ``weighted_sum``: out[t] = sum over the token's k expert outputs of weight * output.
"""

from __future__ import annotations

from typing import Any

from perfscope.analytic.ops import Op
from perfscope.measure.checks import random_tensor
from perfscope.measure.dtypes import torch_dtype
from perfscope.measure.runners.common import Runner, compare, need, no_kernel, shape


def _check_routing(got: Any, ref: tuple[Any, Any], dtype: str, what: str) -> float:
    """Same experts per token (in any order) with the same weights."""
    import torch

    w, ids = got
    w_ref, ids_ref = ref
    ids_s, order = torch.sort(ids.long(), dim=-1)
    ref_s, ref_order = torch.sort(ids_ref.long(), dim=-1)
    err = compare(ids_s, ref_s.to(ids_s.device), dtype, f"{what} (experts chosen)")
    return max(err, compare(w.gather(-1, order), w_ref.gather(-1, ref_order).to(w.device),
                            dtype, f"{what} (weights)"))


def routing_runner(op: Op, device: str) -> Runner:
    import torch

    impl = need(op, "routing", "top_k")
    sh = shape(op, "tokens", "width")
    t, E = sh["tokens"], sh["width"]
    k, kind = int(impl["top_k"]), impl["routing"]
    renorm = bool(impl.get("norm_topk_prob", True))
    dt = torch_dtype(op.dtype)
    if kind == "softmax_topk":
        def fn(logits: Any, p: Any) -> tuple[Any, Any]:
            probs = torch.softmax(logits, dim=-1, dtype=torch.float32)
            w, ids = torch.topk(probs, k, dim=-1)
            if renorm:
                w = w / w.sum(dim=-1, keepdim=True)
            return w.to(logits.dtype), ids

        def reference(logits: Any, p: Any) -> tuple[Any, Any]:
            probs = torch.softmax(logits.double(), dim=-1)
            w, ids = torch.topk(probs, k, dim=-1)
            return (w / w.sum(dim=-1, keepdim=True) if renorm else w), ids

        desc = f"softmax, top-{k} of {E}" + (", renormalized" if renorm else "")
        params: Any = lambda s: {}  # noqa: E731
    elif kind == "sigmoid_group_topk":
        if "n_group" not in impl or "topk_group" not in impl:
            raise no_kernel(op, "sigmoid group top-k routing (DeepSeek-V3) needs the expert "
                                "group counts (Op.impl n_group, topk_group), which the "
                                "analytic op does not carry")
        n_g, k_g = int(impl["n_group"]), int(impl["topk_group"])
        scaling = float(impl.get("routed_scaling_factor", 1.0))
        if E % n_g:
            raise no_kernel(op, f"{E} experts are not {n_g} equal groups")

        def route(logits: Any, bias: Any) -> tuple[Any, Any]:
            scores = logits.sigmoid()
            choice = scores + bias
            group = choice.view(-1, n_g, E // n_g).topk(2, dim=-1)[0].sum(dim=-1)
            gidx = torch.topk(group, k=k_g, dim=-1, sorted=False)[1]
            gmask = torch.zeros_like(group).scatter_(1, gidx, 1)
            smask = gmask.unsqueeze(-1).expand(-1, n_g, E // n_g).reshape(-1, E)
            choice = choice.masked_fill(~smask.bool(), float("-inf"))
            ids = torch.topk(choice, k=k, dim=-1, sorted=False)[1]
            w = scores.gather(1, ids)
            if renorm:
                w = w / (w.sum(dim=-1, keepdim=True) + 1e-20)
            return w * scaling, ids

        def fn(logits: Any, p: Any) -> tuple[Any, Any]:
            return route(logits.float(), p["bias"])

        def reference(logits: Any, p: Any) -> tuple[Any, Any]:
            return route(logits.double(), p["bias"].double())

        desc = (f"sigmoid, top-{k_g} of {n_g} expert groups, top-{k} of {E}"
                + (", renormalized" if renorm else "") + f", x{scaling:g}")
        params = lambda s: {"bias": random_tensor((E,), torch.float32, device,  # noqa: E731
                                                  seed=s, scale=0.1)}
    else:
        raise no_kernel(op, f"routing {kind!r} has no runner")

    def verify(args: tuple[Any, ...], out: Any) -> float:
        return _check_routing(out, reference(*args), op.dtype, op.name)

    return Runner(desc, fn, lambda s: random_tensor((t, E), dt, device, seed=s), params, verify)


def combine_runner(op: Op, device: str) -> Runner:
    """out[t, h] = sum_j w[t, j] * y[t, j, h] over the token's k expert outputs y [t, k, h]
    (one batched GEMV per token: [1, k] @ [k, h])."""
    import torch

    impl = need(op, "combine", "top_k")
    if impl["combine"] != "weighted_sum":
        raise no_kernel(op, f"combine {impl['combine']!r} has no runner")
    sh = shape(op, "tokens", "width")
    t, h, k = sh["tokens"], sh["width"], int(impl["top_k"])
    dt = torch_dtype(op.dtype)

    def fn(yw: tuple[Any, Any], p: Any) -> Any:
        y, w = yw
        return torch.bmm(w.to(y.dtype)[:, None, :], y).squeeze(1)

    def inputs(seed: int) -> tuple[Any, Any]:
        y = random_tensor((t, k, h), dt, device, seed=seed)
        w = torch.softmax(random_tensor((t, k), torch.float32, device, seed=seed + 1), -1)
        return y, w

    def reference(yw: tuple[Any, Any], p: Any) -> Any:
        """transformers' MoE loop: each expert's output times its routing weight,
        index_add_-ed into the token's row (here slot by slot)."""
        y, w = yw
        out = torch.zeros(t, h, dtype=torch.float64, device=y.device)
        tok = torch.arange(t, device=y.device)
        for j in range(k):
            out.index_add_(0, tok, y[:, j].double() * w[:, j, None].double())
        return out

    def verify(args: tuple[Any, ...], out: Any) -> float:
        return compare(out, reference(*args), op.dtype, op.name)

    return Runner(f"weighted sum of {k} expert outputs (bmm)", fn, inputs, lambda s: {}, verify)
