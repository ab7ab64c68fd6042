"""benchmarks/finetune_precision.py: its arguments, and one tiny run end to end on the packaged SmolLM2."""

from __future__ import annotations


import pytest


@pytest.fixture
def finetune_precision(benchmark_script):
    return benchmark_script("finetune_precision")


@pytest.mark.parametrize("argv", [["--steps", "0"], ["--eval", "0"], ["--lr", "0"]])
def test_nonsense_arguments_are_refused(finetune_precision, argv, capsys):
    with pytest.raises(SystemExit):
        finetune_precision.parse_args(argv)
    assert "must be" in capsys.readouterr().err


@pytest.mark.e2e
def test_a_tiny_run_prints_a_row_per_variant(finetune_precision, smollm2_checkpoint, capsys):
    finetune_precision.main(["--steps", "2", "--batch", "2", "--seq-len", "32", "--eval", "2", "--layers", "14"])
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in out.splitlines() if line.startswith("| ") and "variant" not in line}
    assert set(rows) == {"fp32", "bf16 + masters", "bf16 stepped"}
    moved, _, cosine, *_ = (cell.strip() for cell in rows["fp32"])
    assert cosine == "1.000" and float(moved.rstrip("%")) > 90  # every fp32 weight of layer 14 moves
    assert "fp32 master copies: 3.5 M elements" in out  # one SmolLM2 layer: 4 attention + 3 MLP linears, 2 norms
