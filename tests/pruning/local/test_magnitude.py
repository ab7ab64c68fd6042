import torch

from pruning.local.magnitude import magnitude_prune_mask


def test_prunes_smallest_magnitudes_over_the_whole_layer():
    weight = torch.tensor([[0.1, -5.0, 0.3, 2.0], [-0.2, 4.0, -3.0, 0.05]])
    expected = torch.tensor([[True, False, True, False], [True, False, False, True]])
    assert torch.equal(magnitude_prune_mask(weight, 0.5), expected)


def test_layer_scope_can_empty_one_row_and_spare_another():
    weight = torch.tensor([[0.1, 0.2, 0.3, 0.4], [5.0, -6.0, 7.0, -8.0]])
    mask = magnitude_prune_mask(weight, 0.5)
    assert mask[0].all() and not mask[1].any()


def test_exact_count_on_random_weights():
    weight = torch.randn(48, 80, generator=torch.Generator().manual_seed(0))
    for sparsity in (0.0, 0.3, 0.5, 0.7):
        assert magnitude_prune_mask(weight, sparsity).sum().item() == int(weight.numel() * sparsity)


def test_n_m_uses_magnitude_within_groups():
    weight = torch.tensor([[1.0, -2.0, 3.0, -4.0, 0.4, 0.3, -0.2, 0.1]])
    expected = torch.tensor([[True, True, False, False, False, False, True, True]])
    assert torch.equal(magnitude_prune_mask(weight, 0.5, "2:4"), expected)


def test_bfloat16_weight():
    weight = torch.randn(8, 16, generator=torch.Generator().manual_seed(0)).bfloat16()
    assert magnitude_prune_mask(weight, 0.25).sum().item() == 32
