"""Profile a transformers model or a user's module end to end: build, run, attribute, join."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perfscope.errors import InputError
from perfscope.measure.torchprof.result import ProfileResult

PHASES = ("prefill", "decode")


@dataclass(frozen=True)
class ProfileOptions:
    """How to run. ``device`` None: cuda when present, else cpu; ``dtype`` None: bf16 on
    CUDA, fp32 on a CPU (CPUs without AMX run bf16 GEMMs by conversion, far below fp32)."""

    device: str | None = None
    dtype: str | None = None
    attn: str = "sdpa"  # transformers attention: sdpa | eager
    batch: int = 1
    seq_len: int = 128  # prompt tokens (prefill)
    context_len: int | None = None  # tokens cached before the decode step (None: seq_len)
    phases: tuple[str, ...] = PHASES
    warmup: int = 2
    repeat: int = 5
    trace: bool = False
    hw: Any = None  # spec name/file or HardwareSpec for predictions (None: measured here)
    layers: int | None = None
    calibration: Any = None  # a perfscope.calibration.Calibration to apply
    threads: int | None = None  # CPU: torch intra-op threads (None: torch's default)


def check_torch(*, transformers: bool) -> None:
    """A one-line error naming the extra when torch (or transformers) is missing."""
    import importlib.util

    need = ["torch"] + (["transformers"] if transformers else [])
    missing = [m for m in need if importlib.util.find_spec(m) is None]
    if missing:
        raise InputError(f"profiling a PyTorch model needs {' and '.join(missing)}: "
                         "pip install 'perfscope[torchprof]'")


def resolve_device(device: str | None, dtype: str | None) -> tuple[str, str]:
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device != "cpu" and not device.startswith("cuda"):
        raise InputError(f"--device {device!r}: use cpu, cuda or cuda:N")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"--device {device}: torch sees no CUDA device here; use cpu")
        idx = torch.device(device).index or 0
        if idx >= torch.cuda.device_count():
            raise InputError(f"--device {device}: only {torch.cuda.device_count()} CUDA "
                             "device(s)")
    if dtype is None:
        dtype = "bf16" if device.startswith("cuda") else "fp32"
    from perfscope.measure.torchprof.build import torch_dtype

    torch_dtype(dtype)  # validates
    return device, dtype


def validate_options(o: ProfileOptions) -> None:
    """One-line errors for bad options, before anything is built."""
    if o.device is not None and o.device != "cpu" and not o.device.startswith("cuda"):
        raise InputError(f"--device {o.device!r}: use cpu, cuda or cuda:N")
    if o.dtype is not None:
        from perfscope.measure.torchprof.build import TORCH_DTYPES

        if o.dtype not in TORCH_DTYPES:
            raise InputError(f"--dtype {o.dtype!r}: the torch profiler runs fp32, bf16 or "
                             "fp16")
    if o.repeat < 2:
        raise InputError(f"--repeat {o.repeat}: at least 2 steps make a median")
    if o.warmup < 0:
        raise InputError(f"--warmup {o.warmup}: must be >= 0")
    if o.threads is not None and o.threads < 1:
        raise InputError(f"--threads {o.threads}: must be >= 1")
    for flag, v in (("--batch", o.batch), ("--seq-len", o.seq_len)):
        if v < 1:
            raise InputError(f"{flag} {v}: must be >= 1")
    if o.context_len is not None and o.context_len < 1:
        raise InputError(f"--context-len {o.context_len}: decode needs at least 1 cached token")
    bad = [p for p in o.phases if p not in PHASES]
    if bad or not o.phases:
        raise InputError(f"--phases {','.join(o.phases)}: use prefill, decode or both")
    if o.attn not in ("sdpa", "eager"):
        raise InputError(f"--attn-impl {o.attn!r}: use sdpa or eager")


@contextlib.contextmanager
def cpu_threads(threads: int | None, device: str) -> Iterator[None]:
    """torch's intra-op threads for the block (CPU only), restored after."""
    import torch

    if threads is None or device != "cpu":
        if threads is not None:
            raise InputError("--threads applies to --device cpu")
        yield
        return
    if threads < 1:
        raise InputError(f"--threads {threads}: must be >= 1")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _timing_note(device: str, clock: str) -> str:
    if device.startswith("cuda"):
        return ("op times are the GPU kernels each op launched (CUPTI, from the profiled "
                "steps); the step time is the synchronised wall time of uninstrumented steps")
    what = ("on the thread's CPU time, which other processes sharing the CPU do not inflate "
            "(one torch thread)" if clock == "thread_time" else "on wall time")
    return (f"op times: every top-level torch call clocked in a timing run {what}; not "
            "under the profiler, whose per-event cost would inflate small CPU ops; the step "
            "time: uninstrumented steps on the same clock (step_wall_time_s: wall)")


def _env_notes(threads: int, device: str) -> list[str]:
    notes = []
    if device == "cpu" and hasattr(os, "getloadavg"):
        load = os.getloadavg()[0]
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        if load > cores:
            notes.append(f"load average {load:.1f} on {cores} cores: other processes shared "
                         "the CPU, timings are noisy")
    notes.append(f"{threads} torch thread{'' if threads == 1 else 's'}")
    return notes


def profile_transformers(model: str, o: ProfileOptions) -> ProfileResult:
    """Build ``model`` (built-in name or config.json) with transformers, random weights, and
    profile its prefill and decode steps against the analytic graph of the same config."""
    check_torch(transformers=True)
    validate_options(o)
    device, dtype = resolve_device(o.device, o.dtype)
    with cpu_threads(o.threads, device):
        return _profile_transformers(model, o, device, dtype)


def _profile_transformers(model: str, o: ProfileOptions, device: str,
                          dtype: str) -> ProfileResult:
    from perfscope.analysis import analyze
    from perfscope.measure.torchprof.attribute import attribute
    from perfscope.measure.torchprof.build import build_hf_model, hf_config_dict
    from perfscope.measure.torchprof.ceilings import device_hardware
    from perfscope.measure.torchprof.join import join_phase
    from perfscope.measure.torchprof.roles import arch_info, make_classifier
    from perfscope.measure.torchprof.run import hf_phases, measure
    from perfscope.specs.model import load_model, model_from_config, read_config
    from perfscope.specs.scenario import Scenario

    base = load_model(model)
    cfg = hf_config_dict(read_config(Path(base.source)), o.layers)
    spec = model_from_config(cfg, base.name, base.source)
    hw, hw_source, desc = device_hardware(device, dtype, o.hw)
    if o.calibration is not None:
        from perfscope.calibration import check_applicable

        check_applicable(_probe(spec, hw, dtype, o), o.calibration)
    context = o.context_len if o.context_len is not None else o.seq_len
    net = build_hf_model(cfg, device=device, dtype=dtype, attn=o.attn)
    phases = hf_phases(net, batch=o.batch, seq_len=o.seq_len, context_len=context,
                       phases=o.phases, device=device)
    run = measure(net, phases, device=device, warmup=o.warmup, repeat=o.repeat, trace=o.trace)
    mods = [(n, type(m).__name__) for n, m in net.named_modules()]
    classify = make_classifier(mods, arch_info(spec, unfused_attention=o.attn == "eager"))
    measured = attribute(run, classify, dict(mods))
    joins = []
    for pm in measured:
        prefill = pm.phase == "prefill"
        scenario = Scenario(phase=pm.phase, batch=o.batch, seq_len=o.seq_len if prefill else 1,
                            context_len=0 if prefill else context, weight_dtype=dtype,
                            act_dtype=dtype, kv_dtype=dtype,
                            attention="unfused" if o.attn == "eager" else "flash",
                            fused_norm=False)
        joins.append(join_phase(analyze(spec, hw, scenario), pm, cal=o.calibration))
    n_params = sum(p.numel() for p in net.parameters())
    import transformers

    notes = list(run.notes) + _env_notes(run.threads, device) + [
        "weights are random (built from the config, nothing downloaded)",
        _timing_note(device, run.clock),
        f"analytic graph: attention {'unfused (eager)' if o.attn == 'eager' else 'flash'}, "
        "residual adds unfused, LM head on the last position only, as transformers runs it"]
    if not run.functions_wrapped:
        notes.append("no transformers function was wrapped (rotary, attention): their ops "
                     "are classified by name only")
    return ProfileResult(
        model={"name": spec.name, "source": "transformers", "config": spec.source,
               "class": type(net).__name__, "model_type": spec.model_type,
               "layers": spec.n_layers, "params": n_params, "analytic_params": spec.params},
        hardware=_hw_json(hw, hw_source, dtype),
        device={**desc, "device": device, "torch_threads": run.threads},
        config={"dtype": dtype, "attn_implementation": o.attn, "batch": o.batch,
                "seq_len": o.seq_len, "context_len": context, "phases": list(o.phases),
                "warmup": o.warmup, "repeat": o.repeat, "transformers": transformers.__version__,
                "torch": _torch_version(), "functions_wrapped": list(run.functions_wrapped)},
        phases=tuple(joins), notes=tuple(notes), trace_json=run.trace_json,
        calibration=_cal_json(o.calibration))


def profile_module(factory: str, o: ProfileOptions) -> ProfileResult:
    """Profile the user's module from ``factory`` (see build.py for the contract): time,
    FLOPs and bytes per module, each placed on the device's measured roofline."""
    check_torch(transformers=False)
    validate_options(o)
    if o.calibration is not None:
        raise InputError("--calibration applies to --torch-model runs (predictions of the "
                         "analytic graph), not to --module")
    device, dtype = resolve_device(o.device, o.dtype)
    with cpu_threads(o.threads, device):
        return _profile_module(factory, o, device, dtype)


def _profile_module(factory: str, o: ProfileOptions, device: str, dtype: str) -> ProfileResult:
    from perfscope.measure.torchprof.attribute import attribute
    from perfscope.measure.torchprof.build import call_factory
    from perfscope.measure.torchprof.ceilings import device_hardware
    from perfscope.measure.torchprof.join import join_module_phase
    from perfscope.measure.torchprof.run import measure, module_phase

    um = call_factory(factory, device=device, dtype=dtype)
    hw, hw_source, desc = device_hardware(device, dtype, o.hw)
    run = measure(um.module, [module_phase(um)], device=device, warmup=o.warmup,
                  repeat=o.repeat, trace=o.trace)
    mods = dict((n, type(m).__name__) for n, m in um.module.named_modules())

    def classify(module: str, tag: str | None, op: str, index: int, dim: int | None) -> str:
        return module

    measured = attribute(run, classify, mods)
    joins = tuple(join_module_phase(pm, hw, dtype, "spec", mods) for pm in measured)
    notes = list(run.notes) + _env_notes(run.threads, device) + [_timing_note(device, run.clock),
        "no analytic graph for a user module: predicted_time_s is the roofline time of each "
        "module's own profiled FLOPs (matrix products only) and bytes"]
    return ProfileResult(
        model={"name": um.name, "source": "module", "factory": factory,
               "class": type(um.module).__name__,
               "params": sum(p.numel() for p in um.module.parameters())},
        hardware=_hw_json(hw, hw_source, dtype),
        device={**desc, "device": device, "torch_threads": run.threads},
        config={"dtype": dtype, "warmup": o.warmup, "repeat": o.repeat,
                "torch": _torch_version()},
        phases=joins, notes=tuple(notes), trace_json=run.trace_json)


def _probe(spec: Any, hw: Any, dtype: str, o: ProfileOptions) -> Any:
    """A cheap analysis to check a calibration against before any model is built."""
    from perfscope.analysis import analyze
    from perfscope.specs.scenario import Scenario

    return analyze(spec, hw, Scenario(phase="prefill", batch=1, seq_len=1, weight_dtype=dtype,
                                      act_dtype=dtype, kv_dtype=dtype))


def _hw_json(hw: Any, source: str, dtype: str) -> dict[str, Any]:
    return {"name": hw.name, "display_name": hw.display_name, "source": source,
            "ceiling": "spec", "dtype": dtype,
            "peak_flops_per_s": hw.tensor_flops(dtype)[0],
            "vector_flops_per_s": hw.vector_flops(dtype),
            "memory_bandwidth_bytes_s": hw.memory_bandwidth("spec")[0]}


def _cal_json(cal: Any) -> dict[str, Any] | None:
    if cal is None:
        return None
    return {"hardware": cal.hardware, "dtype": cal.dtype, "created": cal.created,
            "source": dict(cal.source), "fit_error": dict(cal.fit_error)}


def _torch_version() -> str:
    import torch

    return str(torch.__version__)


def fit_from_profiles(results: list[ProfileResult], *, source: dict[str, Any] | None = None):
    """A Calibration fitted on the joined ops and steps of one or more profiles (same device,
    same hardware spec, same dtype)."""
    from perfscope.calibration import fit_calibration

    if not results:
        raise InputError("no profile to fit a calibration on")
    first = results[0]
    for r in results[1:]:
        if r.hardware["name"] != first.hardware["name"] or r.config["dtype"] != \
                first.config["dtype"]:
            raise InputError("calibrating on profiles of different hardware specs or dtypes; "
                             "fit each separately")
    ops, steps = [], []
    for r in results:
        o, s = r.calibration_samples()
        ops += o
        steps += s
    runs = [{"model": r.model.get("name"), "layers": r.model.get("layers"),
             "phase": p.phase, **dict(p.measurement.shape),
             "attention": r.config.get("attn_implementation")}
            for r in results for p in r.phases]
    return fit_calibration(
        ops, steps, hardware=str(first.hardware["name"]), ceiling="spec",
        dtype=str(first.config["dtype"]),
        device={k: v for k, v in first.device.items() if k != "load_average_1m"},
        source={"tool": "perfscope profile --torch-model", "hardware_source":
                first.hardware.get("source"), "runs": runs, **(source or {})})
