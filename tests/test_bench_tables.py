"""The bench tables on hand-made documents: every section, missing fields, a point above its
roof, nccl-tests' columns with units; and the progress lines and bars on stderr."""

from __future__ import annotations

import io

import pytest

from perfscope.measure.progress import Reporter
from perfscope.report import bench_tables as BT


def _point(name, *, phase="decode", shape=None, above=False, bound="memory", **extra):
    return {"name": name, "kind": "gemm", "dtype": "bf16", "shape": shape or {},
            "stats": {"median_s": 2e-5, "p20_s": 1.9e-5, "p80_s": 2.1e-5, "n": 50},
            "achieved_flops_per_s": 1.5e12, "achieved_bytes_per_s": 3.2e12,
            "predicted_time_s": 1.6e-5 if not above else 4.6e-5,
            "pct_of_roof": 80.0 if not above else 230.0,
            "extra": {"phase": phase, "bound": bound, "above_roof": above, **extra}}


DOC = {
    "schema": "perfscope.bench/1", "quick": True, "threads": None, "duration_s": 42.0,
    "device": {"kind": "cuda", "name": "NVIDIA H200"},
    "ceilings": {"rounds": 3, "values": [
        {"name": "gemm.fp8.fast_accum", "value": 1.2e15, "low": 1.1e15, "high": 1.25e15,
         "unit": "FLOP/s", "spread": 0.083, "shape": {"m": 8192, "n": 8192, "k": 8192}},
        {"name": "memory.copy", "value": 999.97e6, "low": 9e8, "unit": "bytes/s",
         "spread": 0.1, "shape": {"elements": 1 << 25}}]},
    "ops": {"model": "llama-3.1-8b", "roof": "h200-sxm spec", "scaling": "none",
            "roof_note": "1 of 3 points ran faster than the spec roof of h200-sxm: ...",
            "points": [
                _point("attn.qkv_proj", shape={"m": 1, "n": 6144, "k": 4096}),
                _point("mlp.down_proj", shape={"m": 64, "n": 4096, "k": 14336},
                       sweep_batch=64, bound="compute"),
                _point("attn.core", phase="prefill", above=True,
                       shape={"batch": 1, "q_len": 2048, "kv_len": 2048, "heads": 32,
                              "kv_heads": 8, "head_dim_qk": 128})]},
    # a decode-attention kernel has no q_len (the renderer raised KeyError on this)
    "kernels": {"points": [_point("decode_attention.paged.triton", impl="triton",
                                  shape={"batch": 64, "heads": 32, "kv_heads": 8,
                                         "head_dim": 128, "max_len": 4096})]},
    "comm": {"backend": "nccl", "device": "cuda", "ranks": 8, "results": [
        {"op": "all_reduce", "size_bytes": 1 << 30, "ranks": 8, "median_s": 4.8e-3,
         "algbw_bytes_s": 2.24e11, "busbw_bytes_s": 3.91e11, "fraction_of_link": 0.87}]},
    "skipped": [{"section": "ops", "message": "op attn.core@global: soft-cap; skipped"}],
}


def test_every_section_renders_within_80_columns():
    text = BT.bench_text(DOC, 80)
    assert max(len(line) for line in text.splitlines()) <= 80
    for title in ("measured ceilings", "ops of llama-3.1-8b, decode", "ops of llama-3.1-8b, "
                  "prefill", "reference kernels", "collectives: nccl between 8 GPUs"):
        assert title in text
    assert "b64 kv<=4096" in text and "h32/8 d128" in text  # kernel shape without q_len
    assert "b1 q2048 kv2048 h32/8 d128" in text and "1x6144x4096" in text
    assert "skipped (1):" in text and "soft-cap" in text


def test_a_point_above_its_roof_is_flagged_not_read_as_230_percent():
    text = BT.bench_text(DOC, 100)
    assert "above* comp" not in text and "above* mem" in text  # attn.core, memory-bound
    assert "230%" not in text and "80% mem" in text
    assert "* 1 of 3 points ran faster than the spec roof" in text


def test_collectives_read_like_nccl_tests():
    text = BT.bench_text({"comm": DOC["comm"]}, 80)
    header = next(line for line in text.splitlines() if line.split()[:1] == ["collective"])
    assert header.split() == ["collective", "size", "ranks", "time", "algbw", "busbw",
                              "%", "link"]
    row = next(line for line in text.splitlines() if "all_reduce" in line)
    # 1 GiB in 4.8 ms: algbw 224 GB/s, busbw = algbw * 2 * 7 / 8 = 391 GB/s
    assert row.split() == ["all_reduce", "1", "GiB", "8", "4.8", "ms", "224", "GB/s", "391",
                           "GB/s", "87%"]


def test_rates_round_into_the_next_prefix():
    assert BT._rate(999.97e6, "B/s") == "1 GB/s"  # not "1e+03 MB/s"
    assert BT._rate(1.5e12, "FLOP/s") == "1.5 TFLOP/s"
    assert BT._rate(None, "B/s") == BT._rate(0.0, "B/s") == "-"


@pytest.mark.parametrize("shape,text", [
    ({"m": 4, "n": 8, "k": 16, "groups": 3}, "3x 4x8x16"),
    ({"tokens": 8, "width": 64}, "8x64"),
    ({"tokens": 8, "hidden": 64}, "8x64"),
    ({"elements": 1024}, "1024 el"),
    ({"heads": 4}, "b? h4/?"),  # a partial shape prints what it has
    ({}, "-"),
])
def test_shapes(shape, text):
    assert BT.shape_text(shape) == text


def test_sections_with_missing_fields_do_not_fail():
    text = BT.bench_text({"ops": {"points": [{"name": "x"}]}, "kernels": {"points": [{}]},
                          "comm": {"results": [{"op": "all_gather"}]}}, 80)
    assert "x" in text and "all_gather" in text


# ---- progress ---------------------------------------------------------------------------

def test_without_a_terminal_one_line_per_section():
    err = io.StringIO()  # not a tty
    rep = Reporter(stream=err)
    assert rep.bars is False
    with rep.section("ceilings") as step:
        for i in range(3):
            step(f"gemm {i}", i, 3)
        step("done", 3, 3)
    assert err.getvalue().startswith("perfscope bench: ceilings done in ")
    assert err.getvalue().rstrip().endswith("s, 3 of 3 steps")
    assert len(err.getvalue().splitlines()) == 1


def test_on_a_terminal_a_determinate_bar():
    err = io.StringIO()
    rep = Reporter(bars=True, stream=err)
    with rep.section("ops") as step:
        step("decode mlp.down_proj", 1, 4)
        step("decode lm_head", 2, 4)
    out = err.getvalue()
    assert "2/4" in out or "1/4" in out  # done / total, drawn on the terminal
    assert "ops done in" in out


def test_quiet_reports_nothing():
    err = io.StringIO()
    with Reporter(bars=True, stream=err, quiet=True).section("comm") as step:
        step("x", 1, 2)
    assert err.getvalue() == ""
