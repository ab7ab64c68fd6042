import pytest
import torch

from pruning.errors import ConfigError
from pruning.local import LOCAL_PRUNERS, local_pruner
from pruning.local.statistics import STATISTICS


@pytest.mark.parametrize("name", sorted(LOCAL_PRUNERS))
def test_every_pruner_asks_for_a_statistic_the_walk_can_gather(name):
    assert LOCAL_PRUNERS[name].statistic == "none" or LOCAL_PRUNERS[name].statistic in STATISTICS


def test_magnitude_needs_nothing_and_wanda_needs_input_norms():
    assert local_pruner("magnitude").statistic == "none"
    assert local_pruner("wanda").statistic == "input_sq_norm"


def test_pruners_return_the_masked_weight_in_its_dtype():
    weight = torch.tensor([[1.0, -4.0, 2.0, -3.0]], dtype=torch.bfloat16)
    pruned = local_pruner("wanda").prune(weight, torch.tensor([100.0, 1.0, 1.0, 1.0]), 0.5, None)
    assert pruned.dtype == torch.bfloat16
    assert pruned.tolist() == [[1.0, -4.0, 0.0, 0.0]]  # scores 10, 4, 2, 3
    assert local_pruner("magnitude").prune(weight, None, 0.5, None).tolist() == [[0.0, -4.0, 0.0, -3.0]]


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(ConfigError, match="'obc'.*known: magnitude, sparsegpt, wanda"):
        local_pruner("obc")


def test_wanda_selection_option_reaches_the_kernel():
    weight = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    wanda = local_pruner("wanda").prune
    assert wanda(weight, torch.ones(2), 0.5, None).tolist() == [[0.0, 2.0], [0.0, 4.0]]
    assert wanda(weight, torch.ones(2), 0.5, None, selection="per_row").tolist() == [[0.0, 2.0], [0.0, 4.0]]
    assert wanda(weight, torch.ones(2), 0.5, None, selection="layer").tolist() == [[0.0, 0.0], [3.0, 4.0]]
    with pytest.raises(ValueError, match="'per_row', 'layer'.*'global'"):
        wanda(weight, torch.ones(2), 0.5, None, selection="global")
