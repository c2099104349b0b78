"""perfscope profile (default branch): a model on one or more devices, both phases, a batch
sweep, this machine measured beside the predictions, in one self-contained HTML report
(reports/<model>_<hw>_<date>.html unless -o), with a summary on stdout.

Everything the command needs is checked before any work starts (names, dtypes, lengths, the
output folder, torch for measuring), so a mistake costs a second, not a measurement.
"""

from __future__ import annotations

import contextlib
import re
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from perfscope.cli.output import (
    check_format,
    log,
    out_width,
    show,
    to_csv_text,
    to_json_text,
    write_atomic,
)
from perfscope.cli.profile import ProfileArgs
from perfscope.errors import InputError

FORMATS = ("html", "table", "json", "csv")
SECTIONS = ("ceilings", "ops", "kernels", "comm", "torch")
# the torch section: the model itself (its first layers, from its config with random weights)
# under torch.profiler on this machine, beside the analytic ops
TORCH_LAYERS, TORCH_PROMPT = 2, 128
REPORTS_DIR = Path("reports")


# ---- the one adapter to the measuring side ----------------------------------------------

def measure_local(sections: Sequence[str] = ("ceilings", "ops"), *, quick: bool = True,
                  device: str | None = None, threads: int | None = None,
                  model: str = "qwen2.5-0.5b", hw: str | None = None,
                  progress: bool | None = None) -> dict[str, Any]:
    """Measure this machine; returns the ``perfscope.bench/1`` document (the one place the
    report calls the measuring side). The model's ops are predicted on this machine's
    measured roof (empirical ceilings), one sequence, 512-token prompt and context."""
    from perfscope.measure.session import OpsOptions, run_bench

    res = run_bench(tuple(sections), quick=quick, device=device, threads=threads, model=model,
                    hw=hw, progress=progress,
                    ops=OpsOptions(phases=("prefill", "decode"), batch=1, seq_len=512,
                                   context_len=512, ceiling="empirical"),
                    argv=["perfscope", *sys.argv[1:]])
    return res.to_json()


# ---- the serving helper's work (issue 8): recommendations and the Pareto front --------------

_SEARCHES: dict[int, tuple[Any, Any]] = {}


def _search(study: Any) -> Any:
    """The recommender's result for the study's model on its first device (GPUs = the
    layout's, the study's lengths, engine and targets), computed once per study."""
    hit = _SEARCHES.get(id(study))
    if hit is not None and hit[0] is study:
        return hit[1]
    from perfscope.recommend.search import recommend
    from perfscope.recommend.types import RecommendRequest

    b = study.base
    h = study.hws[0]
    gpus = b.tp * b.pp * b.attn_dp
    result = recommend(RecommendRequest(
        study.model, h.hw, gpus, study.isl, max(study.osl, 2), study.ttft_target_s,
        study.tpot_target_s, engine=study.engine, max_concurrency=512))
    _SEARCHES.clear()
    _SEARCHES[id(study)] = (study, result)
    return result


def recommendations(study: Any) -> list[dict[str, Any]] | None:
    """Recommendation records (rule, message, evidence, expected_gain) for the report's
    Recommendations section: ``perfscope recommend`` for the study's model on its first
    device, on the layout's GPU count, with the study's lengths, engine and targets. The
    first record states what was searched."""
    if not study.hws:
        return None
    r = _search(study)
    h = study.hws[0]
    lead = {"rule": "recommend.summary",
            "message": f"On {r.request.gpus} x {h.hw.display_name} (the layout's GPUs), isl "
                       f"{study.isl}, osl {r.request.osl}, {r.engine} engine"
                       + (f", TTFT <= {study.ttft_target_s} s" if study.ttft_target_s else "")
                       + (f", TPOT <= {study.tpot_target_s} s" if study.tpot_target_s
                          else "")
                       + f": {r.status.upper() if r.status != 'ok' else 'recommended'}: "
                       f"{r.message}",
            "evidence": {"candidates": r.searched["candidates"],
                         "fit": r.searched["feasible"],
                         "meeting_targets": r.searched["meeting_targets"]},
            "expected_gain": None}
    recs = [x.to_json() for x in r.recommendations]
    for x in recs:  # four significant digits read better on the page than seventeen
        x["evidence"] = {k: float(f"{v:.4g}") for k, v in x["evidence"].items()}
        if x["expected_gain"] is not None:
            x["expected_gain"] = float(f"{x['expected_gain']:.3g}")
    return [lead, *recs]


def pareto_figure(study: Any) -> dict[str, Any] | None:
    """The recommender's Pareto front (tokens/s per GPU against tokens/s per user) as a
    plotly figure dict; None when nothing fits."""
    if not study.hws:
        return None
    r = _search(study)
    if not r.pareto and not r.cloud:
        return None
    from perfscope.recommend.report import pareto_figure as figure

    return figure(r).to_plotly_json()


# ---- the command -------------------------------------------------------------------------

def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "model"


def default_path(model: str, hws: Sequence[str], when: float) -> Path:
    day = time.strftime("%Y-%m-%d", time.localtime(when))
    return REPORTS_DIR / f"{_slug(model)}_{'+'.join(_slug(h) for h in hws)}_{day}.html"


def _batches(text: str) -> list[int]:
    from perfscope.cli.analyze import int_list

    vals = int_list("--batches", text) or []
    if not vals:
        raise InputError("--batches: give at least one batch, e.g. 1,8,64")
    return vals


def _check_torch() -> None:
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        raise InputError("perfscope profile measures this machine with torch, which is not "
                         "installed: pip install torch==2.13.0 'perfscope[measure]' (or the "
                         "torch build for your GPU), or pass --no-measure")


def _versions(measured: dict[str, Any] | None) -> dict[str, str]:
    import importlib.metadata as md
    import platform

    from perfscope import __version__

    v = {"perfscope": __version__, "python": platform.python_version()}
    for pkg in ("plotly", "numpy", "torch"):
        with contextlib.suppress(md.PackageNotFoundError):
            v[pkg] = md.version(pkg)
    if measured:
        v |= {f"measured with {k}": str(x) for k, x in (measured.get("libraries") or {}).items()
              if k not in v}
    return v


def run(args: ProfileArgs) -> None:
    from dataclasses import replace

    from perfscope.report.study import build_study
    from perfscope.specs.loading import load_hw
    from perfscope.specs.model import load_model
    from perfscope.specs.precision import resolve_precision
    from perfscope.specs.scenario import Scenario

    fmt = check_format(args.fmt or "html", FORMATS)
    started = time.time()
    from perfscope.cli.analyze import split_list

    hw_names = split_list(args.hw)
    if not hw_names:
        raise InputError("--hw: give at least one device name or spec file")
    model = load_model(args.model)
    hws = [load_hw(h) for h in hw_names]
    batches = _batches(args.batches)
    for flag, v in (("--batch", args.batch), ("--isl", args.isl), ("--osl", args.osl)):
        if v < 1:
            raise InputError(f"{flag} {v}: must be a whole number >= 1")
    if args.isl + args.osl > model.max_position and not args.lengths_given:
        # the default workload does not fit this model's context (GPT-2: 1,024 tokens): keep
        # its shape, 7/8 prompt and 1/8 output, and say so
        isl = model.max_position * 7 // 8
        args = replace(args, isl=isl, osl=model.max_position - isl)
        log(f"perfscope profile: {model.name} holds {model.max_position:,} tokens: prompt "
            f"{args.isl:,} + output {args.osl:,} (set --isl / --osl to choose)")
    if args.isl + args.osl > model.max_position:
        raise InputError(f"--isl {args.isl} + --osl {args.osl} = {args.isl + args.osl} tokens "
                         f"exceed the {model.max_position}-token context of {model.name}; "
                         "shorten them")
    base = Scenario(weight_dtype=args.weight_dtype, act_dtype=args.act_dtype,
                    kv_dtype=args.kv_dtype, group_size=args.group_size, tp=args.tp,
                    pp=args.pp, ep=args.ep, attn_dp=args.attn_dp, attention=args.attention,
                    memory_reserve=args.reserve)
    for hw in hws:  # a dtype one of the devices lacks fails now, naming it
        try:
            resolve_precision(base, hw, model)
        except InputError as e:
            raise InputError(f"--hw {hw.name}: {e}") from None
    measure = args.measure and (not args.bench or args.measure_given)
    sections = [s for s in (x.strip() for x in args.sections.split(",")) if s]
    bad = [s for s in sections if s not in SECTIONS]
    if bad:
        raise InputError(f"--measure-sections {','.join(bad)}: use some of "
                         f"{','.join(SECTIONS)}")
    path = args.output
    if fmt == "html" and path is None:
        path = default_path(model.name, [h.name for h in hws], started)
    elif path is not None and not path.parent.is_dir():
        raise InputError(f"--output {path}: the folder {path.parent} does not exist; create "
                         "it first or choose another path")
    bench_sections = [s for s in sections if s != "torch"] if measure else []
    torch_here = measure and "torch" in sections
    if bench_sections:
        _check_torch()
    if torch_here:
        from perfscope.measure.torchprof.profile import check_torch

        check_torch(transformers=True)
    imported = merge_bench([(p, _read_bench(p)) for p in args.bench]) if args.bench else None
    torch_docs = [_read_torch_profile(p) for p in args.torch_profiles]

    from perfscope.serving.engines import get_engine

    engine = get_engine(args.engine).name  # an unknown engine fails now, naming the flag
    for flag, t in (("--ttft", args.ttft), ("--tpot", args.tpot)):
        if t is not None and not t > 0:
            raise InputError(f"{flag} {t}: must be a positive number of seconds")
    study = build_study(model, hws, replace(base), batch=args.batch, isl=args.isl,
                        osl=args.osl, batches=batches, engine=engine,
                        ttft_target_s=args.ttft, tpot_target_s=args.tpot)
    measured = imported
    if bench_sections:
        log(f"perfscope profile: measuring this machine ({', '.join(bench_sections)} of "
            f"{model.name}, {'quick' if args.quick else 'full'}); --no-measure skips this")
        measured = measure_local(bench_sections, quick=args.quick, device=args.device,
                                 threads=args.threads, model=args.model)
    if torch_here:
        torch_docs.append(profile_torch_here(args.model, device=args.device,
                                             threads=args.threads))
    command = shlex.join(["perfscope", *sys.argv[1:]])
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))
    versions = _versions(measured)
    _output(fmt, study, path, measured, command, created, versions,
            default_folder=args.output is None, torch_docs=torch_docs)


def profile_torch_here(model: str, *, device: str | None, threads: int | None
                       ) -> dict[str, Any]:
    """The model's first layers under torch.profiler on this machine: a
    ``perfscope.profile/1`` document (perfscope profile --torch-model's JSON)."""
    from perfscope.measure.torchprof.profile import ProfileOptions, profile_transformers

    log(f"perfscope profile: profiling {model} ({TORCH_LAYERS} layers, prompt "
        f"{TORCH_PROMPT}, prefill and decode) under torch.profiler")
    opts = ProfileOptions(device=device, layers=TORCH_LAYERS, seq_len=TORCH_PROMPT,
                          threads=threads, warmup=1, repeat=3)
    return profile_transformers(model, opts).to_json()


def _read_doc(path: Path, flag: str, schema: str, how: str) -> dict[str, Any]:
    """A JSON document of ``schema`` given to ``flag``, or a one-line error saying ``how`` to
    write one."""
    import json

    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{flag} {path}: file does not exist") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise InputError(f"{flag} {path}: not a JSON file ({e})") from None
    if not isinstance(doc, dict) or doc.get("schema") != schema:
        raise InputError(f"{flag} {path}: not a {schema} document; write one with `{how}`")
    return doc


def _read_torch_profile(path: Path) -> dict[str, Any]:
    return _read_doc(path, "--torch-profile", "perfscope.profile/1",
                     "perfscope profile --torch-model --format json -o FILE")


def _read_bench(path: Path) -> dict[str, Any]:
    return _read_doc(path, "--bench", "perfscope.bench/1",
                     "perfscope bench --format json -o FILE")


BENCH_SECTIONS = ("ceilings", "ops", "kernels", "comm")


def merge_bench(docs: Sequence[tuple[Path, dict[str, Any]]]) -> dict[str, Any]:
    """Several ``perfscope.bench/1`` documents of one device as one: each section from the
    file that holds it; ops of several files (prefill, decode at two batches) side by side
    when they are one model's on one roof. A section in two files, or files of two devices,
    is refused: a report's measured sections describe one machine."""
    (first, base), rest = docs[0], docs[1:]
    out = dict(base)
    dev = (base.get("device") or {}).get("name")
    held = {s: first for s in BENCH_SECTIONS if base.get(s)}
    for path, doc in rest:
        other = (doc.get("device") or {}).get("name")
        if other != dev:
            raise InputError(f"--bench {path}: measured on {other or 'an unnamed device'}, "
                             f"{first} on {dev or 'an unnamed device'}: give one device's "
                             "files")
        for s in BENCH_SECTIONS:
            if not doc.get(s):
                continue
            if s not in held:
                out[s], held[s] = doc[s], path
            elif s == "ops":
                out["ops"] = _merge_ops(out["ops"], doc["ops"], held["ops"], path)
            else:
                raise InputError(f"--bench {path}: {held[s]} already holds the {s}; give one "
                                 f"file with {s}")
        if doc.get("command") and doc["command"] not in str(out.get("command")):
            out["command"] = f"{out.get('command')}; {doc['command']}"
        out["skipped"] = [*(out.get("skipped") or []), *(doc.get("skipped") or [])]
        out["duration_s"] = (out.get("duration_s") or 0.0) + (doc.get("duration_s") or 0.0)
    return out


def _merge_ops(a: dict[str, Any], b: dict[str, Any], pa: Path, pb: Path) -> dict[str, Any]:
    for key in ("model", "hardware", "ceiling"):
        if a.get(key) != b.get(key):
            raise InputError(f"--bench {pb}: ops of {key} {b.get(key)!r}, {pa} of "
                             f"{a.get(key)!r}: merge only one model's ops on one roof")
    notes = [n for n in (a.get("roof_note"), b.get("roof_note")) if n]
    return {**a, "scenarios": [*(a.get("scenarios") or []), *(b.get("scenarios") or [])],
            "points": [*(a.get("points") or []), *(b.get("points") or [])],
            "decode_sweep_batches": sorted({*(a.get("decode_sweep_batches") or []),
                                            *(b.get("decode_sweep_batches") or [])}),
            "roof_note": " ".join(notes) if notes else a.get("roof_note"),
            "duration_s": (a.get("duration_s") or 0.0) + (b.get("duration_s") or 0.0)}


def _output(fmt: str, study: Any, path: Path | None, measured: dict[str, Any] | None,
            command: str, created: str, versions: dict[str, str], *,
            default_folder: bool, torch_docs: Sequence[dict[str, Any]] = ()) -> None:
    from perfscope.report.profile_text import summary_renderables

    if fmt == "json":
        from perfscope.report.profile_doc import report_document

        doc = report_document(study, created=created, command=command, versions=versions,
                              measured=measured)
        if torch_docs:
            doc["torch_profiles"] = list(torch_docs)
        text = to_json_text(doc)
        _emit(text, path)
        return
    if fmt == "csv":
        from perfscope.report.profile_doc import report_csv_rows

        _emit(to_csv_text(report_csv_rows(study)), path)
        return
    if fmt == "table":
        from perfscope.report.tables import analysis_renderables

        width = out_width(path)
        parts = summary_renderables(study, width, measured=measured)
        for h in study.hws:
            for a in (h.spec.prefill, h.spec.decode):
                parts += ["", *analysis_renderables(a, width)]
        show(parts, path, width)
        return
    from perfscope.io import write_atomic as write
    from perfscope.report.page import ReportInput, render_report

    assert path is not None
    html = render_report(ReportInput(study, command, created, versions, measured,
                                     recommendations(study), pareto_figure(study),
                                     torch_profiles=tuple(torch_docs)))
    # reports/ is ours to create; a folder named with -o must already exist
    write(path, html, what="--output", make_parents=default_folder)
    width = out_width(None)
    show(summary_renderables(study, width, str(path), measured), None, width)


def _emit(text: str, path: Path | None) -> None:
    if path is None:
        sys.stdout.write(text)
    else:
        write_atomic(path, text)
        log(f"wrote {path}")


__all__ = ["measure_local", "run"]
