"""Op microbenchmarks: time each distinct op shape of an analytic graph, joined to it by name.

Each analytic Op becomes an OpCase: the shape actually run (scaled down on a CPU so one call
stays under ~50 ms, the model's widths kept), the dtype actually run, and the analytic counts
re-derived for that shape by the rules below. The case is checked against an fp64 reference
on fresh random data, then timed; the measured point carries achieved FLOP/s and bytes/s
(from the analytic counts), the predicted time of the same shape on the chosen hardware
(perfscope.roofline), and the percentage of the roof (predicted / measured time: equal to
achieved / attainable FLOP/s whichever roof bounds the op).

Scaling (every factor is stated on the point): GEMM rows m (FLOPs, X and Y bytes scale, the
weight does not); attention batch, then KV-head groups (all counts linear in both); norm,
elementwise, softmax and embedding tokens (activation bytes scale; norm weights do not, the
embedding's gathered rows do). A dtype the device lacks at speed runs in fp32 with its
activation bytes converted (GEMM weights: n*k elements in the run dtype).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from perfscope.analytic.ops import Op
from perfscope.errors import MeasureError
from perfscope.measure.ceilings import Gemm, matmul_precision, supported_dtypes, torch_dtype
from perfscope.measure.timing import benchmark, check_close, is_cuda, random_tensor
from perfscope.measure.types import MeasuredPoint
from perfscope.units import DTYPE_BITS

TARGET_CALL_S = 0.05  # CPU: scale shapes so one call is estimated under this
DECODE_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
DECODE_BATCHES_QUICK = (1, 4, 16, 64, 256)
EMBED_TABLE_CAP = 256 * 2**20  # CPU: bytes of embedding table allocated (vocab scaled)
EMBED_TABLE_CAP_QUICK = 64 * 2**20
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


# ---- counts of a scaled op ---------------------------------------------------------------

def scale_counts(op: Op, s: float, *, weights: bool) -> Op:
    """FLOPs, activation and KV bytes times ``s``; weight bytes too when ``weights``."""
    return op._replace(flops=op.flops * s, act_in_bytes=op.act_in_bytes * s,
                   act_out_bytes=op.act_out_bytes * s, kv_read_bytes=op.kv_read_bytes * s,
                   kv_write_bytes=op.kv_write_bytes * s,
                   weight_bytes=op.weight_bytes * s if weights else op.weight_bytes,
                   dequant_flops=op.dequant_flops * s if weights else op.dequant_flops)


def convert_dtype(op: Op, run: str) -> Op:
    """Counts of ``op`` run in dtype ``run`` instead: element bytes converted."""
    if run == op.dtype:
        return op
    r = DTYPE_BITS[run] / DTYPE_BITS[op.dtype]
    sh = op.shape or {}
    if op.kind == "gemm":
        w = sh.get("groups", 1) * sh["n"] * sh["k"] * DTYPE_BITS[run] / 8
        rows = op.flops / (2.0 * sh["n"] * sh["k"])
        a_in = rows * sh["k"] * DTYPE_BITS[run] / 8
        a_out = rows * sh["n"] * DTYPE_BITS[run] / 8
        return op._replace(dtype=run, weight_bytes=w, act_in_bytes=a_in, act_out_bytes=a_out,
                       dequant_flops=0.0)
    return op._replace(dtype=run, weight_bytes=op.weight_bytes * r,
                   act_in_bytes=op.act_in_bytes * r, act_out_bytes=op.act_out_bytes * r,
                   kv_read_bytes=op.kv_read_bytes * r, kv_write_bytes=op.kv_write_bytes * r)


def estimate_s(op: Op, flops_per_s: float, bytes_per_s: float) -> float:
    return max(op.flops / flops_per_s, op.bytes / bytes_per_s)


def _fit(n: int, est: float, target: float, multiple: int = 1) -> int:
    """Largest size <= n whose estimated time (linear in size) is under ``target``."""
    if est <= target or n <= 1:
        return n
    k = max(1, int(n * target / est))
    if k >= 2 * multiple:
        k -= k % multiple
    return max(1, min(n, k))


def scale_op(op: Op, *, target_s: float | None, flops_per_s: float,
             bytes_per_s: float) -> tuple[Op, float, str]:
    """The op scaled so one call is estimated under ``target_s`` (None: never scale).
    Returns (scaled op, work scale factor, note)."""
    sh = dict(op.shape or {})
    if target_s is None:
        return op, 1.0, ""
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
        t2 = _fit(t, est, target_s, 16)
        if t2 == t:
            return op, 1.0, ""
        s = t2 / t
        scaled = scale_counts(op, s, weights=op.kind == "embedding")
        return scaled._replace(shape={**sh, "tokens": t2}), s, f"tokens {t}->{t2}"
    return op, 1.0, ""


def make_case(op: Op, *, device: str, phase: str = "", target_s: float | None,
              flops_per_s: float, bytes_per_s: float,
              have: Iterable[str] | None = None) -> OpCase:
    """Dtype and scale an analytic op for running on ``device``."""
    have = list(have) if have is not None else supported_dtypes(device)
    run, note = op.dtype, ""
    if op.kind != "gemm" and run in ("fp8", "int8"):  # only GEMMs have fp8/int8 kernels
        run = "bf16" if "bf16" in have else "fp32"
        note = f"no {op.dtype} {op.kind} kernel in torch: run in {run}, counts converted"
    elif run not in have:
        note = f"{device} has no {run} at speed: run in fp32, counts converted"
        run = "fp32"
    conv = convert_dtype(op, run)
    scaled, s, snote = scale_op(conv, target_s=target_s, flops_per_s=flops_per_s,
                                bytes_per_s=bytes_per_s)
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


# ---- runnable kernels ---------------------------------------------------------------------

Runner = tuple[Callable[[Any], Any], Callable[[int], Any], Callable[[], float], str]


def _elems(op: Op, n_el: int) -> float:
    return op.act_in_bytes / (n_el * DTYPE_BITS[op.dtype] / 8) if n_el else 0.0


def _dt(op: Op) -> Any:
    return torch_dtype(op.dtype)


def build_runner(case: OpCase, device: str, *, embed_cap: int = EMBED_TABLE_CAP) -> Runner:
    """(fn(inputs), setup(i), check(), impl) for the op of ``case``."""
    op = case.op
    if op.kind == "gemm":
        return _gemm_runner(op, device)
    if op.kind == "attention":
        return _attention_runner(op, device)
    if op.kind in ("norm", "elementwise", "softmax"):
        return _rowwise_runner(op, device)
    if op.kind == "embedding":
        return _embedding_runner(op, device, embed_cap)
    raise MeasureError(f"op {op.name}: no microbenchmark for kind {op.kind!r} "
                       f"(benchmarked kinds: {', '.join(BENCH_KINDS)})")


def _gemm_runner(op: Op, device: str) -> Runner:
    sh = op.shape or {}
    g = Gemm(op.dtype, sh["m"], sh["n"], sh["k"], sh.get("groups", 1))
    w = g.w(device, seed=1)
    return g.fn(device), lambda i: (g.x(device, seed=100 + i), w), \
        lambda: g.check(device, w=w), \
        "x @ W^T" + (" (batched over groups)" if g.groups > 1 else "")


def attention_mask(q_len: int, kv_len: int, causal: bool, window: int, device: str) -> Any:
    """Boolean mask (True = attend), bottom-right aligned: query i sits at position
    kv_len - q_len + i and sees keys j <= pos, and j > pos - window with a window."""
    import torch

    pos = torch.arange(kv_len - q_len, kv_len, device=device)[:, None]
    j = torch.arange(kv_len, device=device)[None, :]
    m = torch.ones(q_len, kv_len, dtype=torch.bool, device=device)
    if causal:
        m &= j <= pos
    if window:
        m &= j > pos - window
    return m


def _attention_runner(op: Op, device: str) -> Runner:
    import torch
    import torch.nn.functional as F

    sh = op.shape or {}
    B, T, K = sh["batch"], sh["q_len"], sh["kv_len"]
    H, KV, dqk, dv = sh["heads"], sh["kv_heads"], sh["head_dim_qk"], sh["head_dim_v"]
    causal, window = bool(sh.get("causal", 1)), int(sh.get("window", 0))
    dt = _dt(op)
    G = H // KV
    mask = None
    is_causal = False
    if T > 1 and causal and T == K and not window:
        is_causal = True  # SDPA's top-left causal is right when q and k have equal length
    elif T > 1 and (causal or window):
        mask = attention_mask(T, K, causal, window, device)
    scale = 1.0 / math.sqrt(dqk)
    part = "score" if op.name.endswith("score") else \
        ("value" if op.name.endswith("value") else "core")

    def setup(i: int) -> tuple[Any, Any, Any]:
        q = random_tensor((B, H, T, dqk), dt, device, seed=10 * i)
        k = random_tensor((B, KV, K, dqk), dt, device, seed=10 * i + 1)
        v = random_tensor((B, KV, K, dv), dt, device, seed=10 * i + 2)
        if part == "value":  # P @ V: P are probabilities
            q = torch.softmax(random_tensor((B, H, T, K), torch.float32, device,
                                            seed=10 * i), -1).to(dt)
        return q, k, v

    if part == "core":
        def fn(qkv: Any) -> Any:
            q, k, v = qkv
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal,
                                                  scale=scale, enable_gqa=G > 1)
        impl = "F.scaled_dot_product_attention" + (" (GQA)" if G > 1 else "")
    elif part == "score":
        def fn(qkv: Any) -> Any:  # (B, KV, G*T, d) @ (B, KV, d, K): no K/V expansion
            q, k, _ = qkv
            return (q.reshape(B, KV, G * T, dqk) @ k.transpose(-1, -2)).view(B, H, T, K)
        impl = "Q @ K^T (unfused scores)"
    else:
        def fn(qkv: Any) -> Any:
            p, _, v = qkv
            return (p.reshape(B, KV, G * T, K) @ v).view(B, H, T, dv)
        impl = "P @ V (unfused)"

    def check() -> float:
        q, k, v = setup(7)
        out = fn((q, k, v))
        # fp64 reference on the first sequence, last <= 64 queries
        r = min(T, 64)
        q0 = q[0, :, T - r:].double()
        k0 = k[0].double().repeat_interleave(G, 0)
        v0 = v[0].double().repeat_interleave(G, 0)
        if part == "score":
            ref = q0 @ k0.transpose(-1, -2)
        elif part == "value":
            ref = q0 @ v0
        else:
            s = q0 @ k0.transpose(-1, -2) * scale
            if T > 1 and (causal or window):
                mm = attention_mask(T, K, causal, window, device)[T - r:]
                s = s.masked_fill(~mm, float("-inf"))
            ref = torch.softmax(s, -1) @ v0
        return check_close(out[0, :, T - r:], ref, op.dtype, f"{op.name} {dict(sh)}")

    return fn, setup, check, impl


def _rowwise_runner(op: Op, device: str) -> Runner:
    import torch
    import torch.nn.functional as F

    sh = op.shape or {}
    t, w = sh["tokens"], sh["width"]
    dt = _dt(op)
    n_in = _elems(op, t * w)
    name = op.name
    two = n_in >= 1.5  # the op reads two tensors of this shape
    wt = random_tensor((w,), dt, device, seed=3) if op.kind == "norm" else None
    if op.kind == "norm":
        if two:
            def fn(xy: Any) -> Any:  # residual add, then RMSNorm (eager: two kernels)
                h = xy[0] + xy[1]
                return F.rms_norm(h, (w,), wt), h

            def ref(xy: Any) -> Any:
                h = xy[0].double() + xy[1].double()
                return F.rms_norm(h, (w,), wt.double() if wt is not None else None)
            impl = "x + residual; F.rms_norm"
        else:
            def fn(xy: Any) -> Any:
                return F.rms_norm(xy[0], (w,), wt)

            def ref(xy: Any) -> Any:
                return F.rms_norm(xy[0].double(), (w,), wt.double() if wt is not None else None)
            impl = "F.rms_norm"
    elif op.kind == "softmax":
        def fn(xy: Any) -> Any:
            return torch.softmax(xy[0], -1)

        def ref(xy: Any) -> Any:
            return torch.softmax(xy[0].double(), -1)
        impl = "torch.softmax(-1)"
    elif "rotary" in name or "rope" in name:
        rot = 64 if w % 64 == 0 else w
        half = rot // 2
        cos = random_tensor((t, 1, rot), dt, device, seed=5)
        sin = random_tensor((t, 1, rot), dt, device, seed=6)

        def _rope(x: Any, c: Any, s: Any) -> Any:
            x = x.view(t, w // rot, rot)
            rh = torch.cat((-x[..., half:], x[..., :half]), -1)
            return (x * c + rh * s).view(t, w)

        def fn(xy: Any) -> Any:
            return _rope(xy[0], cos, sin)

        def ref(xy: Any) -> Any:
            return _rope(xy[0].double(), cos.double(), sin.double())
        impl = f"rotary (x*cos + rotate_half(x)*sin, rot dim {rot})"
    elif two and ("act" in name or "gate" in name or "glu" in name):
        def fn(xy: Any) -> Any:
            return F.silu(xy[0]) * xy[1]

        def ref(xy: Any) -> Any:
            return F.silu(xy[0].double()) * xy[1].double()
        impl = "silu(gate) * up"
    elif two:
        def fn(xy: Any) -> Any:
            return xy[0] + xy[1]

        def ref(xy: Any) -> Any:
            return xy[0].double() + xy[1].double()
        impl = "x + y"
    elif "act" in name:
        def fn(xy: Any) -> Any:
            return F.gelu(xy[0])

        def ref(xy: Any) -> Any:
            return F.gelu(xy[0].double())
        impl = "gelu"
    else:
        def fn(xy: Any) -> Any:
            return xy[0] * 0.5

        def ref(xy: Any) -> Any:
            return xy[0].double() * 0.5
        impl = "x * c (generic elementwise)"

    def setup(i: int) -> tuple[Any, Any]:
        return (random_tensor((t, w), dt, device, seed=20 * i),
                random_tensor((t, w), dt, device, seed=20 * i + 1) if two else None)

    def check() -> float:
        xy = setup(9)
        out = fn(xy)
        if isinstance(out, tuple):
            out = out[0]
        return check_close(out, ref(xy), op.dtype, f"{op.name} {dict(sh)}")

    return fn, setup, check, impl


def _embedding_runner(op: Op, device: str, cap: int) -> Runner:
    import torch
    import torch.nn.functional as F

    sh = op.shape or {}
    t, w, vocab = sh["tokens"], sh["width"], sh.get("vocab", 32000)
    eb = DTYPE_BITS[op.dtype] // 8
    v_run = vocab if is_cuda(device) else max(t, min(vocab, cap // (w * eb)))
    table = random_tensor((v_run, w), _dt(op), device, seed=4)

    def setup(i: int) -> Any:
        g = torch.Generator(device=device).manual_seed(30 + i)
        return torch.randint(0, v_run, (t,), generator=g, device=device)

    def fn(ids: Any) -> Any:
        return F.embedding(ids, table)

    def check() -> float:
        ids = setup(11)
        return check_close(fn(ids), table.double()[ids], op.dtype, f"{op.name} {dict(sh)}")

    note = "" if v_run == vocab else f" (table vocab {vocab}->{v_run}: gather cost is per row)"
    return fn, setup, check, "F.embedding" + note


# ---- timing and joining -------------------------------------------------------------------

def predicted_time(op: Op, hw: Any, ceiling: str) -> tuple[float, str]:
    """Roofline time of one instance of ``op`` on ``hw`` and its bound (perfscope.roofline)."""
    from perfscope.analytic.ops import OpGraph
    from perfscope.roofline import roofline

    p = roofline(OpGraph((op,)), hw, ceiling)[0]
    return p.time_s, p.bound


def time_case(case: OpCase, device: str, *, budget_s: float, warmup_s: float = 0.02,
              hw: Any = None, ceiling: str = "empirical", flush_l2: bool = True,
              embed_cap: int = EMBED_TABLE_CAP) -> MeasuredPoint:
    """Check, then time one case; the point carries prediction and % of roof when ``hw``."""
    fn, setup, check, impl = build_runner(case, device, embed_cap=embed_cap)
    with matmul_precision(case.op.dtype):  # fp32 GEMMs at fp32, tf32 only when asked
        err = check()
        stats = benchmark(fn, device=device, warmup_s=warmup_s, budget_s=budget_s,
                          setup=setup, flush_l2=flush_l2, cuda_graph=is_cuda(device) and
                          case.op.flops < 5e8 and case.op.bytes < 5e8)
    op = case.op
    extra: dict[str, Any] = {"phase": case.phase, "impl": impl, "check_max_rel_err": err,
                             "scale": case.scale, "analytic_dtype": case.full.dtype,
                             "full_shape": dict(case.full.shape or {}), "count": op.count}
    if case.scale_note:
        extra["scale_note"] = case.scale_note
    if case.dtype_note:
        extra["dtype_note"] = case.dtype_note
    if case.sweep_batch is not None:
        extra["sweep_batch"] = case.sweep_batch
    pred = None
    if hw is not None:
        pred, bound = predicted_time(op, hw, ceiling)
        extra["bound"] = bound
        extra["pct_of_roof"] = 100.0 * pred / stats.median_s if stats.median_s > 0 else None
        extra["hardware"] = hw.name
        extra["ceiling"] = ceiling
        if case.scale != 1.0 or case.dtype_note:
            extra["predicted_full_time_s"] = predicted_time(case.full, hw, ceiling)[0]
    return MeasuredPoint(op.name, op.kind, dict(op.shape or {}), op.dtype, stats, op.flops,
                         op.bytes, device, predicted_time_s=pred, extra=extra)


def plan_cases(ops_by_phase: Mapping[str, Iterable[Op]], *, device: str, quick: bool,
               flops_per_s: float, bytes_per_s: float, sweep: bool = True,
               skipped: list[str] | None = None) -> list[OpCase]:
    """Distinct (name, shape, dtype) cases over the phases, plus the decode GEMM batch sweep.
    comm ops are left to ``bench comm`` (noted in ``skipped``)."""
    target = None if is_cuda(device) else TARGET_CALL_S
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
                             flops_per_s=flops_per_s, bytes_per_s=bytes_per_s, have=have)
            if case.key in seen:
                continue
            seen.add(case.key)
            cases.append(case)
            if phase == "decode" and op.kind == "gemm" and (op.shape or {}).get("groups", 1) == 1:
                decode_gemms.append(case)
    if sweep and decode_gemms:
        batches = DECODE_BATCHES_QUICK if quick else DECODE_BATCHES
        if quick:  # one representative: the largest weight that is not the LM head
            body = [c for c in decode_gemms if c.op.name != "lm_head"] or decode_gemms
            decode_gemms = [max(body, key=lambda c: c.op.weight_bytes)]
        for c in decode_gemms:
            m = (c.op.shape or {}).get("m", 1)
            cases += [s for s in decode_sweep(c, batches) if s.sweep_batch != m]
    return cases


# ---- a model's ops end to end -------------------------------------------------------------

@dataclass
class OpsRun:
    points: list[MeasuredPoint] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


def scenarios_for(phases: Iterable[str], *, batch: int, seq_len: int, context_len: int,
                  dtypes: Mapping[str, str | None]) -> dict[str, Any]:
    from perfscope.specs.scenario import Scenario

    out = {}
    for ph in phases:
        ctx = 0 if ph == "prefill" else context_len
        out[ph] = Scenario(phase=ph, batch=batch, seq_len=seq_len, context_len=ctx,
                           weight_dtype=dtypes.get("weight_dtype"),
                           act_dtype=dtypes.get("act_dtype"),
                           kv_dtype=dtypes.get("kv_dtype")).validate()
    return out


def bench_model_ops(model: str, hw: Any, *, device: str, phases: Iterable[str], batch: int,
                    seq_len: int, context_len: int, quick: bool,
                    rates: tuple[float, float], ceiling: str = "empirical",
                    dtypes: Mapping[str, str | None] | None = None,
                    only: Iterable[str] | None = None, sweep: bool = True,
                    progress: Callable[[str, int, int], None] | None = None) -> OpsRun:
    """Analyse ``model`` on ``hw`` for each phase, then check and time every distinct op shape.

    ``rates`` (FLOP/s, bytes/s) of the local device size the CPU scale-down. ``hw`` gives the
    analytic graph and the predicted times (use the local measured spec to compare like with
    like). Failures (an op that cannot run, out of memory) are lines in ``skipped``.
    """
    from perfscope.api import analyze, load_model

    run = OpsRun()
    m = load_model(model)
    dts: dict[str, str | None] = dict(dtypes or {})
    if not any(dts.values()) and not (hw.has_dtype("bf16") or hw.has_dtype("fp16")):
        dts = {"weight_dtype": "fp32", "act_dtype": None, "kv_dtype": None}
        run.meta["dtype_note"] = f"{hw.display_name} has no bf16/fp16: analysed in fp32"
    scen = scenarios_for(phases, batch=batch, seq_len=seq_len, context_len=context_len,
                         dtypes={k: v for k, v in dts.items() if k in
                                 ("weight_dtype", "act_dtype", "kv_dtype")})
    graphs: dict[str, tuple[Op, ...]] = {}
    for ph, s in scen.items():
        graphs[ph] = analyze(m, hw, s).graph.ops
    names = {op.name for ops in graphs.values() for op in ops}
    if only:
        want = set(only)
        for bad in sorted(want - names):
            run.skipped.append(f"op {bad!r}: unknown op for {m.name}; its ops are "
                               f"{', '.join(sorted(names))}")
        graphs = {ph: tuple(o for o in ops if o.name in want) for ph, ops in graphs.items()}
    cases = plan_cases(graphs, device=device, quick=quick, flops_per_s=rates[0],
                       bytes_per_s=rates[1], sweep=sweep, skipped=run.skipped)
    budget = 0.08 if quick else 0.5
    cap = EMBED_TABLE_CAP_QUICK if quick else EMBED_TABLE_CAP
    for i, c in enumerate(cases):
        label = f"{c.phase} {c.op.name}" + (f" b={c.sweep_batch}" if c.sweep_batch else "")
        if progress:
            progress(label, i, len(cases))
        try:
            run.points.append(time_case(c, device, budget_s=budget, hw=hw, ceiling=ceiling,
                                        embed_cap=cap))
        except Exception as e:  # one op failing must not stop the others
            from perfscope.measure.ceilings import skip_line

            run.skipped.append(skip_line(f"op {label} {dict(c.op.shape or {})}", e))
    run.meta.update({
        "model": m.name, "hardware": hw.name, "ceiling": ceiling,
        "scenarios": [{"phase": s.phase, "batch": s.batch, "seq_len": s.seq_len,
                       "context_len": s.context_len, "weight_dtype": s.weight_dtype,
                       "act_dtype": s.act_dtype, "kv_dtype": s.kv_dtype}
                      for s in scen.values()],
        "scaling": ("none (GPU: full shapes)" if is_cuda(device) else
                    f"CPU: shapes scaled so one call is estimated under {TARGET_CALL_S * 1e3:.0f}"
                    " ms at the local ceilings; widths kept; GEMM rows, attention batch then "
                    "KV-head groups, or tokens scaled; each point's extra.scale and "
                    "extra.scale_note state it"),
        "decode_sweep_batches": list(DECODE_BATCHES_QUICK if quick else DECODE_BATCHES),
    })
    return run
