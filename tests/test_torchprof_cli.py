"""perfscope profile --torch-model / --module as a user runs it: every format, -o, --trace,
--calibration-out then --calibration, the report section, and one-line errors before any work.
A tiny Llama config keeps each run to a second or two."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from perfscope.cli import main

TINY = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 160,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 256, "max_position_embeddings": 128}
RUN = ["--torch-model", "--device", "cpu", "--threads", "1", "--seq-len", "8",
       "--context-len", "12", "--batch", "2", "--warmup", "1", "--repeat", "2"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    cfg = d / "tiny.json"
    cfg.write_text(json.dumps(TINY))
    mp = pytest.MonkeyPatch()
    mp.setenv("PERFSCOPE_LOCAL_HW", str(d / "no-local.toml"))  # quick measurement
    mp.setenv("COLUMNS", "80")
    yield d, cfg
    mp.undo()


def _run(capsys, args: list[str]) -> tuple[int, str, str]:
    try:
        main(args)
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def profiled(env):
    """One JSON run with -o, --trace and --calibration-out (module-scoped: run once)."""
    d, cfg = env
    out, trace, cal = d / "p.json", d / "trace.json", d / "cal.json"
    main(["profile", "--model", str(cfg), *RUN, "--format", "json", "-o", str(out),
          "--trace", str(trace), "--calibration-out", str(cal)])
    return json.loads(out.read_text()), trace, cal


def test_json_is_the_profile_contract(profiled):
    j, _, _ = profiled
    assert j["schema"] == "perfscope.profile/1"
    assert {"model", "hardware", "device", "ops"} <= set(j)
    for o in j["ops"]:
        assert {"name", "kind", "analytic_flops", "profiled_flops", "measured_time_s",
                "predicted_time_s", "module", "count", "bytes", "achieved_flops_per_s"} <= set(o)
    assert {p["phase"] for p in j["phases"]} == {"prefill", "decode"}
    assert j["hardware"]["name"] == "local" and "quick" in j["hardware"]["source"]


def test_trace_and_calibration_files(profiled):
    _, trace, cal = profiled
    assert isinstance(json.loads(trace.read_text())["traceEvents"], list)
    c = json.loads(cal.read_text())
    assert c["schema"] == "perfscope.calibration/1" and c["hardware"] == "local"
    assert c["kinds"]["gemm"]["n"] == 10  # qkv, o, gate_up, down, lm_head x 2 phases
    assert "step_mean_abs_rel_error" in c["fit_error"]
    assert c["device"]["kind"] == "cpu" and c["source"]["runs"]


def test_calibration_applied_gives_calibrated_times(env, profiled, capsys):
    _d, cfg = env
    _, _, cal = profiled
    code, out, err = _run(capsys, ["profile", "--model", str(cfg), *RUN, "--phases", "decode",
                                   "--format", "json", "--calibration", str(cal)])
    assert code == 0, err
    j = json.loads(out)
    analytic = [o for o in j["ops"] if o["predicted_time_s"] is not None]
    assert analytic and all(o["calibrated_time_s"] > 0 for o in analytic)
    c = json.loads(cal.read_text())
    for o in analytic:  # the file's affine map, per instance, times the count
        k = c["kinds"].get(o["kind"])
        if k:
            per = o["predicted_time_s"] / o["count"]
            calls = c["calls_per_op"][o["name"]]
            assert o["calibrated_time_s"] == pytest.approx(
                (k["scale"] * per + k["fixed_s"] * calls) * o["count"], rel=1e-9)
    # eager RMSNorm is several torch calls per instance, a projection one
    assert c["calls_per_op"]["attn.norm"] > 1 and c["calls_per_op"]["lm_head"] == 1
    assert j["phases"][0]["calibrated_time_s"] > 0
    assert j["calibration"]["hardware"] == "local"


def test_table_fits_80_columns_and_csv(env, capsys):
    _d, cfg = env
    code, out, err = _run(capsys, ["profile", "--model", str(cfg), *RUN, "--phases",
                                   "prefill"])
    assert code == 0, err
    assert "attn.qkv_proj" in out and "framework.overhead" in out and "measured" in out
    assert max(len(line) for line in out.splitlines()) <= 80
    code, out, err = _run(capsys, ["profile", "--model", str(cfg), *RUN, "--phases",
                                   "decode", "--format", "csv"])
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("phase,name,kind,count,analytic_flops,profiled_flops")
    assert any(line.startswith("decode,lm_head,gemm,1,") for line in lines)


def test_module_factory_from_the_cli(env, capsys):
    code, out, err = _run(capsys, ["profile", "--module", "tests.torchprof_factory:make",
                                   "--device", "cpu", "--threads", "1", "--repeat", "2",
                                   "--warmup", "1", "--format", "json"])
    assert code == 0, err
    names = {o["name"] for o in json.loads(out)["ops"]}
    assert {"up", "down", "norm", "act", "(root)", "framework.overhead"} <= names


def test_report_section(profiled):
    from perfscope.report.torchprof_section import torchprof_section_html

    j, _, _ = profiled
    j = json.loads(json.dumps(j))
    j["model"]["name"] = "<script>alert(1)</script>"
    h = torchprof_section_html(j)
    assert h.startswith("<section") and h.rstrip().endswith("</section>")
    assert "<script>alert(1)</script>" not in h and "&lt;script&gt;alert(1)" in h
    assert h.count("class=\"plotly-graph-div\"") == 2  # one figure per phase
    assert "cdn.plot.ly" not in h and "<html" not in h  # no plotly.js, no page
    assert "where the roofline says it should go" in h and "framework.overhead" in h


@pytest.mark.parametrize(("args", "msg"), [
    (["--format", "html"], "--format html"),
    (["--trace", "/no/such/dir/t.json"], "--trace /no/such/dir/t.json: the folder"),
    (["--phases", "warmup"], "--phases warmup"),
    (["--attn-impl", "flash"], "--attn-impl 'flash'"),
    (["--dtype", "int8"], "--dtype 'int8'"),
    (["--device", "tpu"], "--device 'tpu'"),
])
def test_bad_options_fail_in_one_line(env, capsys, args, msg):
    _d, cfg = env
    code, out, err = _run(capsys, ["profile", "--model", str(cfg), *RUN, *args])
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and msg in err


def _one_error_line(err: str) -> str:
    errors = [line for line in err.splitlines() if line.startswith("perfscope: error:")]
    assert len(errors) == 1 and "Traceback" not in err
    return errors[0]


def test_bad_factory_and_missing_extra(env, capsys, monkeypatch):
    code, _, err = _run(capsys, ["profile", "--module", "tests.torchprof_factory:bad",
                                 "--device", "cpu"])
    assert code == 2 and "returned int" in _one_error_line(err)
    code, _, err = _run(capsys, ["profile", "--module", "tests.no_such_module:f"])
    assert code == 2 and "cannot import tests.no_such_module" in _one_error_line(err)

    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "transformers" else real(name, *a))
    code, _, err = _run(capsys, ["profile", "--model", "gpt2", "--torch-model"])
    assert code == 2 and "perfscope[torchprof]" in err and err.count("\n") == 1


def test_calibration_for_another_device_is_refused_before_building(env, capsys, profiled):
    d, cfg = env
    c = json.loads(profiled[2].read_text())
    c["hardware"] = "h100-sxm"
    other = d / "other.json"
    other.write_text(json.dumps(c))
    code, _, err = _run(capsys, ["profile", "--model", str(cfg), *RUN, "--calibration",
                                 str(other)])
    assert code == 2 and "fitted against predictions for 'h100-sxm'" in _one_error_line(err)
