"""Element-wise and row-wise runners: activations (plain and gated), residual and position
adds, per-token int8/fp8 quantization, the masked softmax of eager attention, rotary embedding,
and the embedding gather. Each float64 reference follows the transformers code.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from perfscope.analytic.ops import Op
from perfscope.measure.checks import random_tensor
from perfscope.measure.dtypes import torch_dtype
from perfscope.measure.runners.common import (
    QMAX,
    Runner,
    check_quant,
    need,
    no_kernel,
    quant_dtype,
    quant_note,
    quant_per_token,
    shape,
    verifier,
)
from perfscope.units import DTYPE_BITS

EMBED_TABLE_CAP = 256 * 2**20  # CPU: bytes of embedding table allocated (vocab scaled)
ROTARY_THETA = 10000.0  # rotary base of the cos/sin tables (the cost does not depend on it)


# ---- activations ------------------------------------------------------------------------

def _act_fns() -> dict[str, tuple[Callable[[Any], Any], Callable[[Any], Any], str]]:
    """name -> (run, float64 reference, description), as transformers' ACT2FN defines them."""
    import torch
    import torch.nn.functional as F

    def tanh_gelu64(x: Any) -> Any:  # NewGELUActivation / gelu_pytorch_tanh
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) *
                                           (x + 0.044715 * torch.pow(x, 3.0))))

    def tanh_gelu(x: Any) -> Any:
        return F.gelu(x, approximate="tanh")

    return {
        "silu": (F.silu, lambda x: x / (1.0 + torch.exp(-x)), "silu"),
        "swish": (F.silu, lambda x: x / (1.0 + torch.exp(-x)), "silu"),
        "relu": (F.relu, lambda x: x.clamp_min(0.0), "relu"),
        "gelu": (F.gelu, lambda x: 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0))),
                 "gelu (erf)"),
        "gelu_new": (tanh_gelu, tanh_gelu64, "gelu (tanh approximation)"),
        "gelu_pytorch_tanh": (tanh_gelu, tanh_gelu64, "gelu (tanh approximation)"),
        "gelu_tanh": (tanh_gelu, tanh_gelu64, "gelu (tanh approximation)"),
        "gelu_fast": (tanh_gelu, tanh_gelu64, "gelu (tanh approximation)"),
        "quick_gelu": (lambda x: x * torch.sigmoid(1.702 * x),
                       lambda x: x / (1.0 + torch.exp(-1.702 * x)), "quick_gelu"),
    }


def activation_runner(op: Op, device: str) -> Runner:
    """act(x), or gated act(gate) * up over the gate_up GEMM's output [t, 2w] (gate first, as
    vLLM's merged projection and transformers' separate gate_proj / up_proj compute it)."""
    impl = need(op, "activation", "gated")
    sh = shape(op, "tokens", "width")
    t, w = sh["tokens"], sh["width"]
    fns = _act_fns()
    name = impl["activation"]
    if name not in fns:
        raise no_kernel(op, f"activation {name!r} has no runner ({', '.join(sorted(fns))})")
    act, act64, desc = fns[name]
    gated, quant = bool(impl["gated"]), bool(impl.get("quant_out"))
    target = quant_dtype(op) if quant else ""
    dt = torch_dtype(op.dtype)

    def fn(x: Any, p: Any) -> Any:
        y = act(x[:, :w]) * x[:, w:] if gated else act(x)
        return quant_per_token(y, target) if quant else y

    def reference(x: Any, p: Any) -> Any:
        x64 = x.double()
        return act64(x64[:, :w]) * x64[:, w:] if gated else act64(x64)

    ref_verify = verifier(reference, op.dtype, f"{op.name} {desc}")

    def verify(args: tuple[Any, ...], out: Any) -> float:
        if quant:
            return check_quant(out[0], out[1], reference(*args), op.name, target)
        return ref_verify(args, out)

    return Runner((f"{desc}(gate) * up" if gated else desc) + quant_note(impl), fn,
                  lambda s: random_tensor((t, 2 * w if gated else w), dt, device, seed=s),
                  lambda s: {}, verify)


# ---- adds and quantization --------------------------------------------------------------

def add_runner(op: Op, device: str) -> Runner:
    sh = shape(op, "tokens", "width")
    t, w = sh["tokens"], sh["width"]
    dt = torch_dtype(op.dtype)
    return Runner("x + y", lambda xy, p: xy[0] + xy[1],
                  lambda s: (random_tensor((t, w), dt, device, seed=s),
                             random_tensor((t, w), dt, device, seed=s + 1)),
                  lambda s: {},
                  verifier(lambda xy, p: xy[0].double() + xy[1].double(), op.dtype, op.name))


def quant_runner(op: Op, device: str) -> Runner:
    sh = shape(op, "tokens", "width")
    t, w = sh["tokens"], sh["width"]
    dt = torch_dtype(op.dtype)

    target = quant_dtype(op)

    def verify(args: tuple[Any, ...], out: Any) -> float:
        return check_quant(out[0], out[1], args[0].double(), op.name, target)

    return Runner(f"per-token {target} quant (scale = max|x| / {QMAX[target]:g})",
                  lambda x, p: quant_per_token(x, target),
                  lambda s: random_tensor((t, w), dt, device, seed=s), lambda s: {}, verify)


# ---- softmax of eager attention ---------------------------------------------------------

def softmax_runner(op: Op, device: str) -> Runner:
    """softmax(scores + mask) in float32, cast back (transformers' eager_attention_forward):
    rows are (batch, head, query) and the mask is the bottom-right causal one of ``q_len``
    queries over the row's keys (and the sliding window)."""
    import torch

    impl = need(op, "op")
    sh = shape(op, "tokens", "width")
    rows, keys = sh["tokens"], sh["width"]
    mask_kind = impl.get("mask")
    dt = torch_dtype(op.dtype)
    add_mask = None
    if mask_kind == "causal":
        if "q_len" not in impl:
            raise no_kernel(op, "causal softmax: the op does not say q_len (Op.impl), so the "
                                "mask is unknown")
        q = int(impl["q_len"])
        if rows % q:
            raise no_kernel(op, f"{rows} rows are not whole groups of {q} queries")
        from perfscope.measure.runners.attention import attention_mask

        allowed = attention_mask(q, keys, True, int(impl.get("window") or 0), device)
        add_mask = torch.zeros(q, keys, dtype=dt, device=device).masked_fill(
            ~allowed, float("-inf"))
    elif mask_kind:
        raise no_kernel(op, f"softmax mask {mask_kind!r} has no runner")

    def fn(x: Any, p: Any) -> Any:
        s = x.view(-1, add_mask.shape[0], keys) + add_mask if add_mask is not None else x
        return torch.softmax(s, dim=-1, dtype=torch.float32).to(x.dtype).view(rows, keys)

    def reference(x: Any, p: Any) -> Any:
        s = x.double()
        if add_mask is not None:
            s = (s.view(-1, add_mask.shape[0], keys) + add_mask.double()).view(rows, keys)
        return torch.softmax(s, dim=-1)

    return Runner("softmax(scores + causal mask, float32)" if add_mask is not None else
                  "softmax(float32)", fn,
                  lambda s: random_tensor((rows, keys), dt, device, seed=s), lambda s: {},
                  verifier(reference, op.dtype, op.name))


# ---- rotary embedding -------------------------------------------------------------------

def rotary_tables(tokens: int, rot: int, dtype: Any, device: str, offset: int = 0,
                  theta: float = ROTARY_THETA) -> tuple[Any, Any]:
    """(cos, sin) of shape [tokens, rot] as transformers' rotary embeddings build them:
    inv_freq = theta^(-2i/rot), freqs = position * inv_freq, emb = cat(freqs, freqs)."""
    import torch

    inv = 1.0 / (theta ** (torch.arange(0, rot, 2, dtype=torch.float64, device=device) / rot))
    pos = torch.arange(offset, offset + tokens, dtype=torch.float64, device=device)
    emb = torch.cat([torch.outer(pos, inv)] * 2, dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x: Any) -> Any:
    import torch

    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rotary_runner(op: Op, device: str) -> Runner:
    """q/k heads rotated in their first ``rotary_dim`` dims: x * cos + rotate_half(x) * sin
    (transformers' apply_rotary_pos_emb; the interleaved layout costs the same). ``width`` is
    heads * rotary_dim: only the rotated part is read and written."""
    impl = need(op, "rotary_dim", "head_dim")
    sh = shape(op, "tokens", "width")
    t, w = sh["tokens"], sh["width"]
    rot, hd = int(impl["rotary_dim"]), int(impl["head_dim"])
    if rot <= 0 or rot % 2 or w % rot or rot > hd:
        raise no_kernel(op, f"rotary dim {rot} does not fit width {w} / head dim {hd}")
    heads = w // rot
    dt = torch_dtype(op.dtype)

    def fn(x: Any, p: dict[str, Any]) -> Any:
        xr = x[..., :rot]
        return xr * p["cos"][:, None, :] + rotate_half(xr) * p["sin"][:, None, :]

    def params(seed: int) -> dict[str, Any]:
        offset = seed % 4096  # the tokens' first position
        cos, sin = rotary_tables(t, rot, dt, device, offset=offset)
        return {"cos": cos, "sin": sin, "offset": offset}

    def reference(x: Any, p: dict[str, Any]) -> Any:
        xr = x[..., :rot].double()
        return xr * p["cos"].double()[:, None, :] + rotate_half(xr) * p["sin"].double()[:, None]

    return Runner(f"rotary x*cos + rotate_half(x)*sin over {rot} of {hd} dims, {heads} heads",
                  fn, lambda s: random_tensor((t, heads, hd), dt, device, seed=s), params,
                  verifier(reference, op.dtype, op.name))


# ---- embedding --------------------------------------------------------------------------

def embedding_runner(op: Op, device: str, cap: int = EMBED_TABLE_CAP) -> Runner:
    """Gather rows of the table (times sqrt(hidden) where the model scales, as Gemma does, in
    the activation dtype). On a CPU the table is cut to ``cap`` bytes (a gather costs per row
    read, not per table row); on a GPU it has the model's vocab."""
    import torch

    impl = need(op, "op")
    sh = shape(op, "tokens", "width")
    t, w, vocab = sh["tokens"], sh["width"], sh.get("vocab", 32000)
    eb = DTYPE_BITS[op.dtype] / 8  # bytes per element (fractional below 8 bits)
    v_run = vocab if device.startswith("cuda") else max(t, min(vocab, int(cap / (w * eb))))
    dt = torch_dtype(op.dtype)
    scale = bool(impl.get("scale"))
    norm = torch.tensor(math.sqrt(w), dtype=dt, device=device)

    def fn(ids: Any, p: dict[str, Any]) -> Any:
        import torch.nn.functional as F

        out = F.embedding(ids, p["table"])
        return out * norm if scale else out

    def inputs(seed: int) -> Any:
        g = torch.Generator(device=device).manual_seed(30 + seed)
        return torch.randint(0, v_run, (t,), generator=g, device=device)

    def reference(ids: Any, p: dict[str, Any]) -> Any:
        out = p["table"].double()[ids]
        return out * float(norm) if scale else out

    note = "" if v_run == vocab else f" (table vocab {vocab}->{v_run}: gather cost is per row)"
    return Runner("F.embedding" + (" * sqrt(hidden)" if scale else "") + note, fn, inputs,
                  lambda s: {"table": random_tensor((v_run, w), dt, device, seed=4 + s)},
                  verifier(reference, op.dtype, op.name))
