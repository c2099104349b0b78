"""Which op shapes to time: each analytic Op becomes an OpCase, the shape and dtype run.

On a CPU a shape is scaled down so one call stays under ~50 ms (~20 ms in quick mode), the
model's widths kept, and the analytic counts are re-derived for the shape run by the rules
below; on a GPU shapes run at full size. Scaling (every factor is stated on the point): GEMM
rows m (FLOPs, X and Y bytes scale, the weight does not); attention batch, then KV-head groups
(all counts linear in both); norm, elementwise, softmax and embedding tokens (activation bytes
scale; norm weights do not, the embedding's gathered rows do). In quick mode on a CPU a GEMM's
weights are also cut to WEIGHT_CAP_QUICK (expert groups, then output columns n: the one
exception to keeping widths, so a quick run does not spend seconds making an LM head). A
dtype the device lacks at speed runs in fp32 with its bytes converted (GEMM weights: n*k
elements in the run dtype).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from perfscope.analytic.ops import Op
from perfscope.measure.dtypes import supported_dtypes
from perfscope.units import DTYPE_BITS, QUANTIZED, gemm_input_bits

TARGET_CALL_S = 0.05  # CPU: scale shapes so one call is estimated under this
TARGET_CALL_S_QUICK = 0.02  # the same in quick mode
# CPU quick mode: a GEMM's weights are cut to this many bytes (expert groups first, then
# output columns n; k kept). Twice the 32 MiB last-level cache of the machines this runs on,
# so a batch-1 GEMV still streams its weight from DRAM; an 8B model's fp32 LM head (2.1 GB)
# would otherwise cost seconds of random numbers and page faults for one point.
WEIGHT_CAP_QUICK = 64 * 2**20
DECODE_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
DECODE_BATCHES_QUICK = (1, 4, 16, 64, 256)
BENCH_KINDS = ("gemm", "attention", "norm", "elementwise", "softmax", "embedding")


@dataclass(frozen=True)
class OpCase:
    """One op shape to time. ``op`` is the analytic op re-derived for the shape and dtype run
    (``op.shape``); ``full`` is the analytic op as the graph has it."""

    op: Op
    full: Op
    phase: str = ""
    scale: float = 1.0  # run work / analytic work
    scale_note: str = ""  # "m 4096->256" etc.; "" when run at full size
    dtype_note: str = ""
    sweep_batch: int | None = None  # decode GEMM batch sweep value
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple:
        return (self.op.name, self.op.kind, tuple(sorted((self.op.shape or {}).items())),
                self.op.dtype)

    @property
    def label(self) -> str:
        return f"{self.phase} {self.op.name}" + \
            (f" b={self.sweep_batch}" if self.sweep_batch else "")


# ---- what a runner needs from the rest of the graph ----------------------------------------

QUANT_INPUTS = ("int8", "fp8", "fp4")  # GEMM input dtypes an activation is quantized to
REPEAT_KV_LAYOUT = ("batch", "kv_heads", "head_dim_qk", "head_dim_v")


def annotate(ops: Sequence[Op]) -> tuple[Op, ...]:
    """A graph's ops with what their runners need from other ops added to ``impl``:

    - ``quant_dtype`` on ops that quantize their output for a GEMM (``quant_out``, or a
      ``quant_per_token`` op): the input dtype of the graph's quantized GEMMs;
    - eager repeat_kv's K/V layout (REPEAT_KV_LAYOUT) from the scores GEMM it feeds (same
      site tag).
    """
    quant = next((o.dtype for o in ops if o.kind == "gemm" and o.dtype in QUANT_INPUTS), None)
    scores = {o.name[len("attn.score"):]: o for o in ops
              if o.kind == "attention" and o.name.startswith("attn.score")}
    out = []
    for op in ops:
        impl = dict(op.impl or {})
        if quant and (impl.get("quant_out") or impl.get("op") == "quant_per_token"):
            impl["quant_dtype"] = quant
        if impl.get("op") == "repeat_kv":
            att = scores.get(op.name[len("attn.repeat_kv"):])
            if att is not None:
                impl.update({k: (att.shape or {})[k] for k in REPEAT_KV_LAYOUT})
        out.append(op._replace(impl=impl) if impl != dict(op.impl or {}) else op)
    return tuple(out)


# ---- counts of a scaled op ---------------------------------------------------------------

def scale_counts(op: Op, s: float, *, weights: bool) -> Op:
    """FLOPs, activation and KV bytes times ``s``; weight bytes too when ``weights``."""
    return op._replace(flops=op.flops * s, act_in_bytes=op.act_in_bytes * s,
                       act_out_bytes=op.act_out_bytes * s, kv_read_bytes=op.kv_read_bytes * s,
                       kv_write_bytes=op.kv_write_bytes * s,
                       weight_bytes=op.weight_bytes * s if weights else op.weight_bytes,
                       dequant_flops=op.dequant_flops * s if weights else op.dequant_flops)


def convert_dtype(op: Op, run: str) -> Op:
    """Counts of ``op`` run in dtype ``run`` instead: element bytes converted (fractional
    for fp4: NVFP4's 4 bits plus its fp8 scale per 16 elements)."""
    if run == op.dtype:
        return op
    r = gemm_input_bits(run) / gemm_input_bits(op.dtype)
    sh = op.shape or {}
    if op.kind == "gemm":
        e_run = DTYPE_BITS[run] / 8
        bias = bool((op.impl or {}).get("bias"))
        # X rows from the input bytes: X is stored in the compute dtype, k elements a row
        rows = op.act_in_bytes / (sh["k"] * gemm_input_bits(op.dtype) / 8)
        w = sh.get("groups", 1) * (sh["n"] * sh["k"] + (sh["n"] if bias else 0)) * e_run
        return op._replace(dtype=run, weight_bytes=w, act_in_bytes=rows * sh["k"] * e_run,
                           act_out_bytes=rows * sh["n"] * e_run, dequant_flops=0.0)
    return op._replace(dtype=run, weight_bytes=op.weight_bytes * r,
                       act_in_bytes=op.act_in_bytes * r, act_out_bytes=op.act_out_bytes * r,
                       kv_read_bytes=op.kv_read_bytes * r, kv_write_bytes=op.kv_write_bytes * r)


def estimate_s(op: Op, flops_per_s: float, bytes_per_s: float) -> float:
    return max(op.flops / flops_per_s, op.bytes / bytes_per_s)


def _fit(n: int, est: float, target: float, multiple: int = 1) -> int:
    """Largest size <= n whose estimated time (linear in size) is under ``target``, a
    multiple of ``multiple`` where it can be."""
    if est <= target or n <= 1:
        return n
    k = max(1, int(n * target / est))
    if k >= multiple:
        k -= k % multiple
    return max(1, min(n, k))


def cap_weights(op: Op, cap: float) -> tuple[Op, float, list[str]]:
    """A GEMM whose weights exceed ``cap`` bytes with fewer expert groups, then fewer output
    columns n (a multiple of 16 where it can be). Every count is linear in the groups; in n,
    all but the input X (FLOPs 2 m n k + bias, W, Y). Returns (op, work scale, notes)."""
    sh = dict(op.shape or {})
    if op.kind != "gemm" or op.weight_bytes <= cap:
        return op, 1.0, []
    notes, scale = [], 1.0
    g = sh.get("groups", 1)
    if g > 1:
        g2 = max(1, int(g * cap / op.weight_bytes))
        s = g2 / g
        op = scale_counts(op, s, weights=True)._replace(shape={**sh, "groups": g2})
        sh, scale = dict(op.shape or {}), scale * s
        notes.append(f"groups {g}->{g2}")
    if op.weight_bytes > cap:
        n = sh["n"]
        n2 = _fit(n, op.weight_bytes, cap, 16)
        s = n2 / n
        op = op._replace(flops=op.flops * s, weight_bytes=op.weight_bytes * s,
                         act_out_bytes=op.act_out_bytes * s,
                         dequant_flops=op.dequant_flops * s, shape={**sh, "n": n2})
        scale *= s
        notes.append(f"n {n}->{n2}")
    return op, scale, notes


def scale_op(op: Op, *, target_s: float | None, flops_per_s: float,
             bytes_per_s: float, weight_cap: float | None = None) -> tuple[Op, float, str]:
    """The op scaled so one call is estimated under ``target_s`` (None: never scale), its
    GEMM weights first cut to ``weight_cap`` bytes (None: never). Returns (scaled op, work
    scale factor, note)."""
    if target_s is None:
        return op, 1.0, ""
    capped, s0, notes = cap_weights(op, weight_cap) if weight_cap else (op, 1.0, [])
    op, s, note = _scale_work(capped, target_s, flops_per_s, bytes_per_s)
    return op, s0 * s, ", ".join(notes + ([note] if note else []))


def _scale_work(op: Op, target_s: float, flops_per_s: float,
                bytes_per_s: float) -> tuple[Op, float, str]:
    sh = dict(op.shape or {})
    est = estimate_s(op, flops_per_s, bytes_per_s)
    if est <= target_s:
        return op, 1.0, ""
    if op.kind == "gemm":
        m = sh["m"]
        # the weight does not shrink with m: fit only the part that does
        w_t = op.weight_bytes / bytes_per_s
        m2 = _fit(m, max(est - w_t, 1e-12), max(target_s - w_t, target_s / 8), 16)
        if m2 == m:
            return op, 1.0, ""
        s = m2 / m
        return scale_counts(op, s, weights=False)._replace(shape={**sh, "m": m2}), s, \
            f"m {m}->{m2}"
    if op.kind == "attention":
        b, kv, h = sh["batch"], sh["kv_heads"], sh["heads"]
        b2 = _fit(b, est, target_s)
        s = b2 / b
        note = [f"batch {b}->{b2}"] if b2 != b else []
        kv2 = _fit(kv, est * s, target_s)
        if kv2 != kv:
            note.append(f"kv_heads {kv}->{kv2}, heads {h}->{h // kv * kv2}")
        s2 = kv2 / kv
        new = {**sh, "batch": b2, "kv_heads": kv2, "heads": h // kv * kv2}
        return scale_counts(op, s * s2, weights=True)._replace(shape=new), s * s2, \
            ", ".join(note)
    if "tokens" in sh:
        t = sh["tokens"]
        # a masked softmax's rows are whole groups of q_len queries
        unit = int((op.impl or {}).get("q_len") or 16) if op.kind == "softmax" else 16
        t2 = _fit(t, est, target_s, unit)
        if t2 == t:
            return op, 1.0, ""
        s = t2 / t
        scaled = scale_counts(op, s, weights=op.kind == "embedding")
        return scaled._replace(shape={**sh, "tokens": t2}), s, f"tokens {t}->{t2}"
    return op, 1.0, ""


def make_case(op: Op, *, device: str, phase: str = "", target_s: float | None,
              flops_per_s: float, bytes_per_s: float,
              have: Iterable[str] | None = None, weight_cap: float | None = None) -> OpCase:
    """Dtype and scale an analytic op for running on ``device``."""
    have = list(have) if have is not None else supported_dtypes(device)
    run, note = op.dtype, ""
    if op.kind != "gemm" and run in QUANTIZED:  # only GEMMs have fp8/int8/fp4 kernels
        run = "bf16" if "bf16" in have else "fp32"
        note = f"no {op.dtype} {op.kind} kernel in torch: run in {run}, counts converted"
    elif run not in have:
        note = f"{device} has no {run} at speed: run in fp32, counts converted"
        run = "fp32"
    conv = convert_dtype(op, run)
    scaled, s, snote = scale_op(conv, target_s=target_s, flops_per_s=flops_per_s,
                                bytes_per_s=bytes_per_s, weight_cap=weight_cap)
    return OpCase(scaled, op, phase, s, snote, note)


def decode_sweep(case: OpCase, batches: Iterable[int]) -> list[OpCase]:
    """The decode GEMM at other batch sizes (m = batch): counts scaled by batch / m."""
    op = case.op
    sh = dict(op.shape or {})
    m = sh["m"]
    out = []
    for b in batches:
        s = b / m
        out.append(OpCase(scale_counts(op, s, weights=False)._replace(shape={**sh, "m": b}),
                          case.full, case.phase, case.scale * s,
                          case.scale_note, case.dtype_note, sweep_batch=b))
    return out


def plan_cases(ops_by_phase: Mapping[str, Iterable[Op]], *, device: str, quick: bool,
               flops_per_s: float, bytes_per_s: float, sweep: bool = True,
               skipped: list[str] | None = None) -> list[OpCase]:
    """Distinct (name, shape, dtype) cases over the phases, plus the decode GEMM batch sweep.
    comm ops are left to ``bench comm`` (noted in ``skipped``)."""
    cpu = not device.startswith("cuda")
    target = (TARGET_CALL_S_QUICK if quick else TARGET_CALL_S) if cpu else None
    cap = WEIGHT_CAP_QUICK if cpu and quick else None
    have = supported_dtypes(device)
    seen: set[tuple] = set()
    cases: list[OpCase] = []
    decode_gemms: list[OpCase] = []
    for phase, ops in ops_by_phase.items():
        for op in ops:
            if op.kind not in BENCH_KINDS:
                if skipped is not None and op.kind == "comm":
                    skipped.append(f"op {op.name} ({phase}): comm op, timed by "
                                   "`perfscope bench comm`; skipped here")
                elif skipped is not None:
                    skipped.append(f"op {op.name} ({phase}): unknown op kind {op.kind!r}; "
                                   "skipped")
                continue
            case = make_case(op, device=device, phase=phase, target_s=target,
                             flops_per_s=flops_per_s, bytes_per_s=bytes_per_s, have=have,
                             weight_cap=cap)
            if case.key in seen:
                continue
            seen.add(case.key)
            cases.append(case)
            if phase == "decode" and op.kind == "gemm" and (op.shape or {}).get("groups", 1) == 1:
                decode_gemms.append(case)
    if sweep and decode_gemms:
        batches = DECODE_BATCHES_QUICK if quick else DECODE_BATCHES
        if quick:  # one representative: the model's largest weight that is not the LM head
            body = [c for c in decode_gemms if c.op.name != "lm_head"] or decode_gemms
            decode_gemms = [max(body, key=lambda c: c.full.weight_bytes)]
        for c in decode_gemms:
            m = (c.op.shape or {}).get("m", 1)
            cases += [s for s in decode_sweep(c, batches) if s.sweep_batch != m]
    return cases
