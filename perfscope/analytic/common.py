"""Shared per-step context and the generic op builders (GEMM, norm, elementwise).

Every builder takes the step's ``Ctx`` and a ``Site`` (the first layer the op stands for and
how many layers it stands for: its ``Op.count``). Weight shapes and bytes come from the weight
inventory (``perfscope.specs.model.counting``), priced once per model, split and format.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import NamedTuple

from perfscope.analytic.ops import Op
from perfscope.analytic.parallel import Shard
from perfscope.specs.model import ModelSpec
from perfscope.specs.model.counting import (
    HEAD,
    LINEAR,
    Weight,
    full_split,
    layer_weights,
    model_weights,
)
from perfscope.specs.precision import Precision
from perfscope.specs.scenario import Scenario, field_error
from perfscope.units import DTYPE_BITS, QuantFormat, gemm_input_bits, quant_format

_new = tuple.__new__  # Op(...) without NamedTuple.__new__: the builders' fast path
RMSNORM_FLOPS = 4  # x^2, sum, x * rsqrt(mean), * weight
LAYERNORM_FLOPS = 7  # mean, subtract, square, sum, * rstd, * weight, + bias
# W8A8 dynamic per-token activation quantization: |x|, running max, x * (1/scale) -> 3
QUANT_FLOPS = 3


class Priced(NamedTuple):
    """A weight of the inventory with the bytes of one copy in this step's formats."""

    weight: Weight
    bytes: float  # one copy: elements (with scales) plus bias
    dequant: bool  # weight-only quantized: dequantized inside the GEMM


class Site(NamedTuple):
    """Where an op sits: the first layer it stands for (None: outside the layers) and how
    many layers it stands for (its ``Op.count``)."""

    layer: int | None
    count: int = 1  # type: ignore[assignment]  # shadows tuple.count, as Op.count does


OUTSIDE = Site(None, 1)


class Ctx(NamedTuple):
    model: ModelSpec
    scenario: Scenario
    precision: Precision
    shard: Shard
    batch: int  # sequences whose attention this GPU runs (its attention-DP group's share)
    new_tokens: int  # tokens per sequence processed in the step
    cached: int  # tokens cached per sequence before the step
    tokens: int  # batch * new_tokens: rows of the attention and dense GEMMs on this GPU
    all_tokens: int  # the step's tokens over all attention-DP groups (what MoE layers route)
    act_bytes: float  # a stored activation element (bf16/fp16: 2, fp32: 4)
    gemm_in_bytes: float  # a GEMM input activation element (1 for W8A8 / fp8)
    kv_bytes: float  # a cached K/V element
    store_dtype: str  # dtype of activations between GEMMs
    head_bytes: float  # an element of the 16-bit weights (embeddings, LM head, router, norms)
    weights: Mapping[str, Priced]  # the inventory of this split, priced, by name
    layer_weight_bytes: tuple[float, float]  # one dense layer, one MoE layer, on this rank


assert Ctx._fields == ("model", "scenario", "precision", "shard", "batch", "new_tokens", "cached",
                       "tokens", "all_tokens", "act_bytes", "gemm_in_bytes", "kv_bytes",
                       "store_dtype", "head_bytes", "weights", "layer_weight_bytes")


def make_ctx(m: ModelSpec, s: Scenario, p: Precision, sh: Shard) -> Ctx:
    if p.act in ("fp32", "tf32"):
        store = "fp32"
    elif p.act in ("bf16", "fp16"):
        store = p.act
    else:  # W8A8: GEMM inputs are 8-bit, everything between GEMMs stays 16-bit
        store = p.kv if p.kv in ("bf16", "fp16") else "bf16"
    head_dtype = "fp32" if p.weight.dtype == "fp32" else store
    new = s.new_tokens
    group_batch = -(-s.batch // sh.attn_dp)  # the busiest attention-DP group
    weights, layer_bytes = priced_weights(m, sh, p.weight, head_dtype,
                                          p.weight.quantized and p.weight.dtype != p.compute)
    # positional, in Ctx's field order (a NamedTuple built from keywords costs 1 us more)
    return _new(Ctx, (m, s, p, sh,
                      group_batch,  # batch
                      new,  # new_tokens
                      s.cached_before,  # cached
                      group_batch * new,  # tokens
                      s.batch * new,  # all_tokens
                      DTYPE_BITS[store] / 8,  # act_bytes
                      gemm_input_bits(p.act) / 8,  # gemm_in_bytes
                      DTYPE_BITS[p.kv] / 8,  # kv_bytes
                      store,  # store_dtype
                      DTYPE_BITS[head_dtype] / 8,  # head_bytes
                      weights, layer_bytes))


@lru_cache(maxsize=256)
def priced_weights(m: ModelSpec, sh: Shard, fmt: QuantFormat, head_dtype: str,
                   dequant: bool) -> tuple[Mapping[str, Priced], tuple[float, float]]:
    """Bytes of one copy of every weight on one rank, by name, and the bytes of one dense
    and one MoE layer. Linear layers are stored in ``fmt``; embeddings, LM head, router and
    norms at ``head_dtype`` (as quantized checkpoints served by vLLM keep them); a bias is
    stored at ``head_dtype`` too."""
    hb = DTYPE_BITS[head_dtype] / 8
    hfmt = quant_format(head_dtype)
    out: dict[str, Priced] = {}
    every = layer_weights(m, False, sh) + (layer_weights(m, True, sh) if m.moe else ()) + \
        model_weights(m, sh)
    if fmt.group_size or fmt.block:
        check_layout(m, sh, fmt, every)
    for w in every:
        bias = w.rows * hb if w.bias else 0.0
        if not w.cols:  # a vector
            b, deq = w.rows * hb + bias, False
        elif w.kind == LINEAR:
            b, deq = fmt.bytes_for(w.rows, w.cols) + bias, dequant
        else:
            b, deq = hfmt.bytes_for(w.rows, w.cols) + bias, False
        out[w.name] = Priced(w, b, deq)
    dense = sum(w.copies * out[w.name].bytes for w in layer_weights(m, False, sh))
    moe = sum(w.copies * out[w.name].bytes for w in layer_weights(m, True, sh)) if m.moe else 0.0
    return out, (dense, moe)


def check_layout(m: ModelSpec, sh: Shard, fmt: QuantFormat, weights: tuple[Weight, ...]) -> None:
    """Refuse scale groups wider than a GEMM's input, and a split that cuts through scale
    groups or blocks: vLLM refuses both ("The input size is not aligned with the quantized
    weight shape", "... is not divisible by weight quantization block_n")."""
    full = {w.name: w for w in layer_weights(m, False, full_split(m)) +
            (layer_weights(m, True, full_split(m)) if m.moe else ())}
    where = f"{m.name} at tp {sh.tp}" + (f" ep {sh.ep}" if sh.ep > 1 else "")
    for w in weights:
        if w.kind != LINEAR or not w.cols:
            continue
        if fmt.group_size:
            g = fmt.group_size
            if g > w.cols:
                raise field_error("group_size", g, f"wider than the {w.cols}-element input "
                                  f"of {w.name} ({m.name}); use a group that divides every "
                                  "GEMM input")
            if w.cols % g:
                split = full[w.name].cols != w.cols
                raise field_error("group_size", g, f"does not divide the {w.cols}-element "
                                  f"input of {w.name} per GPU ({where})" +
                                  ("; engines refuse that split: use a smaller tp or group"
                                   if split else "; use a group that divides it"))
        if fmt.block:
            br, bc = fmt.block
            f = full[w.name]
            for per_rank, whole, b, dim in ((w.rows, f.rows, br, "output"),
                                            (w.cols, f.cols, bc, "input")):
                if per_rank != whole and per_rank % b:
                    raise field_error("tp", sh.tp, f"cuts the {whole}-wide {dim} of {w.name} "
                                      f"into {per_rank}-wide shards, not a multiple of its "
                                      f"{b}-wide {fmt.dtype} scale blocks ({where}); engines "
                                      "refuse this: use a smaller tp, or ep for the experts")


# ---- GEMMs -----------------------------------------------------------------------------------

# the GEMM builders unpack Priced and Weight records whole (one opcode, faster than their
# fields by name, benchmarks/bench_analyze.py); this fails loudly if their fields change
assert Priced._fields == ("weight", "bytes", "dequant")
assert Weight._fields == ("name", "rows", "cols", "kind", "bias", "copies", "param")


def linear(c: Ctx, name: str, rows: float, at: Site) -> Op:
    """Y[rows, n] = X[rows, k] @ W[n, k]^T (+ b) with the inventory's weight ``name``."""
    w, wb, dequant = c.weights[name]
    _, n, k, kind, bias, _, _ = w
    return _gemm(c, name, rows, n, k, at, bias, 1.0, rows, wb, kind == HEAD, dequant)


def experts(c: Ctx, name: str, rows: float, groups: float, at: Site) -> Op:
    """``groups`` GEMMs (one per touched expert, weights of inventory entry ``name``) over
    ``rows`` token-expert assignments in all, ``rows / groups`` each."""
    w, wb, dequant = c.weights[name]
    _, n, k, kind, bias, _, _ = w
    return _gemm(c, name, rows / groups if groups else 0.0, n, k, at, bias, groups, rows,
                 groups * wb, kind == HEAD, dequant)


def gemm_part(c: Ctx, name: str, of: str, m: float, n: int, k: int, groups: float,
              at: Site) -> Op:
    """A GEMM on a part of inventory weight ``of`` (MLA absorption multiplies by the W_UK /
    W_UV halves of kv_b_proj, head by head): ``groups`` GEMMs of ``m x n x k``."""
    pw = c.weights[of]
    w = pw.weight
    share = groups * n * k / (w.rows * w.cols)
    return _gemm(c, name, m, n, k, at, False, groups, m * groups, share * pw.bytes,
                 w.kind == HEAD, pw.dequant)


def _gemm(c: Ctx, name: str, m: float, n: int, k: int, at: Site, bias: bool, groups: float,
          rows: float, weight_bytes: float, head: bool, dequant: bool) -> Op:
    # FLOPs 2 m n k per group (+ m n for the bias); bytes: W once per group, X in, Y out
    flops = 2.0 * rows * n * k + (rows * n if bias else 0.0)
    if head:  # a 16-bit weight kept out of quantization: runs at the activation dtype
        in_b, dtype, deq = c.act_bytes, c.store_dtype, 0.0
    else:
        in_b, dtype = c.gemm_in_bytes, c.precision.compute
        deq = 2.0 * groups * n * k if dequant else 0.0  # scale and convert each weight
    mr = round(m)
    shape = {"m": mr if mr > 1 else 1, "n": n, "k": k}
    if groups != 1:
        shape["groups"] = max(1, round(groups))
    # make_op's tuple, built here (GEMMs are most of the ops)
    return _new(Op, (name, "gemm", at[0], at[1], flops, weight_bytes, rows * k * in_b,
                     rows * n * c.act_bytes, 0.0, 0.0, dtype, "tensor", shape, deq, None, 0.0,
                     1, _GEMM_BIAS if bias else _GEMM))


_GEMM = {"op": "matmul", "bias": False}
_GEMM_BIAS = {"op": "matmul", "bias": True}


# ---- vector work ------------------------------------------------------------------------------

def norm(c: Ctx, name: str, tokens: float, width: int, at: Site, *, fused_add: bool = False,
         feeds_gemm: bool = False, group: int | None = None, weight: str | None = None) -> Op:
    """RMSNorm/LayerNorm over ``tokens x width``; ``fused_add`` also adds the residual in
    the same pass (reads x and residual, writes the normed x and the new residual).
    ``feeds_gemm`` under W8A8: the normed output is quantized to 8 bits in the same kernel
    (vLLM's fused RMSNorm + dynamic per-token quant), so it is written at 1 byte.
    ``group``: normalised over groups of this many elements (per-head q/k norms).
    ``weight``: the inventory entry holding the norm's weight (default: ``name``)."""
    layernorm = c.model.norm == "layernorm" and group is None
    per = LAYERNORM_FLOPS if layernorm else RMSNORM_FLOPS
    e = tokens * width
    nw = c.weights[weight or name].bytes
    ab = c.act_bytes
    quant = feeds_gemm and c.gemm_in_bytes < ab
    out = (c.gemm_in_bytes if quant else ab) + (ab if fused_add else 0.0)
    flops = e * (per + (1 if fused_add else 0) + (QUANT_FLOPS if quant else 0))
    impl = {"norm": "layernorm" if layernorm else "rmsnorm", "fused_add": fused_add,
            "quant_out": quant, "group": group or width}
    return _new(Op, (name, "norm", at[0], at[1], flops, nw, (2 if fused_add else 1) * e * ab,
                     e * out, 0.0, 0.0, c.store_dtype, "vector",
                     {"tokens": int(tokens), "width": width}, 0.0, None, 0.0, 1, impl))


def elementwise(c: Ctx, name: str, tokens: float, width: int, at: Site, *,
                flops_per: float, n_in: float, n_out: float = 1, kind: str = "elementwise",
                extra_read: float = 0.0, feeds_gemm: bool = False,
                impl: dict | None = None) -> Op:
    """``feeds_gemm`` under W8A8: the output is quantized in the same kernel (1 byte out).
    ``impl`` says what is computed (see Op.impl); ``quant_out`` is added to it."""
    e = tokens * width
    out_b = c.act_bytes
    quant = feeds_gemm and c.gemm_in_bytes < out_b
    if quant:
        out_b, flops_per = c.gemm_in_bytes, flops_per + QUANT_FLOPS
    if impl is not None and quant:
        impl = {**impl, "quant_out": True}
    return _new(Op, (name, kind, at[0], at[1], e * flops_per, 0.0,
                     n_in * e * c.act_bytes + extra_read, n_out * e * out_b, 0.0, 0.0,
                     c.store_dtype, "vector", {"tokens": int(tokens), "width": width}, 0.0, None,
                     0.0, 1, impl))


ADD = {"op": "add"}


def residual(c: Ctx, name: str, at: Site) -> Op:
    """x + y: one add per element, read two tensors, write one."""
    return elementwise(c, name, c.tokens, c.model.hidden, at, flops_per=1, n_in=2, impl=ADD)
