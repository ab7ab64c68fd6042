"""Local pruners: how to prune one linear layer, given its sparsity and the statistic it needs.

`pruning.local.walk.prune_model` is the one model walk for every method here. It gathers the
pruner's `statistic` (a key of `statistics.STATISTICS`, or "none") block by block and calls
`prune`, which returns the new weight: the masked weight for magnitude and Wanda, or a masked and
updated weight for a method such as SparseGPT (OBS update). Per-block sparsity (uniform, OWL,
ECoFLaP) is an input of the walk, so allocations never reach this registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, get_args

from torch import Tensor

from pruning.errors import ConfigError
from pruning.local.magnitude import magnitude_prune_mask
from pruning.local.sparsegpt import sparsegpt_prune
from pruning.local.wanda import wanda_prune_mask
from pruning.specs import SparseGPTMaskRule, WandaSelection


class PruneLinear(Protocol):
    def __call__(self, weight: Tensor, statistic: Tensor | None, sparsity: float, n_m: str | None, **options) -> Tensor:
        """The pruned (and possibly updated) weight; `statistic` is None when the pruner needs none.
        `options` are the method's own settings (SparseGPT's blocksize, damping and mask rule, Wanda's selection)."""
        ...


@dataclass(frozen=True)
class LocalPruner:
    statistic: str  # "none", or a key of pruning.local.statistics.STATISTICS
    prune: PruneLinear


def _magnitude(weight: Tensor, statistic: Tensor | None, sparsity: float, n_m: str | None) -> Tensor:
    return weight.masked_fill(magnitude_prune_mask(weight, sparsity, n_m), 0)


def _wanda(
    weight: Tensor, input_sq_norm: Tensor | None, sparsity: float, n_m: str | None, selection: WandaSelection = "per_row"
) -> Tensor:
    """`selection`: compare scores within each output row ("per_row", Wanda's) or over the layer ("layer")."""
    assert input_sq_norm is not None, "the walk gathers input_sq_norm for wanda"
    if selection not in get_args(WandaSelection):
        raise ValueError(f"wanda selection must be one of {get_args(WandaSelection)}, got {selection!r}")
    return weight.masked_fill(wanda_prune_mask(weight, input_sq_norm, sparsity, n_m, per_row=selection == "per_row"), 0)


def _sparsegpt(
    weight: Tensor, hessian: Tensor | None, sparsity: float, n_m: str | None,
    blocksize: int = 128, damp: float = 0.01, mask_rule: SparseGPTMaskRule = "exact",
) -> Tensor:  # fmt: skip
    assert hessian is not None, "the walk gathers the hessian for sparsegpt"
    return sparsegpt_prune(weight, hessian, sparsity, n_m, blocksize=blocksize, damp=damp, mask_rule=mask_rule)


LOCAL_PRUNERS: dict[str, LocalPruner] = {
    "magnitude": LocalPruner(statistic="none", prune=_magnitude),
    "wanda": LocalPruner(statistic="input_sq_norm", prune=_wanda),
    "sparsegpt": LocalPruner(statistic="hessian", prune=_sparsegpt),
}


def local_pruner(name: str) -> LocalPruner:
    try:
        return LOCAL_PRUNERS[name]
    except KeyError:
        raise ConfigError(f"no local pruner {name!r}; known: {', '.join(sorted(LOCAL_PRUNERS))}") from None
