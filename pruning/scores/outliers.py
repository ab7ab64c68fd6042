"""OWL's per-block outlier ratios (Yin et al., 2023): the share of Wanda-metric entries
|W_ij| · ‖X_j‖₂ above M times their mean, over all prunable linears of a block, measured on the
dense model with block-by-block propagation of its calibration inputs (the same walk pruning uses)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from pruning.allocation import outlier_ratio
from pruning.local.walk import walk_blocks
from pruning.models.adapters import Adapter, BlockGroup
from pruning.scores.common import BlockScores


def outlier_ratios(
    model: nn.Module,
    adapter: Adapter,
    calibration: Tensor | Sequence[Mapping[str, Any]],
    m: float = 5.0,
    batch_size: int = 8,
    progress: bool = True,
    execution_device: str | torch.device | None = None,
) -> BlockScores:
    """One outlier ratio (a fraction) per block of every group; the model is not changed.
    `execution_device`: where to compute (`walk_blocks`)."""
    ratios: dict[str, list[float]] = {group.modality: [] for group in adapter.groups}
    sizes: dict[str, list[int]] = {group.modality: [] for group in adapter.groups}

    def measure(group: BlockGroup, index: int, linears: dict[str, nn.Linear], statistics: dict[str, Tensor]) -> None:
        metrics = [linear.weight.float().abs() * statistics[name].sqrt() for name, linear in linears.items()]
        ratios[group.modality].append(outlier_ratio(metrics, m))
        sizes[group.modality].append(sum(linear.weight.numel() for linear in linears.values()))

    walk_blocks(
        model, adapter, "input_sq_norm", calibration, measure, batch_size, "scores outliers (OWL)", progress,
        execution_device=execution_device,
    )
    return BlockScores(kind="outlier_ratio", scores=ratios, n_params=sizes)
