"""Finetune chosen parameters of a pruned model: INTERLACE's interleaved adaptation (Madinei et al.,
arXiv 2511.19676, Sec. 3), also the healing finetune after layer dropping or unstructured pruning.

Only parameters whose names start with one of the `trainable` prefixes learn; freezing is by
`requires_grad` on parameters (the paper's recipe), and every flag is restored afterwards.
Defaults follow the paper: AdamW at lr 1e-5, cosine schedule with 3% linear warmup
(transformers' `get_cosine_schedule_with_warmup`), one epoch, effective batch 32.

Examples are ONE row each: a dict of model inputs with a batch dimension of 1 (`{"input_ids":
ids[i : i + 1]}` for text; `pruning.calibration.conversation_batch` over one image and its turns
for a VLM). Rows are shuffled per epoch from `seed`, taken `effective_batch` at a time per optimizer
step and run `micro_batch_size` at a time, right-padded to the longest row of the micro-batch.

The loss is the mean over every supervised token of the effective batch (labels != -100, after the
causal shift): each micro-batch's mean loss is weighted by its share of the step's tokens, so
gradient accumulation gives the gradient of one big batch, not a mean of micro-batch means.
Rows without `labels` are scored on every non-padding next token, as perplexity is.

`keep_masks`: weights exactly zero in the trainable linear layers at the start (a Wanda/SparseGPT
mask) get zero gradient and are re-zeroed after every optimizer step, so the sparsity survives.
A dense model has (almost) no exact zeros, so the option costs it nothing.

Weights stored in less than fp32 (a model loaded in bf16 to fit memory) are trained through fp32
master copies, as mixed-precision training does: the forward and backward run in the model's dtype,
each micro-batch's gradient is added into an fp32 gradient, clipping and AdamW (its moments too) work
on the fp32 copies, and the model's weights are the copies rounded after every step. Without them a
bf16 weight near 0.02 (resolution ~1.2e-4) would round away every lr-1e-5 update. Costs 8 bytes more
per trained element (copy + gradient) and fp32 AdamW moments. fp16 weights get the same copies but
no loss scaling: train bf16 or fp32. `master_weights=False` steps every weight in its own dtype.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from pruning.models.adapters import Adapter, Modality
from pruning.scores.common import calibration_loss

IGNORE_INDEX = -100  # the label of a token that is not scored (transformers' convention)


@dataclass(frozen=True)
class FinetuneReport:
    steps: int  # optimizer steps taken
    examples: int  # rows seen (rows × epochs)
    tokens: int  # supervised tokens seen
    first_loss: float  # mean token loss of the first effective batch, before any update
    last_loss: float
    mean_loss: float  # mean of the per-step losses
    losses: tuple[float, ...]  # per optimizer step: mean token loss of its effective batch
    learning_rates: tuple[float, ...]  # per optimizer step: the lr it was taken with
    trainable_params: int
    master_params: int  # of those, updated through fp32 master copies (weights stored in bf16/fp16)
    kept_zeros: int  # weights held at exactly zero by keep_masks
    wall_s: float


def layer_prefixes(adapter: Adapter, indices: Collection[int], modality: Modality = "language") -> list[str]:
    """Parameter-name prefixes of blocks `indices` of a modality: `["model.layers.3.", ...]` for a Llama."""
    path = adapter.group(modality).path
    return [f"{path}.{index}." for index in sorted(indices)]


def finetune(
    model: nn.Module,
    examples: Sequence[Mapping[str, Any]],
    trainable: Collection[str],
    *,
    lr: float = 1e-5,
    weight_decay: float = 0.0,
    warmup_ratio: float = 0.03,
    epochs: int = 1,
    micro_batch_size: int = 1,
    effective_batch: int = 32,
    max_grad_norm: float | None = 1.0,
    keep_masks: bool = True,
    master_weights: bool = True,
    seed: int = 0,
    progress: bool = True,
    on_step: Callable[[int, float, float], None] | None = None,
) -> FinetuneReport:
    """Train the parameters under the `trainable` prefixes on `examples` (one row each) in place.

    A prefix matches a parameter name at a dot boundary (`"model.layers.1"` and `"model.layers.1."`
    match layer 1, not layer 10). `on_step(step, loss, lr)` is called after each optimizer step
    (step counts from 1; loss is the step's mean token loss before the update; lr the one used).
    The model's training modes and `requires_grad` flags are restored on return, even on error.
    """
    _check_settings(lr, weight_decay, warmup_ratio, epochs, micro_batch_size, effective_batch, max_grad_norm)
    rows = [_with_labels(example, index) for index, example in enumerate(examples)]
    if not rows:
        raise ValueError("finetune got no examples")
    token_counts = [_supervised_tokens(row["labels"]) for row in rows]
    steps_per_epoch = math.ceil(len(rows) / effective_batch)
    total_steps = steps_per_epoch * epochs
    # the tolerance keeps float error from adding a step: ceil(0.03 * 100) must be 3, not 4
    warmup_steps = math.ceil(warmup_ratio * total_steps - 1e-9)

    flags = [(p, p.requires_grad) for p in model.parameters()]
    modes = [(module, module.training) for module in model.modules()]
    trained = _select_trainable(model, trainable)
    masks = _zero_masks(model, trained) if keep_masks else []
    masters = _master_copies(trained) if master_weights else []
    master_of = {id(p): master for p, master in masters}
    optimised = [master_of.get(id(p), p) for p in trained]  # what AdamW updates: the fp32 tensor of each
    optimised_masks = [(master_of.get(id(weight), weight), mask) for weight, mask in masks]
    generator = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    learning_rates: list[float] = []
    tokens_seen = 0
    started = time.perf_counter()
    device = next(model.parameters()).device
    try:
        for p in model.parameters():
            p.requires_grad_(False)
            p.grad = None
        for p in trained:
            p.requires_grad_(True)
        optimizer = torch.optim.AdamW(_param_groups(optimised, weight_decay), lr=lr)
        from transformers import get_cosine_schedule_with_warmup

        schedule = get_cosine_schedule_with_warmup(optimizer, warmup_steps, total_steps)
        model.train()
        # dropout draws from the global generator: seed it for this run, leave the caller's untouched
        rng_devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=rng_devices), torch.enable_grad(), tqdm(
            total=total_steps, desc="finetune", unit="step", disable=not progress
        ) as bar:
            torch.manual_seed(seed)
            for _ in range(epochs):
                order = torch.randperm(len(rows), generator=generator).tolist()
                for first in range(0, len(order), effective_batch):
                    step_rows = order[first : first + effective_batch]
                    step_tokens = sum(token_counts[i] for i in step_rows)
                    step_lr = optimizer.param_groups[0]["lr"]
                    step_loss = 0.0
                    for start in range(0, len(step_rows), micro_batch_size):
                        micro_rows = step_rows[start : start + micro_batch_size]
                        share = sum(token_counts[i] for i in micro_rows) / step_tokens
                        loss = calibration_loss(model, _collate([rows[i] for i in micro_rows])) * share
                        loss.backward()
                        _add_grads_to_masters(masters)
                        step_loss += loss.item()
                    with torch.no_grad():
                        for tensor, mask in optimised_masks:
                            if tensor.grad is not None:
                                tensor.grad.masked_fill_(mask, 0)
                    if max_grad_norm is not None:
                        torch.nn.utils.clip_grad_norm_(optimised, max_grad_norm)
                    optimizer.step()
                    schedule.step()
                    optimizer.zero_grad(set_to_none=True)
                    with torch.no_grad():
                        for tensor, mask in optimised_masks:
                            tensor.masked_fill_(mask, 0)
                        for p, master in masters:
                            p.copy_(master)
                    losses.append(step_loss)
                    learning_rates.append(step_lr)
                    tokens_seen += step_tokens
                    bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{step_lr:.2e}")
                    bar.update()
                    if on_step is not None:
                        on_step(len(losses), step_loss, step_lr)
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
            p.grad = None
        for module, training in modes:
            module.training = training
    return FinetuneReport(
        steps=len(losses),
        examples=len(rows) * epochs,
        tokens=tokens_seen,
        first_loss=losses[0],
        last_loss=losses[-1],
        mean_loss=sum(losses) / len(losses),
        losses=tuple(losses),
        learning_rates=tuple(learning_rates),
        trainable_params=sum(p.numel() for p in trained),
        master_params=sum(p.numel() for p, _ in masters),
        kept_zeros=sum(int(mask.sum()) for _, mask in masks),
        wall_s=time.perf_counter() - started,
    )


def _check_settings(
    lr: float,
    weight_decay: float,
    warmup_ratio: float,
    epochs: int,
    micro_batch_size: int,
    effective_batch: int,
    max_grad_norm: float | None,
) -> None:
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be ≥ 0, got {weight_decay}")
    if not 0 <= warmup_ratio < 1:
        raise ValueError(f"warmup_ratio must be in [0, 1), got {warmup_ratio}")
    if epochs < 1:
        raise ValueError(f"epochs must be ≥ 1, got {epochs}")
    if micro_batch_size < 1:
        raise ValueError(f"micro_batch_size must be ≥ 1, got {micro_batch_size}")
    if effective_batch < micro_batch_size:
        raise ValueError(f"effective_batch ({effective_batch}) must be ≥ micro_batch_size ({micro_batch_size})")
    if max_grad_norm is not None and not max_grad_norm > 0:
        raise ValueError(f"max_grad_norm must be positive or None, got {max_grad_norm}")


def _select_trainable(model: nn.Module, trainable: Collection[str]) -> list[nn.Parameter]:
    """The parameters under the prefixes, each once (a tied weight trains if any of its names matches)."""
    if isinstance(trainable, str):
        raise TypeError(f"trainable must be a collection of prefixes, got the string {trainable!r}; wrap it in a list")
    prefixes = {prefix.rstrip(".") for prefix in trainable}
    if not prefixes:
        raise ValueError("no trainable parameters: trainable names no prefix")
    matched: set[str] = set()
    chosen: dict[int, nn.Parameter] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        for prefix in prefixes:
            if name == prefix or name.startswith(prefix + "."):
                matched.add(prefix)
                chosen[id(p)] = p
    unknown = sorted(prefixes - matched)
    if unknown:
        raise ValueError(f"trainable prefixes match no parameter of {type(model).__name__}: {unknown}")
    return list(chosen.values())


def _param_groups(trained: list[nn.Parameter], weight_decay: float) -> list[dict]:
    # no decay on biases and norm scales (1-D), as transformers' Trainer does
    groups = [
        {"params": [p for p in trained if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in trained if p.ndim < 2], "weight_decay": 0.0},
    ]
    return [group for group in groups if group["params"]]


def _zero_masks(model: nn.Module, trained: list[nn.Parameter]) -> list[tuple[Tensor, Tensor]]:
    """(weight, where it is exactly zero) for each trainable linear weight holding any zero."""
    wanted = {id(p) for p in trained}
    masks, seen = [], set()
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if isinstance(module, nn.Linear) and id(weight) in wanted and id(weight) not in seen:
            seen.add(id(weight))
            mask = weight.detach() == 0
            if mask.any():
                masks.append((weight, mask))
    return masks


def _master_copies(trained: list[nn.Parameter]) -> list[tuple[nn.Parameter, Tensor]]:
    """(weight, an fp32 copy to train) for each trainable weight stored in less than fp32."""
    return [(p, p.detach().float()) for p in trained if p.is_floating_point() and torch.finfo(p.dtype).bits < 32]


def _add_grads_to_masters(masters: list[tuple[nn.Parameter, Tensor]]) -> None:
    """Move each low-precision weight's gradient into its fp32 copy's, summing over micro-batches in fp32."""
    for p, master in masters:
        if p.grad is not None:
            master.grad = p.grad.float() if master.grad is None else master.grad.add_(p.grad)
            p.grad = None


def _with_labels(example: Mapping[str, Any], index: int) -> dict[str, Any]:
    """A copy of the row with `labels`: its own, or its input ids with padding ignored."""
    input_ids = example.get("input_ids")
    if not isinstance(input_ids, Tensor) or input_ids.ndim != 2 or input_ids.shape[0] != 1:
        shape = tuple(input_ids.shape) if isinstance(input_ids, Tensor) else type(input_ids).__name__
        raise ValueError(f"example {index}: input_ids must be a tensor of shape [1, seq_len] (one row), got {shape}")
    row = dict(example)
    if "labels" not in row:
        labels = input_ids.clone()
        if "attention_mask" in row:
            labels[row["attention_mask"] == 0] = IGNORE_INDEX
        row["labels"] = labels
    if row["labels"].shape != input_ids.shape:
        raise ValueError(f"example {index}: labels {tuple(row['labels'].shape)} do not match input_ids {tuple(input_ids.shape)}")
    if _supervised_tokens(row["labels"]) == 0:
        raise ValueError(f"example {index} has no supervised token (every label after the first is {IGNORE_INDEX})")
    return row


def _supervised_tokens(labels: Tensor) -> int:
    # the model scores label t+1 from position t: the first label is never a target
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


def _collate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Rows stacked along dim 0; integer [1, length] tensors of different lengths (ids, masks, labels)
    right-padded first, so each row keeps its positions (a causal model never attends to the padding)."""
    if len(rows) == 1:
        return rows[0]
    keys = list(rows[0])
    if any(list(row) != keys for row in rows):
        raise ValueError(f"examples in one micro-batch hold different inputs: {sorted({tuple(row) for row in rows})}")
    if "attention_mask" not in keys:
        rows = [dict(row, attention_mask=torch.ones_like(row["input_ids"])) for row in rows]
        keys.append("attention_mask")
    batch = {}
    for key in keys:
        values = [row[key] for row in rows]
        if not isinstance(values[0], Tensor):
            if any(value != values[0] for value in values):
                raise ValueError(f"examples in one micro-batch differ in the non-tensor input {key!r}")
            batch[key] = values[0]
            continue
        if all(v.ndim == 2 and v.shape[0] == 1 and not v.is_floating_point() for v in values):
            length = max(v.shape[1] for v in values)
            fill = IGNORE_INDEX if key == "labels" else 0  # masks: 0; ids: any id, masked out
            values = [nn.functional.pad(v, (0, length - v.shape[1]), value=fill) for v in values]
        try:
            batch[key] = torch.cat(values)
        except RuntimeError as err:
            raise ValueError(f"cannot batch {key!r} of shapes {[tuple(v.shape) for v in values]}; use micro_batch_size=1") from err
    return batch
