import pytest
import torch

from pruning.local.selection import at_or_below_mask, lowest_k_mask, n_m_mask, prune_count, prune_mask


def test_prune_count_floors_and_survives_float_noise():
    assert prune_count(10, 0.5) == 5
    assert prune_count(10, 0.55) == 5  # floor, as int(n * s) in the reference code
    assert prune_count(100, 0.29) == 29  # 0.29 * 100 = 28.999999999999996
    assert prune_count(7, 0.0) == 0


@pytest.mark.parametrize("sparsity", [-0.1, 1.0, 1.5])
def test_prune_count_rejects_out_of_range(sparsity):
    with pytest.raises(ValueError, match="sparsity"):
        prune_count(10, sparsity)


def test_lowest_k_mask_picks_the_k_lowest_of_each_row():
    scores = torch.tensor([[4.0, 1.0, 3.0, 2.0], [0.5, 9.0, 0.1, 7.0]])
    expected = torch.tensor([[False, True, False, True], [True, False, True, False]])
    assert torch.equal(lowest_k_mask(scores, 2), expected)
    assert not lowest_k_mask(scores, 0).any()


def test_lowest_k_mask_counts_exactly_with_ties():
    scores = torch.ones(3, 8)
    assert lowest_k_mask(scores, 3).sum(dim=1).tolist() == [3, 3, 3]


def test_n_m_mask_prunes_within_each_group():
    # 2:4 keeps the 2 largest of columns 0-3 and of columns 4-7, per row
    scores = torch.tensor([[8.0, 1.0, 2.0, 9.0, 0.1, 0.2, 0.3, 0.4]])
    expected = torch.tensor([[False, True, True, False, True, True, False, False]])
    assert torch.equal(n_m_mask(scores, "2:4"), expected)


def test_n_m_mask_keeps_n_of_m_in_every_group():
    mask = n_m_mask(torch.rand(16, 64, generator=torch.Generator().manual_seed(0)), "1:4")
    assert (mask.reshape(16, 16, 4).sum(dim=-1) == 3).all()


def test_n_m_mask_rejects_indivisible_columns():
    with pytest.raises(ValueError, match="divisible by 4"):
        n_m_mask(torch.rand(2, 6), "2:4")


def test_prune_mask_layer_scope_differs_from_row_scope():
    # row 0 holds all the small values: layer-wide selection takes them all, per-row takes 2 per row
    scores = torch.tensor([[0.1, 0.2, 0.3, 0.4], [5.0, 6.0, 7.0, 8.0]])
    layer = prune_mask(scores, 0.5, per_row=False)
    row = prune_mask(scores, 0.5, per_row=True)
    assert torch.equal(layer, torch.tensor([[True, True, True, True], [False, False, False, False]]))
    assert torch.equal(row, torch.tensor([[True, True, False, False], [True, True, False, False]]))


def test_prune_mask_checks_sparsity_against_n_m():
    with pytest.raises(ValueError, match="2:4"):
        prune_mask(torch.rand(2, 8), 0.3, "2:4", per_row=True)
    with pytest.raises(ValueError, match=r"\[out_features, in_features\]"):
        prune_mask(torch.rand(8), 0.5, per_row=True)


def test_at_or_below_mask_prunes_up_to_the_score_at_sorted_index_k_of_the_whole_tensor():
    scores = torch.tensor([[4.0, 1.0, 3.0, 2.0], [0.5, 9.0, 0.1, 7.0]])  # sorted: 0.1 0.5 1 2 3 4 7 9
    expected = torch.tensor([[False, True, False, False], [True, False, True, False]])  # <= sorted[2] = 1
    assert torch.equal(at_or_below_mask(scores, 2), expected)
    assert at_or_below_mask(scores, 0).sum() == 1  # k = 0 still prunes the lowest


def test_at_or_below_mask_takes_every_tie():
    scores = torch.tensor([[1.0, 2.0, 2.0], [2.0, 5.0, 0.5]])  # sorted: 0.5 1 2 2 2 5
    assert at_or_below_mask(scores, 2).sum() == 5
    with pytest.raises(ValueError, match="k must index"):
        at_or_below_mask(scores, 6)
