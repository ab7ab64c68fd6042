import pytest
import torch

from pruning.local.magnitude import magnitude_prune_mask
from pruning.local.wanda import wanda_prune_mask


def test_activations_change_the_choice_against_magnitude():
    # column 0 has large weights but a silent input; column 3 small weights but a loud input
    weight = torch.tensor([[4.0, 3.0, 2.0, 1.0], [-4.0, 2.0, -3.0, 1.0]])
    input_sq_norm = torch.tensor([0.01, 1.0, 1.0, 100.0])  # ||X_j|| = 0.1, 1, 1, 10
    # scores row 0: 0.4, 3, 2, 10 -> prune cols 0, 2; row 1: 0.4, 2, 3, 10 -> prune cols 0, 1
    expected = torch.tensor([[True, False, True, False], [True, True, False, False]])
    assert torch.equal(wanda_prune_mask(weight, input_sq_norm, 0.5), expected)
    magnitude = magnitude_prune_mask(weight, 0.5)
    assert magnitude[:, 3].all() and not magnitude[:, 0].any()


def test_uniform_activations_reduce_to_per_row_magnitude():
    weight = torch.randn(16, 32, generator=torch.Generator().manual_seed(0))
    mask = wanda_prune_mask(weight, torch.full((32,), 7.0), 0.5)
    rank_in_row = weight.abs().argsort(dim=1).argsort(dim=1)
    assert torch.equal(mask, rank_in_row < 16)


def test_exactly_k_per_row():
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(24, 40, generator=generator)
    input_sq_norm = torch.rand(40, generator=generator) * 100
    for sparsity in (0.1, 0.5, 0.75):
        assert wanda_prune_mask(weight, input_sq_norm, sparsity).sum(dim=1).eq(int(40 * sparsity)).all()


def test_n_m_pattern_in_every_group():
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(8, 32, generator=generator)
    mask = wanda_prune_mask(weight, torch.rand(32, generator=generator), 0.5, "2:4")
    assert mask.reshape(8, 8, 4).sum(dim=-1).eq(2).all()


def test_n_m_follows_scores_within_a_group():
    weight = torch.ones(1, 4)
    mask = wanda_prune_mask(weight, torch.tensor([9.0, 1.0, 4.0, 0.0]), 0.5, "2:4")
    assert torch.equal(mask, torch.tensor([[False, True, False, True]]))


def test_rejects_statistic_of_wrong_length():
    with pytest.raises(ValueError, match="one entry per input feature"):
        wanda_prune_mask(torch.ones(2, 4), torch.ones(3), 0.5)
