"""OWL's layer-wise sparsities as its reference code computes them (luuyin/OWL at 1f0912d, lib/prune_all.py,
`prune_wanda_outlier`; main.py defaults `--Lamda 0.08`, `--Hyper_m 3`).

- Outlier ratio of layer i: on the *dense* model (layers are measured, not pruned, and the dense
  outputs feed the next layer), the Wanda metrics |W| · sqrt(scaler_row) of all the layer's linears
  flattened and concatenated; `check_outlier_mean`: the percentage of entries > Hyper_m × their mean.
- Layer sparsities: ratios r min-max normalised to [0, 2·Lamda], minus their (unweighted) mean,
  plus 1 − s: a keep ratio per layer; sparsity_i = 1 − keep_i, replaced by 0.01 where it is <= 0.
  Each layer is then pruned by Wanda at its sparsity.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from tests.reference.layerwise import walk_layers
from tests.reference.wanda import ScalerRow


def outlier_percent(metric: Tensor, hyper_m: float) -> float:
    """`check_outlier_mean`: 100 × the share of entries above hyper_m × mean."""
    return float((metric > torch.mean(metric) * hyper_m).sum().item()) / metric.numel() * 100


def outlier_ratios(model: nn.Module, ids: Tensor, hyper_m: float = 3.0) -> list[float]:
    ratios: list[float] = []

    def measure(i: int, linears: dict[str, nn.Linear], scalers: dict[str, ScalerRow]) -> None:
        metrics = [linear.weight.data.abs() * torch.sqrt(scalers[name].scaler_row.reshape((1, -1))) for name, linear in linears.items()]
        ratios.append(outlier_percent(torch.cat([torch.flatten(m.cpu()) for m in metrics]), hyper_m))

    walk_layers(model, ids, ScalerRow, measure)
    return ratios


def layer_sparsities(ratios: Sequence[float], sparsity_ratio: float, lamda: float = 0.08) -> list[float]:
    keep = np.array(ratios)
    keep = (keep - keep.min()) * (1 / (keep.max() - keep.min()) * lamda * 2)
    keep = keep - np.mean(keep) + (1 - sparsity_ratio)
    return [0.01 if 1 - k <= 0 else float(1 - k) for k in keep]
