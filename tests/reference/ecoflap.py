"""ECoFLaP's layer-wise allocation and its zeroth-order scores as the reference code computes them
(ylsung/ECoFLaP, LAVIS/lavis/compression/pruners/layer_single_base_pruner.py at fc84d4d, class
`LayerSparsity`).

- `compute_importance_scores_mezo` ("MEZO-GradOnly", `num_noise` = 1): for each weight tensor in
  the model's `named_parameters` order, separately, and each calibration batch: perturb *only that
  tensor* by +eps·z (loss1), then by −2·eps·z (loss2), then by +eps·z back (the restore is
  arithmetic, not a copy); projected_grad = (loss1 − loss2) / 2eps; the tensor's score is
  Σ over batches of |projected_grad|. z ~ N(0, I) of the tensor's shape, in its dtype, a fresh
  seed per (tensor, batch). A group's (block's) score is the sum over its tensors.
- `return_sparsity`: total to keep = int(n · (1 − s)); group score = Σ of its tensors' scores,
  divided by its weight count for the `avg` aggregation (`sum` keeps the total).
- `compute_the_sparsity_per_group`: every group first keeps ceil(n_g · (1 − max_sparsity)); while
  fewer than the total are kept, each group adds ceil(score_g / Σ scores × what is left), a group
  that reaches its size gets score 0 and is clamped to its size. Two corrections follow a round: if
  nothing was added, the shortfall goes to groups with score > 0 in order; if more than the total is
  kept, a loop meant to remove the surplus runs over groups by keep, descending, and — as written —
  *adds* `parameters_can_remove` to the group (`+=`), so the surplus grows instead. Transcribed as
  written, with the reference's dtypes (fp32 scores; keeps int64 until the first round adds fp32).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn


def zeroth_order_tensor_scores(
    model: nn.Module,
    names: Sequence[str],
    batches: Sequence[dict],
    loss: Callable[[nn.Module, dict], Tensor],
    draw_z: Callable[[Tensor], Tensor],
    eps: float = 1e-3,
) -> dict[str, float]:
    """`compute_importance_scores_mezo` (GradOnly, one noise per batch): Σ_batches |projected_grad| per tensor.

    `names` are the scored parameters (kept in the model's order); `draw_z(param)` gives the next z,
    called once per (tensor, batch) in that order."""
    params = dict(model.named_parameters())
    scores: dict[str, float] = {}
    model.eval()
    with torch.no_grad():
        for name in [n for n in params if n in set(names)]:
            param = params[name]
            total = torch.zeros(1)  # fp32, as `gradients_dict[name] += torch.FloatTensor([...])`
            for batch in batches:
                z = draw_z(param).to(param.dtype)
                param.data = param.data + 1 * z * eps
                loss1 = loss(model, batch)
                param.data = param.data + -2 * z * eps
                loss2 = loss(model, batch)
                param.data = param.data + 1 * z * eps
                total += torch.FloatTensor([abs(((loss1 - loss2) / (2 * eps)).item())]).abs()
            scores[name] = float(total.abs())
    return scores


def group_scores(
    tensor_scores: dict[str, float], tensor_group: dict[str, str], tensor_size: dict[str, int], aggregate: str
) -> tuple[dict[str, Tensor], dict[str, int]]:
    """`return_sparsity`'s group scores (fp32) and weight counts, groups in order of first appearance."""
    scores: dict[str, Tensor] = {}
    sizes: dict[str, int] = {}
    for name, group in tensor_group.items():
        scores[group] = scores.get(group, 0) + torch.FloatTensor([tensor_scores[name]]).sum()
        sizes[group] = sizes.get(group, 0) + tensor_size[name]
    if aggregate == "avg":
        scores = {group: score / sizes[group] for group, score in scores.items()}
    return scores, sizes


def sparsity_per_group(
    total_to_keep: int, scores_by_group: dict[str, Tensor], sizes_by_group: dict[str, int], max_sparsity_per_layer: float
) -> dict[str, float]:
    """`compute_the_sparsity_per_group`, as written."""
    scores = torch.FloatTensor([float(s) for s in scores_by_group.values()])
    num_parameters = torch.LongTensor(list(sizes_by_group.values()))
    keep = torch.zeros_like(scores, dtype=int)
    keep += torch.ceil(num_parameters * (1 - max_sparsity_per_layer)).int()
    while keep.sum() < total_to_keep:
        total_ratio = torch.sum(scores)
        rest = total_to_keep - keep.sum()
        to_add = torch.ceil((scores / total_ratio) * rest)
        keep = keep + to_add
        scores[keep >= num_parameters] = 0
        keep = torch.clamp(keep, max=num_parameters)
        if to_add.sum() == 0:
            current = keep.sum()
            if current < total_to_keep:
                need = total_to_keep - current
                while need > 0:
                    for index in torch.where(scores > 0)[0]:
                        can_add = min(need, num_parameters[index] - keep[index])
                        keep[index] += can_add
                        need -= can_add
                        if need == 0:
                            break
        if keep.sum() > total_to_keep:
            surplus = keep.sum() - total_to_keep
            while surplus > 0:
                for index in torch.argsort(keep, descending=True, stable=True):
                    can_remove = min(surplus, keep[index] - (num_parameters[index] * (1 - max_sparsity_per_layer)).int())
                    keep[index] += can_remove  # sic: the reference adds here
                    surplus -= can_remove
                    if surplus == 0:
                        break
    return {
        group: torch.clamp(1 - kept / size, min=0, max=1).item()
        for group, kept, size in zip(sizes_by_group, keep, num_parameters)
    }


def allocation(
    scores_by_group: dict[str, Tensor], sizes_by_group: dict[str, int], sparsity: float, max_sparsity_per_layer: float
) -> dict[str, float]:
    """`return_sparsity` from group scores: one sparsity per group."""
    total_to_keep = int(sum(sizes_by_group.values()) * (1 - sparsity))
    return sparsity_per_group(total_to_keep, scores_by_group, sizes_by_group, max_sparsity_per_layer)
