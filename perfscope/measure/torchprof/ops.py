"""Names of the ops the three observers see, in one vocabulary (no torch import).

torch.profiler names top-level ops ``aten::linear``, FlopCounterMode sees the decomposed
``aten.mm``, and the TorchFunctionMode that counts bytes sees ``linear`` or ``__add__``. The
classifier works on the normalised name and on the op's class, so all three agree on which
analytic op a call belongs to.
"""

from __future__ import annotations

# matrix products: one per GEMM or per attention product, in whatever form it reached us
MATMUL = frozenset({
    "linear", "matmul", "mm", "bmm", "addmm", "baddbmm", "einsum", "addmv", "mv", "dot",
    "_grouped_mm", "grouped_mm", "_scaled_mm", "conv1d", "_int_mm",
})
# fused attention (FlopCounterMode knows some of these; see instrument.py for the rest)
SDPA = frozenset({
    "scaled_dot_product_attention", "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention", "_flash_attention_forward",
    "_efficient_attention_forward", "flex_attention",
})
FLOP_OPS = MATMUL | SDPA
# no data moves: metadata-only views (their time is dispatch overhead)
VIEWS = frozenset({
    "view", "reshape", "_reshape_alias", "_unsafe_view", "transpose", "t", "permute",
    "unsqueeze", "squeeze", "expand", "expand_as", "slice", "select", "narrow", "as_strided",
    "alias", "detach", "detach_", "split", "split_with_sizes", "chunk", "unbind", "getitem",
    "flatten", "unflatten", "view_as", "movedim", "swapaxes", "lift_fresh", "get", "size",
    "dim", "numel", "stride", "is_contiguous", "result_type",
})
# data moves but nothing is computed: copies, casts, concatenations, allocations, fills
COPIES = frozenset({
    "contiguous", "clone", "copy_", "to", "_to_copy", "type", "float", "half", "bfloat16",
    "cat", "stack", "repeat", "repeat_interleave", "index_select", "setitem", "index_copy_",
    "index_copy", "index_put_", "fill_", "zero_", "zeros_like", "empty", "empty_like",
    "empty_strided", "zeros", "ones", "ones_like", "full", "new_zeros", "new_empty",
    "new_ones", "tensor", "as_tensor", "resize_", "masked_fill", "masked_fill_",
})
ACTIVATIONS = frozenset({
    "silu", "silu_", "gelu", "gelu_", "relu", "relu_", "tanh", "sigmoid", "sigmoid_",
    "gelu_tanh", "softplus", "elu", "hardswish", "mish",
})
SOFTMAX = frozenset({"softmax", "_softmax", "log_softmax", "_log_softmax", "_safe_softmax"})
ADDS = frozenset({"add", "add_", "radd", "iadd"})
MULS = frozenset({"mul", "mul_", "rmul", "imul"})
SCATTERS = frozenset({"index_add_", "index_add", "scatter_add_", "scatter_add",
                      "scatter_reduce_", "index_reduce_"})


def normalize(name: str) -> str:
    """``aten::add.Tensor`` / ``aten.mm.default`` / ``__iadd__`` / ``add`` -> ``add`` (``iadd``
    -> ``add_``: in place)."""
    n = name
    for prefix in ("aten::", "aten."):
        if n.startswith(prefix):
            n = n[len(prefix):]
            break
    if "." in n:
        n = n.split(".", 1)[0]
    if n.startswith("__") and n.endswith("__") and len(n) > 4:
        n = n[2:-2]
        if n.startswith("i") and n[1:] in ("add", "mul", "sub", "truediv", "and", "or"):
            return n[1:] + "_"
        if n.startswith("r") and n[1:] in ("add", "mul", "sub", "truediv", "matmul"):
            return n[1:]
    return n


def op_class(op: str) -> str:
    """The class calls are counted in when telling repeated ops apart (the first and second
    matrix product of eager attention, the two residual adds of a layer)."""
    if op in FLOP_OPS:
        return "flop"
    if op in ADDS:
        return "add"
    return op


def is_inplace(op: str) -> bool:
    return op.endswith("_") and not op.startswith("_")
