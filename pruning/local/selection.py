"""Which entries of a score matrix to prune: the k lowest per row, or the lowest M-N of every N:M group.

Every local kernel (magnitude, Wanda, and SparseGPT per column block) selects through these, so
counting and the N:M layout are defined once. Scores are [out_features, in_features]; True = pruned.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pruning.specs import parse_n_m


def prune_count(n_weights: int, sparsity: float) -> int:
    """How many of `n_weights` a `sparsity` prunes: floor(n·s), as `int(n * s)` in the Wanda/SparseGPT code.

    Rounded to 9 decimals first so that float noise (0.29 * 100 = 28.999999999999996) does not lose one.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    return math.floor(round(n_weights * sparsity, 9))


def n_m_sparsity(n_m: str) -> float:
    """The sparsity an N:M pattern implies: 1 - N/M (N kept of every M)."""
    n_kept, m = parse_n_m(n_m)
    return 1 - n_kept / m


def lowest_k_mask(scores: Tensor, k: int) -> Tensor:
    """True at exactly the `k` lowest scores along the last dimension (ties broken by `topk`)."""
    mask = torch.zeros_like(scores, dtype=torch.bool)
    if k:
        mask.scatter_(-1, scores.topk(k, dim=-1, largest=False, sorted=False).indices, True)
    return mask


def n_m_mask(scores: Tensor, n_m: str) -> Tensor:
    """True at the M-N lowest scores of every group of M consecutive input columns of a row (N kept)."""
    n_kept, m = parse_n_m(n_m)
    rows, cols = scores.shape
    if cols % m:
        raise ValueError(f"N:M pattern {n_m} needs in_features divisible by {m}, got {cols}")
    return lowest_k_mask(scores.reshape(rows, cols // m, m), m - n_kept).reshape(rows, cols)


def prune_mask(scores: Tensor, sparsity: float, n_m: str | None = None, *, per_row: bool) -> Tensor:
    """Prune the lowest scores: within each output row (`per_row`) or over the whole layer, or N:M.

    With `n_m` the pattern fixes the sparsity; `sparsity` must agree with it (1 - N/M).
    """
    if scores.dim() != 2:
        raise ValueError(f"scores must be [out_features, in_features], got shape {tuple(scores.shape)}")
    if n_m is not None:
        if abs(sparsity - n_m_sparsity(n_m)) > 1e-9:
            raise ValueError(f"N:M pattern {n_m} prunes {n_m_sparsity(n_m):g} of the weights, but sparsity={sparsity:g}")
        return n_m_mask(scores, n_m)
    if per_row:
        return lowest_k_mask(scores, prune_count(scores.shape[1], sparsity))
    flat = scores.reshape(1, -1)
    return lowest_k_mask(flat, prune_count(flat.shape[1], sparsity)).reshape(scores.shape)


def at_or_below_mask(scores: Tensor, k: int) -> Tensor:
    """True at every score ≤ the score at sorted index `k` of the whole tensor: the `k + 1` lowest,
    plus any ties with the last of them.

    The threshold rule of SparseGPT's reference code (`SparseGPT.fasterprune`, IST-DASLab/sparsegpt:
    `thresh = sort(tmp.flatten())[int(numel * sparsity)]; mask1 = tmp <= thresh`), and of the magnitude
    baseline in the Wanda code (`prune_magnitude`); `lowest_k_mask` prunes exactly `k` instead.
    """
    if not 0 <= k < scores.numel():
        raise ValueError(f"k must index one of the {scores.numel()} scores, got {k}")
    return scores <= scores.flatten().kthvalue(k + 1).values
