"""What pruning achieved, layer by layer: measured on the weights (exact zeros), never assumed."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from pruning.models.adapters import Adapter, blocks, prunable_linears


@dataclass(frozen=True)
class PrunedLayer:
    modality: str
    block: int
    layer: str  # dotted name from the model root, e.g. "model.layers.3.mlp.up_proj"
    n_params: int
    target_sparsity: float
    achieved_sparsity: float  # fraction of exact zeros in the weight after pruning


@dataclass(frozen=True)
class PruneReport:
    method: str
    layers: tuple[PrunedLayer, ...]

    @property
    def params_prunable(self) -> int:
        return sum(layer.n_params for layer in self.layers)

    @property
    def params_pruned(self) -> int:
        # achieved_sparsity is zeros / n_params, so this recovers the integer count exactly
        return sum(round(layer.achieved_sparsity * layer.n_params) for layer in self.layers)

    @property
    def achieved_sparsity(self) -> float:
        """Share of zeros over all prunable linears (parameter-weighted)."""
        return self.params_pruned / self.params_prunable if self.params_prunable else 0.0


def zero_fraction(weight: Tensor) -> float:
    return (weight == 0).sum().item() / weight.numel()


def layer_sparsity(model: nn.Module, adapter: Adapter) -> dict[str, float]:
    """Fraction of exact zeros of every prunable linear, by dotted name: checks a checkpoint after reload."""
    return {
        f"{group.path}.{index}.{name}": zero_fraction(linear.weight)
        for group in adapter.groups
        for index, block in enumerate(blocks(model, group))
        for name, linear in prunable_linears(block, group).items()
    }
