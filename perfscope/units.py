"""Dtypes, their storage cost, and SI helpers.

Inside perfscope everything is SI: seconds, bytes, FLOP, FLOP/s, bytes/s. Conversions happen
only when specs are loaded and when results are rendered.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from perfscope.errors import InputError

# Storage bits per element. tf32 is stored as fp32 and only computed at tf32 on tensor cores.
# fp4 is NVIDIA's NVFP4: e2m1 elements (4 bits) whose scales QuantFormat adds (one fp8-e4m3
# scale per 16 elements, one fp32 per tensor), 4.5 bits per element in all.
DTYPE_BITS: dict[str, int] = {
    "fp64": 64,
    "fp32": 32,
    "tf32": 32,
    "bf16": 16,
    "fp16": 16,
    "fp8": 8,
    "int8": 8,
    "fp4": 4,
    "int4": 4,
}
DTYPES = tuple(DTYPE_BITS)
WEIGHT_DTYPES = ("fp32", "bf16", "fp16", "fp8", "int8", "int4", "fp4")
ACT_DTYPES = ("fp32", "tf32", "bf16", "fp16", "fp8", "int8", "fp4")
KV_DTYPES = ("fp32", "bf16", "fp16", "fp8", "int8")
QUANTIZED = frozenset({"fp8", "int8", "int4", "fp4"})

# Scale formats. Per-group and per-channel scales are 16-bit (AWQ/GPTQ fp16, gpt-fast bf16);
# perfscope's own int4 also stores a 16-bit zero point per group (gpt-fast packs
# scales_and_zeros as 2 x bf16). DeepSeek-V3's fp8 blocks carry an fp32 scale each
# (weight_scale_inv). NVFP4 (fp4): an fp8-e4m3 scale per 16 elements plus an fp32 per tensor.
SCALE_BITS = 16
DEFAULT_INT4_GROUP = 128
NVFP4_GROUP = 16


@dataclass(frozen=True, slots=True)
class QuantFormat:
    """How a tensor is stored: element dtype plus its scales (and zero points).

    Scales come per ``block`` of (rows, cols) elements, else per ``group_size`` input
    elements of a row, else (quantized dtypes) one per output row; ``tensor_scale_bits`` more
    once per tensor. Not quantized: the elements alone.
    """

    dtype: str
    group_size: int | None = None
    block: tuple[int, int] | None = None
    scale_bits: int = SCALE_BITS
    zero_bits: int = 0
    tensor_scale_bits: int = 0

    @property
    def bits(self) -> int:
        return DTYPE_BITS[self.dtype]

    @property
    def quantized(self) -> bool:
        return self.dtype in QUANTIZED

    def bits_per_element(self) -> float:
        """Element bits plus amortized scale (and zero) bits, per-tensor scales aside."""
        b = float(DTYPE_BITS[self.dtype])
        if self.block:
            b += self.scale_bits / (self.block[0] * self.block[1])
        elif self.group_size:
            b += (self.scale_bits + self.zero_bits) / self.group_size
        return b

    def bytes_for(self, rows: int, cols: int) -> float:
        """Bytes of a ``rows x cols`` weight (rows = output features, cols = input features)."""
        b = rows * cols * DTYPE_BITS[self.dtype] / 8
        if not self.quantized:
            return b
        if self.block:  # one scale per block, partial blocks at the edges included
            br, bc = self.block
            b += -(-rows // br) * -(-cols // bc) * self.scale_bits / 8
        elif self.group_size:
            b += rows * -(-cols // self.group_size) * (self.scale_bits + self.zero_bits) / 8
        elif not self.tensor_scale_bits:
            b += rows * self.scale_bits / 8  # one scale per output channel
        return b + self.tensor_scale_bits / 8

    def __str__(self) -> str:
        if self.block:
            return f"{self.dtype}-b{self.block[0]}x{self.block[1]}"
        return f"{self.dtype}-g{self.group_size}" if self.group_size else self.dtype


@lru_cache(maxsize=64)
def quant_format(dtype: str, group_size: int | None = None, block: tuple[int, int] | None = None,
                 scale_bits: int = SCALE_BITS, zero_bits: int = 0,
                 tensor_scale_bits: int = 0) -> QuantFormat:
    """Shared QuantFormat instances (they are immutable): no construction on the hot path."""
    return QuantFormat(dtype, group_size, block, scale_bits, zero_bits, tensor_scale_bits)


def default_format(dtype: str, group_size: int | None = None) -> QuantFormat:
    """The storage perfscope assumes for ``--weight-dtype dtype`` without a checkpoint to say:
    int4 in groups of 128 with a 16-bit scale and zero each (gpt-fast); NVFP4 for fp4; int8
    and fp8 one 16-bit scale per output channel unless ``group_size`` is given."""
    if dtype == "fp4":
        return quant_format("fp4", NVFP4_GROUP, None, 8, 0, 32)
    if dtype == "int4":
        return quant_format("int4", group_size or DEFAULT_INT4_GROUP, None, SCALE_BITS,
                            SCALE_BITS)
    return quant_format(dtype, group_size)


def gemm_input_bits(dtype: str) -> float:
    """Bits per element of a GEMM's input activation (fp4: NVFP4 with its per-16 scale)."""
    return DTYPE_BITS[dtype] + (8 / NVFP4_GROUP if dtype == "fp4" else 0.0)


DTYPE_ALIASES = {"float32": "fp32", "float16": "fp16", "half": "fp16", "bfloat16": "bf16",
                 "e4m3": "fp8", "fp8_e4m3": "fp8", "float8": "fp8", "float8_e4m3fn": "fp8",
                 "nvfp4": "fp4", "e2m1": "fp4"}


def check_dtype(value: str, allowed: tuple[str, ...], field: str, flag: str | None = None) -> str:
    """The canonical name of dtype ``value`` if ``allowed``, else an InputError naming
    ``field`` (and the command-line ``flag`` that sets it)."""
    v = value.lower().strip() if isinstance(value, str) else ""
    v = DTYPE_ALIASES.get(v, v)
    if v not in allowed:
        what = "is not valid here" if v in DTYPE_BITS else "is not a dtype perfscope knows"
        where = f" ({flag})" if flag else ""
        raise InputError(f"{field} {value!r} {what}; use one of {', '.join(allowed)}{where}")
    return v


# ---- SI helpers for rendering -----------------------------------------------------------

_PREFIXES = ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def si(value: float, unit: str = "", digits: int = 3) -> str:
    """1.23e12, 'FLOP' -> '1.23 TFLOP'."""
    a = abs(value)
    for scale, p in _PREFIXES:
        if a >= scale:
            return f"{value / scale:.{digits}g} {p}{unit}"
    return f"{value:.{digits}g} {unit}".rstrip()


def fmt_time(seconds: float) -> str:
    a = abs(seconds)
    if a >= 1:
        return f"{seconds:.3g} s"
    if a >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    if a >= 1e-6:
        return f"{seconds * 1e6:.3g} us"
    return f"{seconds * 1e9:.3g} ns"


def fmt_bytes(n: float) -> str:
    """Binary prefixes for capacities (GiB), since that is what memory is sold and seen in."""
    a = abs(n)
    for scale, p in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if a >= scale:
            return f"{n / scale:.3g} {p}"
    return f"{n:.0f} B"
