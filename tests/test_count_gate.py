"""The exact-count gate: the analytic results of fixed cases must match the snapshot in
tests/snapshots/counts.json. Runs in every CI run (about a second).

If this fails after an intended modelling change, read the diff, then update the snapshot
deliberately: `python -m perfscope regress counts --update` (it prints what changed).
"""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path

import pytest

from perfscope.regress import counts

SNAPSHOT = Path(__file__).parent / "snapshots" / "counts.json"


@pytest.fixture(scope="module")
def current() -> dict:
    return counts.collect()


def test_analytic_counts_match_the_snapshot(current: dict) -> None:
    changes = counts.diff(counts.load_snapshot(SNAPSHOT), current)
    assert not changes, counts.render_diff(changes, str(SNAPSHOT))


def test_snapshot_file_is_what_the_update_command_writes(current: dict) -> None:
    # stable key order and layout: an update without a change rewrites the same bytes
    assert SNAPSHOT.read_text(encoding="utf-8") == counts.dumps(current)


def test_a_planted_flop_change_fails_with_a_diff_naming_the_op(monkeypatch) -> None:
    # the gated MLP's activation: silu(gate) * up, counted 4 + 1 FLOPs per element; plant 5
    from perfscope.specs.model import activations

    monkeypatch.setitem(activations.ACT_FLOPS, "silu", 5)
    changes = counts.diff(counts.load_snapshot(SNAPSHOT), counts.collect())
    text = counts.render_diff(changes, str(SNAPSHOT))
    assert changes
    # Llama-3.1-8B prefill of 2048 tokens: intermediate 14336, so 14336 x 2048 = 29,360,128
    # elements at (4 + 1) = 146,800,640 FLOPs before and (5 + 1) = 176,160,768 after
    assert "dense-prefill: op mlp.act flops: 146800640 -> 176160768 (+20.00%)" in text, text
    acts = [c for c in changes if c.path[:1] == ("ops",) and c.path[-1] == "flops"]
    assert acts and all(c.path[1].endswith("act") and c.relative > 0 for c in acts)
    # only silu models move: gpt2 (gelu) and opt (relu) keep their counts
    assert not any(c.case in ("mha-learned-pos", "mha-relu-layernorm-decode") for c in changes)
    assert "ops changed: mlp.act" in text
    assert counts.UPDATE_COMMAND in text
    # the change reaches the totals too, and only numbers that depend on it move
    assert any(c.path == ("totals", "flops_by_kind", "elementwise") for c in changes)
    assert not any(c.path[:1] == ("memory",) for c in changes)


def test_removed_renamed_and_added_ops_fail(current: dict) -> None:
    old = copy.deepcopy(current)
    ops = old["cases"]["dense-prefill"]["ops"]
    ops["mlp.act_renamed"] = ops.pop("mlp.act")
    del old["cases"]["gqa-decode-tp4"]["ops"]["attn.core"]
    text = counts.render_diff(counts.diff(old, current))
    assert "dense-prefill: op mlp.act_renamed: removed" in text
    assert "dense-prefill: op mlp.act: added" in text
    assert "gqa-decode-tp4: op attn.core: added" in text


def test_new_json_fields_pass_but_a_dropped_field_fails(monkeypatch, current: dict) -> None:
    from perfscope import analysis

    orig = analysis._op_row
    monkeypatch.setattr(analysis, "_op_row", lambda p: orig(p) | {"new_field": 1.0})
    assert counts.diff(current, counts.collect()) == []  # a schema addition needs no update

    def without_dequant(p):
        row = orig(p)
        del row["dequant_flops"]
        return row

    monkeypatch.setattr(analysis, "_op_row", without_dequant)
    changes = counts.diff(current, counts.collect())
    assert changes and all(c.path[-1] == "dequant_flops" for c in changes)
    assert "<missing>" in counts.describe(changes[0])


def test_tolerance_is_last_bits_only(current: dict) -> None:
    new = copy.deepcopy(current)
    op = new["cases"]["dense-prefill"]["ops"]["attn.qkv_proj"]
    op["time_s"] *= 1 + 1e-15
    assert counts.diff(current, new) == []
    op["time_s"] *= 1 + 1e-9
    (c,) = counts.diff(current, new)
    assert c.path == ("ops", "attn.qkv_proj", "time_s")
    assert "+1e-07%" in counts.describe(c)
    new["cases"]["dense-prefill"]["totals"]["bound"] = "memory"
    assert any(c.path == ("totals", "bound") for c in counts.diff(current, new))


def test_cases_cover_the_architectures_and_scenarios() -> None:
    from perfscope.api import load_hw, load_model

    models = {m: load_model(m) for _, m, _, _ in counts.CASES}
    scen = [sc for *_, sc in counts.CASES]
    assert any(m.mla is not None for m in models.values())
    assert any(m.moe is not None for m in models.values())
    assert any(len(m.window_groups) > 1 or m.window_groups[0][0] for m in models.values())
    assert any(m.n_kv_heads < m.n_heads for m in models.values())  # GQA
    assert any(m.n_kv_heads == m.n_heads for m in models.values())  # MHA
    assert {sc["phase"] for sc in scen} == {"prefill", "decode", "chunked_prefill"}
    for knob in ("tp", "pp", "ep"):
        assert any(sc.get(knob, 1) > 1 for sc in scen), knob
    assert {"int4", "int8", "fp8"} <= {sc.get("weight_dtype") for sc in scen}
    assert {"fp8", "int8"} <= {sc.get("kv_dtype") for sc in scen}
    assert any(sc.get("attention") == "unfused" for sc in scen)
    assert any(sc.get("ceiling") == "empirical" for sc in scen)
    for _, _, hw, _ in counts.CASES:
        load_hw(hw)


def test_update_command_round_trip(tmp_path: Path, capsys) -> None:
    from perfscope.cli import main

    snap = tmp_path / "counts.json"

    def cli(*args: str) -> subprocess.CompletedProcess:
        try:
            main(["regress", "counts", "--snapshot", str(snap), *args])
            code = 0
        except SystemExit as e:
            code = int(e.code or 0)
        out = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out.out, out.err)

    r = cli()
    assert r.returncode == 2 and "--update" in r.stderr and "\n" not in r.stderr.strip()
    assert cli("--update").returncode == 0
    assert cli().returncode == 0
    doc = json.loads(snap.read_text())
    doc["cases"]["moe-decode-tp2"]["ops"]["moe.router"]["flops"] = 1.0
    snap.write_text(json.dumps(doc))
    r = cli()
    assert r.returncode == 1
    assert "moe-decode-tp2: op moe.router flops: 1 ->" in r.stdout
    r = cli("--format", "json")
    assert r.returncode == 1
    (row,) = json.loads(r.stdout)["changes"]
    assert (row["case"], row["op"], row["field"], row["old"]) == ("moe-decode-tp2",
                                                                  "moe.router", "flops", 1.0)
    r = cli("--update")
    assert r.returncode == 0 and "updated, 1 change(s)" in r.stdout
    assert cli().returncode == 0
