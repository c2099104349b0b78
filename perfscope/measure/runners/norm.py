"""Norm runners: RMSNorm or LayerNorm over groups of ``group`` elements (whole rows, or per
head for Qwen3's q/k norms), optionally after the residual add and before per-token
quantization (int8 or fp8, the GEMM input it feeds).

    rmsnorm:   out = x / sqrt(mean(x^2) + eps) * w           (Llama, Qwen, Mistral, Gemma)
    layernorm: out = (x - mean(x)) / sqrt(var(x) + eps) * w + b   (GPT-2, OPT)
    fused_add: h = x + residual; out = norm(h); both written (vLLM's fused_add_rms_norm)

Gemma's RMSNorm multiplies by (1 + w): that is the same kernel with the stored weight w + 1,
which is what ``w`` stands for here. eps: 1e-6 for RMSNorm, 1e-5 for LayerNorm (the usual
config values; eps does not change the cost).
"""

from __future__ import annotations

from typing import Any

from perfscope.analytic.ops import Op
from perfscope.measure.checks import random_tensor
from perfscope.measure.dtypes import torch_dtype
from perfscope.measure.runners.common import (
    Runner,
    check_quant,
    compare,
    need,
    no_kernel,
    quant_dtype,
    quant_note,
    quant_per_token,
    shape,
)

EPS = {"rmsnorm": 1e-6, "layernorm": 1e-5}


def norm_runner(op: Op, device: str) -> Runner:
    impl = need(op, "norm")
    sh = shape(op, "tokens", "width")
    t, w = sh["tokens"], sh["width"]
    kind, group = impl["norm"], int(impl.get("group") or w)
    fused, quant = bool(impl.get("fused_add")), bool(impl.get("quant_out"))
    target = quant_dtype(op) if quant else ""
    if kind not in EPS:
        raise no_kernel(op, f"norm {kind!r}: no runner (rmsnorm and layernorm have one)")
    if w % group:
        raise no_kernel(op, f"width {w} is not a multiple of the norm group {group}")
    eps = EPS[kind]
    dt = torch_dtype(op.dtype)

    def norm(x: Any, p: dict[str, Any]) -> Any:
        import torch.nn.functional as F

        xg = x.view(-1, group)
        if kind == "rmsnorm":
            return F.rms_norm(xg, (group,), p["w"], eps).view(t, w)
        return F.layer_norm(xg, (group,), p["w"], p["b"], eps).view(t, w)

    def fn(xs: tuple[Any, ...], p: dict[str, Any]) -> Any:
        h = xs[0] + xs[1] if fused else xs[0]
        out = norm(h, p)
        if quant:
            q, s = quant_per_token(out, target)
            return (q, s, h) if fused else (q, s)
        return (out, h) if fused else out

    def inputs(seed: int) -> tuple[Any, ...]:
        x = random_tensor((t, w), dt, device, seed=seed)
        return (x, random_tensor((t, w), dt, device, seed=seed + 1)) if fused else (x,)

    def params(seed: int) -> dict[str, Any]:
        p = {"w": random_tensor((group,), dt, device, seed=seed + 2)}
        if kind == "layernorm":
            p["b"] = random_tensor((group,), dt, device, seed=seed + 3)
        return p

    def reference(xs: tuple[Any, ...], p: dict[str, Any]) -> tuple[Any, Any | None]:
        import torch

        h = xs[0].double() + xs[1].double() if fused else xs[0].double()
        hg = h.view(-1, group)
        if kind == "rmsnorm":
            out = hg / torch.sqrt((hg * hg).mean(-1, keepdim=True) + eps) * p["w"].double()
        else:
            mu = hg.mean(-1, keepdim=True)
            var = ((hg - mu) ** 2).mean(-1, keepdim=True)
            out = (hg - mu) / torch.sqrt(var + eps) * p["w"].double() + p["b"].double()
        return out.view(t, w), (h if fused else None)

    what = f"{op.name} {kind}"

    def verify(args: tuple[Any, ...], got: Any) -> float:
        out64, h64 = reference(*args)
        parts = got if isinstance(got, tuple) else (got,)
        err = 0.0
        if fused:
            err = compare(parts[-1], h64, op.dtype, f"{what} (residual)")
        if quant:
            return max(err, check_quant(parts[0], parts[1], out64, what, target))
        return max(err, compare(parts[0], out64, op.dtype, what))

    per = f" per group of {group}" if group != w else ""
    call = "F.rms_norm" if kind == "rmsnorm" else "F.layer_norm"
    desc = (f"h = x + residual; {call}(h){per}" if fused else f"{call}(x){per}") + \
        quant_note(impl)
    return Runner(desc, fn, inputs, params, verify)
