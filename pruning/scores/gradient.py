"""ECoFLaP's global block scores (Sung et al., ICLR 2024, Sec. 3): how much the calibration loss
depends on each block's prunable weights, from forward passes only (zeroth order) or from one
backward pass per batch (first order).

Zeroth order, per calibration batch k, from two forward passes L_k(θ ± εz) with z ~ N(0, I) drawn
from a seed and regenerated rather than stored. Two estimators (`estimator`):

  per_tensor (as published: `LayerSparsity.compute_importance_scores_mezo` in the ECoFLaP code,
  lavis/compression/pruners/layer_single_base_pruner.py, "MEZO-GradOnly"): every prunable weight
  tensor t of block b is perturbed on its own, with its own z_t,
      g_tk = (L_k(θ + ε z_t) − L_k(θ − ε z_t)) / 2ε          (a directional derivative in t)
      score_b = Σ_{t ∈ b} Σ_k |g_tk|
  2·T·K forward passes per block of T tensors.

  per_block (ours before): one z over all prunable weights of the block at once,
      g_bk = (L_k(θ + ε z) − L_k(θ − ε z)) / 2ε,   score_b = Σ_k |g_bk|
  2·K forward passes per block. E|g| ∝ the norm of the block's gradient for both; the per-tensor
  sum adds T independent draws, so at equal batches its score varies less from seed to seed
  (`benchmarks/ecoflap_estimator.py` measures both at the same number of forward passes).

`weighted=True` scores Σ_w |w · ĝ_w| with ĝ = g·z (the gradient estimate times the magnitude)
instead of |g|, with either estimator.

First order: score_b = Σ_{w ∈ b} |w| · mean_k |∂L_k/∂w|, computed batch by batch as
mean_k Σ_w |w| |∂L_k/∂w| (the same number, with no per-weight buffer).

`aggregate="mean"` divides a block's score by its prunable weight count (the reference's "avg"),
`"sum"` (the default, as the published BLIP-2, EVA-CLIP and LLaMA scripts) keeps the total. Perturbation starts from a copy of the block's weights and ends by
copying it back, so the model after scoring is bit-identical to the model before (a restore by
subtraction drifts, most in bf16). Losses are accumulated in fp32.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from typing import Any, Literal

import torch
from torch import Tensor, nn
from tqdm import tqdm

from pruning.models.adapters import Adapter, blocks, prunable_linears
from pruning.models.offload import onloaded, storage
from pruning.scores.common import BlockScores, calibration_loss

Aggregate = Literal["sum", "mean"]
Estimator = Literal["per_tensor", "per_block"]


def _prunable_weights(model: nn.Module, adapter: Adapter) -> dict[str, list[list[Tensor]]]:
    """modality -> per block, the weight tensors of its prunable linears (in adapter order)."""
    return {
        group.modality: [
            [linear.weight for linear in prunable_linears(block, group).values()] for block in blocks(model, group)
        ]
        for group in adapter.groups
    }


def _sizes(weights: dict[str, list[list[Tensor]]]) -> dict[str, list[int]]:
    return {modality: [sum(w.numel() for w in block) for block in stack] for modality, stack in weights.items()}


def _aggregate(raw: dict[str, list[float]], sizes: dict[str, list[int]], aggregate: Aggregate) -> dict[str, list[float]]:
    if aggregate not in ("sum", "mean"):
        raise ValueError(f"aggregate must be 'sum' or 'mean', got {aggregate!r}")
    if aggregate == "sum":
        return raw
    return {modality: [score / size for score, size in zip(raw[modality], sizes[modality])] for modality in raw}


def _noise(weights: Sequence[Tensor], seed: int) -> list[Tensor]:
    """The block's z, one fp32 tensor per weight, from its seed: the same seed gives the same z."""
    generator = torch.Generator(device=weights[0].device).manual_seed(seed)
    return [torch.randn(w.shape, generator=generator, device=w.device, dtype=torch.float32) for w in weights]


def zeroth_order_scores(
    model: nn.Module,
    adapter: Adapter,
    batches: Sequence[Mapping[str, Any]],
    epsilon: float = 1e-3,
    seed: int = 0,
    aggregate: Aggregate = "sum",
    weighted: bool = False,
    progress: bool = True,
    estimator: Estimator = "per_tensor",
    execution_device: str | torch.device | None = None,
) -> BlockScores:
    """Zeroth-order ECoFLaP scores from forward passes only, no gradients stored: 2 per batch and
    weight tensor (`per_tensor`, as published) or per batch and block (`per_block`).

    `execution_device`: where to compute, onloading the model block by block when its weights are
    elsewhere (`pruning.models.offload`); the perturbed block stays on the device while it is scored,
    so its noise is drawn there, as in an unoffloaded run (the device holds two blocks: that one and
    the one the forward runs)."""
    if epsilon <= 0:
        raise ValueError(f"epsilon must be positive, got {epsilon}")
    if estimator not in ("per_tensor", "per_block"):
        raise ValueError(f"estimator must be 'per_tensor' or 'per_block', got {estimator!r}")
    weights = _prunable_weights(model, adapter)
    batches = list(batches)
    # the weights moved together in one perturbation: each tensor alone, or the whole block
    units = {
        modality: [[[w] for w in block] if estimator == "per_tensor" else [block] for block in stack]
        for modality, stack in weights.items()
    }
    raw: dict[str, list[float]] = {modality: [] for modality in weights}
    was_training = model.training
    model.eval()
    n_passes = sum(len(block) for stack in units.values() for block in stack) * len(batches)
    try:
        with torch.no_grad(), onloaded(model, adapter, execution_device) as onloader, tqdm(
            total=n_passes, desc=f"scores zeroth-order ({estimator})", unit="pair", disable=not progress
        ) as bar:
            block_number = 0
            for group, (modality, stack) in zip(adapter.groups, units.items()):
                for block, block_units in zip(blocks(model, group), stack):
                    score = 0.0
                    # restored bit for bit after each perturbation: nothing to write back
                    with onloader.block(block, write_back=False) if onloader is not None else nullcontext():
                        for unit_number, unit in enumerate(block_units):
                            for k, batch in enumerate(batches):
                                noise_seed = _noise_seed(seed, block_number, unit_number, k)
                                score += _directional_score(model, batch, unit, _noise(unit, noise_seed), epsilon, weighted)
                                bar.update()
                    raw[modality].append(score)
                    block_number += 1
    finally:
        model.train(was_training)
    sizes = _sizes(weights)
    return BlockScores(kind="zeroth", scores=_aggregate(raw, sizes, aggregate), n_params=sizes)


def _noise_seed(seed: int, block: int, unit: int, batch: int) -> int:
    """A distinct generator seed per (run seed, block, perturbed unit, batch); unit 0 and the
    per-block estimator keep the seeds the per-block estimator always had."""
    return ((seed * 1_000_003 + block) * 1_000_003 + batch) + unit * 7_919_000_011


def _directional_score(
    model: nn.Module, batch: Mapping[str, Any], weights: Sequence[Tensor], noise: Sequence[Tensor], epsilon: float, weighted: bool
) -> float:
    """|g| for g = (L(θ + εz) − L(θ − εz)) / 2ε with `weights` moved by ±ε·`noise` (Σ|w·g·z| if
    `weighted`); the weights are restored by copy, bit for bit, whatever happens."""
    saved = [w.detach().clone() for w in weights]
    try:
        losses = []
        for sign in (1.0, -1.0):
            for w, w0, z in zip(weights, saved, noise):
                w.copy_((w0.float() + sign * epsilon * z).to(w.dtype))
            losses.append(calibration_loss(model, batch).item())
    finally:
        for w, w0 in zip(weights, saved):
            w.copy_(w0)
    g = (losses[0] - losses[1]) / (2 * epsilon)
    if weighted:
        return abs(g) * sum((w0.float().abs() * z.abs()).sum().item() for w0, z in zip(saved, noise))
    return abs(g)


def first_order_scores(
    model: nn.Module,
    adapter: Adapter,
    batches: Sequence[Mapping[str, Any]],
    aggregate: Aggregate = "sum",
    progress: bool = True,
) -> BlockScores:
    """First-order ECoFLaP scores: Σ |w| · mean |∂L/∂w| over the batches, one backward per batch.

    Runs where the model is: a backward holds every block's activations and weights at once, so it
    cannot onload block by block; a model `offload_model` stored is refused (use zeroth order).

    Only the prunable weights get gradients (every other parameter's `requires_grad` is off for
    the duration and restored after); gradients are freed after each batch."""
    if storage(model) is not None:
        raise ValueError(
            f"first-order scores need a backward through the whole model, which cannot be onloaded block by block; "
            f"this model is offloaded ({storage(model)}): use zeroth-order scores, or offload: none"
        )
    weights = _prunable_weights(model, adapter)
    batches = list(batches)
    if not batches:
        raise ValueError("first-order scores need at least one calibration batch")
    wanted = {id(w) for stack in weights.values() for block in stack for w in block}
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    raw = {modality: [0.0] * len(stack) for modality, stack in weights.items()}
    was_training = model.training
    model.eval()
    try:
        for p in model.parameters():
            p.requires_grad_(id(p) in wanted)
            p.grad = None
        for batch in tqdm(batches, desc="scores first-order", unit="batch", disable=not progress):
            calibration_loss(model, batch).backward()
            with torch.no_grad():
                for modality, stack in weights.items():
                    for index, block in enumerate(stack):
                        # a block the loss does not reach (a vision layer past the one LLaVA reads) has no gradient: 0
                        raw[modality][index] += sum(
                            (w.float().abs() * w.grad.float().abs()).sum().item() for w in block if w.grad is not None
                        ) / len(batches)
                        for w in block:
                            w.grad = None
    finally:
        for name, p in model.named_parameters():
            p.requires_grad_(flags[name])
            p.grad = None
        model.train(was_training)
    sizes = _sizes(weights)
    return BlockScores(kind="first", scores=_aggregate(raw, sizes, aggregate), n_params=sizes)
