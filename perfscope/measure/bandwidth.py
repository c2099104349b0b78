"""Memory bandwidth ceilings: STREAM copy and triad, and the cache plateau.

Copy (a = b: 2 words per element) and triad (a = b + s*c: 3 words) over arrays four times the
last-level cache, counting bytes read + written (STREAM convention, no write-allocate
traffic). Cache plateau: copy bandwidth over a working-set sweep without flushing; the plateau
is the best rate of working sets that fit in half the cache.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from perfscope.errors import MeasureError
from perfscope.measure.checks import check_close, random_tensor, spread_indices
from perfscope.measure.types import MeasuredPoint

MIB = 2**20


def stream_bytes(kind: str, elements: int, elem_bytes: int) -> float:
    """STREAM accounting: copy reads b and writes a (2 words), triad reads b, c, writes a (3)."""
    words = {"copy": 2, "triad": 3}[kind]
    return float(words * elements * elem_bytes)


def bandwidth_array_bytes(device: str, quick: bool) -> int:
    """Bytes per array: 4x the last-level cache (GPU: L2) so no pass is served from cache."""
    from perfscope.measure.timing import cache_bytes, is_cuda

    llc = cache_bytes(device)
    if is_cuda(device):
        return max(256 * MIB, 8 * llc) if not quick else max(128 * MIB, 4 * llc)
    return max(64 * MIB, 4 * llc)


def stream_arrays(device: str, nbytes: int) -> tuple[Any, Any, Any]:
    """(a, b, c): float32 arrays of ``nbytes`` each, b and c random, a the destination.
    Rounds of copy and triad reuse one set: making 3 arrays of 4x the cache per
    measurement cost seconds of random numbers and page faults on a CPU."""
    import torch

    n = max(1024, nbytes // 4)
    b = random_tensor((n,), torch.float32, device, seed=1)
    c = random_tensor((n,), torch.float32, device, seed=2)
    return torch.empty_like(b), b, c


def stream_point(kind: str, device: str, nbytes: int, *, budget_s: float,
                 flush_l2: bool, name: str | None = None,
                 arrays: tuple[Any, Any, Any] | None = None,
                 verify_sets: int | None = None) -> MeasuredPoint:
    """Time STREAM ``kind`` over arrays of ``nbytes`` (``arrays``: from ``stream_arrays``,
    else made here); every kept timed output is checked."""
    import torch

    from perfscope.measure.timing import VERIFY_SETS, benchmark

    a, b, c = arrays if arrays is not None else stream_arrays(device, nbytes)
    n = b.numel()
    triad = 3.0
    if kind == "copy":
        def fn() -> Any:
            return a.copy_(b)
        flops = 0.0
    else:
        def fn() -> Any:
            return torch.add(b, c, alpha=triad, out=a)
        flops = 2.0 * n  # one fused multiply-add per element

    def verify(args: tuple[Any, ...], out: Any) -> float:
        if kind == "copy":  # a copy is exact
            if not torch.equal(out, b):
                raise MeasureError("stream copy: the copy differs from its source")
            return 0.0
        # a float64 reference of 2^20 elements spread over the whole output
        idx = spread_indices(n, 1 << 20, out.device)
        return check_close(out[idx], b[idx].double() + triad * c[idx].double(), "fp32",
                           "stream triad")

    stats = benchmark(fn, device=device, budget_s=budget_s, flush_l2=flush_l2, warmup_s=0.02,
                      cuda_graph=None, set_bytes=stream_bytes(kind, n, 4), verify=verify,
                      verify_sets=verify_sets or VERIFY_SETS)
    return MeasuredPoint(name or f"ceiling.memory.{kind}", "memory", {"elements": n}, "fp32",
                         stats, flops, stream_bytes(kind, n, 4), device)


def cache_sizes(cache_bytes: int, lo: int = MIB // 4) -> list[int]:
    """Working sets (src + dst bytes) for the plateau sweep: powers of two from ``lo`` to 4x the
    cache, plus 3/4 of the cache where the plateau should still hold."""
    out, s = [], lo
    while s <= 4 * cache_bytes:
        out.append(s)
        s *= 2
    out.append(3 * cache_bytes // 4)
    return sorted(set(out))


def plateau(points: list[MeasuredPoint], cache_bytes: int) -> MeasuredPoint | None:
    """Best copy rate among working sets that fit in half the cache."""
    inside = [p for p in points if p.bytes / 2 <= cache_bytes / 2]
    return max(inside, key=lambda p: p.achieved_bytes_per_s) if inside else None


def cache_sweep(device: str, *, budget_s: float,
                step: Callable[[str], None] | None = None) -> list[MeasuredPoint]:
    """Copy over every working set of ``cache_sizes`` without a flush (cache-hot on purpose)."""
    from perfscope.measure.timing import cache_bytes

    pts = []
    for ws in cache_sizes(cache_bytes(device)):
        if step:
            step(f"cache sweep {ws // 1024} KiB")
        pts.append(stream_point("copy", device, ws // 2, budget_s=budget_s, flush_l2=False,
                                name="ceiling.cache.copy"))
    return pts
