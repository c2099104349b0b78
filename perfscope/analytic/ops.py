"""Op and OpGraph: the analytic cost of one step, op by op.

An Op is one kernel-sized piece of work. Ops of the same layer type are built once and carry
``count`` (the number of layers of that type), so a 126-layer model costs no more to analyse
than a 2-layer one. Every figure on an Op is *per instance*; multiply by ``count`` for the step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

KINDS = ("gemm", "attention", "norm", "elementwise", "softmax", "embedding", "comm")


class Op(NamedTuple):
    """Immutable like the frozen dataclasses elsewhere, but a NamedTuple: the analysis builds
    dozens per call and a frozen dataclass costs ~4 us to construct, a NamedTuple ~1 us."""

    name: str  # stable across runs: the join key for measured points ("attn.q_proj")
    kind: str  # one of KINDS
    layer: int | None  # first layer index of the group this op stands for; None outside layers
    count: int  # type: ignore[assignment]  # instances in one step (shadows tuple.count)
    flops: float  # 2 per multiply-add
    weight_bytes: float = 0.0
    act_in_bytes: float = 0.0
    act_out_bytes: float = 0.0
    kv_read_bytes: float = 0.0
    kv_write_bytes: float = 0.0
    dtype: str = "bf16"  # compute dtype (for weight-only quant: the activation dtype)
    unit: str = "tensor"  # "tensor" | "vector" | "link"
    shape: Mapping[str, int] | None = None  # gemm {m,n,k[,groups]}, attention {...}, ...
    dequant_flops: float = 0.0  # weight-only dequantization work, run on the vector unit
    comm: str | None = None  # all_reduce | all_gather | all_to_all | p2p (kind == "comm")
    comm_bytes: float = 0.0  # message size per rank (the nccl-tests "size")
    ranks: int = 1  # group size of the collective
    # what the op computes, beyond its shape, so a measurement can run the same computation:
    # {"norm": "rmsnorm"|"layernorm", "fused_add": bool}, {"activation": "silu", "gated": True},
    # {"rotary_dim": 128, "head_dim": 128}, {"routing": "softmax_topk", "top_k": 2, ...},
    # {"combine": "weighted_sum", "top_k": 2}, {"op": "add"|"embedding"|"quant"}...
    impl: Mapping[str, Any] | None = None

    @property
    def bytes_read(self) -> float:
        return self.weight_bytes + self.act_in_bytes + self.kv_read_bytes

    @property
    def bytes_written(self) -> float:
        return self.act_out_bytes + self.kv_write_bytes

    @property
    def bytes(self) -> float:
        """HBM traffic of one instance (comm ops move their data over a link instead)."""
        return self.weight_bytes + self.act_in_bytes + self.kv_read_bytes + \
            self.act_out_bytes + self.kv_write_bytes

    @property
    def intensity(self) -> float:
        b = self.bytes
        return self.flops / b if b else 0.0


_new = tuple.__new__


def make_op(name: str, kind: str, layer: int | None, count: int, flops: float,
            weight_bytes: float, act_in_bytes: float, act_out_bytes: float,
            kv_read_bytes: float, kv_write_bytes: float, dtype: str, unit: str,
            shape: Mapping[str, int] | None, dequant_flops: float = 0.0,
            impl: Mapping[str, Any] | None = None) -> Op:
    """Positional fast path for the builders (a compute op: no comm fields)."""
    return _new(Op, (name, kind, layer, count, flops, weight_bytes, act_in_bytes, act_out_bytes,
                     kv_read_bytes, kv_write_bytes, dtype, unit, shape, dequant_flops, None, 0.0,
                     1, impl))


@dataclass(frozen=True, slots=True)
class OpGraph:
    """All ops of one step on one GPU, in execution order."""

    ops: tuple[Op, ...]
    # the layer indices each op stands for (None for ops outside the layers): PP stages
    op_layers: tuple[tuple[int, ...] | None, ...] = ()

    def __iter__(self):
        return iter(self.ops)

    def __len__(self) -> int:
        return len(self.ops)
