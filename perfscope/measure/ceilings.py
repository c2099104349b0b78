"""Machine ceilings: peak GEMM FLOP/s per dtype, memory bandwidth, cache plateau.

GEMM: square-ish torch GEMMs over a size sweep (the ceiling is the best shape's rate at its
median time, like stas00's mamf-finder), each checked against an fp64 reference first.
Bandwidth: STREAM copy (a = b: 2 words per element) and triad (a = b + s*c: 3 words) over
arrays four times the last-level cache, counting bytes read + written (STREAM convention,
no write-allocate traffic). Cache plateau: copy bandwidth over a working-set sweep without
flushing; the plateau is the best rate of working sets that fit in half the L2.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from perfscope.errors import MeasureError, UnsupportedDtypeError
from perfscope.measure.timing import benchmark, check_close, is_cuda, is_oom, random_tensor
from perfscope.measure.types import MeasuredPoint, TimingStats

GEMM_DTYPES = ("fp32", "tf32", "bf16", "fp16", "fp8", "int8")
MIB = 2**20

# Square GEMM sizes swept for the ceiling. CPU sizes keep one call under ~0.3 s at 2 cores.
GPU_GEMM_SIZES = (2048, 4096, 6144, 8192, 12288)
GPU_GEMM_SIZES_QUICK = (4096, 8192)
CPU_GEMM_SIZES = (256, 512, 768, 1024, 1536, 2048)
CPU_GEMM_SIZES_QUICK = (512, 1024, 1536)


# ---- which dtypes a device runs at speed --------------------------------------------------

def cuda_dtypes(capability: tuple[int, int], *, has_scaled_mm: bool = True,
                has_int_mm: bool = True) -> list[str]:
    """GEMM dtypes with hardware support on a CUDA device of compute ``capability``.

    tf32/bf16 tensor cores from Ampere (8.0), fp8 from Ada/Hopper (8.9) through
    torch._scaled_mm, int8 tensor-core GEMM through torch._int_mm (8.0 and later).
    """
    cc = capability[0] * 10 + capability[1]
    out = ["fp32"]
    if cc >= 80:
        out += ["tf32", "bf16"]
    if cc >= 60:
        out.append("fp16")
    if cc >= 89 and has_scaled_mm:
        out.append("fp8")
    if cc >= 80 and has_int_mm:
        out.append("int8")
    return out


def cpu_dtypes(flags: set[str]) -> list[str]:
    """GEMM dtypes a CPU runs at speed, from its /proc/cpuinfo flags.

    Without AVX512-BF16/AMX, torch runs bf16 and fp16 GEMMs by conversion at a few percent of
    the fp32 rate (measured ~1 GFLOP/s vs 65 on a 2-core EPYC), which is not "at speed".
    """
    out = ["fp32"]
    if flags & {"avx512_bf16", "amx_bf16"}:
        out.append("bf16")
    if flags & {"avx512_fp16", "amx_fp16"}:
        out.append("fp16")
    if "amx_int8" in flags:
        out.append("int8")
    return out


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str]:
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def supported_dtypes(device: str) -> list[str]:
    if is_cuda(device):
        import torch

        cap = torch.cuda.get_device_capability(torch.device(device))
        return cuda_dtypes(cap, has_scaled_mm=hasattr(torch, "_scaled_mm"),
                           has_int_mm=hasattr(torch, "_int_mm"))
    return cpu_dtypes(cpu_flags())


def check_dtype_supported(dtype: str, device: str) -> None:
    have = supported_dtypes(device)
    if dtype not in have:
        if dtype not in GEMM_DTYPES:
            raise UnsupportedDtypeError(f"--dtype {dtype}: unknown; use one of "
                                        f"{', '.join(GEMM_DTYPES)}")
        raise UnsupportedDtypeError(f"--dtype {dtype}: {device} has no {dtype} GEMM at speed; "
                                    f"it has {', '.join(have)}")


# ---- GEMM callables -----------------------------------------------------------------------

def torch_dtype(dtype: str) -> Any:
    import torch

    return {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16,
            "fp16": torch.float16, "fp8": torch.float8_e4m3fn, "int8": torch.int8,
            "fp64": torch.float64}[dtype]


@contextlib.contextmanager
def matmul_precision(dtype: str) -> Iterator[None]:
    """fp32 GEMMs at full fp32 ('highest'); tf32 lets cuBLAS use TF32 tensor cores ('high')."""
    import torch

    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high" if dtype == "tf32" else "highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(old)


@dataclass
class Gemm:
    """Y[m, n] = X[m, k] @ W[n, k]^T in ``dtype``, as ``F.linear`` runs a layer (W stored
    n x k, passed transposed: fp8's _scaled_mm wants exactly that column-major B).
    ``groups`` > 1: that many independent GEMMs in one batched call (MoE experts)."""

    dtype: str
    m: int
    n: int
    k: int
    groups: int = 1

    @property
    def flops(self) -> float:
        return 2.0 * self.m * self.n * self.k * self.groups  # one multiply-add = 2 FLOP

    def bytes(self) -> float:
        """X and W read once, Y written once (Y is bf16 for fp8, int32 for int8)."""
        e = {"fp32": 4, "tf32": 4, "bf16": 2, "fp16": 2, "fp8": 1, "int8": 1}[self.dtype]
        out = {"fp8": 2, "int8": 4}.get(self.dtype, e)
        return self.groups * (e * (self.m * self.k + self.k * self.n) + out * self.m * self.n)

    def _lead(self) -> tuple[int, ...]:
        if self.groups > 1 and self.dtype in ("fp8", "int8"):
            raise MeasureError(f"grouped {self.dtype} GEMM: torch has no batched "
                               f"{'_scaled_mm' if self.dtype == 'fp8' else '_int_mm'}")
        return (self.groups,) if self.groups > 1 else ()

    def x(self, device: str, seed: int) -> Any:
        return random_tensor((*self._lead(), self.m, self.k), torch_dtype(self.dtype), device,
                             seed=seed)

    def w(self, device: str, seed: int) -> Any:
        # 1/sqrt(k) keeps outputs O(1): fp16 and fp8 outputs do not overflow at large k
        scale = 1.0 if self.dtype == "int8" else 1.0 / math.sqrt(self.k)
        return random_tensor((*self._lead(), self.n, self.k), torch_dtype(self.dtype), device,
                             seed=seed, scale=scale)

    def inputs(self, device: str, seed: int) -> tuple[Any, Any]:
        return self.x(device, seed), self.w(device, seed + 1)

    def fn(self, device: str) -> Callable[[tuple[Any, Any]], Any]:
        import torch

        if self.dtype == "fp8":
            one = torch.ones((), dtype=torch.float32, device=device)
            return lambda xw: torch._scaled_mm(xw[0], xw[1].t(), scale_a=one, scale_b=one,
                                               out_dtype=torch.bfloat16)
        if self.dtype == "int8":
            return lambda xw: torch._int_mm(xw[0], xw[1].t())
        return lambda xw: torch.matmul(xw[0], xw[1].transpose(-1, -2))

    def check(self, device: str, rows: int = 64, w: Any = None) -> float:
        """Compare the first ``rows`` rows of the output with an fp64 (int64) reference."""
        import torch

        x = self.x(device, seed=12345)
        w = w if w is not None else self.w(device, seed=12346)
        with matmul_precision(self.dtype):
            out = self.fn(device)((x, w))
        r = min(rows, self.m)
        x_r = x[..., :r, :]
        what = f"{self.dtype} GEMM {self.m}x{self.n}x{self.k}"
        if self.dtype == "int8":
            ref = x_r.to(torch.int64).cpu() @ w.to(torch.int64).cpu().transpose(-1, -2)
            if not torch.equal(out[..., :r, :].cpu().to(torch.int64), ref):
                raise MeasureError(f"{what}: wrong result")
            return 0.0
        ref = x_r.to(torch.float64) @ w.to(torch.float64).transpose(-1, -2)
        return check_close(out[..., :r, :], ref, self.dtype, what)


def time_gemm(g: Gemm, device: str, *, budget_s: float, warmup_s: float = 0.05,
              flush_l2: bool = True, check: bool = True, name: str | None = None,
              min_runs: int = 5) -> MeasuredPoint:
    """Check, then time one GEMM. Rotating input sets: a fresh X per set; W is shared by the
    sets (a layer's weight is one tensor; the flush keeps it out of cache)."""
    w = g.w(device, seed=1)
    if check:
        g.check(device, w=w)
    fn = g.fn(device)

    def setup(i: int) -> tuple[Any, Any]:
        return g.x(device, seed=100 + i), w

    with matmul_precision(g.dtype):
        stats = benchmark(fn, device=device, warmup_s=warmup_s, budget_s=budget_s,
                          flush_l2=flush_l2, setup=setup, min_runs=min_runs,
                          cuda_graph=is_cuda(device) and g.flops < 2e9)
    shape = {"m": g.m, "n": g.n, "k": g.k}
    if g.groups > 1:
        shape["groups"] = g.groups
    return MeasuredPoint(name or f"ceiling.gemm.{g.dtype}", "gemm", shape, g.dtype, stats,
                         g.flops, g.bytes(), device)


# ---- results ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Ceiling:
    """One achieved ceiling: ``value`` at the median time of the best shape; ``low``/``high``
    at its p80/p20 times (the reported spread)."""

    name: str  # gemm.bf16 | memory.copy | memory.triad | cache.plateau
    value: float
    low: float
    high: float
    unit: str  # FLOP/s | bytes/s
    dtype: str
    shape: dict[str, int]
    stats: TimingStats

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "low": self.low, "high": self.high,
                "unit": self.unit, "dtype": self.dtype, "shape": dict(self.shape),
                "stats": self.stats.to_dict()}


def ceiling_from(name: str, p: MeasuredPoint, unit: str) -> Ceiling:
    work = p.flops if unit == "FLOP/s" else p.bytes
    s = p.stats
    return Ceiling(name, work / s.median_s, work / s.p80_s, work / s.p20_s, unit, p.dtype,
                   dict(p.shape), s)


@dataclass
class CeilingsResult:
    device: str
    ceilings: list[Ceiling] = field(default_factory=list)
    points: list[MeasuredPoint] = field(default_factory=list)  # every shape timed
    skipped: list[str] = field(default_factory=list)  # one line per thing that did not run

    def get(self, name: str) -> Ceiling | None:
        return next((c for c in self.ceilings if c.name == name), None)

    def gemm(self) -> dict[str, Ceiling]:
        return {c.dtype: c for c in self.ceilings if c.name.startswith("gemm.")}

    def bandwidth(self) -> Ceiling | None:
        """The better of copy and triad: what a memory-bound kernel can reach."""
        bw = [c for c in self.ceilings if c.name.startswith("memory.")]
        return max(bw, key=lambda c: c.value) if bw else None


def gemm_ceiling(device: str, dtype: str, sizes: tuple[int, ...], *, budget_s: float,
                 res: CeilingsResult, progress: Callable[[str], None] | None = None) -> None:
    best: MeasuredPoint | None = None
    for s in sizes:
        if progress:
            progress(f"gemm {dtype} {s}x{s}x{s}")
        try:
            p = time_gemm(Gemm(dtype, s, s, s), device, budget_s=budget_s, min_runs=10)
        except Exception as e:  # one bad shape must not stop the sweep
            res.skipped.append(skip_line(f"ceiling gemm {dtype} {s}^3", e))
            continue
        res.points.append(p)
        if best is None or p.achieved_flops_per_s > best.achieved_flops_per_s:
            best = p
    if best is not None:
        res.ceilings.append(ceiling_from(f"gemm.{dtype}", best, "FLOP/s"))


def skip_line(what: str, e: BaseException) -> str:
    if is_oom(e):
        return f"{what}: out of memory at this shape; skipped"
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return f"{what}: {msg}; skipped"


# ---- memory bandwidth ---------------------------------------------------------------------

def stream_bytes(kind: str, elements: int, elem_bytes: int) -> float:
    """STREAM accounting: copy reads b and writes a (2 words), triad reads b, c, writes a (3)."""
    words = {"copy": 2, "triad": 3}[kind]
    return float(words * elements * elem_bytes)


def bandwidth_array_bytes(device: str, quick: bool) -> int:
    """Bytes per array: 4x the last-level cache (GPU: L2) so no pass is served from cache."""
    if is_cuda(device):
        import torch

        l2 = int(getattr(torch.cuda.get_device_properties(torch.device(device)),
                         "L2_cache_size", 50 * MIB))
        return max(256 * MIB, 8 * l2) if not quick else max(128 * MIB, 4 * l2)
    from perfscope.measure.device import cpu_caches

    llc = max(cpu_caches().values(), default=32 * MIB)
    return max(64 * MIB, 4 * llc)


def stream_point(kind: str, device: str, nbytes: int, *, budget_s: float,
                 flush_l2: bool, name: str | None = None) -> MeasuredPoint:
    import torch

    n = max(1024, nbytes // 4)
    b = random_tensor((n,), torch.float32, device, seed=1)
    c = random_tensor((n,), torch.float32, device, seed=2)
    a = torch.empty_like(b)
    if kind == "copy":
        a.copy_(b)
        check_close(a[:4096], b[:4096].double(), "fp32", "stream copy")

        def fn() -> Any:
            return a.copy_(b)
        flops = 0.0
    else:
        torch.add(b, c, alpha=3.0, out=a)
        check_close(a[:4096], b[:4096].double() + 3.0 * c[:4096].double(), "fp32",
                    "stream triad")

        def fn() -> Any:
            return torch.add(b, c, alpha=3.0, out=a)
        flops = 2.0 * n  # one fused multiply-add per element
    stats = benchmark(fn, device=device, budget_s=budget_s, flush_l2=flush_l2, warmup_s=0.02,
                      cuda_graph=is_cuda(device) and nbytes < 64 * MIB)
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


def cache_sweep(device: str, res: CeilingsResult, *, budget_s: float,
                progress: Callable[[str], None] | None = None) -> None:
    from perfscope.measure.device import cpu_caches

    if is_cuda(device):
        import torch

        cache = int(torch.cuda.get_device_properties(torch.device(device)).L2_cache_size)
    else:
        cache = max(cpu_caches().values(), default=32 * MIB)
    pts = []
    for ws in cache_sizes(cache):
        if progress:
            progress(f"cache sweep {ws // 1024} KiB")
        try:
            p = stream_point("copy", device, ws // 2, budget_s=budget_s, flush_l2=False,
                             name="ceiling.cache.copy")
        except Exception as e:
            res.skipped.append(skip_line(f"cache sweep {ws} B", e))
            continue
        pts.append(p)
    res.points.extend(pts)
    best = plateau(pts, cache)
    if best is not None:
        res.ceilings.append(ceiling_from("cache.plateau", best, "bytes/s"))


# ---- all of it ----------------------------------------------------------------------------

def measure_ceilings(device: str = "cpu", *, dtypes: list[str] | None = None,
                     quick: bool = False, sweep: bool | None = None,
                     progress: Callable[[str], None] | None = None) -> CeilingsResult:
    """GEMM ceilings for ``dtypes`` (default: all the device supports), copy and triad
    bandwidth, and the cache plateau (default: on GPUs, and on CPUs outside quick mode).

    Dtypes the device lacks and shapes that fail (out of memory) are recorded in
    ``skipped`` and the rest still runs.
    """
    res = CeilingsResult(device)
    have = supported_dtypes(device)
    want = dtypes if dtypes is not None else have
    gpu = is_cuda(device)
    sizes = (GPU_GEMM_SIZES_QUICK if quick else GPU_GEMM_SIZES) if gpu else \
        (CPU_GEMM_SIZES_QUICK if quick else CPU_GEMM_SIZES)
    budget = 0.25 if quick else 1.0
    for dt in want:
        try:
            check_dtype_supported(dt, device)
        except UnsupportedDtypeError as e:
            res.skipped.append(f"ceiling gemm {dt}: {e}; skipped")
            continue
        gemm_ceiling(device, dt, sizes, budget_s=budget, res=res, progress=progress)
    nbytes = bandwidth_array_bytes(device, quick)
    for kind in ("copy", "triad"):
        if progress:
            progress(f"memory {kind} {nbytes // MIB} MiB")
        try:
            p = stream_point(kind, device, nbytes, budget_s=budget, flush_l2=False)
        except Exception as e:
            res.skipped.append(skip_line(f"ceiling memory {kind}", e))
            continue
        res.points.append(p)
        res.ceilings.append(ceiling_from(f"memory.{kind}", p, "bytes/s"))
    if sweep if sweep is not None else (gpu or not quick):
        cache_sweep(device, res, budget_s=0.1 if quick else 0.3, progress=progress)
    return res


def agree(a: Ceiling, b: Ceiling) -> bool:
    """Two measurements of one ceiling agree when their [low, high] spreads overlap."""
    return a.low <= b.high and b.low <= a.high


def rate_at(p: MeasuredPoint) -> float:
    return p.flops / p.stats.median_s if p.stats.median_s > 0 else math.nan
