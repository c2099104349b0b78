"""Reference kernels that land on the roofline: fused residual-add + RMSNorm, paged attention.

Each kernel has a torch implementation that runs on any device, a Triton one on CUDA
(``triton_kernels``), a float64 reference the tests and benchmarks check against on fresh
random data, and an analytic FLOP/byte count (``KernelCounts``) for the shape actually run.

- ``add_rmsnorm``: the Add&Norm fusion, fused (one pass) against the unfused pair (two passes).
- ``paged_attention``: decode attention over a block-paged KV pool against a contiguous cache,
  and the KV memory paging saves over reserving the maximum length per sequence.
- ``bench``: ``run_kernel_benchmarks`` -> ``MeasuredPoint`` list.

Importing this package is cheap: torch and triton are imported inside functions only.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class KernelCounts:
    """Analytic work and minimal DRAM/HBM traffic of one kernel call (FLOP, bytes)."""

    flops: float  # every add, multiply, compare counted once (a multiply-add is 2)
    bytes_read: float
    bytes_written: float

    @property
    def bytes(self) -> float:
        return self.bytes_read + self.bytes_written

    @property
    def intensity(self) -> float:
        return self.flops / self.bytes if self.bytes else float("inf")


def triton_unavailable_reason(device: str = "cuda") -> str:
    """"" where the Triton kernels can run on ``device``, else why not (no import of triton)."""
    import importlib.util

    if not device.startswith("cuda"):
        return "Triton runs on CUDA devices only"
    import torch

    if not torch.cuda.is_available():
        return "CUDA is not available"
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed"
    return ""


__all__ = ["KernelCounts", "triton_unavailable_reason"]
