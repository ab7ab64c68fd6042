"""SparseGPT (Frantar & Alistarh, 2023, "SparseGPT: Massive Language Models Can Be Accurately Pruned in One-Shot").

Each row of W [out, in] is pruned to keep ‖WX − ŴX‖² small, with H = 2XXᵀ/n (`statistics.InputHessian`).
Columns are visited left to right; zeroing w_q is compensated by the Optimal Brain Surgeon update
δw = −(w_q / [H⁻¹]_qq) · H⁻¹_{:,q} restricted to the columns not yet visited. Row q of the upper Cholesky
factor U of H⁻¹ (H⁻¹ = UᵀU) is exactly that restricted H⁻¹ row scaled by 1/U_qq, so one factorisation
serves every column (Algorithm 1). The mask is chosen lazily, per block of `blocksize` columns by
w² / U²_jj ("adaptive mask selection"), or every M columns for N:M. Follows `SparseGPT.fasterprune` of
the reference code (github.com/IST-DASLab/sparsegpt); `mask_rule` chooses how a block's mask counts:
"exact" prunes floor(n·s) of its n weights, "reference" every weight scoring ≤ the score at sorted
index floor(n·s), as that code does (one more per block, plus ties).
"""

from __future__ import annotations

import torch
from torch import Tensor

from pruning.local.selection import at_or_below_mask, prune_count, prune_mask
from pruning.specs import SparseGPTMaskRule, parse_n_m


def sparsegpt_prune(
    weight: Tensor,
    hessian: Tensor,
    sparsity: float,
    n_m: str | None = None,
    blocksize: int = 128,
    damp: float = 0.01,
    mask_rule: SparseGPTMaskRule = "exact",
) -> Tensor:
    """The pruned and OBS-updated copy of `weight` [out, in], given H = 2XXᵀ/n [in, in]; `weight` is left as is.

    `damp` adds damp · mean(diag H) to the diagonal of H. Computed in fp32, returned in `weight`'s dtype.
    `mask_rule` applies to unstructured sparsity only (N:M prunes exactly M−N of every M either way):
    "reference" also prunes one weight of a block at sparsity 0, as the reference code does.
    """
    if weight.dim() != 2:
        raise ValueError(f"weight must be [out_features, in_features], got shape {tuple(weight.shape)}")
    columns = weight.shape[1]
    if hessian.shape != (columns, columns):
        raise ValueError(
            f"hessian must be [in_features, in_features] = {(columns, columns)} for a weight of shape "
            f"{tuple(weight.shape)}, got shape {tuple(hessian.shape)}"
        )
    if blocksize < 1:
        raise ValueError(f"blocksize must be positive, got {blocksize}")
    if mask_rule not in ("exact", "reference"):
        raise ValueError(f"mask_rule must be 'exact' or 'reference', got {mask_rule!r}")
    group = parse_n_m(n_m)[1] if n_m is not None else None
    if group is not None and (blocksize % group or columns % group):
        raise ValueError(
            f"N:M pattern {n_m} needs blocksize ({blocksize}) and in_features ({columns}) divisible by {group}"
        )

    # column-major (pruned.T is contiguous): each column, and the columns right of it in a block, are
    # contiguous in memory, so the per-column steps below run on contiguous data
    pruned = weight.detach().T.to(torch.float32, memory_format=torch.contiguous_format, copy=True).T
    hinv, dead = _inverse_hessian_cholesky(hessian.detach().to(pruned.device, torch.float32), damp)
    pruned[:, dead] = 0

    for start in range(0, columns, blocksize):
        end = min(start + blocksize, columns)
        block = pruned[:, start:end]  # a view: updated in place
        block_hinv = hinv[start:end, start:end]
        block_hinv_diag = block_hinv.diagonal()
        block_errors = torch.zeros_like(block)  # column-major too
        if group is None:  # one mask for the whole block, from the weights as updated so far
            block_scores = block.square() / block_hinv_diag.square()
            if mask_rule == "exact":
                block_mask = prune_mask(block_scores, sparsity, per_row=False)
            else:
                block_mask = at_or_below_mask(block_scores, prune_count(block_scores.numel(), sparsity))
        else:
            block_mask = torch.zeros_like(block, dtype=torch.bool)
        kept = (~block_mask).T.contiguous()  # [column, row]: one contiguous row per column
        for i in range(end - start):
            if group is not None and i % group == 0:
                group_scores = block[:, i : i + group].square() / block_hinv_diag[i : i + group].square()
                block_mask[:, i : i + group] = prune_mask(group_scores, sparsity, n_m, per_row=True)
                kept[i : i + group] = ~block_mask[:, i : i + group].T
            # error = w_q / [H⁻¹]_qq where pruned, 0 where kept; three in-place ops per column
            error = torch.div(block[:, i], block_hinv[i, i], out=block_errors[:, i]).masked_fill_(kept[i], 0)
            block[:, i + 1 :].sub_(torch.outer(block_hinv[i, i + 1 :], error).T)  # −= error ⊗ H⁻¹_{q, q+1:}
        block.masked_fill_(block_mask, 0)  # column i changes no more after its own step
        pruned[:, end:] -= block_errors @ hinv[start:end, end:]  # the block's updates to later columns

    return pruned.to(weight.dtype).contiguous()


def _inverse_hessian_cholesky(hessian: Tensor, damp: float) -> tuple[Tensor, Tensor]:
    """U with H⁻¹ = UᵀU for the damped H, and the dead inputs (H_jj = 0, which get H_jj = 1)."""
    if not torch.isfinite(hessian).all():
        raise ValueError("hessian has non-finite entries")
    hessian = hessian.clone()
    diagonal = hessian.diagonal()  # a view
    dead = diagonal == 0
    diagonal[dead] = 1
    diagonal += damp * torch.diag(hessian).mean()  # mean over a copy of the diagonal, as the reference: bit-identical damping
    try:
        return torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(hessian)), upper=True), dead
    except torch.linalg.LinAlgError as error:
        raise ValueError(
            f"hessian is not positive definite after damping with damp={damp}; raise damp"
        ) from error
