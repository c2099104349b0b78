"""Correctness before speed: random inputs and the comparison against a reference.

``random_tensor`` makes fresh random data (never zeros, which would hide a kernel that skips
work); ``check_close`` compares an output with a float64 (or int64) reference computed from the
same inputs, with a tolerance that follows the dtype's mantissa width.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

from perfscope.errors import MeasureError

# (rtol, atol) against a reference computed in float64; low-precision dtypes accumulate
# rounding of their inputs and of their output, so the tolerance follows the mantissa width.
TOLERANCES: dict[str, tuple[float, float]] = {
    "fp64": (1e-9, 1e-9), "fp32": (1e-4, 1e-4), "tf32": (5e-3, 5e-3), "bf16": (3e-2, 3e-2),
    "fp16": (5e-3, 5e-3), "fp8": (1.5e-1, 1.5e-1), "int8": (0.0, 0.0),
}


# CPU tensors above TILE_ABOVE elements repeat a random block of TILE_PERIOD elements (a
# prime, so no two rows of any realistic width start at the same offset of the block, and
# rows, columns and heads all differ); torch draws normal numbers at ~100 M/s on one core,
# which made drawing weights most of a quick CPU run. Values stay N(0, 1); on a GPU every
# element is drawn (it is fast there, and repeated data could be compressed by hardware).
TILE_ABOVE = 1 << 22
TILE_PERIOD = 1_048_573  # 2^20 - 3, prime


def random_tensor(shape: Sequence[int], dtype: Any, device: str = "cpu", *,
                  seed: int | None = None, scale: float = 1.0) -> Any:
    """Fresh random data, never zeros: normal(0, scale) floats, uniform [-64, 64) integers
    (on a CPU, large tensors repeat a random block of TILE_PERIOD elements)."""
    import torch

    gen = torch.Generator(device=torch.device(device))
    gen.manual_seed(seed if seed is not None else time.perf_counter_ns() & 0x7FFFFFFF)
    numel = math.prod(shape)
    tile = str(device) == "cpu" and numel > TILE_ABOVE
    draw = (TILE_PERIOD,) if tile else tuple(shape)
    if dtype.is_floating_point:
        make = dtype if dtype.itemsize >= 2 else torch.float32  # fp8 has no randn
        t = torch.randn(draw, generator=gen, dtype=make, device=device)
        if scale != 1.0:
            t.mul_(scale)
        t = t if make == dtype else t.to(dtype)
    else:
        t = torch.randint(-64, 64, draw, generator=gen, dtype=dtype, device=device)
    return _tiled(t, tuple(shape)) if tile else t


def _tiled(block: Any, shape: tuple[int, ...]) -> Any:
    """A tensor of ``shape`` filled with ``block`` (1-d) repeated, the last copy cut short."""
    import torch

    out = torch.empty(shape, dtype=block.dtype, device=block.device)
    flat = out.view(-1)
    p = block.numel()
    whole = flat.numel() // p
    if whole:
        flat[:whole * p].view(whole, p).copy_(block.expand(whole, p))
    rest = flat.numel() - whole * p
    if rest:
        flat[whole * p:].copy_(block[:rest])
    return out


def check_close(actual: Any, expected: Any, dtype: str, what: str) -> float:
    """Raise MeasureError unless ``actual`` matches the higher-precision ``expected``.

    Tolerance scales with the reference's magnitude (a GEMM's sum of k products). Returns the
    largest error relative to that scale.
    """
    import torch

    a = actual.detach().to(torch.float64)
    e = expected.detach().to(device=a.device, dtype=torch.float64)
    if a.shape != e.shape:
        raise MeasureError(f"{what}: output shape {tuple(a.shape)} != reference "
                           f"{tuple(e.shape)}")
    if not bool(torch.isfinite(a).all()):
        raise MeasureError(f"{what}: output has inf/nan (dtype {dtype})")
    rtol, atol = TOLERANCES.get(dtype, (3e-2, 3e-2))
    ref_scale = float(e.abs().max()) if e.numel() else 0.0
    if ref_scale == 0.0:
        raise MeasureError(f"{what}: reference output is all zeros; the check needs random data")
    err = float((a - e).abs().max()) / ref_scale
    if err > rtol + atol:
        raise MeasureError(f"{what}: wrong result in {dtype}: max error {err:.3g} of the "
                           f"output scale exceeds {rtol + atol:.3g}")
    return err


def check_equal(actual: Any, expected: Any, what: str) -> float:
    """Exact integer comparison (int8 GEMMs accumulate in int32 without rounding)."""
    import torch

    a = actual.detach().to(torch.int64)
    e = expected.detach().to(device=a.device, dtype=torch.int64)
    if a.shape != e.shape or not torch.equal(a, e):
        raise MeasureError(f"{what}: wrong result")
    return 0.0



def spread_indices(n: int, limit: int, device: Any = "cpu") -> Any:
    """All of range(n), or ``limit`` indices spread over it (first and last included)."""
    import torch

    if n <= limit:
        return torch.arange(n, device=device)
    return torch.arange(limit, device=device, dtype=torch.int64) * (n - 1) // (limit - 1)
