"""One GEMM as a layer runs it, checked and timed: Y[m, n] = X[m, k] @ W[n, k]^T (+ b).

W is stored n x k and passed transposed, as ``F.linear`` does (fp8's ``_scaled_mm`` wants
exactly that column-major B). ``groups`` > 1 runs that many independent GEMMs in one batched
call (MoE experts).

- int8 (W8A8): ``torch._int_mm``, int32 out. On CUDA it refuses M <= 16, so a decode GEMM at
  batch <= 16 runs with X padded to ``INT8_PAD_ROWS`` rows; FLOPs and bytes stay those of the
  true M (the padding is the kernel's overhead, not the model's work) and only the true rows
  are checked.
- fp8 (e4m3): ``torch._scaled_mm`` on unit-scale data, bf16 out, the 1/sqrt(k) that keeps
  outputs O(1) in ``scale_b``. Scaling the data before the cast instead would push much of W
  into e4m3's subnormals and zero, and low-entropy data runs faster than real weights.
  ``fast_accum`` selects cuBLAS's fast (reduced-precision) accumulation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from perfscope.measure.checks import check_close, check_equal, random_tensor, spread_indices
from perfscope.measure.dtypes import matmul_precision, torch_dtype
from perfscope.measure.skips import Skip
from perfscope.measure.types import MeasuredPoint
from perfscope.units import DTYPE_BITS

INT8_MIN_ROWS_CUDA = 17  # torch._int_mm on CUDA: "self.size(0) needs to be greater than 16"
INT8_PAD_ROWS = 32  # padded M: above the limit and a multiple of 8 (cuBLASLt int8 tiles)
VERIFY_ROWS = 64  # rows x columns of each checked output compared element by element
VERIFY_COLS = 256
CHUNK_ELEMENTS = 1 << 20  # elements converted to float64 at a time by matvec64 (8 MB)
OUT_BITS = {"fp8": DTYPE_BITS["bf16"], "int8": 32}  # Y: bf16 for fp8, int32 accumulators


def int8_rows(m: int, cuda: bool) -> int:
    """Rows X is allocated with for an int8 GEMM of ``m`` rows on CUDA (or not)."""
    return INT8_PAD_ROWS if cuda and m < INT8_MIN_ROWS_CUDA else m


@dataclass(frozen=True, slots=True)
class Gemm:
    dtype: str
    m: int
    n: int
    k: int
    groups: int = 1
    bias: bool = False
    fast_accum: bool = False  # fp8 only
    pad_int8: bool = False  # int8 only: allocate int8_rows(m, True) rows (CUDA's _int_mm)

    @property
    def flops(self) -> float:
        """2 FLOP per multiply-add over the true m rows (+ one add per output for a bias)."""
        return self.groups * (2.0 * self.m * self.n * self.k + (self.m * self.n
                                                                if self.bias else 0.0))

    @property
    def m_run(self) -> int:
        return int8_rows(self.m, self.pad_int8) if self.dtype == "int8" else self.m

    def bytes(self) -> float:
        """X and W read once, Y written once (Y in bf16 for fp8, int32 for int8), true m."""
        e = DTYPE_BITS[self.dtype] / 8
        out = OUT_BITS.get(self.dtype, DTYPE_BITS[self.dtype]) / 8
        b = e * (self.m * self.k + self.k * self.n) + out * self.m * self.n
        return self.groups * (b + (out * self.n if self.bias else 0.0))

    def _lead(self) -> tuple[int, ...]:
        if self.groups > 1 and self.dtype in ("fp8", "int8"):
            raise Skip(f"grouped {self.dtype} GEMM: torch has no batched "
                       f"{'_scaled_mm' if self.dtype == 'fp8' else '_int_mm'}")
        return (self.groups,) if self.groups > 1 else ()

    def x(self, device: str, seed: int) -> Any:
        return random_tensor((*self._lead(), self.m_run, self.k), torch_dtype(self.dtype),
                             device, seed=seed)

    def w(self, device: str, seed: int) -> dict[str, Any]:
        """The weight (and bias): unit scale for fp8 (the scale goes in scale_b), 1/sqrt(k)
        otherwise so fp16 outputs do not overflow at large k; int8 uniform in [-64, 64)."""
        lead = self._lead()
        scale = 1.0 if self.dtype in ("int8", "fp8") else 1.0 / math.sqrt(self.k)
        p = {"w": random_tensor((*lead, self.n, self.k), torch_dtype(self.dtype), device,
                                seed=seed, scale=scale)}
        if self.bias:
            p["b"] = random_tensor((*lead, 1, self.n) if lead else (self.n,),
                                   torch_dtype(self.dtype), device, seed=seed + 7919)
        return p

    def scale_b(self) -> float:
        return 1.0 / math.sqrt(self.k) if self.dtype == "fp8" else 1.0

    def fn(self, device: str) -> Any:
        """fn(x, params) -> Y, the call that is timed."""
        import torch
        import torch.nn.functional as F

        if self.bias and self.dtype in ("fp8", "int8"):
            raise Skip(f"{self.dtype} GEMM with a bias: no fused torch kernel")
        if self.dtype == "fp8":
            one = torch.ones((), dtype=torch.float32, device=device)
            sb = torch.full((), self.scale_b(), dtype=torch.float32, device=device)
            fast = self.fast_accum
            return lambda x, p: torch._scaled_mm(x, p["w"].t(), scale_a=one, scale_b=sb,
                                                 out_dtype=torch.bfloat16, use_fast_accum=fast)
        if self.dtype == "int8":
            return lambda x, p: torch._int_mm(x, p["w"].t())
        if self.groups > 1:
            if self.bias:
                return lambda x, p: torch.baddbmm(p["b"], x, p["w"].transpose(-1, -2))
            return lambda x, p: torch.bmm(x, p["w"].transpose(-1, -2))
        return lambda x, p: F.linear(x, p["w"], p.get("b"))

    def reference(self, x: Any, p: dict[str, Any], rows: Any = None, cols: Any = None) -> Any:
        """Y in float64 (exact for int8: |sum| < 2^53) on x's device: the true m rows, or
        only ``rows``; all n columns, or only ``cols`` (index tensors)."""
        import torch

        xs = x[..., :self.m, :] if rows is None else x[..., rows, :]
        w = p["w"] if cols is None else p["w"][..., cols, :]
        y = xs.to(torch.float64) @ w.to(torch.float64).transpose(-1, -2)
        if "b" in p:
            y = y + (p["b"] if cols is None else p["b"][..., cols]).to(torch.float64)
        return y * self.scale_b()

    def checker(self) -> GemmCheck:
        """A verify(args, out) for this GEMM that keeps the float64 pieces of each weight it
        has seen (see ``GemmCheck``)."""
        return GemmCheck(self)

    def verify(self, args: tuple[Any, ...], out: Any) -> float:
        """Check one output (``GemmCheck``; nothing is kept between calls)."""
        return GemmCheck(self)(args, out)


@dataclass
class GemmCheck:
    """Checks a timed GEMM output two ways, both in float64 against the call's own inputs:

    - every true row through Freivalds' product with a random vector r of nonzero integers:
      Y r against X (W^T r) (+ b.r), which a wrong element anywhere moves;
    - VERIFY_ROWS rows x VERIFY_COLS columns spread over the output, element by element.

    A float64 GEMM of the whole output would cost more than the timing itself on a CPU, and
    converting a weight of hundreds of MB to float64 per check costs seconds of page faults:
    W^T r (k numbers) is computed once per weight tensor and kept (the weights are shared by
    the input sets of a CPU run; a CUDA graph's sets each have their own), and every float64
    product is taken in slices of at most CHUNK_ELEMENTS.
    """

    g: Gemm
    # id(weight) -> (the weight, its pieces): the tensor is held so its id is not reused
    _kept: dict[int, tuple[Any, Any]] = field(default_factory=dict)

    def _pieces(self, p: dict[str, Any], device: Any) -> tuple[Any, Any, Any]:
        """(r, W^T r + b.r in float64, the sampled columns' indices) for weight ``p``."""
        import torch

        w = p["w"]
        key = id(w)
        hit = self._kept.get(key)
        if hit is not None and hit[0] is w:
            return hit[1]
        g = self.g
        gen = torch.Generator(device=device).manual_seed(g.m * 31 + g.n)
        # nonzero integers in [-8, 8]: a zero would leave its column unchecked
        r = torch.randint(1, 9, (g.n,), generator=gen, device=device).to(torch.float64)
        r[torch.randint(0, 2, (g.n,), generator=gen, device=device).bool()] *= -1
        wr = matvec64(w.transpose(-1, -2), r)  # (.., k): sum over n of W[n, :] r[n]
        br = (p["b"].to(torch.float64) @ r) if "b" in p else None  # (..., 1) or scalar
        cols = spread_indices(g.n, VERIFY_COLS, device)
        self._kept[key] = (w, (r, (wr, br), cols))
        return r, (wr, br), cols

    def __call__(self, args: tuple[Any, ...], out: Any) -> float:
        x, p = args
        g = self.g
        what = f"{g.dtype} GEMM {g.m}x{g.n}x{g.k}" + (f" x{g.groups}" if g.groups > 1 else "")
        got = out[..., :g.m, :]
        r, (wr, br), cols = self._pieces(p, x.device)
        rows = spread_indices(g.m, VERIFY_ROWS, x.device)
        ref = g.reference(x, p, rows, cols)
        lhs = matvec64(got, r)  # (.., m)
        rhs = matvec64(x[..., :g.m, :], wr)
        if br is not None:
            rhs = rhs + br
        rhs = rhs * g.scale_b()
        sample = got[..., rows, :][..., cols]
        if g.dtype == "int8":  # integers all the way: both checks are exact
            return max(check_equal(sample, ref, what),
                       check_equal(lhs, rhs, f"{what} (all rows)"))
        return max(check_close(sample, ref, g.dtype, what),
                   check_close(lhs, rhs, g.dtype, f"{what} (all rows)"))


def matvec64(a: Any, v: Any) -> Any:
    """sum_j a[..., i, j] * v[..., j] in float64 (``v`` 1-d, or batched like ``a``),
    converting at most CHUNK_ELEMENTS of ``a`` at a time: never a float64 copy of a large
    operand."""
    import torch

    n = a.shape[-1]
    step = max(1, CHUNK_ELEMENTS // max(1, math.prod(a.shape[:-1])))
    acc = None
    for s in range(0, n, step):
        part = (a[..., s:s + step].to(torch.float64) @ v[..., s:s + step, None])[..., 0]
        acc = part if acc is None else acc + part
    assert acc is not None
    return acc


def time_gemm(g: Gemm, device: str, *, budget_s: float, warmup_s: float = 0.05,
              flush_l2: bool = True, name: str | None = None, min_runs: int = 5,
              cuda_graph: bool | None = None, verify_sets: int | None = None) -> MeasuredPoint:
    """Time one GEMM on rotating input sets (a fresh X each; W shared, except in a CUDA graph
    where each set has its own W) and check the timed outputs against float64."""
    from perfscope.measure.timing import VERIFY_SETS, benchmark

    fn = g.fn(device)
    errs: list[float] = []
    check = g.checker()

    def verify(args: tuple[Any, ...], out: Any) -> float:
        errs.append(check(args, out))
        return errs[-1]

    with matmul_precision(g.dtype):
        stats = benchmark(fn, device=device, warmup_s=warmup_s, budget_s=budget_s,
                          flush_l2=flush_l2, setup=lambda i: g.x(device, seed=100 + i),
                          params=lambda i: g.w(device, seed=1 + 10 * i), set_bytes=g.bytes(),
                          min_runs=min_runs, cuda_graph=cuda_graph, verify=verify,
                          verify_sets=verify_sets or VERIFY_SETS)
    shape = {"m": g.m, "n": g.n, "k": g.k}
    if g.groups > 1:
        shape["groups"] = g.groups
    extra: dict[str, Any] = {"check_max_rel_err": max(errs)}
    if g.m_run != g.m:
        extra["padded_m"] = g.m_run
    if g.dtype == "fp8":
        extra["fast_accum"] = g.fast_accum
    return MeasuredPoint(name or f"ceiling.gemm.{g.dtype}", "gemm", shape, g.dtype, stats,
                         g.flops, g.bytes(), device, extra=extra)
