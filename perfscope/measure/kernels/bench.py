"""Time the reference kernels on this device and place them on the roofline.

Every implementation is timed with ``perfscope.measure.timing.benchmark`` (warm-up, a cache
flush before every call, median with p20/p80) on fresh random data, and the output of the
timed calls is then checked against the float64 reference of that same data. The tensors are
sized well past the last-level cache (L2 on a GPU), so one input set is enough for every call
to read them from DRAM/HBM. Large shapes are checked on a spread subset of rows (norm) or
sequences (attention): a float64 reference of a 65536 x 8192 tensor on the host would take
tens of GB. Each ``MeasuredPoint`` carries the analytic FLOPs and bytes of the shape run, so
achieved FLOP/s and bytes/s sit on the same chart as the prediction.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from perfscope.measure.kernels import KernelCounts, triton_unavailable_reason
from perfscope.measure.kernels import add_rmsnorm as an
from perfscope.measure.kernels import paged_attention as pa
from perfscope.measure.types import MeasuredPoint, TimingStats

CHECK_ROWS = 2048  # norm rows checked against float64 (spread over the tensor)
CHECK_SEQS = 8  # attention sequences checked against float64


@dataclass(frozen=True, slots=True)
class NormShape:
    tokens: int
    hidden: int


@dataclass(frozen=True, slots=True)
class DecodeShape:
    batch: int
    heads: int
    kv_heads: int
    head_dim: int
    min_len: int
    max_len: int
    block_size: int = pa.BLOCK_SIZE


# Tensors well past the last-level cache (CPU: 32 MiB per tensor in quick, 128 MiB in full),
# so the byte count is DRAM traffic; GPU shapes past an H100/H200 L2 of 50-60 MB.
NORM_SHAPES = {("cpu", True): NormShape(2048, 4096), ("cpu", False): NormShape(8192, 4096),
               ("cuda", True): NormShape(16384, 4096), ("cuda", False): NormShape(65536, 8192)}
DECODE_SHAPES = {("cpu", True): DecodeShape(8, 32, 8, 128, 64, 1024),
                 ("cpu", False): DecodeShape(32, 32, 8, 128, 128, 4096),
                 ("cuda", True): DecodeShape(64, 32, 8, 128, 128, 4096),
                 ("cuda", False): DecodeShape(128, 32, 8, 128, 256, 8192)}


def _kind(device: str) -> str:
    return "cuda" if device.startswith("cuda") else "cpu"


def _budget(quick: bool) -> dict[str, Any]:
    return {"warmup_s": 0.05, "budget_s": 0.3, "min_runs": 5} if quick else \
        {"warmup_s": 0.2, "budget_s": 2.0, "min_runs": 10}


def _point(name: str, kind: str, shape: dict[str, int], dtype: str, stats: TimingStats,
           counts: KernelCounts, device: str, **extra: Any) -> MeasuredPoint:
    return MeasuredPoint(name=name, kind=kind, shape=shape, dtype=dtype, stats=stats,
                         flops=counts.flops, bytes=counts.bytes, device=device, extra=extra)


# ---- add + RMSNorm ------------------------------------------------------------------------

def bench_add_rmsnorm(device: str = "cpu", quick: bool = True, *, dtype: str | None = None,
                      shape: NormShape | None = None,
                      impls: tuple[str, ...] | None = None) -> list[MeasuredPoint]:
    """Unfused and fused add+RMSNorm for every implementation that runs here, side by side.

    Points are named ``add_rmsnorm.{unfused,fused}.{impl}``; ``extra`` holds the impl, the
    variant, the reference error and why other implementations were skipped.
    """
    import torch

    from perfscope.measure.checks import check_close, random_tensor, spread_indices
    from perfscope.measure.dtypes import torch_dtype
    from perfscope.measure.timing import benchmark

    dtype = dtype or ("fp32" if device == "cpu" else "bf16")
    tdt = torch_dtype(dtype)
    shape = shape or NORM_SHAPES[(_kind(device), quick)]
    t, hd = shape.tokens, shape.hidden
    status = an.impl_status(device, dtype)
    names = impls or tuple(n for n, why in status.items() if not why)
    skipped = {n: why for n, why in status.items() if why and n not in names}
    # one input set: the tensors are far larger than the last-level cache and the harness
    # flushes it before every call, so each call reads them from DRAM/HBM
    x = random_tensor((t, hd), tdt, device, seed=100)
    r = random_tensor((t, hd), tdt, device, seed=200)
    weight = random_tensor((hd,), tdt, device, seed=7)
    h, out = torch.empty_like(x), torch.empty_like(x)
    rows = spread_indices(t, CHECK_ROWS, x.device)
    h_ref, out_ref = an.add_rmsnorm_reference(x[rows], r[rows], weight, an.EPS)

    points = []
    for name in names:
        impl = an.get_impl(name)
        variants: list[tuple[str, an.KernelFn]] = [("unfused", impl.unfused),
                                                  ("fused", impl.fused)]
        if name == "torch":  # the framework's op-by-op baseline, once
            variants.insert(0, ("eager", an.add_rmsnorm_eager))
        for variant, fn in variants:
            h.fill_(float("nan"))  # what the check reads below is what the timed calls wrote
            out.fill_(float("nan"))

            def call(fn: an.KernelFn = fn) -> None:
                fn(x, r, weight, an.EPS, h, out)

            stats = benchmark(call, device=device, **_budget(quick))
            what = f"add_rmsnorm {variant} {name}"
            err = max(check_close(h[rows].cpu(), h_ref, dtype, f"{what} (h)"),
                      check_close(out[rows].cpu(), out_ref, dtype, f"{what} (out)"))
            counts = an.add_rmsnorm_counts(t, hd, tdt.itemsize, fused=variant == "fused",
                                           eager=variant == "eager")
            points.append(_point(f"add_rmsnorm.{variant}.{name}", "norm",
                                 {"tokens": t, "hidden": hd}, dtype, stats, counts, device,
                                 impl=name, variant=variant, max_rel_err=err,
                                 skipped_impls=skipped))
    return points


def add_rmsnorm_ratios(points: list[MeasuredPoint]) -> list[dict[str, Any]]:
    """Per implementation: unfused vs fused time and bytes, and the ratios (from one run)."""
    by = {(p.extra.get("impl"), p.extra.get("variant")): p for p in points
          if p.name.startswith("add_rmsnorm.")}
    rows = []
    for impl in dict.fromkeys(k[0] for k in by):
        u, f = by.get((impl, "unfused")), by.get((impl, "fused"))
        if u is None or f is None:
            continue
        e = next((p for (_, v), p in by.items() if v == "eager"), None)
        extra = {} if e is None else {"eager_time_s": e.stats.median_s,
                                      "eager_bytes": e.bytes,
                                      "speedup_vs_eager": e.stats.median_s / f.stats.median_s,
                                      "byte_ratio_vs_eager": f.bytes / e.bytes}
        rows.append(extra | {"impl": impl, "unfused_time_s": u.stats.median_s,
                     "fused_time_s": f.stats.median_s,
                     "speedup": u.stats.median_s / f.stats.median_s,
                     "unfused_bytes": u.bytes, "fused_bytes": f.bytes,
                     "byte_ratio": f.bytes / u.bytes,
                     "unfused_bytes_per_s": u.achieved_bytes_per_s,
                     "fused_bytes_per_s": f.achieved_bytes_per_s})
    return rows


# ---- decode attention ---------------------------------------------------------------------

def ragged_lengths(batch: int, min_len: int, max_len: int, seed: int = 0) -> list[int]:
    """Sequence lengths uniform in [min_len, max_len], with max_len itself always present."""
    rng = random.Random(seed)
    lens = [rng.randint(min_len, max_len) for _ in range(batch)]
    lens[0] = max_len
    return lens


def bench_decode_attention(device: str = "cpu", quick: bool = True, *,
                           dtype: str | None = None,
                           shape: DecodeShape | None = None) -> list[MeasuredPoint]:
    """Paged against contiguous decode attention on one ragged batch (torch, and Triton on CUDA).

    Points are named ``decode_attention.{paged,contiguous}.{impl}``; ``extra`` holds the
    reference error and the KV memory paging saves on this batch. Triton: ``triton`` is the
    kernel as called by default (``num_splits=None``: split-KV when the heuristic splits),
    ``triton_onepass`` (paged only) the one-pass kernel beside it; ``extra["num_splits"]`` is
    the split count each ran with.
    """
    from perfscope.measure.checks import check_close, random_tensor, spread_indices
    from perfscope.measure.dtypes import torch_dtype
    from perfscope.measure.timing import benchmark

    dtype = dtype or ("fp32" if device == "cpu" else "bf16")
    tdt = torch_dtype(dtype)
    sh = shape or DECODE_SHAPES[(_kind(device), quick)]
    lens = ragged_lengths(sh.batch, sh.min_len, sh.max_len)
    dims = {"kv_heads": sh.kv_heads, "head_dim": sh.head_dim, "block_size": sh.block_size}

    kv = pa.make_paged_kv(lens, dtype=tdt, device=device, seed=300, **dims)
    kc, vc = pa.to_contiguous(kv, sh.max_len)
    q = random_tensor((sh.batch, sh.heads, sh.head_dim), tdt, device, seed=400)
    data = (q, kv, kc, vc)

    impls: dict[str, dict[str, Any]] = {"torch": {
        "paged": lambda s: pa.paged_attention_torch(s[0], s[1].k_pool, s[1].v_pool,
                                                    s[1].block_table, s[1].seq_lens),
        "contiguous": lambda s: pa.contiguous_attention_torch(s[0], s[2], s[3], s[1].seq_lens)}}
    splits: dict[tuple[str, str], int] = {}  # (impl, layout) -> num_splits the kernel runs
    if not triton_unavailable_reason(device):
        from perfscope.measure.kernels import triton_kernels as tk

        impls["triton"] = {
            "paged": lambda s: tk.paged_attention_triton(s[0], s[1].k_pool, s[1].v_pool,
                                                         s[1].block_table, s[1].seq_lens),
            "contiguous": lambda s: tk.contiguous_attention_triton(
                s[0], s[2], s[3], s[1].seq_lens)}
        impls["triton_onepass"] = {
            "paged": lambda s: tk.paged_attention_triton(s[0], s[1].k_pool, s[1].v_pool,
                                                         s[1].block_table, s[1].seq_lens,
                                                         num_splits=1)}
        # as the kernels resolve None: bounded by the table's width, the cache's length
        tile = pa.DECODE_LAUNCH.block_n
        splits = {("triton", "paged"): tk.decode_num_splits(
                      q, kv.block_table.shape[1] * sh.block_size, tile, sh.kv_heads),
                  ("triton", "contiguous"): tk.decode_num_splits(
                      q, kc.shape[2], tile, sh.kv_heads),
                  ("triton_onepass", "paged"): 1}
    mem = pa.paged_kv_memory(lens, block_size=sh.block_size, max_len=sh.max_len,
                             kv_heads=sh.kv_heads, head_dim=sh.head_dim,
                             dtype_bytes=tdt.itemsize)
    seqs = [int(b) for b in spread_indices(sh.batch, CHECK_SEQS)]
    ref = pa.attention_reference(q[seqs], [pa.sequence_kv(kv, b) for b in seqs])
    shape_d = {"batch": sh.batch, "heads": sh.heads, "kv_heads": sh.kv_heads,
               "head_dim": sh.head_dim, "max_len": sh.max_len, "block_size": sh.block_size,
               "tokens": sum(lens)}
    points = []
    for name, fns in impls.items():
        for layout, fn in fns.items():
            last: list[Any] = []

            def call(fn: Any = fn, last: list[Any] = last) -> Any:
                last[:] = [fn(data)]  # the output of the last timed call is checked
                return last[0]

            stats = benchmark(call, device=device, **_budget(quick))
            err = check_close(last[0][seqs].cpu(), ref, dtype,
                              f"decode attention {layout} {name}")
            ns = {"num_splits": splits[name, layout]} if (name, layout) in splits else {}
            counts = pa.attention_decode_counts(
                lens, heads=sh.heads, kv_heads=sh.kv_heads, head_dim=sh.head_dim,
                act_bytes=tdt.itemsize, block_size=sh.block_size if layout == "paged" else None)
            points.append(_point(f"decode_attention.{layout}.{name}", "attention", shape_d,
                                 dtype, stats, counts, device, impl=name, layout=layout,
                                 max_rel_err=err, seq_lens=lens, **ns,
                                 kv_paged_bytes=mem.paged_bytes,
                                 kv_reserved_bytes=mem.reserved_bytes,
                                 kv_saved_fraction=mem.saved_fraction))
    return points


KERNELS = ("add_rmsnorm", "decode_attention")


def kernel_skips(device: str, dtype: str | None = None) -> list[str]:
    """One line per implementation that cannot run here, with the reason."""
    dt = dtype or ("fp32" if device == "cpu" else "bf16")
    out = [f"add_rmsnorm {name}: {why}; skipped"
           for name, why in an.impl_status(device, dt).items() if why]
    why = triton_unavailable_reason(device)
    if why:
        out.append(f"decode_attention triton: {why}; skipped")
    return out


def run_kernel_benchmarks(device: str = "cpu", quick: bool = True,
                          progress: Any = None) -> list[MeasuredPoint]:
    """Time, then check, every reference kernel that runs on ``device`` (cpu or cuda[:N]);
    ``progress(label, done, total)`` after each kernel."""
    if progress:
        progress("add_rmsnorm", 0, len(KERNELS))
    pts = bench_add_rmsnorm(device, quick)
    if progress:
        progress("decode_attention", 1, len(KERNELS))
    pts += bench_decode_attention(device, quick)
    if progress:
        progress("done", len(KERNELS), len(KERNELS))
    return pts
