"""Dtypes, their storage cost, and SI helpers.

Inside perfscope everything is SI: seconds, bytes, FLOP, FLOP/s, bytes/s. Conversions happen
only when specs are loaded and when results are rendered.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from perfscope.errors import InputError

# Storage bits per element. tf32 is stored as fp32 and only computed at tf32 on tensor cores.
DTYPE_BITS: dict[str, int] = {
    "fp64": 64,
    "fp32": 32,
    "tf32": 32,
    "bf16": 16,
    "fp16": 16,
    "fp8": 8,
    "int8": 8,
    "int4": 4,
}
DTYPES = tuple(DTYPE_BITS)
WEIGHT_DTYPES = ("fp32", "bf16", "fp16", "fp8", "int8", "int4")
ACT_DTYPES = ("fp32", "tf32", "bf16", "fp16", "fp8", "int8")
KV_DTYPES = ("fp32", "bf16", "fp16", "fp8", "int8")

# Quantization scale format: one fp16 scale per group (AWQ/GPTQ/gpt-fast style), and for int4
# one zero point per group stored as fp16 (gpt-fast packs scales_and_zeros as 2 x bf16).
SCALE_BITS = 16
DEFAULT_INT4_GROUP = 128


@dataclass(frozen=True, slots=True)
class QuantFormat:
    """How a tensor is stored: element dtype plus per-group scale (and zero) overhead.

    ``group_size`` None means one scale per output channel (int8 weight-only) or per tensor
    (fp8): negligible next to the elements, but still counted per row by ``row_overhead_bits``.
    """

    dtype: str
    group_size: int | None = None

    @property
    def bits(self) -> int:
        return DTYPE_BITS[self.dtype]

    @property
    def quantized(self) -> bool:
        return self.dtype in ("fp8", "int8", "int4")

    def bits_per_element(self) -> float:
        """Element bits plus amortized group metadata (scale, and zero point for int4)."""
        b = float(DTYPE_BITS[self.dtype])
        if self.group_size:
            meta = SCALE_BITS * (2 if self.dtype == "int4" else 1)
            b += meta / self.group_size
        return b

    def bytes_for(self, rows: int, cols: int) -> float:
        """Bytes of a ``rows x cols`` weight (rows = output features, cols = input features)."""
        n = rows * cols
        b = n * self.bits_per_element() / 8
        if self.quantized and not self.group_size:
            b += rows * SCALE_BITS / 8  # per-output-channel scale (per-tensor for fp8 is less)
        return b

    def __str__(self) -> str:
        return f"{self.dtype}-g{self.group_size}" if self.group_size else self.dtype


@lru_cache(maxsize=64)
def quant_format(dtype: str, group_size: int | None = None) -> QuantFormat:
    """Shared QuantFormat instances (they are immutable): no construction on the hot path."""
    return QuantFormat(dtype, group_size)


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
