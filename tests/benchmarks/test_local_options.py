"""benchmarks/local_options.py: its arguments, the padding share and the paired effects on hand-made numbers.

An end-to-end run needs the trained toy VLM (minutes to train), so it is left to the script itself."""

from __future__ import annotations


import pytest
import torch


@pytest.fixture
def local_options(benchmark_script):
    return benchmark_script("local_options")


@pytest.mark.parametrize("argv", [["--n-samples", "0"], ["--sparsities", "1.0"], ["--eval-batch", "0"]])
def test_nonsense_arguments_are_refused(local_options, argv, capsys):
    with pytest.raises(SystemExit):
        local_options.parse_args(argv)
    assert "must be" in capsys.readouterr().err


def test_padded_share_counts_zeros_of_every_batchs_mask(local_options):
    batches = [{"attention_mask": torch.tensor([[0, 1, 1], [1, 1, 1]])}, {"attention_mask": torch.tensor([[0, 0, 1, 1]])}]
    assert local_options.padded_share(batches) == pytest.approx(3 / 10)


def test_each_combination_is_a_spec_with_both_options(local_options):
    spec = local_options.spec_for("ecoflap", 0.6, "layer", "excluded")
    assert spec.local == "wanda" and spec.modality_options() == {"vision": {"selection": "layer"}} and spec.exclude_padding
    assert local_options.spec_for("wanda", 0.5, "per_row", "included").exclude_padding is False


def test_effects_are_paired_by_seed(local_options, capsys):
    before = [{"accuracy": 0.80, "nll": 0.30}, {"accuracy": 0.70, "nll": 0.40}]
    after = [{"accuracy": 0.82, "nll": 0.29}, {"accuracy": 0.74, "nll": 0.37}]
    local_options.print_effect("wanda", 0.5, "change", "other", before, after)
    row = [cell.strip() for cell in capsys.readouterr().out.strip().strip("|").split("|")]
    assert row[4] == "0.0300 ± 0.0141" and row[5] == "-0.0200 ± 0.0141"  # Δ = (0.02, 0.04) and (-0.01, -0.03)
