"""How redundant each decoder layer is: hidden-state cosines between layers, and SLEB's removal order.

h_0..h_L are the decoder's hidden states at its layer boundaries, taken one of two ways (`states`):
  "block_io" (default): h_i is what layer i receives and h_L the last layer's output, captured from
    the blocks themselves (the shared walk). Where the model adds something between layers
    (Qwen3-VL DeepStack), h_{i+1} is what layer i+1 receives.
  "output_hidden_states": the model's own `output_hidden_states=True` tuple, as the published scripts
    read it (ShortGPT as implemented in sramshetty/ShortGPT `short_gpt/short_hf.py`, INTERLACE's
    `src/get_hidden_states.py` in pmadinei/Interlace). Its last entry has passed the final norm.
Padding (`padding`): "masked" (default) leaves positions with attention_mask 0 out; "counted" treats
every position as a token, as sramshetty/ShortGPT's `block_influence` does (it flattens the padded batch).

`cos_mean[i][j]` is cos(h_i, h_j) averaged over each sequence's tokens, then over sequences (one mean
per sample, then the mean of those, as INTERLACE's `get_hidden_states.py` and `load_similarity_scores`
do with one unpadded sample per forward); `cos_last[i][j]` is the mean over sequences of the cosine on
each sequence's last token; `angle_last[i][j]` the mean over sequences of arccos of that cosine / pi.
From them:
  s_p(i) = cos_mean[i][i+p]                         INTERLACE's redundancy of layers i..i+p-1
  BI(i) = 1 - cos_mean[i][i+1]                      ShortGPT's Block Influence (Men et al., 2024)
  d(i, n) = arccos(cos_last[i][i+n]) / pi           angular distance (Gromov et al., 2024, Eq. 7) of the
                                                    mean cosine, or angle_last[i][i+n]: the mean distance
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from pruning.errors import AdapterError
from pruning.layerdrop.surgery import droppable_group, protected_layers, skipping_layers
from pruning.local.walk import calibration_batches, capture_group_inputs, keeps_a_cache
from pruning.models.adapters import Adapter, blocks
from pruning.models.offload import input_device, onloaded
from pruning.specs import BlockReturns
from pruning.scores.common import calibration_loss

Calibration = Tensor | Sequence[Mapping[str, Any]]
HiddenStates = Literal["block_io", "output_hidden_states"]
Padding = Literal["masked", "counted"]
Tokens = Literal["mean", "last"]


@dataclass(frozen=True)
class LayerRedundancy:
    """Cosine matrices over h_0..h_L ((L+1) x (L+1), symmetric, unit diagonal) on the calibration data,
    and the mean last-token angular distance (zero diagonal)."""

    cos_mean: tuple[tuple[float, ...], ...]
    cos_last: tuple[tuple[float, ...], ...]
    angle_last: tuple[tuple[float, ...], ...]
    n_sequences: int

    @property
    def n_layers(self) -> int:
        return len(self.cos_mean) - 1

    def s(self, p: int, tokens: Tokens = "mean") -> list[float]:
        """s_p(i) = cos(h_i, h_{i+p}) for i = 0..L-p: the token mean (`cos_mean`) or the last token (`cos_last`)."""
        if not 1 <= p <= self.n_layers:
            raise ValueError(f"span p must be in 1..{self.n_layers}, got {p}")
        matrix = {"mean": self.cos_mean, "last": self.cos_last}[tokens]
        return [matrix[i][i + p] for i in range(self.n_layers + 1 - p)]

    def block_influence(self) -> list[float]:
        """ShortGPT's BI(i) = 1 - cos(h_i, h_{i+1}) for every layer i."""
        return [1.0 - similarity for similarity in self.s(1)]

    def angular_distance(self, n: int, average: Literal["cosine", "distance"] = "cosine") -> list[float]:
        """d(i, n) on the last token for i = 0..L-n: arccos of the mean cosine / pi ("cosine"), or the
        mean over sequences of each sequence's arccos(cos) / pi ("distance")."""
        if not 1 <= n <= self.n_layers:
            raise ValueError(f"span n must be in 1..{self.n_layers}, got {n}")
        if average == "distance":
            return [self.angle_last[i][i + n] for i in range(self.n_layers + 1 - n)]
        return [math.acos(max(-1.0, min(1.0, self.cos_last[i][i + n]))) / math.pi for i in range(self.n_layers + 1 - n)]

    def to_dict(self) -> dict:
        return {
            "cos_mean": [list(row) for row in self.cos_mean],
            "cos_last": [list(row) for row in self.cos_last],
            "angle_last": [list(row) for row in self.angle_last],
            "n_sequences": self.n_sequences,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LayerRedundancy:
        def matrix(rows):
            return tuple(tuple(float(x) for x in row) for row in rows)

        return cls(
            cos_mean=matrix(data["cos_mean"]),
            cos_last=matrix(data["cos_last"]),
            angle_last=matrix(data["angle_last"]),
            n_sequences=int(data["n_sequences"]),
        )


def layer_redundancy(
    model: nn.Module,
    adapter: Adapter,
    calibration: Calibration,
    batch_size: int = 8,
    progress: bool = True,
    states: HiddenStates = "block_io",
    padding: Padding = "masked",
    execution_device: str | torch.device | None = None,
) -> LayerRedundancy:
    """Cosine matrices between the decoder's hidden states h_0..h_L (`states`, `padding`: module docstring).

    Batch by batch: the batch's L+1 unit-normalised hidden states (fp32) are reduced to two (L+1)^2
    Gram sums and the sum of per-sequence last-token angles, so memory holds one batch's hidden
    states at a time. `execution_device`: where to compute, onloading the model block by block when
    its weights are elsewhere (`pruning.local.walk.walk_blocks`).
    """
    if states not in ("block_io", "output_hidden_states"):
        raise ValueError(f"states must be 'block_io' or 'output_hidden_states', got {states!r}")
    if padding not in ("masked", "counted"):
        raise ValueError(f"padding must be 'masked' or 'counted', got {padding!r}")
    stack = blocks(model, droppable_group(adapter))
    n_states = len(stack) + 1
    batches = calibration_batches(calibration, batch_size)
    cos_mean_sum = torch.zeros(n_states, n_states, dtype=torch.float64)
    cos_last_sum = torch.zeros(n_states, n_states, dtype=torch.float64)
    angle_last_sum = torch.zeros(n_states, n_states, dtype=torch.float64)
    n_sequences = 0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), onloaded(model, adapter, execution_device), tqdm(
            total=len(batches), desc="layer redundancy", unit="batch", disable=not progress
        ) as bar:
            for batch in batches:
                boundary = _boundary_states(model, stack, batch, states, droppable_group(adapter).returns)
                hidden = next(boundary)
                mask = batch.get("attention_mask") if padding == "masked" else None
                weights, last = _sequence_weights(mask, hidden)
                rows = torch.arange(hidden.shape[0], device=hidden.device)
                # weighted so that a Gram entry sums each sequence's token-mean cosine: sqrt(w) on both sides
                token_states = hidden.new_empty((n_states, hidden[..., 0].numel() * hidden.shape[-1]), dtype=torch.float32)
                last_states = hidden.new_empty((n_states, hidden.shape[0], hidden.shape[-1]), dtype=torch.float32)
                for index in range(n_states):
                    if index:
                        hidden = next(boundary)
                    unit = F.normalize(hidden.float(), dim=-1)
                    token_states[index] = (unit * weights.sqrt().unsqueeze(-1)).flatten()
                    last_states[index] = unit[rows, last]
                cos_mean_sum += (token_states @ token_states.T).double().cpu()
                flat_last = last_states.flatten(1)
                cos_last_sum += (flat_last @ flat_last.T).double().cpu()
                per_sequence = torch.einsum("ibd,jbd->bij", last_states.double(), last_states.double()).clamp(-1.0, 1.0)
                angle_last_sum += (torch.arccos(per_sequence) / math.pi).sum(0).cpu()
                n_sequences += hidden.shape[0]
                del boundary, token_states, last_states
                bar.update()
    finally:
        model.train(was_training)
    angle = _mean_matrix(angle_last_sum, n_sequences)
    return LayerRedundancy(
        cos_mean=_mean_matrix(cos_mean_sum, n_sequences),
        cos_last=_mean_matrix(cos_last_sum, n_sequences),
        angle_last=tuple(tuple(0.0 if i == j else x for j, x in enumerate(row)) for i, row in enumerate(angle)),
        n_sequences=n_sequences,
    )


def _boundary_states(
    model: nn.Module, stack: nn.ModuleList, batch: Mapping[str, Any], states: HiddenStates, returns: BlockReturns = "tensor"
) -> Iterator[Tensor]:
    """h_0, h_1, ..., h_L of one batch, one at a time."""
    if states == "output_hidden_states":
        device = input_device(model)
        inputs = {name: value.to(device) if isinstance(value, Tensor) else value for name, value in batch.items() if name != "labels"}
        outputs = model(**inputs, output_hidden_states=True, **({"use_cache": False} if keeps_a_cache(model) else {}))
        hidden_states = getattr(outputs, "hidden_states", None)
        if hidden_states is None or len(hidden_states) != len(stack) + 1:
            found = "none" if hidden_states is None else f"{len(hidden_states)}"
            raise AdapterError(
                f"{type(model).__name__}(output_hidden_states=True) returned {found} hidden states, not the "
                f"{len(stack) + 1} of its {len(stack)} decoder layers; use states='block_io'"
            )
        yield from hidden_states
        return
    inputs = capture_group_inputs(model, stack, [batch], returns)
    yield inputs.hidden_states[0]
    for index in range(1, len(stack)):
        inputs.advance(stack[index - 1], index - 1)  # h_index: what layer `index` receives
        yield inputs.hidden_states[0]
    yield inputs.run(stack[-1], len(stack) - 1, 0)  # the last layer's output


def _sequence_weights(attention_mask: Tensor | None, hidden: Tensor) -> tuple[Tensor, Tensor]:
    """Per-token weights averaging over each sequence's non-padding tokens, and each last such token's position
    (every position counts when `attention_mask` is None)."""
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
    never: Collection[int] = (),
    execution_device: str | torch.device | None = None,
) -> SlebOrder:
    """Remove, one at a time, the decoder layer whose removal (with those already removed) raises the
    calibration NLL least; every remaining layer is re-evaluated after each removal (SLEB, Alg. 1).

    Removal is simulated by `surgery.skipping_layers` (identical to dropping, config untouched);
    protected (DeepStack) layers and the layers in `never` are never candidates (the SLEB reference,
    jiwonsong-dev/SLEB `sleb.py`, never tries the first `early_barrier` = 1 and last `latter_barrier`
    = 1 blocks). Ties go to the lower index (the reference keeps the first strict minimum too).
    `execution_device`: as `layer_redundancy`'s.
    """
    n_layers = len(blocks(model, droppable_group(adapter)))
    excluded = protected_layers(model, adapter) | frozenset(never)
    candidates = [index for index in range(n_layers) if index not in excluded]
    if not 1 <= n_drop <= len(candidates) or n_drop >= n_layers:
        raise ValueError(f"n_drop must be in 1..{min(len(candidates), n_layers - 1)} for this model, got {n_drop}")
    batches = calibration_batches(calibration, batch_size)
    removed: list[int] = []
    nll_after: list[float] = []
    was_training = model.training
    model.eval()
    try:
        n_trials = sum(len(candidates) - step for step in range(n_drop))
        with torch.no_grad(), onloaded(model, adapter, execution_device), tqdm(
            total=n_trials, desc="sleb", unit="trial", disable=not progress
        ) as bar:
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
