"""FLOPs per element of every activation transformers knows (its ``ACT2FN`` names).

exp, log, tanh, erf and sqrt count as one op each, as most analysers do; a compare-and-select
(max, min, clip) counts one per bound. A gated MLP adds one multiply by the up branch (counted
by the builder, not here). A config naming an activation outside this table is refused when it
is loaded, rather than costed at a guess.
"""

from __future__ import annotations

ACT_FLOPS: dict[str, int] = {
    "linear": 0,  # identity
    "relu": 1,  # max(x, 0)
    "relu2": 2,  # relu(x)^2
    "relu6": 2,  # min(max(x, 0), 6)
    "leaky_relu": 2,  # x < 0 ? a x : x -> select + multiply
    "prelu": 2,  # as leaky_relu with a learned slope
    "tanh": 1,
    "sigmoid": 4,  # 1 / (1 + exp(-x)): neg, exp, add, div
    "silu": 4,  # x * sigmoid(x) = x / (1 + exp(-x)): neg, exp, add, div
    "swish": 4,  # silu
    "quick_gelu": 4,  # x / (1 + exp(-1.702 x)): mul, exp, add, div
    "gelu": 5,  # 0.5 x (1 + erf(x / sqrt2)): div, erf, add, mul, mul
    "gelu_python": 5,  # the same formula in Python
    "gelu_10": 7,  # gelu, then clip to [-10, 10]
    "laplace": 5,  # 0.5 (1 + erf((x - mu) / (sigma sqrt2))): sub, div, erf, add, mul
    "gelu_new": 8,  # 0.5 x (1 + tanh(c (x + 0.044715 x^3))): 2 mul (x^3), mul, add, mul,
    "gelu_fast": 8,  # tanh, add, mul, mul -> 8 for every tanh form
    "gelu_pytorch_tanh": 8,
    "gelu_python_tanh": 8,
    "gelu_accurate": 8,
    "gelu_tanh": 8,
    "hardswish": 5,  # x * min(max(x + 3, 0), 6) / 6: add, max, min, mul, div
    "mish": 5,  # x * tanh(log(1 + exp(x))): exp, add, log, tanh, mul
    "sqrtsoftplus": 4,  # sqrt(log(1 + exp(x))): exp, add, log, sqrt
    # x > 0: a_p x^2 + b x (3); else a_n (expm1(min(x, eps)) - x) + b x (6): the longer path
    "xielu": 6,
}
