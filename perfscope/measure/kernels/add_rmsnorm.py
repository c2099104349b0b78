"""Residual add + RMSNorm: the Add&Norm fusion, fused (one pass) against the unfused pair.

    h   = x + residual                               # the new residual stream, an output
    out = h * rsqrt(mean(h^2, -1) + eps) * weight    # the normalized input of the next GEMM

Unfused is two full-tensor passes (an add kernel, then an RMSNorm kernel); fused is one pass
that keeps each row on chip between the add and the norm. Every implementation writes into
preallocated ``h`` and ``out`` so a timing never includes an allocation.

Implementations (``get_impl``):

- ``torch``: any device. Eager torch runs one kernel per op, so a naive fused function would
  make several full passes. Here rows are processed in tiles of about ``TILE_BYTES`` per
  tensor (on a CPU, each thread its own range of rows): the tile's add, square-sum and
  normalize run while it is still in cache, so each tensor crosses DRAM once. The unfused
  pair uses the same tiled norm after a full-tensor add, so it differs only by the fusion.
  Per-op dispatch and in-cache re-reads on every tile cost time, which is why its measured
  gain is smaller than the C kernel's; on CUDA the per-tile launches dominate, so there it
  is a functional reference and Triton is the kernel to time.
- ``c``: CPU, float32. A plain C loop per row (compiled once with the system C compiler,
  loaded with ctypes, rows split across threads): the CPU analogue of the Triton kernel.
  Absent (with the reason) where no compiler works; ``torch`` still runs.
- ``triton``: CUDA, one program per row (``triton_kernels``).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import itertools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perfscope.errors import MeasureError
from perfscope.measure.kernels import KernelCounts, triton_unavailable_reason

TILE_BYTES = 1 << 20  # per tensor per tile: x, r, h, out and temporaries of a tile fit in L2/L3
CUDA_TILE_BYTES = 4 << 20  # GPU: a tile's tensors stay in L2 (40-60 MB); fewer launches
EPS = 1e-6


# ---- analytic counts ----------------------------------------------------------------------

def add_rmsnorm_counts(tokens: int, hidden: int, act_bytes: float, *, fused: bool,
                       weight_bytes: float | None = None, eager: bool = False) -> KernelCounts:
    """FLOPs and minimal DRAM bytes of add + RMSNorm over a [tokens, hidden] tensor.

    FLOPs per element: add 1, square 1, sum 1, scale 1, weight 1 = 5; per row: /hidden,
    +eps, rsqrt = 3. The same work fused or not.
    Bytes, with N = tokens * hidden * act_bytes and W = hidden * weight_bytes:
      unfused: add reads x, r and writes h (2N + N); norm reads h, w and writes out (N + W + N)
               -> read 3N + W, write 2N  (5 tensor passes)
      fused:   reads x, r, w and writes h, out -> read 2N + W, write 2N  (4 tensor passes)
    so fused/unfused = (4N + W) / (5N + W) -> 0.8 for large tensors, not one half: the
    residual h still has to be written for the next layer. (A CPU's write-allocate also reads
    each written line, making the real ratio nearer 6/7; the roofline convention counts it not.)
      eager (``eager=True``): the framework's op-by-op RMSNorm after the add, as in the
               reference model code (x.pow(2).mean(-1), x * rsqrt(...), weight * x), every
               intermediate a full tensor: read 6N + W, write 4N (10 passes). Against it the
               fused kernel moves (4N + W) / (10N + W) -> 0.4 of the bytes.
    """
    n = float(tokens) * hidden * act_bytes
    w = float(hidden) * (act_bytes if weight_bytes is None else weight_bytes)
    flops = 5.0 * tokens * hidden + 3.0 * tokens
    if eager:
        # one framework kernel per op, every intermediate a full tensor in DRAM:
        # add (read 2N, write N), pow (N, N), mean (N, -), * rsqrt (N, N), * weight (N + W, N)
        return KernelCounts(flops=flops, bytes_read=6 * n + w, bytes_written=4 * n)
    if fused:
        return KernelCounts(flops=flops, bytes_read=2 * n + w, bytes_written=2 * n)
    return KernelCounts(flops=flops, bytes_read=3 * n + w, bytes_written=2 * n)


# ---- float64 reference --------------------------------------------------------------------

def add_rmsnorm_reference(x: Any, residual: Any, weight: Any, eps: float = EPS
                          ) -> tuple[Any, Any]:
    """(h, out) in float64 on the CPU: the plain formula, no tiling, no fusion."""
    import torch

    x64, r64, w64 = (t.detach().to("cpu", torch.float64) for t in (x, residual, weight))
    h = x64 + r64
    out = h / torch.sqrt((h * h).mean(dim=-1, keepdim=True) + eps) * w64
    return h, out


# ---- torch: tiled, any device -------------------------------------------------------------

def _tile_rows(t: Any, tile_bytes: int | None) -> int:
    default = CUDA_TILE_BYTES if t.is_cuda else TILE_BYTES
    return max(1, (tile_bytes or default) // max(1, t.shape[-1] * t.element_size()))


def _norm_tile(h: Any, weight: Any, eps: float, out: Any) -> None:
    import torch

    # h is [rows, hidden] and cache-resident here; accumulate in fp32 for half dtypes
    hf = h.float() if h.dtype in (torch.float16, torch.bfloat16) else h
    ms = torch.linalg.vector_norm(hf, dim=-1, keepdim=True).square_().div_(h.shape[-1])
    scale = ms.add_(eps).rsqrt_()
    if hf is h:
        torch.mul(h, scale, out=out)
        out.mul_(weight)
    else:
        out.copy_(hf.mul_(scale).mul_(weight))


def _over_rows(t: Any, body: Callable[[int, int], object]) -> None:
    """body(row0, row1) over all rows. On a CPU each thread takes a contiguous row range
    and runs its ops single-threaded: no per-op fork/join on small tiles, which stalls
    whenever another process holds a core."""
    import torch

    rows = t.shape[0]
    if t.is_cuda:
        body(0, rows)
        return
    n = int(torch.get_num_threads())
    if n == 1:
        body(0, rows)
        return
    torch.set_num_threads(1)
    try:
        _parallel_rows(rows, body, n)
    finally:
        torch.set_num_threads(n)


def add_torch(x: Any, residual: Any, h: Any) -> None:
    """h = x + residual, one full-tensor pass (read 2, write 1)."""
    import torch

    _over_rows(x, lambda a, b: torch.add(x[a:b], residual[a:b], out=h[a:b]))


def rmsnorm_torch(h: Any, weight: Any, eps: float, out: Any,
                  tile_bytes: int | None = None) -> None:
    """out = rmsnorm(h) * weight, one pass over h (tiled so the square-sum re-reads cache)."""
    rows = _tile_rows(h, tile_bytes)

    def body(a: int, b: int) -> None:
        for i in range(a, b, rows):
            j = min(i + rows, b)
            _norm_tile(h[i:j], weight, eps, out[i:j])

    _over_rows(h, body)


def add_rmsnorm_torch(x: Any, residual: Any, weight: Any, eps: float, h: Any, out: Any,
                      tile_bytes: int | None = None) -> None:
    """Fused: per tile, h = x + residual then out = rmsnorm(h) * weight while h is in cache."""
    import torch

    rows = _tile_rows(x, tile_bytes)

    def body(a: int, b: int) -> None:
        for i in range(a, b, rows):
            j = min(i + rows, b)
            hs = torch.add(x[i:j], residual[i:j], out=h[i:j])
            _norm_tile(hs, weight, eps, out[i:j])

    _over_rows(x, body)


# ---- C: CPU float32, one loop per row -----------------------------------------------------

_C_SOURCE = r"""
#include <math.h>
#include <stdint.h>
/* h = x + r over n elements */
void add_f32(const float* restrict x, const float* restrict r, float* restrict h, int64_t n) {
  for (int64_t i = 0; i < n; ++i) h[i] = x[i] + r[i];
}
/* out = h * rsqrt(mean(h^2) + eps) * w, row by row: the square-sum re-reads L1, not DRAM */
void rmsnorm_f32(const float* restrict h, const float* restrict w, float* restrict out,
                 int64_t rows, int64_t cols, float eps) {
  for (int64_t i = 0; i < rows; ++i) {
    const float* hr = h + i * cols; float* o = out + i * cols; float ss = 0.0f;
    for (int64_t j = 0; j < cols; ++j) ss += hr[j] * hr[j];
    const float s = 1.0f / sqrtf(ss / (float)cols + eps);
    for (int64_t j = 0; j < cols; ++j) o[j] = hr[j] * s * w[j];
  }
}
/* fused: h = x + r and out = rmsnorm(h) * w in one pass over each row */
void add_rmsnorm_f32(const float* restrict x, const float* restrict r, const float* restrict w,
                     float* restrict h, float* restrict out, int64_t rows, int64_t cols,
                     float eps) {
  for (int64_t i = 0; i < rows; ++i) {
    const float* xr = x + i * cols; const float* rr = r + i * cols;
    float* hr = h + i * cols; float* o = out + i * cols; float ss = 0.0f;
    for (int64_t j = 0; j < cols; ++j) { const float v = xr[j] + rr[j]; hr[j] = v; ss += v * v; }
    const float s = 1.0f / sqrtf(ss / (float)cols + eps);
    for (int64_t j = 0; j < cols; ++j) o[j] = hr[j] * s * w[j];
  }
}
"""
# Reassociation lets gcc vectorize the square-sum; no -ffast-math, whose crtfastmath would set
# flush-to-zero for the whole process when the library loads.
_C_FLAGS = ("-O3", "-fPIC", "-shared", "-fno-math-errno", "-fno-trapping-math",
            "-fassociative-math", "-fno-signed-zeros")


def _cache_dir() -> Path:
    root = os.environ.get("PERFSCOPE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "perfscope")
    return Path(root) / "kernels"


@functools.lru_cache(maxsize=1)
def _c_library() -> tuple[ctypes.CDLL | None, str]:
    """(library, "") or (None, why not). Compiled once per source+flags, cached on disk."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        return None, "no C compiler (set CC or install gcc)"
    key = hashlib.sha256((_C_SOURCE + " ".join(_C_FLAGS) + cc).encode()).hexdigest()[:16]
    try:
        d = _cache_dir()
        d.mkdir(parents=True, exist_ok=True)
    except OSError:
        d = Path(tempfile.gettempdir()) / "perfscope-kernels"
        d.mkdir(parents=True, exist_ok=True)
    so = d / f"add_rmsnorm-{key}.so"
    if not so.exists():
        src = d / f"add_rmsnorm-{key}.{os.getpid()}.c"
        tmp = d / f"add_rmsnorm-{key}.{os.getpid()}.so"
        src.write_text(_C_SOURCE)
        try:
            proc = subprocess.run([cc, *_C_FLAGS, str(src), "-o", str(tmp), "-lm"],
                                  capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as e:
            return None, f"{cc} failed: {e}"
        finally:
            src.unlink(missing_ok=True)
        if proc.returncode != 0:
            tmp.unlink(missing_ok=True)
            return None, f"{cc} failed: {proc.stderr.strip()[:300]}"
        os.replace(tmp, so)  # atomic: a concurrent process sees the whole file or none
    try:
        lib = ctypes.CDLL(str(so))
    except OSError as e:
        return None, f"cannot load {so}: {e}"
    p, i64, f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
    lib.add_f32.argtypes = [p, p, p, i64]
    lib.rmsnorm_f32.argtypes = [p, p, p, i64, i64, f32]
    lib.add_rmsnorm_f32.argtypes = [p, p, p, p, p, i64, i64, f32]
    for f in (lib.add_f32, lib.rmsnorm_f32, lib.add_rmsnorm_f32):
        f.restype = None
    return lib, ""


@functools.lru_cache(maxsize=4)
def _pool(threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="perfscope-c")


def _parallel_rows(rows: int, body: Callable[[int, int], object],
                   threads: int | None = None) -> None:
    """Run body(row0, row1) on row ranges, one per thread (default: torch's thread count);
    ctypes calls and torch ops release the GIL, so the ranges run in parallel."""
    import torch

    n = max(1, min(threads or int(torch.get_num_threads()), rows))
    if n == 1:
        body(0, rows)
        return
    cuts = [rows * k // n for k in range(n + 1)]
    futures = [_pool(n).submit(body, a, b) for a, b in itertools.pairwise(cuts)]
    for f in futures:
        f.result()


def _check_c_args(*tensors: Any) -> None:
    import torch

    for t in tensors:
        if t.device.type != "cpu" or t.dtype != torch.float32 or not t.is_contiguous():
            raise MeasureError("the c add+RMSNorm kernel takes contiguous float32 CPU tensors; "
                               "use impl 'torch' for other dtypes or devices")


def _c_call(x: Any, residual: Any, weight: Any, h: Any, out: Any) -> tuple[Any, ...]:
    """The loaded library, rows, cols, element size and the five data pointers."""
    lib, why = _c_library()
    if lib is None:
        raise MeasureError(f"c kernel unavailable: {why}")
    _check_c_args(x, residual, weight, h, out)
    return (lib, x.shape[0], x.shape[-1], 4,
            *(t.data_ptr() for t in (x, residual, h, out, weight)))


def _c_unfused(x: Any, residual: Any, weight: Any, eps: float, h: Any, out: Any) -> None:
    lib, rows, cols, es, xp, rp, hp, op, wp = _c_call(x, residual, weight, h, out)
    _parallel_rows(rows, lambda a, b: lib.add_f32(
        xp + a * cols * es, rp + a * cols * es, hp + a * cols * es, (b - a) * cols))
    _parallel_rows(rows, lambda a, b: lib.rmsnorm_f32(
        hp + a * cols * es, wp, op + a * cols * es, b - a, cols, eps))


def _c_fused(x: Any, residual: Any, weight: Any, eps: float, h: Any, out: Any) -> None:
    lib, rows, cols, es, xp, rp, hp, op, wp = _c_call(x, residual, weight, h, out)
    _parallel_rows(rows, lambda a, b: lib.add_rmsnorm_f32(
        xp + a * cols * es, rp + a * cols * es, wp, hp + a * cols * es, op + a * cols * es,
        b - a, cols, eps))


# ---- implementation registry --------------------------------------------------------------

KernelFn = Callable[[Any, Any, Any, float, Any, Any], None]  # (x, residual, w, eps, h, out)


@dataclass(frozen=True, slots=True)
class AddNormImpl:
    """One implementation: ``unfused`` and ``fused`` both fill preallocated (h, out)."""

    name: str
    unfused: KernelFn
    fused: KernelFn


def add_rmsnorm_eager(x: Any, residual: Any, weight: Any, eps: float, h: Any, out: Any) -> None:
    """The op-by-op baseline of the reference model code (one kernel per op, intermediates in
    DRAM): h = x + r; out = weight * (h * rsqrt(mean(h^2) + eps))."""
    import torch

    torch.add(x, residual, out=h)
    var = h.pow(2).mean(-1, keepdim=True)
    torch.mul(weight, h * torch.rsqrt(var + eps), out=out)


def _torch_unfused(x: Any, residual: Any, weight: Any, eps: float, h: Any, out: Any) -> None:
    add_torch(x, residual, h)
    rmsnorm_torch(h, weight, eps, out)


def _torch_fused(x: Any, residual: Any, weight: Any, eps: float, h: Any, out: Any) -> None:
    add_rmsnorm_torch(x, residual, weight, eps, h, out)


def impl_status(device: str, dtype: str = "fp32") -> dict[str, str]:
    """Implementation name -> "" where it runs on ``device``/``dtype``, else why it does not."""
    status = {"torch": "", "triton": triton_unavailable_reason(device)}
    if device != "cpu":
        status["c"] = "the c kernel runs on the CPU only"
    elif dtype != "fp32":
        status["c"] = "the c kernel is float32 only"
    else:
        status["c"] = _c_library()[1]
    return status


def get_impl(name: str) -> AddNormImpl:
    """The ``torch``, ``c`` or ``triton`` implementation (see ``impl_status`` for where)."""
    if name == "torch":
        return AddNormImpl("torch", _torch_unfused, _torch_fused)
    if name == "c":
        return AddNormImpl("c", _c_unfused, _c_fused)
    if name == "triton":
        from perfscope.measure.kernels import triton_kernels as tk

        return AddNormImpl("triton", tk.add_rmsnorm_unfused_triton, tk.add_rmsnorm_fused_triton)
    raise MeasureError(f"add+RMSNorm implementation {name!r}: use torch, c or triton")
