"""Shared per-step context and the generic op builders (GEMM, norm, elementwise)."""

from __future__ import annotations

from typing import NamedTuple

from perfscope.analytic.ops import Op, make_op
from perfscope.analytic.parallel import Shard
from perfscope.specs.model import ModelSpec
from perfscope.specs.scenario import Precision, Scenario
from perfscope.units import DTYPE_BITS, QuantFormat, quant_format

# FLOPs per element of each activation (exp/tanh/erf counted as one op, as most analysers do):
# silu x*sigmoid(x) = neg, exp, add, div -> 4; relu 1; gelu(erf) x*0.5*(1+erf(x/sqrt2)) -> 5;
# tanh-gelu 0.5x(1+tanh(c(x+0.044715x^3))) -> 8. A gated MLP adds 1 multiply by the up branch.
ACT_FLOPS = {"silu": 4, "swish": 4, "relu": 1, "gelu": 5, "gelu_new": 8, "gelu_fast": 8,
             "gelu_pytorch_tanh": 8, "gelu_tanh": 8, "quick_gelu": 4}
RMSNORM_FLOPS = 4  # x^2, sum, x * rsqrt(mean), * weight
LAYERNORM_FLOPS = 7  # mean, subtract, square, sum, * rstd, * weight, + bias
# W8A8 dynamic per-token activation quantization: |x|, running max, x * (1/scale) -> 3
QUANT_FLOPS = 3


class Ctx(NamedTuple):
    m: ModelSpec
    s: Scenario
    p: Precision
    sh: Shard
    B: int  # sequences
    T: int  # new tokens per sequence
    C0: int  # tokens cached per sequence before the step
    N: int  # tokens in the step (B * T)
    ab: float  # bytes of a stored activation element (bf16/fp16: 2, fp32: 4)
    gb: float  # bytes of a GEMM input activation element (1 for W8A8 / fp8)
    kvb: float  # bytes of a cached K/V element
    store: str  # dtype of activations between GEMMs
    wfmt: QuantFormat  # linear-layer weights
    hfmt: QuantFormat  # embeddings, LM head, router, norms (kept at 16 bits)
    w_bpe: float  # bytes per linear-layer weight element, group scales included
    w_row: float  # extra bytes per output row (per-channel scales)
    w_deq: bool  # weight-only quantized: dequantized in the kernel
    h_bpe: float  # bytes per element of the 16-bit weights (embeddings, LM head, router)
    reps: int = 1  # layers the ops being built stand for (their Op.count)


def make_ctx(m: ModelSpec, s: Scenario, p: Precision, sh: Shard) -> Ctx:
    if p.act in ("fp32", "tf32"):
        store = "fp32"
    elif p.act in ("bf16", "fp16"):
        store = p.act
    else:  # W8A8: GEMM inputs are 8-bit, everything between GEMMs stays 16-bit
        store = p.kv if p.kv in ("bf16", "fp16") else "bf16"
    ab = DTYPE_BITS[store] / 8
    hdt = store if p.weight.dtype not in ("fp32",) else "fp32"
    w = p.weight
    T = s.new_tokens
    bpe = _BPE.get(w)
    if bpe is None:  # bytes per element, and per output row (per-channel scales)
        bpe = _BPE[w] = (w.bits_per_element() / 8, w.bytes_for(1, 1) - w.bits_per_element() / 8)
    return Ctx(m, s, p, sh, s.batch, T, s.cached_before, s.batch * T, ab,
               DTYPE_BITS[p.act] / 8, DTYPE_BITS[p.kv] / 8, store, w, quant_format(hdt),
               bpe[0], bpe[1], w.quantized and w.dtype != p.compute, DTYPE_BITS[hdt] / 8)


_BPE: dict[QuantFormat, tuple[float, float]] = {}


def gemm(c: Ctx, name: str, m: int | float, n: int, k: int, layer: int | None, *,
         bias: bool = False, groups: float = 1, head: bool = False,
         tokens: float | None = None) -> Op:
    """Y[m, n] = X[m, k] @ W[n, k]^T (+ b), ``groups`` times (one per expert).

    FLOPs 2mnk per group (+ mn for the bias). Bytes: W once per group, X in and Y out.
    ``tokens`` overrides the total rows (experts: assignments spread over the groups).
    ``head``: a 16-bit weight kept out of quantization (LM head, router).
    """
    rows = tokens if tokens is not None else m * groups
    flops = 2.0 * rows * n * k + (rows * n if bias else 0.0)
    if head:
        wbytes = groups * (n * k * c.h_bpe + (n * c.ab if bias else 0.0))
        in_b, deq, dtype = c.ab, 0.0, c.store
    else:
        wbytes = groups * (n * k * c.w_bpe + n * c.w_row + (n * c.ab if bias else 0.0))
        in_b, dtype = c.gb, c.p.compute
        deq = 2.0 * groups * n * k if c.w_deq else 0.0
    shape = {"m": max(1, round(m)), "n": n, "k": k}
    if groups != 1:
        shape["groups"] = max(1, round(groups))
    impl = _GEMM_BIAS if bias else _GEMM
    return make_op(name, "gemm", layer, c.reps, flops, wbytes, rows * k * in_b, rows * n * c.ab,
                   0.0, 0.0, dtype, "tensor", shape, deq, impl)


_GEMM = {"op": "matmul", "bias": False}
_GEMM_BIAS = {"op": "matmul", "bias": True}


def norm(c: Ctx, name: str, tokens: float, width: int, layer: int | None, *,
         fused_add: bool = False, feeds_gemm: bool = False, group: int | None = None) -> Op:
    """RMSNorm/LayerNorm over ``tokens x width``; ``fused_add`` also adds the residual in
    the same pass (reads x and residual, writes the normed x and the new residual).
    ``feeds_gemm`` under W8A8: the normed output is quantized to 8 bits in the same kernel
    (vLLM's fused RMSNorm + dynamic per-token quant), so it is written at 1 byte.
    ``group``: normalised over groups of this many elements (per-head q/k norms)."""
    per = LAYERNORM_FLOPS if c.m.norm == "layernorm" else RMSNORM_FLOPS
    e = tokens * width
    nw = width * (2 if c.m.norm == "layernorm" else 1) * c.ab
    quant = feeds_gemm and c.gb < c.ab
    out = (c.gb if quant else c.ab) + (c.ab if fused_add else 0.0)
    flops = e * (per + (1 if fused_add else 0) + (QUANT_FLOPS if quant else 0))
    impl = {"norm": c.m.norm, "fused_add": fused_add, "quant_out": quant,
            "group": group or width}
    return make_op(name, "norm", layer, c.reps, flops, nw, (2 if fused_add else 1) * e * c.ab,
                   e * out, 0.0, 0.0, c.store, "vector", {"tokens": int(tokens), "width": width},
                   0.0, impl)


def elementwise(c: Ctx, name: str, tokens: float, width: int, layer: int | None, *,
                flops_per: float, n_in: float, n_out: float = 1, kind: str = "elementwise",
                extra_read: float = 0.0, feeds_gemm: bool = False,
                impl: dict | None = None) -> Op:
    """``feeds_gemm`` under W8A8: the output is quantized in the same kernel (1 byte out).
    ``impl`` says what is computed (see Op.impl); ``quant_out`` is added to it."""
    e = tokens * width
    out_b = c.ab
    quant = feeds_gemm and c.gb < c.ab
    if quant:
        out_b, flops_per = c.gb, flops_per + QUANT_FLOPS
    if impl is not None and quant:
        impl = {**impl, "quant_out": True}
    return make_op(name, kind, layer, c.reps, e * flops_per, 0.0, n_in * e * c.ab + extra_read,
                   n_out * e * out_b, 0.0, 0.0, c.store, "vector",
                   {"tokens": int(tokens), "width": width}, 0.0, impl)


ADD = {"op": "add"}


def residual(c: Ctx, name: str, layer: int | None) -> Op:
    """x + y: one add per element, read two tensors, write one."""
    return elementwise(c, name, c.N, c.m.hidden, layer, flops_per=1, n_in=2, impl=ADD)
