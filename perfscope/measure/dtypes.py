"""Which GEMM dtypes a device runs at speed, and the one map from perfscope dtype names to
torch dtypes. Element sizes come from ``perfscope.units.DTYPE_BITS`` (the package's one dtype
table); this module only says how torch spells each name and what the hardware has.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from perfscope.errors import InputError, UnsupportedDtypeError

GEMM_DTYPES = ("fp32", "tf32", "bf16", "fp16", "fp8", "int8")
# perfscope name -> torch attribute (tf32 is stored as fp32; fp8 is e4m3, as in the specs)
TORCH_NAMES = {"fp64": "float64", "fp32": "float32", "tf32": "float32", "bf16": "bfloat16",
               "fp16": "float16", "fp8": "float8_e4m3fn", "int8": "int8"}


def torch_dtype(dtype: str) -> Any:
    """The torch dtype that stores perfscope dtype ``dtype``."""
    import torch

    try:
        return getattr(torch, TORCH_NAMES[dtype])
    except KeyError:
        raise UnsupportedDtypeError(f"dtype {dtype!r}: no torch storage type; use one of "
                                    f"{', '.join(TORCH_NAMES)}") from None


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
    if device.startswith("cuda"):
        import torch

        cap = torch.cuda.get_device_capability(torch.device(device))
        return cuda_dtypes(cap, has_scaled_mm=hasattr(torch, "_scaled_mm"),
                           has_int_mm=hasattr(torch, "_int_mm"))
    return cpu_dtypes(cpu_flags())


def check_dtype_supported(dtype: str, device: str) -> None:
    """UnsupportedDtypeError (a skip, not a failure) unless ``device`` runs ``dtype`` GEMMs."""
    if dtype not in GEMM_DTYPES:  # a typo is bad input, not something the device lacks
        raise InputError(f"--dtype {dtype}: unknown; use one of "
                                    f"{', '.join(GEMM_DTYPES)}")
    have = supported_dtypes(device)
    if dtype not in have:
        raise UnsupportedDtypeError(f"{device} has no {dtype} GEMM at speed; it has "
                                    f"{', '.join(have)}")


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
