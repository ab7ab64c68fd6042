"""How redundant each decoder layer is: hidden-state cosines between layers, and SLEB's removal order.

h_i is the input of decoder layer i and h_L the output of the last one, taken from the blocks
themselves (the shared walk's capture), not from `output_hidden_states`, whose last entry has
passed the final norm. Where the model adds something between layers (Qwen3-VL DeepStack), h_{i+1}
is what layer i+1 receives.

`cos_mean[i][j]` is cos(h_i, h_j) averaged over each sequence's non-padding tokens, then over
sequences (as INTERLACE's reference code does, one mean per sample); `cos_last[i][j]` is the same on
each sequence's last non-padding token. From them:
  s_p(i) = cos_mean[i][i+p]                         INTERLACE's redundancy of layers i..i+p-1
  BI(i) = 1 - cos_mean[i][i+1]                      ShortGPT's Block Influence (Men et al., 2024)
  d(i, n) = arccos(cos_last[i][i+n]) / pi           angular distance (Gromov et al., 2024, Eq. 7)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from pruning.errors import AdapterError
from pruning.layerdrop.surgery import droppable_group, protected_layers, skipping_layers
from pruning.local.walk import calibration_batches, capture_group_inputs
from pruning.models.adapters import Adapter, blocks
from pruning.scores.common import calibration_loss

Calibration = Tensor | Sequence[Mapping[str, Any]]


@dataclass(frozen=True)
class LayerRedundancy:
    """Cosine matrices over h_0..h_L ((L+1) x (L+1), symmetric, unit diagonal) on the calibration data."""

    cos_mean: tuple[tuple[float, ...], ...]
    cos_last: tuple[tuple[float, ...], ...]
    n_sequences: int

    @property
    def n_layers(self) -> int:
        return len(self.cos_mean) - 1

    def s(self, p: int) -> list[float]:
        """s_p(i) = cos_mean[i][i+p] for i = 0..L-p."""
        if not 1 <= p <= self.n_layers:
            raise ValueError(f"span p must be in 1..{self.n_layers}, got {p}")
        return [self.cos_mean[i][i + p] for i in range(self.n_layers + 1 - p)]

    def block_influence(self) -> list[float]:
        """ShortGPT's BI(i) = 1 - cos(h_i, h_{i+1}) for every layer i."""
        return [1.0 - similarity for similarity in self.s(1)]

    def angular_distance(self, n: int) -> list[float]:
        """d(i, n) = arccos(cos(h_i, h_{i+n})) / pi on the last token, for i = 0..L-n."""
        if not 1 <= n <= self.n_layers:
            raise ValueError(f"span n must be in 1..{self.n_layers}, got {n}")
        return [math.acos(max(-1.0, min(1.0, self.cos_last[i][i + n]))) / math.pi for i in range(self.n_layers + 1 - n)]

    def to_dict(self) -> dict:
        return {"cos_mean": [list(row) for row in self.cos_mean], "cos_last": [list(row) for row in self.cos_last], "n_sequences": self.n_sequences}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LayerRedundancy:
        return cls(
            cos_mean=tuple(tuple(float(x) for x in row) for row in data["cos_mean"]),
            cos_last=tuple(tuple(float(x) for x in row) for row in data["cos_last"]),
            n_sequences=int(data["n_sequences"]),
        )


def layer_redundancy(
    model: nn.Module,
    adapter: Adapter,
    calibration: Calibration,
    batch_size: int = 8,
    progress: bool = True,
) -> LayerRedundancy:
    """Cosine matrices between the inputs of every decoder layer and the last layer's output.

    Batch by batch: the language group's inputs are captured for one batch, its layers run in turn,
    and the batch's L+1 unit-normalised hidden states (fp32) are reduced to two (L+1)^2 Gram sums,
    so memory holds one batch's hidden states at a time. Padding (attention_mask 0) is left out.
    """
    stack = blocks(model, droppable_group(adapter))
    n_states = len(stack) + 1
    batches = calibration_batches(calibration, batch_size)
    cos_mean_sum = torch.zeros(n_states, n_states, dtype=torch.float64)
    cos_last_sum = torch.zeros(n_states, n_states, dtype=torch.float64)
    n_sequences = 0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), tqdm(total=len(batches), desc="layer redundancy", unit="batch", disable=not progress) as bar:
            for batch in batches:
                inputs = capture_group_inputs(model, stack, [batch])
                hidden = inputs.hidden_states[0]
                weights, last = _sequence_weights(batch.get("attention_mask"), hidden)
                rows = torch.arange(hidden.shape[0], device=hidden.device)
                # weighted so that a Gram entry sums each sequence's token-mean cosine: sqrt(w) on both sides
                token_states = hidden.new_empty((n_states, hidden[..., 0].numel() * hidden.shape[-1]), dtype=torch.float32)
                last_states = hidden.new_empty((n_states, hidden.shape[0] * hidden.shape[-1]), dtype=torch.float32)
                for index in range(n_states):
                    if 0 < index < n_states - 1:
                        inputs.advance(stack[index - 1], index - 1)  # h_index: what layer `index` receives
                        hidden = inputs.hidden_states[0]
                    elif index == n_states - 1:
                        hidden = inputs.run(stack[index - 1], index - 1, 0)  # the last layer's output
                    unit = F.normalize(hidden.float(), dim=-1)
                    token_states[index] = (unit * weights.sqrt().unsqueeze(-1)).flatten()
                    last_states[index] = unit[rows, last].flatten()
                cos_mean_sum += (token_states @ token_states.T).double().cpu()
                cos_last_sum += (last_states @ last_states.T).double().cpu()
                n_sequences += hidden.shape[0]
                del inputs, token_states, last_states
                bar.update()
    finally:
        model.train(was_training)
    return LayerRedundancy(cos_mean=_mean_matrix(cos_mean_sum, n_sequences), cos_last=_mean_matrix(cos_last_sum, n_sequences), n_sequences=n_sequences)


def _sequence_weights(attention_mask: Tensor | None, hidden: Tensor) -> tuple[Tensor, Tensor]:
    """Per-token weights averaging over each sequence's non-padding tokens, and each last such token's position."""
    shape = hidden.shape[:2]
    if attention_mask is None:
        mask = torch.ones(shape, device=hidden.device)
    elif tuple(attention_mask.shape) != tuple(shape):
        raise AdapterError(
            f"attention_mask {tuple(attention_mask.shape)} does not match the decoder's hidden states {tuple(shape)}; "
            "cannot tell padding from tokens"
        )
    else:
        mask = attention_mask.to(hidden.device, torch.float32)
    counts = mask.sum(dim=1, keepdim=True)
    if bool((counts == 0).any()):
        raise ValueError("a calibration sequence is all padding (attention_mask all 0)")
    positions = torch.arange(1, shape[1] + 1, device=hidden.device, dtype=torch.float32)
    return mask / counts, (mask * positions).argmax(dim=1)  # left or right padding alike


def _mean_matrix(sums: Tensor, n_sequences: int) -> tuple[tuple[float, ...], ...]:
    mean = sums / n_sequences
    mean = (mean + mean.T) / 2  # the two triangles differ only by rounding
    return tuple(tuple(float(x) for x in row) for row in mean.tolist())


# --- SLEB (Song et al., 2024, "SLEB: Streamlining LLMs through Redundancy Verification and Elimination") ---


@dataclass(frozen=True)
class SlebOrder:
    """Layers in SLEB's removal order (original indices), with the calibration NLL after each removal."""

    removed: tuple[int, ...]
    nll: tuple[float, ...]
    dense_nll: float

    def to_dict(self) -> dict:
        return {"removed": list(self.removed), "nll": list(self.nll), "dense_nll": self.dense_nll}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SlebOrder:
        return cls(removed=tuple(int(i) for i in data["removed"]), nll=tuple(float(x) for x in data["nll"]), dense_nll=float(data["dense_nll"]))


def calibration_nll(model: nn.Module, batches: Sequence[Mapping[str, Any]]) -> float:
    """Mean over batches of each batch's mean token NLL (`scores.common.calibration_loss`), cache off."""
    return sum(float(calibration_loss(model, batch)) for batch in batches) / len(batches)


def sleb_order(
    model: nn.Module,
    adapter: Adapter,
    calibration: Calibration,
    n_drop: int,
    batch_size: int = 8,
    progress: bool = True,
) -> SlebOrder:
    """Remove, one at a time, the decoder layer whose removal (with those already removed) raises the
    calibration NLL least; every remaining layer is re-evaluated after each removal (SLEB, Alg. 1).

    Removal is simulated by `surgery.skipping_layers` (identical to dropping, config untouched);
    protected (DeepStack) layers are never candidates. Ties go to the lower index.
    """
    n_layers = len(blocks(model, droppable_group(adapter)))
    candidates = [index for index in range(n_layers) if index not in protected_layers(model, adapter)]
    if not 1 <= n_drop <= len(candidates) or n_drop >= n_layers:
        raise ValueError(f"n_drop must be in 1..{min(len(candidates), n_layers - 1)} for this model, got {n_drop}")
    batches = calibration_batches(calibration, batch_size)
    removed: list[int] = []
    nll_after: list[float] = []
    was_training = model.training
    model.eval()
    try:
        n_trials = sum(len(candidates) - step for step in range(n_drop))
        with torch.no_grad(), tqdm(total=n_trials, desc="sleb", unit="trial", disable=not progress) as bar:
            dense_nll = calibration_nll(model, batches)
            for _ in range(n_drop):
                trials = {}
                for candidate in (index for index in candidates if index not in removed):
                    with skipping_layers(model, adapter, [*removed, candidate]):
                        trials[candidate] = calibration_nll(model, batches)
                    bar.update()
                best = min(trials, key=trials.__getitem__)  # candidates ascend, so ties keep the lower index
                removed.append(best)
                nll_after.append(trials[best])
    finally:
        model.train(was_training)
    return SlebOrder(removed=tuple(removed), nll=tuple(nll_after), dense_nll=dense_nll)
