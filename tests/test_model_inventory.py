"""One weight inventory: parameters, memory and GEMM weight traffic agree with one another.

The parameter counts themselves are checked against transformers in
test_crosscheck_transformers.py; here the three uses of the inventory are checked against each
other, so a weight taught in one place shows up in all three.
"""

from __future__ import annotations

import pytest

from perfscope.api import Scenario, analyze, load_hw, load_model
from perfscope.specs.model import model_files
from perfscope.specs.model.counting import full_split, layer_weights

BF16 = 2
DENSE = [p.stem for p in model_files() if load_model(p.stem).moe is None]


@pytest.mark.parametrize("name", DENSE)
def test_decode_reads_every_stored_weight_once(name):
    # batch-1 decode of a dense model reads each weight once, except the embedding table, of
    # which only the token's row is gathered; a tied LM head reads the embedding matrix itself
    m = load_model(name)
    a = analyze(m, load_hw("h200-sxm"), Scenario(phase="decode", batch=1, context_len=8))
    read = sum(p.op.weight_bytes * p.op.count for p in a.points if p.op.name != "embed")
    embed = (m.vocab + m.learned_pos_rows) * m.hidden * BF16
    expect = a.memory.weights_bytes - (0 if m.tied_embeddings else embed)
    if m.tied_embeddings:
        expect -= m.learned_pos_rows * m.hidden * BF16  # positions: one row per token too
    assert read == pytest.approx(expect, rel=1e-12)
    assert a.memory.weights_bytes == m.params * BF16  # one copy of every parameter


def test_moe_prefill_reads_all_experts_as_memory_holds_them():
    # Mixtral prefill of 4096 tokens touches all 8 experts: GEMM weight traffic = memory
    m = load_model("mixtral-8x7b")
    a = analyze(m, load_hw("h200-sxm"), Scenario(phase="prefill", batch=1, seq_len=4096))
    read = sum(p.op.weight_bytes * p.op.count for p in a.points if p.op.name != "embed")
    stored = a.memory.weights_bytes - m.vocab * m.hidden * BF16
    assert read == pytest.approx(stored, rel=1e-9)


def test_inventory_names_are_unique_and_name_the_ops_that_read_them():
    for p in model_files():
        m = load_model(p.stem)
        kinds = [moe for moe, _ in m.ffn_groups]
        for moe in kinds:
            names = [w.name for w in layer_weights(m, moe, full_split(m))]
            assert len(names) == len(set(names)), p.stem
        a = analyze(m, load_hw("h200-sxm"), Scenario(phase="prefill", batch=1, seq_len=64))
        ops = {pt.op.name for pt in a.points}
        for moe in kinds:
            for w in layer_weights(m, moe, full_split(m)):
                if w.name not in ("moe.router_bias",):  # a buffer read by moe.topk
                    assert w.name in ops, (p.stem, w.name)
