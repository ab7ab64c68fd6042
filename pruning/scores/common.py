"""What every global score shares: the result type and the calibration loss."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from pruning.local.walk import keeps_a_cache
from pruning.models.offload import input_device


@dataclass(frozen=True)
class BlockScores:
    """One score per block of every group, by modality, with each block's prunable weight count."""

    kind: str  # "zeroth", "first", "outlier_ratio"
    scores: dict[str, list[float]]
    n_params: dict[str, list[int]]

    def flat(self) -> tuple[list[float], list[int]]:
        """Scores and sizes of every block, groups in order: one shared budget for all modalities."""
        return (
            [score for modality in self.scores for score in self.scores[modality]],
            [size for modality in self.scores for size in self.n_params[modality]],
        )

    def split(self, values: list[float]) -> dict[str, list[float]]:
        """The inverse of `flat` for per-block values (sparsities): modality -> its blocks' values."""
        out, start = {}, 0
        for modality, sizes in self.n_params.items():
            out[modality] = list(values[start : start + len(sizes)])
            start += len(sizes)
        if start != len(values):
            raise ValueError(f"{len(values)} values for {start} blocks")
        return out


def calibration_loss(model: nn.Module, batch: Mapping[str, Any]) -> Tensor:
    """The mean token loss of one calibration batch, in fp32.

    A batch with `labels` (an image-question pair: the answer tokens) is scored on them; token ids
    alone are scored on next-token prediction of every non-padding position (as perplexity is).
    """
    device = input_device(model)
    inputs = {name: value.to(device) if isinstance(value, Tensor) else value for name, value in batch.items()}
    if "labels" not in inputs:
        labels = inputs["input_ids"].clone()
        if "attention_mask" in inputs:
            labels[inputs["attention_mask"] == 0] = -100
        inputs["labels"] = labels
    outputs = model(**inputs, **({"use_cache": False} if keeps_a_cache(model) else {}))
    if getattr(outputs, "loss", None) is None:
        raise ValueError(f"{type(model).__name__} computes no loss from labels; global scores need a model with a language-model head")
    return outputs.loss.float()
