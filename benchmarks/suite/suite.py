"""perfscope's own benchmark suite: its hot paths and the CPU microbenchmarks of the measured
side. Used by `perfscope regress` (paired comparison of two revisions) and by pytest-benchmark
(`pytest benchmarks/suite`, absolute timings for the history).

A suite is a plain Python file: each module-level function named ``bench_<name>`` is a setup
that returns the zero-argument callable to time (the setup itself is not timed). Raise
ImportError or unittest.SkipTest to skip with a reason; set ``bench_<name>.quick = False``
to leave a slow benchmark out of ``--quick``. Setups import the code under test inside the
function, so a worker whose PYTHONPATH points at another revision's checkout measures that
revision with this same suite.
"""

from __future__ import annotations

import contextlib
import io
import json
import unittest
from collections.abc import Callable
from typing import Any

Bench = Callable[[], Any]


def _cli(args: list[str], what: str) -> Bench:
    """The perfscope CLI called in-process (its contract is stable across revisions), stdout
    captured; skipped where this revision does not have the command."""
    from perfscope.cli.app import app

    def call() -> Any:
        with contextlib.redirect_stdout(io.StringIO()) as out:
            app(args=args, prog_name="perfscope", standalone_mode=False)
        return out

    try:
        call()
    except Exception as e:  # a usage error (no such command) or "not built yet"
        raise unittest.SkipTest(f"{what} does not run in this revision: "
                                f"{' '.join(str(e).split())[:120]}") from None
    return call


def bench_analyze_decode_70b_tp4() -> Bench:
    """One analysis: Llama-3.1-70B decode, batch 32, 4k context, TP 4 (GQA, all-reduces)."""
    from perfscope.api import Scenario, analyze, load_hw, load_model

    m, hw = load_model("llama-3.1-70b"), load_hw("h100-sxm")
    sc = Scenario(phase="decode", batch=32, context_len=4096, tp=4)
    return lambda: analyze(m, hw, sc)


def bench_analyze_prefill_dsv3_tp8() -> Bench:
    """One analysis of the most intricate graph: DeepSeek-V3 (MLA + MoE) prefill, TP 8."""
    from perfscope.api import Scenario, analyze, load_hw, load_model

    m, hw = load_model("deepseek-v3"), load_hw("h200-sxm")
    sc = Scenario(phase="prefill", batch=4, seq_len=2048, tp=8)
    return lambda: analyze(m, hw, sc)


def bench_load_model_config() -> Bench:
    """A config.json read and adapted to a ModelSpec (every CLI call pays it)."""
    from perfscope.api import load_model

    return lambda: load_model("qwen3-30b-a3b")


def bench_analysis_to_json() -> Bench:
    """perfscope.analysis/1 built and serialised (what --format json pays after analyze)."""
    from perfscope.api import Scenario, analyze, load_hw, load_model

    a = analyze(load_model("llama-3.1-8b"), load_hw("h100-sxm"), Scenario(phase="prefill"))
    return lambda: json.dumps(a.to_json())


def bench_render_analysis_table() -> Bench:
    """The rich per-op table of `perfscope analyze` rendered to text."""
    from perfscope.api import Scenario, analyze, load_hw, load_model
    from perfscope.report.tables import analysis_table

    a = analyze(load_model("llama-3.1-8b"), load_hw("h100-sxm"),
                Scenario(phase="decode", batch=8, context_len=4096))

    def render() -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            analysis_table(a)

    return render


# 25-110 ms per call here (rich lays the table out cell by cell): in a quick budget it gets
# ~10 rounds on a loaded 2-core machine, too few to decide; the full run has time for it
bench_render_analysis_table.quick = False  # type: ignore[attr-defined]


def bench_recommend_sweep() -> Bench:
    """The recommender's search (perfscope recommend), where this revision has it."""
    return _cli(["recommend", "--model", "llama-3.1-8b", "--hw", "h100-sxm", "--gpus", "8",
                 "--isl", "1024", "--osl", "256", "--format", "json"], "perfscope recommend")


bench_recommend_sweep.quick = False  # type: ignore[attr-defined]


def bench_html_report() -> Bench:
    """The self-contained HTML report (perfscope profile --no-measure), where it exists."""
    import tempfile
    from pathlib import Path

    out = Path(tempfile.mkdtemp(prefix="perfscope-suite-")) / "report.html"
    return _cli(["profile", "--model", "llama-3.1-8b", "--hw", "h100-sxm", "--no-measure",
                 "-o", str(out)], "perfscope profile --no-measure")


bench_html_report.quick = False  # type: ignore[attr-defined]


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        raise unittest.SkipTest("torch is not installed") from None
    return torch


def bench_gemm_fp32_256() -> Bench:
    """A small CPU GEMM, 256 x 256 x 256 fp32 (the measured side's compute ceiling probe)."""
    torch = _torch()
    g = torch.Generator().manual_seed(0)
    a = torch.randn(256, 256, generator=g)
    b = torch.randn(256, 256, generator=g)
    out = torch.empty(256, 256)
    return lambda: torch.mm(a, b, out=out)


def _add_rmsnorm(impl: str) -> Bench:
    torch = _torch()
    from perfscope.measure.kernels.add_rmsnorm import get_impl, impl_status

    why = impl_status("cpu", "fp32").get(impl, f"no {impl} implementation")
    if why:
        raise unittest.SkipTest(why)
    fused = get_impl(impl).fused
    g = torch.Generator().manual_seed(0)
    tokens, hidden = 128, 2048
    x = torch.randn(tokens, hidden, generator=g)
    r = torch.randn(tokens, hidden, generator=g)
    w = torch.randn(hidden, generator=g)
    h, out = torch.empty_like(x), torch.empty_like(x)
    return lambda: fused(x, r, w, 1e-6, h, out)


def bench_add_rmsnorm_fused_torch() -> Bench:
    """Fused residual add + RMSNorm, torch implementation, 128 x 2048 fp32."""
    return _add_rmsnorm("torch")


def bench_add_rmsnorm_fused_c() -> Bench:
    """Fused residual add + RMSNorm, the C kernel (where a C compiler is present)."""
    return _add_rmsnorm("c")
