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


def test_layer_selection_compares_scores_across_rows():
    # scores (uniform inputs): row 0: 1, 2, 3, 4; row 1: 5, 6, 7, 8
    weight = torch.tensor([[1.0, -2.0, 3.0, 4.0], [5.0, 6.0, -7.0, 8.0]])
    input_sq_norm = torch.ones(4)
    per_row = torch.tensor([[True, True, False, False], [True, True, False, False]])
    layer = torch.tensor([[True, True, True, True], [False, False, False, False]])  # the 4 lowest of 8 are all in row 0
    assert torch.equal(wanda_prune_mask(weight, input_sq_norm, 0.5), per_row)
    assert torch.equal(wanda_prune_mask(weight, input_sq_norm, 0.5, per_row=False), layer)


def test_layer_selection_prunes_floor_of_the_layers_count_with_activations_in_the_scores():
    # ||X|| = 10, 1, 1: column 0's small weights outscore the others; 0.5 * 6 = 3 lowest of the layer
    weight = torch.tensor([[0.5, 2.0, 3.0], [0.25, 1.0, 4.0]])
    input_sq_norm = torch.tensor([100.0, 1.0, 1.0])  # scores row 0: 5, 2, 3; row 1: 2.5, 1, 4
    expected = torch.tensor([[False, True, False], [True, True, False]])
    assert torch.equal(wanda_prune_mask(weight, input_sq_norm, 0.5, per_row=False), expected)
    assert wanda_prune_mask(weight, input_sq_norm, 0.5).sum(dim=1).tolist() == [1, 1]  # per row: floor(1.5) each


def test_n_m_ignores_the_selection():
    generator = torch.Generator().manual_seed(0)
    weight, input_sq_norm = torch.randn(8, 16, generator=generator), torch.rand(16, generator=generator)
    assert torch.equal(wanda_prune_mask(weight, input_sq_norm, 0.5, "2:4", per_row=False), wanda_prune_mask(weight, input_sq_norm, 0.5, "2:4"))
