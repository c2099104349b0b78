"""Numbers for people: SI prefixes, three significant digits, never scientific notation.

Every human-facing renderer (terminal tables, the HTML report, chart labels) formats through
these, so ``1e+03 MiB`` or ``1.2e-05`` never reach a reader. Machine formats (JSON, CSV) keep
full-precision SI floats and do not use this module.
"""

from __future__ import annotations

import math

_SI = ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))
_BIN = ((2**50, "PiB"), (2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB"))
MICRO = "µs"


def num(x: float | None, sig: int = 3) -> str:
    """A plain number with ``sig`` significant digits, thousands separated: 0.000123,
    1.5, 12.3, 4,096. Never an exponent."""
    if _bad(x):
        return "-"
    assert x is not None
    if x == 0:
        return "0"
    if abs(x) >= 10 ** (sig - 1) - 0.5:  # whole numbers keep every digit: 12,345,678
        return f"{x:,.0f}"
    r = float(f"{x:.{sig}g}")  # round first: 0.9997 is 1.00, not 1.000
    a = abs(r)
    decimals = min(max(sig - 1 - math.floor(math.log10(a)), 0), 12)
    return f"{r:.{decimals}f}"


def _scaled(x: float, table: tuple[tuple[float, str], ...], sig: int) -> str:
    """``x`` in the largest unit of ``table`` (descending) that keeps it >= 1, moving up a
    unit when rounding reaches 1000 (999.7 GB/s -> '1 TB/s', not '1,000 GB/s')."""
    a = abs(x)
    for i, (scale, unit) in enumerate(table):
        if a >= scale or i == len(table) - 1:
            text = num(x / scale, sig)
            if i > 0 and abs(float(text.replace(",", ""))) >= 1000:
                scale, unit = table[i - 1]
                text = num(x / scale, sig)
            return f"{text} {unit}".rstrip()
    raise AssertionError("unreachable")


def _bad(x: float | None) -> bool:
    return x is None or (isinstance(x, float) and not math.isfinite(x))


def si(x: float | None, unit: str = "", sig: int = 3) -> str:
    """1.23e12, 'FLOP' -> '1.23 TFLOP'; 999.7e9 -> '1.00 TFLOP'; 0.5 -> '0.500'."""
    if _bad(x):
        return "-"
    assert x is not None
    table = (*((s, p + unit) for s, p in _SI), (1.0, unit))
    if abs(x) < 1:
        return f"{num(x, sig)} {unit}".rstrip()
    return _scaled(x, table, sig)


def seconds(x: float | None, micro: str = MICRO, sig: int = 3) -> str:
    """0.00731 -> '7.31 ms'; 2.5e-7 -> '250 ns'; 3600 -> '3,600 s'."""
    if _bad(x):
        return "-"
    assert x is not None
    if x == 0:
        return "0 s"
    if abs(x) >= 1:
        return f"{num(x, sig)} s"
    return _scaled(x, ((1.0, "s"), (1e-3, "ms"), (1e-6, micro), (1e-9, "ns")), sig)


def nbytes(x: float | None, sig: int = 3) -> str:
    """Binary prefixes (memory is sold and seen in GiB): 1002 MiB -> '0.979 GiB'."""
    if _bad(x):
        return "-"
    assert x is not None
    if abs(x) < 1000:
        return f"{x:,.0f} B"
    a = abs(x)
    for scale, unit in _BIN:  # 1002 MiB reads better as 0.979 GiB
        if a >= scale * 1000 / 1024 and a < scale:
            return f"{num(x / scale, sig)} {unit}"
    return _scaled(x, (*_BIN, (1.0, "B")), sig)


def pct(fraction: float | None, digits: int = 1) -> str:
    """0.492 -> '49.2%'; a tiny non-zero share reads '<0.1%' instead of a misleading 0.0%."""
    if fraction is None or not math.isfinite(fraction):
        return "-"
    if 0 < abs(fraction) < 0.5 * 10 ** (-digits - 2):
        return f"<{10 ** -digits:.{digits}f}%"
    return f"{fraction * 100:.{digits}f}%"


def rate(x: float | None, unit: str = "FLOP/s") -> str:
    return si(x, unit)


def intensity(x: float | None) -> str:
    """Arithmetic intensity in FLOP/byte."""
    return num(x, 3)


def count(n: float | None) -> str:
    """Whole numbers with thousands separators."""
    if n is None:
        return "-"
    return f"{n:,.0f}"
