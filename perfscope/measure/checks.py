"""Correctness before speed: random inputs and the comparison against a reference.

``random_tensor`` makes fresh random data (never zeros, which would hide a kernel that skips
work); ``check_close`` compares an output with a float64 (or int64) reference computed from the
same inputs, with a tolerance that follows the dtype's mantissa width.
"""

from __future__ import annotations

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


def random_tensor(shape: Sequence[int], dtype: Any, device: str = "cpu", *,
                  seed: int | None = None, scale: float = 1.0) -> Any:
    """Fresh random data, never zeros: normal(0, scale) floats, uniform [-64, 64) integers."""
    import torch

    gen = torch.Generator(device=torch.device(device))
    gen.manual_seed(seed if seed is not None else time.perf_counter_ns() & 0x7FFFFFFF)
    if dtype.is_floating_point:
        make = dtype if dtype.itemsize >= 2 else torch.float32  # fp8 has no randn
        t = torch.randn(tuple(shape), generator=gen, dtype=make, device=device)
        if scale != 1.0:
            t.mul_(scale)
        return t if make == dtype else t.to(dtype)
    return torch.randint(-64, 64, tuple(shape), generator=gen, dtype=dtype, device=device)


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
