"""Wanda (Sun et al., 2023, "A Simple and Effective Pruning Approach for LLMs").

Score S_ij = |W_ij| · ‖X_j‖₂ (Eq. 1), where ‖X_j‖₂ is the norm of input feature j over all calibration
tokens; weights are compared within each output row (Sec. 3, "per output"), or N:M within groups.
`per_row=False` compares them over the whole layer instead, as ECoFLaP's reference code does for
vision-transformer blocks (`VITLayerWandaPruner._prune` in LAVIS/lavis/compression/pruners/wanda_pruner.py).
"""

from __future__ import annotations

from torch import Tensor

from pruning.local.selection import prune_mask


def wanda_prune_mask(
    weight: Tensor, input_sq_norm: Tensor, sparsity: float, n_m: str | None = None, *, per_row: bool = True
) -> Tensor:
    """True where `weight` [out, in] is to be zeroed; `input_sq_norm[j]` = Σ over tokens of x_j².

    The floor(n·s) lowest scores of each row (n = in_features), or of the layer (n = out·in) when
    not `per_row`; with `n_m` the pattern decides and `per_row` is moot.
    """
    if input_sq_norm.shape != (weight.shape[1],):
        raise ValueError(
            f"input_sq_norm must have one entry per input feature ({weight.shape[1]}), got shape {tuple(input_sq_norm.shape)}"
        )
    scores = weight.abs().float() * input_sq_norm.float().sqrt()
    return prune_mask(scores, sparsity, n_m, per_row=per_row)
