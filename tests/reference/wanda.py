"""Wanda and the magnitude baseline as the Wanda reference code computes them (locuslab/wanda, read
at commits 42e856e for lib/layerwrapper.py and 069ac97 for lib/prune.py).

- lib/layerwrapper.py `WrappedGPT.add_batch`: `scaler_row` is a running mean over calibration
  *samples* of each input feature's squared norm over the sample's tokens: scaled by n/(n + b) and
  added ‖x_j‖² / (n + b) for a batch of b samples, so after N samples it is Σ_tokens x_j² / N.
- lib/prune.py `prune_wanda`: metric |W| · sqrt(scaler_row); unstructured: each output row sorted
  (stable), the first int(cols · s) indices pruned; N:M: in every group of M columns the `prune_n`
  lowest by `topk` are pruned (the reference's "2:4" gives prune_n = 2: N counts *pruned* weights).
- lib/prune.py `prune_magnitude`: |W|, threshold at index int(numel · s) of the layer's sorted
  values, every weight <= it pruned; N:M as above.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from tests.reference.layerwise import find_linears, walk_layers


class ScalerRow:
    """`WrappedGPT`: the per-feature running mean of squared input norms."""

    def __init__(self, linear: nn.Linear):
        self.scaler_row = torch.zeros(linear.in_features, device=linear.weight.device)
        self.nsamples = 0

    def add_batch(self, inp: Tensor) -> None:
        if inp.dim() == 2:
            inp = inp.unsqueeze(0)
        batch = inp.shape[0]
        columns = inp.reshape(-1, inp.shape[-1]).t().float()  # [features, tokens]
        self.scaler_row *= self.nsamples / (self.nsamples + batch)
        self.nsamples += batch
        self.scaler_row += torch.norm(columns, p=2, dim=1) ** 2 / self.nsamples


def n_m_prune_mask(metric: Tensor, prune_n: int, prune_m: int) -> Tensor:
    """True at the `prune_n` lowest of every `prune_m` consecutive columns of each row (topk, as the reference)."""
    mask = torch.zeros_like(metric, dtype=torch.bool)
    for start in range(0, metric.shape[1], prune_m):
        group = metric[:, start : start + prune_m].float()
        mask.scatter_(1, start + torch.topk(group, prune_n, dim=1, largest=False)[1], True)
    return mask


def wanda_layer_mask(weight: Tensor, scaler_row: Tensor, sparsity: float, prune_n: int = 0, prune_m: int = 0) -> Tensor:
    metric = weight.abs() * torch.sqrt(scaler_row.reshape(1, -1))
    if prune_n:
        return n_m_prune_mask(metric, prune_n, prune_m)
    mask = torch.zeros_like(metric, dtype=torch.bool)
    order = torch.sort(metric, dim=-1, stable=True)[1]
    mask.scatter_(1, order[:, : int(metric.shape[1] * sparsity)], True)
    return mask


def prune_wanda(
    model: nn.Module, ids: Tensor, sparsity: float, prune_n: int = 0, prune_m: int = 0,
    layer_sparsities: Sequence[float] | None = None,
) -> None:  # fmt: skip
    """`prune_wanda` in place; `layer_sparsities` (OWL's, one per layer) replaces `sparsity` per layer."""

    def prune(i: int, linears: dict[str, nn.Linear], scalers: dict[str, ScalerRow]) -> None:
        layer_sparsity = sparsity if layer_sparsities is None else layer_sparsities[i]
        for name, linear in linears.items():
            mask = wanda_layer_mask(linear.weight.data, scalers[name].scaler_row, layer_sparsity, prune_n, prune_m)
            linear.weight.data[mask] = 0

    walk_layers(model, ids, ScalerRow, prune)


def magnitude_layer_mask(weight: Tensor, sparsity: float, prune_n: int = 0, prune_m: int = 0) -> Tensor:
    metric = weight.abs()
    if prune_n:
        return n_m_prune_mask(metric, prune_n, prune_m)
    threshold = torch.sort(metric.flatten())[0][int(weight.numel() * sparsity)]
    return metric <= threshold


def prune_magnitude(model: nn.Module, sparsity: float, prune_n: int = 0, prune_m: int = 0) -> None:
    """`prune_magnitude` in place: every linear of every layer, no calibration."""
    with torch.no_grad():
        for layer in model.model.layers:
            for linear in find_linears(layer).values():
                linear.weight.data[magnitude_layer_mask(linear.weight.data, sparsity, prune_n, prune_m)] = 0
