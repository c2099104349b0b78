"""benchmarks/tune_decode_attention.py without a GPU: its split counts, its case syntax and its
refusals (each before any timing, with one line and exit status 2)."""

from __future__ import annotations

import pytest

from tests.scripts import load_script


@pytest.fixture(scope="module")
def tune():
    return load_script("tune_decode_attention")


def test_cases_parse_and_bad_ones_name_the_item(tune):
    assert tune.parse_cases("1x4096, 128x8192") == ((1, 4096), (128, 8192))
    for bad, item in (("1x", "'1x'"), ("0x5", "'0x5'"), ("3x4,ab", "'ab'"), ("2x3x4", "'2x3x4'")):
        with pytest.raises(ValueError, match=item):
            tune.parse_cases(bad)


def test_split_counts_by_hand(tune):
    # 8 KV heads; tiles of 64: 4096 tokens are 64 tiles
    assert tune.split_counts(1, 4096, 64, 132) == [1, 2, 4, 8, 16, 32, 64]
    assert tune.split_counts(1, 100, 64, 132) == [1, 2]  # 2 tiles
    # batch 128 x 8 heads = 1024 programs a split: 64 per SM allow 8448 -> up to 8 splits
    assert tune.split_counts(128, 8192, 64, 132) == [1, 2, 4, 8]


@pytest.mark.parametrize("argv, says", [
    (["--cases", "1x"], "--cases '1x'"),
    (["--launches", "mma64w4,nope"], "unknown launch nope"),
    (["--json", "/nonexistent-folder/x.json"], "its folder does not exist"),
])
def test_refusals_come_before_any_timing(tune, capsys, argv, says):
    assert tune.main(argv) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1


def test_without_a_gpu_or_the_interpreter_it_says_how(tune, capsys, monkeypatch):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the sweep would run")
    assert tune.main(["--cases", "1x64"]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert tune.main(["--device", "cpu", "--cases", "1x64"]) == 2
    assert "TRITON_INTERPRET=1" in capsys.readouterr().err
