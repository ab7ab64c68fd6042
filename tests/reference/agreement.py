"""Mask agreement between two pruned copies of one Llama-family model, per linear and per layer type."""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn

from tests.reference.layerwise import find_linears


def zero_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """"<layer>.<linear name>" -> True where the weight is exactly zero, for every linear of every layer."""
    return {
        f"{i}.{name}": linear.weight.detach() == 0
        for i, layer in enumerate(model.model.layers)
        for name, linear in find_linears(layer).items()
    }


def agreement(ours: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> float:
    """The share of all weights that are pruned in both or kept in both."""
    if ours.keys() != reference.keys():
        raise ValueError("the two models have different linears")
    same = sum(int((ours[k] == reference[k]).sum()) for k in ours)
    return same / sum(ours[k].numel() for k in ours)


def agreement_by_type(ours: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> dict[str, float]:
    """Agreement per linear type (the last name part: q_proj, ..., down_proj), over all layers."""
    by_type: dict[str, list[str]] = defaultdict(list)
    for key in ours:
        by_type[key.rsplit(".", 1)[-1]].append(key)
    return {kind: agreement({k: ours[k] for k in keys}, {k: reference[k] for k in keys}) for kind, keys in by_type.items()}
