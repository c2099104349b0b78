"""A whole decode step (and a prefill) of a dense Llama-family model, measured beside perfscope's
prediction for the same step.

The model is built from its config with random bf16 weights in plain torch (RoPE at base
10000: the base does not change the work): per layer RMSNorm, one fused Q/K/V projection, RoPE,
attention over a preallocated KV cache through ``scaled_dot_product_attention`` (flash or
memory-efficient on CUDA), the output projection, RMSNorm, one fused gate/up projection,
SiLU x up, down, and the residual adds; then the final norm and the LM head. That is what a
serving engine runs for one decode step; eager, its elementwise work is several kernels each
(``--compile`` fuses them, as gpt-fast does). On CUDA the decode step is captured once in a
CUDA graph and replayed (as engines do), timed with CUDA events; the prefill runs eagerly (its
kernels are long).

Printed side by side per batch: measured step time, perfscope's prediction on the empirical and
the spec roof, their ratios, and the per-kernel overhead this measurement implies: (measured -
the empirical roofline time without overhead) / the analytic graph's kernel count, the same fit
as the A100 figure in hw_specs (LLM-001).

    python benchmarks/bench_decode_step.py --device cuda --model llama-3.1-8b --hw h200-sxm \
        --batches 1,8,32,64 --context-len 2048 --prefill 2048 --json out.json

On CPU it runs eagerly (timed with perf_counter); use a small config there.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from perfscope.api import Scenario, analyze, load_hw, load_model
from perfscope.io import write_atomic


def _refuse(msg: str) -> None:
    print(f"bench_decode_step: {msg}", file=sys.stderr)
    raise SystemExit(2)


class Decoder:
    """Random-weight dense decoder with a KV cache for ``max_batch`` sequences of
    ``max_len`` tokens."""

    def __init__(self, m, device: torch.device, dtype: torch.dtype, max_batch: int,
                 max_len: int, seed: int = 0) -> None:
        if m.moe is not None or m.mla is not None or not m.gated_mlp or m.norm != "rmsnorm" \
                or m.positional != "rope" or m.qkv_bias or m.o_bias or m.mlp_bias \
                or m.sliding_layers or m.qk_norm or m.norms_per_layer != 2 \
                or m.activation != "silu" or m.embed_scale or m.logit_softcap:
            _refuse(f"{m.name} is not a plain Llama-family model (dense, gated SiLU MLP, "
                    "RMSNorm, RoPE, no biases, windows or scalings); pick one such as "
                    "llama-3.1-8b")
        self.m, self.dev, self.dt = m, device, dtype
        g = torch.Generator(device=device).manual_seed(seed)
        d, h, kv = m.head_dim, m.n_heads, m.n_kv_heads

        def w(rows: int, cols: int) -> torch.Tensor:
            return (torch.randn(rows, cols, device=device, dtype=dtype, generator=g)
                    * (1.0 / math.sqrt(rows)))

        self.embed = w(m.vocab, m.hidden)
        self.layers = []
        for _ in range(m.n_layers):
            self.layers.append({
                "qkv": w(m.hidden, (h + 2 * kv) * d), "o": w(h * d, m.hidden),
                "gate_up": w(m.hidden, 2 * m.intermediate), "down": w(m.intermediate, m.hidden),
                "n1": torch.ones(m.hidden, device=device, dtype=dtype),
                "n2": torch.ones(m.hidden, device=device, dtype=dtype),
                "kc": torch.zeros(max_batch, kv, max_len, d, device=device, dtype=dtype),
                "vc": torch.zeros(max_batch, kv, max_len, d, device=device, dtype=dtype)})
        self.norm = torch.ones(m.hidden, device=device, dtype=dtype)
        self.head = self.embed.t() if m.tied_embeddings else w(m.hidden, m.vocab)
        self.max_len = max_len
        inv = 1.0 / (10000.0 ** (torch.arange(0, d, 2, device=device, dtype=torch.float32) / d))
        ang = torch.outer(torch.arange(max_len, device=device, dtype=torch.float32), inv)
        self.cos = torch.cat([ang.cos(), ang.cos()], -1).to(dtype)
        self.sin = torch.cat([ang.sin(), ang.sin()], -1).to(dtype)

    def _rope(self, x: torch.Tensor, pos: slice) -> torch.Tensor:
        c, s = self.cos[pos], self.sin[pos]
        half = x.shape[-1] // 2
        rot = torch.cat([-x[..., half:], x[..., :half]], -1)
        return x * c + rot * s

    def forward(self, tokens: torch.Tensor, start: int) -> torch.Tensor:
        """tokens [B, T] placed at positions start..start+T-1; returns the logits of the last."""
        m, (b, t) = self.m, tokens.shape
        d, h, kv = m.head_dim, m.n_heads, m.n_kv_heads
        pos = slice(start, start + t)
        x = F.embedding(tokens, self.embed)
        eps = 1e-5
        for L in self.layers:
            a = F.rms_norm(x, (m.hidden,), L["n1"], eps)
            qkv = (a @ L["qkv"]).view(b, t, h + 2 * kv, d).transpose(1, 2)
            qk = self._rope(qkv[:, :h + kv], pos)  # q and k rotated together
            q, k, v = qk[:, :h], qk[:, h:], qkv[:, h + kv:]
            kc, vc = L["kc"][:b], L["vc"][:b]
            kc[:, :, pos] = k
            vc[:, :, pos] = v
            o = F.scaled_dot_product_attention(q, kc[:, :, :start + t], vc[:, :, :start + t],
                                               is_causal=t > 1, enable_gqa=kv != h)
            x = x + o.transpose(1, 2).reshape(b, t, h * d) @ L["o"]
            a = F.rms_norm(x, (m.hidden,), L["n2"], eps)
            gate, up = (a @ L["gate_up"]).chunk(2, -1)
            x = x + (F.silu(gate) * up) @ L["down"]
        x = F.rms_norm(x[:, -1:], (m.hidden,), self.norm, eps)
        return x @ self.head


def _time(fn, device: torch.device, runs: int) -> list[float]:
    """Seconds per call, one sample per call after two warm-up calls."""
    for _ in range(2):
        fn()
    out = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        for _ in range(runs):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            fn()
            e.record()
            e.synchronize()
            out.append(s.elapsed_time(e) / 1e3)
    else:
        for _ in range(runs):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return out


def measure_decode(dec: Decoder, batch: int, context: int, runs: int,
                   compiled: bool = False) -> float:
    """Median seconds of one decode step at ``context`` cached tokens (graph replay on CUDA).
    ``compiled``: torch.compile's inductor kernels (norms, RoPE and SiLU x up fused), as
    gpt-fast runs."""
    tok = torch.randint(0, dec.m.vocab, (batch, 1), device=dec.dev)
    # inductor's own graphs (mode reduce-overhead) skip a step that writes the KV cache in
    # place: compile the kernels alone and capture them in a graph here, like the eager ones
    forward = (torch.compile(dec.forward, fullgraph=True, dynamic=False) if compiled
               else dec.forward)
    if dec.dev.type == "cuda":
        s = torch.cuda.Stream(dec.dev)
        s.wait_stream(torch.cuda.current_stream(dec.dev))
        with torch.cuda.stream(s):  # compile; warm the kernels and cuBLAS workspaces
            for _ in range(3):
                forward(tok, context)
        torch.cuda.current_stream(dec.dev).wait_stream(s)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            forward(tok, context)
        fn = graph.replay
    else:
        def fn() -> None:
            forward(tok, context)
    with torch.inference_mode():
        return statistics.median(_time(fn, dec.dev, runs))


def measure_prefill(dec: Decoder, length: int, runs: int) -> float:
    tok = torch.randint(0, dec.m.vocab, (1, length), device=dec.dev)
    return statistics.median(_time(lambda: dec.forward(tok, 0), dec.dev, runs))


def predict(m, hw, phase: str, batch: int, length: int) -> dict:
    """perfscope's step time on both roofs, the empirical roofline time without the fixed
    per-kernel cost, and the kernel count of the analytic graph."""
    out = {}
    for ceiling in ("empirical", "spec"):
        sc = (Scenario(phase="decode", batch=batch, context_len=length, ceiling=ceiling)
              if phase == "decode" else
              Scenario(phase="prefill", batch=batch, seq_len=length, ceiling=ceiling))
        a = analyze(m, hw, sc)
        out[ceiling] = a.totals.time_s
        if ceiling == "empirical":
            kernels = [p for p in a.points if p.bound != "comm"]
            overhead = sum(p.overhead_s * p.op.count for p in kernels)
            out["roofline_no_overhead"] = a.totals.time_s - overhead
            out["kernels"] = sum(p.op.count for p in kernels)
            out["overhead_per_kernel"] = kernels[0].overhead_s if kernels else 0.0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="llama-3.1-8b")
    ap.add_argument("--hw", default="h200-sxm", help="spec the predictions are made for")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batches", default="1,8,32,64")
    ap.add_argument("--context-len", type=int, default=2048)
    ap.add_argument("--prefill", type=int, default=0, help="also a prefill of this many tokens")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--compile", action="store_true",
                    help="decode through torch.compile (fused elementwise kernels), as gpt-fast")
    ap.add_argument("--json", type=Path, help="write the rows here")
    args = ap.parse_args()
    try:
        batches = sorted({int(b) for b in args.batches.split(",")})
    except ValueError:
        _refuse(f"--batches {args.batches!r}: give comma-separated positive integers")
    if min(batches) < 1 or args.context_len < 1 or args.runs < 1 or args.prefill < 0:
        _refuse("--batches, --context-len and --runs must be positive, --prefill >= 0")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        _refuse("--device cuda: no CUDA device here; use --device cpu with a small config")
    m, hw = load_model(args.model), load_hw(args.hw)
    dtype = torch.bfloat16
    max_len = max(args.context_len + 1, args.prefill)
    with torch.inference_mode():
        dec = Decoder(m, device, dtype, max(batches), max_len)
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"cpu ({os.cpu_count()} cores)")
    print(f"{m.name} bf16, {m.n_layers} layers, measured on {name}"
          f"{' through torch.compile' if args.compile else ''}, predicted for {hw.name}",
          file=sys.stderr, flush=True)
    rows = []
    cases = [("decode", b, args.context_len) for b in batches]
    if args.prefill:
        cases.append(("prefill", 1, args.prefill))
    hdr = (f"{'phase':<8}{'batch':>6}{'tokens':>8}{'measured ms':>13}{'empirical':>11}"
           f"{'ratio':>7}{'spec':>9}{'ratio':>7}{'fit us/kernel':>15}")
    print(hdr)
    for phase, b, n in cases:
        with torch.inference_mode():
            t = (measure_decode(dec, b, n, args.runs, args.compile) if phase == "decode"
                 else measure_prefill(dec, n, max(3, args.runs // 4)))
        p = predict(m, hw, phase, b, n)
        fit = (t - p["roofline_no_overhead"]) / p["kernels"]
        rows.append({"phase": phase, "batch": b, "tokens": n, "measured_s": t,
                     "predicted_empirical_s": p["empirical"], "predicted_spec_s": p["spec"],
                     "roofline_no_overhead_s": p["roofline_no_overhead"],
                     "kernels": p["kernels"], "overhead_per_kernel_s": p["overhead_per_kernel"],
                     "fitted_overhead_per_kernel_s": fit})
        print(f"{phase:<8}{b:>6}{n:>8}{t * 1e3:>13.3f}{p['empirical'] * 1e3:>11.3f}"
              f"{p['empirical'] / t:>7.2f}{p['spec'] * 1e3:>9.3f}{p['spec'] / t:>7.2f}"
              f"{fit * 1e6:>15.2f}", flush=True)
    if args.json:
        write_atomic(args.json, json.dumps({
            "schema": "perfscope.decode-step/1", "model": m.name, "hw": hw.name, "device": name,
            "torch": torch.__version__, "dtype": "bf16", "layers": m.n_layers,
            "graph": device.type == "cuda", "compiled": args.compile, "rows": rows},
            indent=1) + "\n")


if __name__ == "__main__":
    main()
