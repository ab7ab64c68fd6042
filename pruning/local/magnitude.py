"""Magnitude pruning: drop the smallest |W|, compared over the whole layer.

Layer-wide comparison follows the magnitude baseline of the Wanda reference code (`prune_magnitude`);
with N:M the comparison is inside each group of M consecutive input columns of a row.
"""

from __future__ import annotations

from torch import Tensor

from pruning.local.selection import prune_mask


def magnitude_prune_mask(weight: Tensor, sparsity: float, n_m: str | None = None) -> Tensor:
    """True where `weight` [out, in] is to be zeroed: the `sparsity` share of the layer with the smallest |W|."""
    return prune_mask(weight.abs(), sparsity, n_m, per_row=False)
