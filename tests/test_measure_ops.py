"""Op microbenchmarks: count rescaling, dtype conversion, timed outputs checked, the join to
the analytic op and its roof, and a point faster than its roof flagged, not read as >100%."""

from __future__ import annotations

import pytest

from perfscope.analytic.ops import Op
from perfscope.measure import opcases as M
from perfscope.measure import ops as O
from perfscope.measure.hwspec import parse_spec_text
from perfscope.measure.skips import Skip

torch = pytest.importorskip("torch")

LOCAL = """
schema = "perfscope.hw/1"
name = "testbox"
display_name = "Test box"
vendor = "test"
[memory]
capacity_gb = 16
bandwidth_gb_s = 20
source = "test"
[chip]
sm_count = 2
l2_mib = 32
source = "test"
[peak.fp32]
vector_tflops = 0.1
source = "test"
"""


@pytest.fixture(scope="module")
def hw():
    return parse_spec_text(LOCAL)


GEMM = {"op": "matmul", "bias": False}
FLASH = {"attention": "flash", "softcap": False, "latent": False}


def gemm_op(m=512, n=1024, k=256, dt="bf16", name="mlp.down_proj") -> Op:
    b = 2 if dt == "bf16" else 4
    return Op(name, "gemm", 0, 24, 2.0 * m * n * k, weight_bytes=n * k * b,
              act_in_bytes=m * k * b, act_out_bytes=m * n * b, dtype=dt,
              shape={"m": m, "n": n, "k": k}, impl=GEMM)


def attn_op(B=2, T=16, K=16, H=4, KV=2, d=32, dt="fp32", name="attn.core", impl=None) -> Op:
    e = 4
    # flash prefill: causal half of the T x K scores, QK^T and PV
    keys = (1 + T) * T / 2 if T == K else T * K
    return Op(name, "attention", 0, 2, 2.0 * B * H * keys * 2 * d,
              act_in_bytes=B * T * H * d * e + 2 * B * K * KV * d * e,
              act_out_bytes=B * T * H * d * e, dtype=dt,
              shape={"batch": B, "q_len": T, "kv_len": K, "heads": H, "kv_heads": KV,
                     "head_dim_qk": d, "head_dim_v": d, "causal": 1, "window": 0},
              impl=impl or FLASH)


def row_op(name, kind, impl, t=64, w=256, n_in=1, dt="fp32", weight=0.0) -> Op:
    return Op(name, kind, 0, 1, 4.0 * t * w, weight_bytes=weight, act_in_bytes=n_in * t * w * 4,
              act_out_bytes=t * w * 4, dtype=dt, unit="vector", shape={"tokens": t, "width": w},
              impl=impl)


def test_convert_gemm_bf16_to_fp32():
    op = M.convert_dtype(gemm_op(), "fp32")
    assert op.dtype == "fp32"
    assert op.weight_bytes == 1024 * 256 * 4
    assert op.act_in_bytes == 512 * 256 * 4 and op.act_out_bytes == 512 * 1024 * 4
    assert op.flops == 2.0 * 512 * 1024 * 256


def test_scale_gemm_rows_keeps_weight():
    op = gemm_op(dt="fp32")
    # 1 GFLOP/s and 1 TB/s: 268 MFLOP take 0.27 s, so m must shrink ~6x for 50 ms
    s_op, s, note = M.scale_op(op, target_s=0.05, flops_per_s=1e9, bytes_per_s=1e12)
    m2 = s_op.shape["m"]
    assert m2 < 512 and m2 % 16 == 0 and note == f"m 512->{m2}"
    assert s == m2 / 512
    assert s_op.flops == pytest.approx(2.0 * m2 * 1024 * 256)
    assert s_op.weight_bytes == op.weight_bytes  # the weight does not shrink with m
    assert s_op.act_in_bytes == pytest.approx(m2 * 256 * 4)
    assert M.estimate_s(s_op, 1e9, 1e12) <= 0.05
    assert M.scale_op(op, target_s=None, flops_per_s=1.0, bytes_per_s=1.0)[1] == 1.0


def test_scale_attention_batch_then_heads():
    op = attn_op(B=8, T=64, K=64, H=8, KV=4)
    est = M.estimate_s(op, 1e9, 1e12)
    s_op, s, note = M.scale_op(op, target_s=est / 16, flops_per_s=1e9, bytes_per_s=1e12)
    sh = s_op.shape
    assert sh["batch"] == 1 and sh["kv_heads"] == 2 and sh["heads"] == 4  # GQA group kept
    assert s == pytest.approx(1 / 16)
    assert s_op.flops == pytest.approx(op.flops / 16)
    assert s_op.act_in_bytes == pytest.approx(op.act_in_bytes / 16)
    assert "batch 8->1" in note and "kv_heads 4->2" in note


def test_scale_embedding_gathers_fewer_rows():
    op = Op("embed", "embedding", None, 1, 0.0, weight_bytes=4096 * 512 * 4,
            act_out_bytes=4096 * 512 * 4, dtype="fp32", unit="vector",
            shape={"tokens": 4096, "width": 512, "vocab": 32000},
            impl={"op": "embedding", "scale": False})
    s_op, s, _ = M.scale_op(op, target_s=1e-4, flops_per_s=1e9, bytes_per_s=1e10)
    assert s_op.weight_bytes == pytest.approx(op.weight_bytes * s)  # rows gathered
    assert s_op.shape["width"] == 512


def test_make_case_runs_missing_dtype_in_fp32():
    c = M.make_case(gemm_op(), device="cpu", target_s=None, flops_per_s=1, bytes_per_s=1,
                    have=["fp32"])
    assert c.op.dtype == "fp32" and "no bf16" in c.dtype_note and c.full.dtype == "bf16"
    c2 = M.make_case(gemm_op(dt="fp32"), device="cpu", target_s=None, flops_per_s=1,
                     bytes_per_s=1, have=["fp32"])
    assert c2.dtype_note == "" and c2.op == gemm_op(dt="fp32")


def test_attention_mask_bottom_right():
    from perfscope.measure.runners.attention import attention_mask

    m = attention_mask(2, 4, True, 0, "cpu").int().tolist()
    assert m == [[1, 1, 1, 0], [1, 1, 1, 1]]
    w = attention_mask(2, 4, True, 2, "cpu").int().tolist()
    assert w == [[0, 1, 1, 0], [0, 0, 1, 1]]


def _case(op: Op) -> M.OpCase:
    return M.OpCase(op, op, "prefill")


UNFUSED = {"attention": "unfused", "softcap": False, "latent": False}


@pytest.mark.parametrize("op", [
    gemm_op(64, 128, 96, "fp32"),
    Op("moe.experts_down", "gemm", 0, 1, 2.0 * 4 * 8 * 64 * 32, dtype="fp32",
       shape={"m": 8, "n": 64, "k": 32, "groups": 4}, impl=GEMM),
    attn_op(),  # causal prefill, GQA
    attn_op(B=2, T=1, K=40),  # decode
    attn_op(T=8, K=24),  # chunked prefill: explicit bottom-right causal mask
    attn_op(name="attn.score", impl=UNFUSED | {"part": "scores"}),
    attn_op(name="attn.value", impl=UNFUSED | {"part": "values"}),
    row_op("attn.norm", "norm", {"norm": "rmsnorm", "fused_add": True, "group": 256},
           n_in=2, weight=256 * 4),
    row_op("attn.qk_norm", "norm", {"norm": "rmsnorm", "fused_add": False, "group": 32}),
    row_op("mlp.act", "elementwise", {"activation": "silu", "gated": True}, n_in=2),
    row_op("attn.rotary", "elementwise", {"rotary_dim": 64, "head_dim": 128}),
    row_op("attn.residual", "elementwise", {"op": "add"}, n_in=2),
    row_op("attn.softmax", "softmax", {"op": "softmax", "mask": "causal", "q_len": 8}),
    Op("embed", "embedding", None, 1, 0.0, weight_bytes=8 * 64 * 4, act_out_bytes=8 * 64 * 4,
       dtype="fp32", unit="vector", shape={"tokens": 8, "width": 64, "vocab": 1000},
       impl={"op": "embedding", "scale": False}),
], ids=lambda o: o.name)
def test_each_kind_checks_and_times(op, hw):
    p = O.time_case(_case(op), "cpu", budget_s=0.01, warmup_s=0.0, hw=hw, ceiling="spec",
                    flush_l2=False)
    assert p.name == op.name and p.kind == op.kind and dict(p.shape) == dict(op.shape)
    assert p.flops == op.flops and p.bytes == op.bytes  # analytic counts, not re-derived
    assert p.stats.n >= 5 and p.stats.median_s > 0
    # roofline on the test box: 0.1 TFLOP/s, 20 GB/s
    want = max(op.flops / 1e11, op.bytes / 2e10)
    assert p.predicted_time_s == pytest.approx(want)
    assert p.extra["pct_of_roof"] == pytest.approx(100 * want / p.stats.median_s)
    assert p.extra["above_roof"] == (p.extra["pct_of_roof"] > 100)
    assert p.extra["check_max_rel_err"] < 1e-3
    assert p.extra["phase"] == "prefill" and p.extra["hardware"] == "testbox"
    assert p.extra["op_impl"] == dict(op.impl)


def test_timed_outputs_are_the_ones_checked(hw, monkeypatch):
    """A kernel that is right when first called and wrong afterwards fails the run: the
    check reads the outputs of timed calls, not a separate first call."""
    from perfscope.errors import MeasureError
    from perfscope.measure import runners

    real = runners.build_runner
    calls = [0]

    def broken(op, device, **kw):
        r = real(op, device, **kw)

        def fn(x, p):
            calls[0] += 1
            out = r.fn(x, p)
            return out if calls[0] == 1 else out + 1.0

        return runners.Runner(r.impl, fn, r.inputs, r.params, r.verify)

    monkeypatch.setattr(O, "build_runner", broken)
    with pytest.raises(MeasureError, match="wrong result"):
        O.time_case(_case(row_op("attn.residual", "elementwise", {"op": "add"}, n_in=2)),
                    "cpu", budget_s=0.01, warmup_s=0.0, flush_l2=False)


def test_no_faithful_kernel_is_a_skip_with_the_reason():
    with pytest.raises(Skip, match="no implementation attributes"):
        O.time_case(_case(row_op("mlp.act", "elementwise", None)), "cpu", budget_s=0.01)


def test_roof_note_says_the_roof_was_measured_low():
    from perfscope.measure.types import MeasuredPoint, TimingStats

    st = TimingStats(1e-3, 1e-3, 1e-3, 1e-3, 5, 0.0)

    def pt(above):
        return MeasuredPoint("x", "gemm", {}, "fp32", st, 1.0, 1.0, "cpu",
                             predicted_time_s=2.3e-3 if above else 5e-4,
                             extra={"above_roof": above, "pct_of_roof": 230 if above else 50})

    assert O.roof_note([pt(False)], measured_roof=True, hw_name="local", ceiling="e") == ""
    note = O.roof_note([pt(True), pt(False)], measured_roof=True, hw_name="local",
                       ceiling="empirical")
    assert note.startswith("1 of 2 points ran faster than this machine's measured roof")
    assert "measured low" in note and "perfscope bench ceilings --full --save local" in note
    spec = O.roof_note([pt(True)], measured_roof=False, hw_name="h100-sxm", ceiling="spec")
    assert "spec roof of h100-sxm" in spec and "measured low" not in spec


def test_unknown_kind_is_a_clear_skip_line():
    op = Op("tp.allreduce", "comm", 0, 1, 0.0, dtype="bf16", unit="link")
    skipped: list[str] = []
    cases = M.plan_cases({"decode": [op, gemm_op(1, 64, 64, "fp32")]}, device="cpu",
                         quick=True, flops_per_s=1e10, bytes_per_s=1e10, skipped=skipped)
    assert any("bench comm" in s for s in skipped)
    assert [c.op.name for c in cases if c.sweep_batch is None] == ["mlp.down_proj"]


def test_plan_dedupes_and_sweeps_decode_gemms():
    ops = [gemm_op(1, 256, 128, "fp32"), gemm_op(1, 256, 128, "fp32")]
    cases = M.plan_cases({"decode": ops}, device="cpu", quick=False, flops_per_s=1e10,
                         bytes_per_s=1e10)
    main = [c for c in cases if c.sweep_batch is None]
    assert len(main) == 1
    sweep = sorted(c.sweep_batch for c in cases if c.sweep_batch is not None)
    assert sweep == [2, 4, 8, 16, 32, 64, 128, 256]
    c64 = next(c for c in cases if c.sweep_batch == 64)
    assert c64.op.shape["m"] == 64 and c64.op.flops == pytest.approx(64 * ops[0].flops)
    assert c64.op.weight_bytes == ops[0].weight_bytes


def test_decode_gemm_flops_rise_with_batch(hw):
    """Weight-bound decode GEMMs: FLOP/s grows with batch along the bandwidth roof."""
    from perfscope.measure.timing import set_cpu_threads

    # one thread: on a shared 2-core machine a second OpenMP thread waits for a busy core
    # (~16 ms stalls), which says nothing about the roofline
    before = torch.get_num_threads()
    set_cpu_threads(1)
    base = M.make_case(gemm_op(1, 2048, 2048, "fp32"), device="cpu", phase="decode",
                       target_s=None, flops_per_s=1e11, bytes_per_s=2e10)
    rates = {}
    try:
        for c in M.decode_sweep(base, (1, 8, 64)):
            p = O.time_case(c, "cpu", budget_s=0.15, hw=hw, ceiling="spec")
            rates[c.sweep_batch] = p.achieved_flops_per_s
            # fp32 intensity ~ m/2 FLOP/B against a ridge of 5: memory-bound below m = 10
            assert p.extra["bound"] == ("memory" if c.sweep_batch < 10 else "compute")
    finally:
        set_cpu_threads(before)
    assert rates[1] < rates[8] < rates[64]


def test_bench_model_ops_unknown_op_is_skipped(hw):
    run = O.bench_model_ops("qwen2.5-0.5b", hw, device="cpu", phases=["decode"], batch=1,
                            seq_len=16, context_len=16, quick=True, rates=(1e11, 2e10),
                            only=["attn.norm", "nope"], sweep=False)
    assert [p.name for p in run.points] == ["attn.norm"]
    assert any("'nope'" in s and "unknown op" in s for s in run.skipped)
    assert run.meta["model"] == "qwen2.5-0.5b" and run.meta["hardware"] == "testbox"
    assert run.points[0].dtype == "fp32"  # the test box has no bf16: analysed in fp32


def test_scaled_softmax_keeps_whole_query_groups():
    # 4 sequences x 14 heads x 24 queries over 24 keys: rows must stay multiples of 24
    op = row_op("attn.softmax", "softmax", {"op": "softmax", "mask": "causal", "q_len": 24},
                t=4 * 14 * 24, w=24)
    s_op, s, _ = M.scale_op(op, target_s=M.estimate_s(op, 1e9, 1e9) / 7, flops_per_s=1e9,
                               bytes_per_s=1e9)
    assert s_op.shape["tokens"] % 24 == 0 and s_op.shape["tokens"] < 4 * 14 * 24
    assert s == s_op.shape["tokens"] / (4 * 14 * 24)


def test_convert_gemm_with_bias_counts_the_bias():
    # 8 x 64 x 32 bf16 with a bias: to fp32, W 64*32*4 + b 64*4, X 8*32*4, Y 8*64*4
    op = Op("attn.qkv_proj", "gemm", 0, 1, 2.0 * 8 * 64 * 32 + 8 * 64,
            weight_bytes=(64 * 32 + 64) * 2, act_in_bytes=8 * 32 * 2, act_out_bytes=8 * 64 * 2,
            dtype="bf16", shape={"m": 8, "n": 64, "k": 32}, impl={"op": "matmul", "bias": True})
    c = M.convert_dtype(op, "fp32")
    assert (c.weight_bytes, c.act_in_bytes, c.act_out_bytes) == \
        ((64 * 32 + 64) * 4, 8 * 32 * 4, 8 * 64 * 4)


def test_quick_cap_cuts_gemm_columns_and_rederives_the_counts():
    # an fp32 LM head 128256 x 4096 (2.1 GB) at m = 3: cut to 64 MiB of weights, k kept
    m, n, k = 3, 128256, 4096
    op = gemm_op(m, n, k, "fp32", name="lm_head")
    c, s, notes = M.cap_weights(op, 64 * 2**20)
    n2 = c.shape["n"]
    assert n2 == 4096 and notes == [f"n {n}->4096"] and c.shape["k"] == k
    # by hand for the shape run: 2 m n2 k FLOPs, W n2 k words, X m k words, Y m n2 words
    assert c.flops == pytest.approx(2.0 * m * n2 * k)
    assert c.weight_bytes == pytest.approx(n2 * k * 4) and c.weight_bytes <= 64 * 2**20
    assert c.act_in_bytes == pytest.approx(m * k * 4)
    assert c.act_out_bytes == pytest.approx(m * n2 * 4)
    assert s == pytest.approx(n2 / n)
    # under the cap: untouched
    assert M.cap_weights(gemm_op(dt="fp32"), 64 * 2**20) == (gemm_op(dt="fp32"), 1.0, [])


def test_quick_cap_drops_expert_groups_before_columns():
    # 64 experts of 1408 x 2048 fp32 (11.5 MB each, 738 MB): 5 groups fit in 64 MiB
    g, m, n, k = 64, 8, 1408, 2048
    op = Op("moe.experts_down", "gemm", 0, 1, 2.0 * g * m * n * k,
            weight_bytes=g * n * k * 4, act_in_bytes=g * m * k * 4,
            act_out_bytes=g * m * n * 4, dtype="fp32",
            shape={"m": m, "n": n, "k": k, "groups": g}, impl=GEMM)
    c, s, notes = M.cap_weights(op, 64 * 2**20)
    assert c.shape == {"m": m, "n": n, "k": k, "groups": 5} and notes == ["groups 64->5"]
    assert c.flops == pytest.approx(2.0 * 5 * m * n * k)
    assert c.weight_bytes == pytest.approx(5 * n * k * 4)
    assert c.act_in_bytes == pytest.approx(5 * m * k * 4) and s == pytest.approx(5 / 64)


def test_quick_cpu_plan_caps_weights_and_sweeps_the_largest_model_weight():
    big = gemm_op(1, 28672, 4096, "fp32", name="mlp.gate_up_proj")  # 470 MB
    small = gemm_op(1, 6144, 4096, "fp32", name="attn.qkv_proj")  # 100 MB
    head = gemm_op(1, 128256, 4096, "fp32", name="lm_head")
    cases = M.plan_cases({"decode": [small, big, head]}, device="cpu", quick=True,
                         flops_per_s=1e11, bytes_per_s=2e10)
    main = {c.op.name: c for c in cases if c.sweep_batch is None}
    for c in main.values():  # every weight cut to the cap, the cut stated
        assert c.op.weight_bytes <= M.WEIGHT_CAP_QUICK and "n " in c.scale_note
    # all three are 64 MiB once cut: the sweep still takes the model's largest weight
    assert {c.op.name for c in cases if c.sweep_batch} == {"mlp.gate_up_proj"}
    full = M.plan_cases({"decode": [big]}, device="cpu", quick=False, flops_per_s=1e11,
                        bytes_per_s=2e10)
    assert full[0].op.shape["n"] == 28672  # full mode keeps the widths


def test_quick_checks_two_input_sets_per_op(hw):
    p = O.time_case(_case(row_op("attn.residual", "elementwise", {"op": "add"}, n_in=2)),
                    "cpu", budget_s=0.01, warmup_s=0.0, flush_l2=False, verify_sets=2)
    assert p.extra["checked_sets"] == 2
    p = O.time_case(_case(row_op("attn.residual", "elementwise", {"op": "add"}, n_in=2)),
                    "cpu", budget_s=0.01, warmup_s=0.0, flush_l2=False)
    assert p.extra["checked_sets"] == 4  # every input set of a CPU run


def test_expert_parallel_collectives_are_left_to_bench_comm():
    """DeepSeek-V3 under attention DP dispatches tokens to their experts and combines them
    back (all-to-all): comm ops, timed by `perfscope bench comm`, a stated skip here."""
    from perfscope.api import Scenario, analyze, load_hw, load_model

    a = analyze(load_model("deepseek-v3"), load_hw("h200-sxm"),
                Scenario(phase="decode", batch=8, seq_len=16, context_len=64, ep=8,
                         attn_dp=8, weight_dtype="fp8"))
    comm = [o for o in a.graph.ops if o.kind == "comm"]
    assert {o.name for o in comm} == {"ep.dispatch", "ep.combine"}
    assert all(o.impl["collective"] == "all_to_all" for o in comm)
    skipped: list[str] = []
    cases = M.plan_cases({"decode": M.annotate(a.graph.ops)}, device="cpu", quick=True,
                         flops_per_s=1e11, bytes_per_s=2e10, skipped=skipped)
    assert not any(c.op.kind == "comm" for c in cases)
    for name in ("ep.dispatch", "ep.combine"):
        assert f"op {name} (decode): comm op, timed by `perfscope bench comm`; skipped here" \
            in skipped


def test_fp4_gemm_converts_with_fractional_bytes():
    # NVFP4 W4A4 GEMM 8 x 64 x 32: X is 4 bits + an fp8 scale per 16 = 4.5 bits an element
    x_bytes = 8 * 32 * 4.5 / 8
    op = Op("mlp.down_proj", "gemm", 0, 1, 2.0 * 8 * 64 * 32, weight_bytes=64 * 32 * 4.5 / 8,
            act_in_bytes=x_bytes, act_out_bytes=8 * 64 * 2, dtype="fp4",
            shape={"m": 8, "n": 64, "k": 32}, impl=GEMM)
    c = M.convert_dtype(op, "fp32")  # 8 rows recovered from the 4.5-bit input bytes
    assert (c.weight_bytes, c.act_in_bytes, c.act_out_bytes) == \
        (64 * 32 * 4, 8 * 32 * 4, 8 * 64 * 4)
    case = M.make_case(row_op("mlp.act", "elementwise", {"activation": "silu", "gated": False},
                              dt="fp4"), device="cpu", target_s=None, flops_per_s=1,
                       bytes_per_s=1, have=["fp32"])
    assert case.op.dtype == "fp32" and "no fp4 elementwise kernel" in case.dtype_note
