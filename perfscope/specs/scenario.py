"""Scenario: what one analysed step is (phase, shapes, dtypes, parallelism, implementation)."""

from __future__ import annotations

from dataclasses import dataclass

from perfscope.errors import InputError
from perfscope.units import (
    ACT_DTYPES,
    DEFAULT_INT4_GROUP,
    KV_DTYPES,
    WEIGHT_DTYPES,
    QuantFormat,
    check_dtype,
    quant_format,
)

PHASES = ("prefill", "decode", "chunked_prefill")
ATTN_IMPLS = ("flash", "unfused")


@dataclass(frozen=True, slots=True)
class Scenario:
    """One forward step.

    prefill: ``seq_len`` prompt tokens per sequence, nothing cached before.
    decode: one new token per sequence with ``context_len`` tokens already cached.
    chunked_prefill: ``seq_len`` new prompt tokens per sequence with ``context_len`` cached.
    Dtypes left as None resolve against the device (bf16, or fp16 where bf16 is missing).
    """

    phase: str = "prefill"
    batch: int = 1
    seq_len: int = 512
    context_len: int = 0
    weight_dtype: str | None = None
    act_dtype: str | None = None
    kv_dtype: str | None = None
    group_size: int | None = None  # weight-only int4/int8 quantization group
    tp: int = 1
    pp: int = 1
    ep: int = 1
    attn_dp: int = 1  # attention data-parallel groups (MoE: experts over tp x attn_dp)
    attention: str = "flash"
    fused_norm: bool = True  # residual add fused into the following norm
    mla_absorb: bool | None = None  # None: absorb in decode only (serving engines do)
    ceiling: str = "spec"  # spec | empirical
    memory_reserve: float = 0.10  # fraction of capacity kept free (allocator, CUDA context)

    # ---- derived -------------------------------------------------------------------
    @property
    def new_tokens(self) -> int:
        """Tokens per sequence processed in this step."""
        return 1 if self.phase == "decode" else self.seq_len

    @property
    def cached_before(self) -> int:
        return 0 if self.phase == "prefill" else self.context_len

    @property
    def tokens_after(self) -> int:
        """Tokens per sequence held in the KV cache at the end of the step."""
        return self.cached_before + self.new_tokens

    def validate(self) -> Scenario:
        if self.phase not in PHASES:
            raise InputError(f"--phase {self.phase!r}: use one of {', '.join(PHASES)}")
        for flag, v in (("--batch", self.batch), ("--tp", self.tp), ("--pp", self.pp),
                        ("--ep", self.ep)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise InputError(f"{flag} {v!r}: must be a whole number >= 1")
        if self.phase != "decode" and self.seq_len < 1:
            raise InputError(f"--seq-len {self.seq_len}: must be >= 1 for {self.phase}")
        if self.context_len < 0:
            raise InputError(f"--context-len {self.context_len}: must be >= 0")
        if self.phase == "decode" and self.context_len < 1:
            raise InputError("--context-len: decode needs at least one cached token; "
                             "pass --context-len N (N >= 1)")
        if self.attention not in ATTN_IMPLS:
            raise InputError(f"--attention {self.attention!r}: use flash or unfused")
        if self.ceiling not in ("spec", "empirical"):
            raise InputError(f"--ceiling {self.ceiling!r}: use spec or empirical")
        if not 0 <= self.memory_reserve < 1:
            raise InputError(f"memory reserve {self.memory_reserve}: must be in [0, 1)")
        if self.group_size is not None and self.group_size < 1:
            raise InputError(f"--group-size {self.group_size}: must be >= 1")
        for flag, dt, allowed in (("--weight-dtype", self.weight_dtype, WEIGHT_DTYPES),
                                  ("--act-dtype", self.act_dtype, ACT_DTYPES),
                                  ("--kv-dtype", self.kv_dtype, KV_DTYPES)):
            if dt is not None:
                check_dtype(dt, allowed, flag)
        return self


@dataclass(frozen=True, slots=True)
class Precision:
    """Dtypes of a scenario resolved against a device."""

    weight: QuantFormat
    act: str  # activation storage and GEMM compute dtype
    kv: str
    compute: str  # tensor-core dtype of the GEMMs


def resolve_precision(s: Scenario, has_dtype) -> Precision:
    """``has_dtype(d)`` says whether the device runs ``d`` at speed."""
    # bf16 where the device has it, else fp16 (V100), else fp32 (a CPU measured by perfscope)
    default = next((d for d in ("bf16", "fp16") if has_dtype(d)), "fp32")
    w = check_dtype(s.weight_dtype, WEIGHT_DTYPES, "--weight-dtype") if s.weight_dtype \
        else default
    if s.act_dtype:
        a = check_dtype(s.act_dtype, ACT_DTYPES, "--act-dtype")
    elif w == "fp8":
        a = "fp8"  # fp8 checkpoints are served W8A8 (dynamic per-token activation scales)
    elif w == "fp32":
        a = "fp32"
    elif w in ("int8", "int4"):
        a = default  # weight-only by default; --act-dtype int8 gives W8A8
    else:
        a = w
    kv = check_dtype(s.kv_dtype, KV_DTYPES, "--kv-dtype") if s.kv_dtype else \
        ("fp32" if a in ("fp32", "tf32") else (a if a in ("bf16", "fp16") else default))
    if w == "int4" and a in ("fp8", "int8"):
        raise InputError("--weight-dtype int4 runs weight-only with bf16/fp16 activations; "
                         "drop --act-dtype or use --weight-dtype int8")
    if a in ("fp8", "int8") and w != a:
        raise InputError(f"--act-dtype {a} needs --weight-dtype {a} (W{a[-1]}A{a[-1]}); "
                         f"got --weight-dtype {w}")
    group = s.group_size
    if w == "int4" and group is None:
        group = DEFAULT_INT4_GROUP
    if w not in ("int4", "int8") and s.group_size is not None:
        raise InputError(f"--group-size applies to int4/int8 weights, not {w}")
    for d, flag in ((w, "--weight-dtype"), (a, "--act-dtype"), (kv, "--kv-dtype")):
        if d in ("fp8", "bf16", "fp16", "int8", "tf32") and not has_dtype(d) and \
                not (d == "int8" and flag != "--act-dtype"):
            raise_unsupported(d, flag)
    return Precision(quant_format(w, group), a, kv, a)


def raise_unsupported(d: str, flag: str) -> None:
    from perfscope.errors import UnsupportedDtypeError

    alt = {"fp8": "int8 or bf16", "bf16": "fp16", "tf32": "fp32", "int8": "fp16"}.get(d, "bf16")
    raise UnsupportedDtypeError(f"{flag} {d}: this device has no {d} support at speed; "
                                f"use {alt}")
