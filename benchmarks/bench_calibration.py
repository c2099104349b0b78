"""Does a calibration move predictions toward measurement on runs it was not fitted on?

    .venv/bin/python benchmarks/bench_calibration.py [--device cpu] [--threads 1] [--repeat 5]

Fits a calibration (perfscope.calibration: per-kind scale and fixed cost, plus the framework
term) on profiles of one model and one set of shapes, then profiles held-back runs: the same
model at other batch / lengths, and another model (Qwen2.5-0.5B's real widths, 2 layers:
biases, a 152k vocabulary, 14 heads) at other shapes. For each held-back step it prints the
measured step time beside the roofline prediction and the calibrated one, with their errors,
and the per-op error (rms of ln(predicted / measured) over the analytic ops). The last lines
give the mean errors side by side and their ratio.

One set of measured ceilings serves every run (the saved local spec, else one quick
measurement), so fit and evaluation predict against the same roofline. A benchmark, not a
test: nothing here asserts; on a shared machine the timings are noisy (said in the output).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path

from perfscope.measure.torchprof.profile import (
    ProfileOptions,
    fit_from_profiles,
    profile_transformers,
)
from perfscope.specs.model import model_dirs

# the fitted model: Llama-3.1-8B's structure, widths scaled down (GQA 4:1, head_dim 128)
LLAMA = {"hidden_size": 512, "num_attention_heads": 4, "num_key_value_heads": 1,
         "head_dim": 128, "intermediate_size": 1792, "vocab_size": 8192,
         "num_hidden_layers": 2}
FIT = [("prefill", 1, 64), ("prefill", 4, 128), ("decode", 1, 128), ("decode", 4, 256)]
HELD_SAME_MODEL = [("prefill", 2, 256), ("decode", 8, 64)]
HELD_OTHER_MODEL = [("prefill", 2, 96), ("decode", 2, 384)]


def _llama_config(folder: Path) -> str:
    cfg = json.loads((model_dirs()[0] / "llama-3.1-8b.json").read_text())
    cfg.update(LLAMA)
    path = folder / "llama-scaled.json"
    path.write_text(json.dumps(cfg))
    return str(path)


def _run(model: str, phase: str, batch: int, length: int, a, hw, cal=None, layers=None):
    kw = {"seq_len": length} if phase == "prefill" else {"seq_len": 1, "context_len": length}
    return profile_transformers(model, ProfileOptions(
        device=a.device, threads=a.threads, batch=batch, phases=(phase,), warmup=2,
        repeat=a.repeat, hw=hw, calibration=cal, layers=layers, **kw))


def _op_error(phase_join, calibrated: bool) -> float:
    errs = []
    for r in phase_join.rows:
        pred = r.calibrated_time_s if calibrated else r.predicted_time_s
        if pred and r.measured_time_s:
            errs.append(math.log(pred / r.measured_time_s))
    return math.sqrt(sum(e * e for e in errs) / len(errs)) if errs else float("nan")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (1: steadiest)")
    p.add_argument("--repeat", type=int, default=5)
    a = p.parse_args(argv)
    if a.device != "cpu":
        a.threads = None
    from perfscope.measure.torchprof.ceilings import device_hardware

    dtype = "fp32" if a.device == "cpu" else "bf16"
    hw, source, desc = device_hardware(a.device, dtype, None)
    print(f"device: {desc.get('name')} ({a.device}, torch threads: {a.threads or 'default'}); "
          f"roofline: {hw.display_name} [{source}]")
    if hasattr(os, "getloadavg"):
        print(f"load average {os.getloadavg()[0]:.1f}: timings on a shared machine are noisy")
    with tempfile.TemporaryDirectory() as tmp:
        llama = _llama_config(Path(tmp))
        fit_runs = []
        for phase, b, n in FIT:
            what = "prompt" if phase == "prefill" else "context"
            print(f"fit: llama-scaled {phase} batch {b} {what} {n}", file=sys.stderr)
            fit_runs.append(_run(llama, phase, b, n, a, hw))
        cal = fit_from_profiles(fit_runs)
        e = cal.fit_error
        print(f"fitted on {len(fit_runs)} steps of llama-scaled: step error in-sample "
              f"{e['step_mean_abs_rel_error_before']:.1%} -> "
              f"{e['step_mean_abs_rel_error']:.1%}, leave-one-step-out "
              f"{e.get('step_mean_abs_rel_error_leave_one_out', float('nan')):.1%}")
        print("per kind: " + ", ".join(
            f"{k} x{v.scale:.3g} + {v.fixed_s * 1e6:.3g} us (n={v.n}, rms ln err "
            f"{v.rms_log_error_before:.2f} -> {v.rms_log_error:.2f})"
            for k, v in sorted(cal.kinds.items())))
        if cal.framework:
            print(f"framework: x{cal.framework.scale:.3g} of the step + "
                  f"{cal.framework.fixed_s * 1e6:.3g} us per op instance")
        held = [("llama-scaled", llama, None, s) for s in HELD_SAME_MODEL] + \
            [("qwen2.5-0.5b 2L", "qwen2.5-0.5b", 2, s) for s in HELD_OTHER_MODEL]
        print()
        head = (f"{'held-back step':34s} {'measured':>9s} {'roofline':>9s} {'err':>7s} "
                f"{'calib.':>9s} {'err':>7s} {'op err':>13s}")
        print(head)
        print("-" * len(head))
        before, after, op_b, op_a = [], [], [], []
        for label, model, layers, (phase, b, n) in held:
            print(f"held back: {label} {phase} batch {b} {n}", file=sys.stderr)
            r = _run(model, phase, b, n, a, hw, cal=cal, layers=layers)
            pj = r.phases[0]
            meas = pj.measurement.timing.median_s
            pred, calib = pj.predicted_time_s, pj.calibrated_time_s
            eb, ea = abs(pred - meas) / meas, abs(calib - meas) / meas
            ob, oa = _op_error(pj, False), _op_error(pj, True)
            before.append(eb)
            after.append(ea)
            op_b.append(ob)
            op_a.append(oa)
            name = f"{label} {phase} b{b} {'s' if phase == 'prefill' else 'c'}{n}"
            print(f"{name:34s} {meas * 1e3:7.2f}ms {pred * 1e3:7.2f}ms {eb:7.1%} "
                  f"{calib * 1e3:7.2f}ms {ea:7.1%} {ob:5.2f} -> {oa:4.2f}")
    mb, ma = sum(before) / len(before), sum(after) / len(after)
    print("-" * len(head))
    print(f"mean |step error| on held-back runs: roofline {mb:.1%}, calibrated {ma:.1%} "
          f"({mb / ma:.3g}x closer)" if ma > 0 else f"roofline {mb:.1%}, calibrated 0")
    print(f"mean per-op rms ln error: roofline {sum(op_b) / len(op_b):.2f}, calibrated "
          f"{sum(op_a) / len(op_a):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
