"""benchmarks/parity.py: its arguments, and every method's comparison on a tiny random-init Llama."""

from __future__ import annotations

import argparse

import pytest
import torch

from tests.pruning.conftest import build_tiny


@pytest.fixture
def parity(benchmark_script):
    return benchmark_script("parity")


@pytest.mark.parametrize("argv", [["--n-samples", "0"], ["--sparsity", "1"], ["--batch-size", "0"]])
def test_nonsense_arguments_are_refused(parity, argv, capsys):
    with pytest.raises(SystemExit):
        parity.parse_args(argv)
    assert "must be" in capsys.readouterr().err


def test_every_method_agrees_with_its_transcription_when_the_arithmetic_is_the_same(parity):
    """Batch size 1 on our side: both sides run the same float operations, so every mask is the
    reference's but where a rule differs (magnitude's and SparseGPT's `<=` threshold)."""
    args = parity.parse_args(["--batch-size", "1", "--score-samples", "2"])
    generator = torch.Generator().manual_seed(0)
    ids, heldout = torch.randint(0, 128, (4, 16), generator=generator), torch.randint(0, 128, (2, 16), generator=generator)
    rows = {
        row["method"]: row
        for method in parity.METHODS
        for row in parity.run_method(method, lambda: build_tiny("llama"), ids, heldout, argparse.Namespace(**vars(args)))
    }
    assert set(rows) == {
        "magnitude 50%", "wanda 50%", "sparsegpt 50% mask_rule=exact", "sparsegpt 50% mask_rule=reference",
        "owl+wanda 50%", "ecoflap+wanda 50%",
    }  # fmt: skip
    for label in ("wanda 50%", "sparsegpt 50% mask_rule=reference", "owl+wanda 50%", "ecoflap+wanda 50%"):
        assert rows[label]["overall"] == 1.0 and set(rows[label]["by_type"].values()) == {1.0}, label
        assert rows[label]["first_layer_differing"] is None
        assert rows[label]["nll"][0] == pytest.approx(rows[label]["nll"][1], abs=1e-5), label
    assert 0.999 <= rows["magnitude 50%"]["overall"] < 1.0  # the reference prunes one more per linear
    assert rows["magnitude 50%"]["first_layer_differing"] == 0
    assert rows["sparsegpt 50% mask_rule=exact"]["overall"] < 1.0
    assert "ratios max |diff| 0.00e+00" in rows["owl+wanda 50%"]["note"]
