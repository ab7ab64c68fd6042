"""SparseGPT as its reference code computes it (IST-DASLab/sparsegpt, sparsegpt.py at 5e3e2d1; the copy in
locuslab/wanda lib/sparsegpt.py, driven by lib/prune.py `prune_sparsegpt`, is the same algorithm).

- `SparseGPT.add_batch`: H is a running mean over calibration *samples*: scaled by n/(n + b), then
  added (2/(n + b)) · XXᵀ of the batch's tokens, so after N samples H = 2 Σ_tokens x xᵀ / N.
- `SparseGPT.fasterprune`: dead inputs (H_jj = 0) get H_jj = 1 and their weight column 0; damping
  percdamp · mean(diag H) on the diagonal; Hinv = upper Cholesky factor of H⁻¹. Per block of
  `blocksize` columns: unstructured, scores W² / diag(Hinv_block)², threshold = the sorted scores'
  value at index int(numel · s), every score <= it pruned; N:M, at every M-th column the `prune_n`
  lowest scores of the next M columns by `topk`. Then column by column: q = w with the pruned rows
  zeroed, err = (w − q) / Hinv_ii, the block's columns from i on updated by −err ⊗ Hinv_i,i:, the
  block's columns replaced by the q's; after the block, the later columns get −Err · Hinv_block,later.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from tests.reference.layerwise import walk_layers


class Hessian:
    """`SparseGPT.__init__` / `add_batch`: the running-mean H of one linear."""

    def __init__(self, linear: nn.Linear):
        self.H = torch.zeros(linear.in_features, linear.in_features, device=linear.weight.device)
        self.nsamples = 0

    def add_batch(self, inp: Tensor) -> None:
        if inp.dim() == 2:
            inp = inp.unsqueeze(0)
        batch = inp.shape[0]
        inp = inp.reshape(-1, inp.shape[-1]).t()
        self.H *= self.nsamples / (self.nsamples + batch)
        self.nsamples += batch
        inp = math.sqrt(2 / self.nsamples) * inp.float()
        self.H += inp.matmul(inp.t())


def fasterprune(
    weight: Tensor, hessian: Tensor, sparsity: float, prune_n: int = 0, prune_m: int = 0,
    blocksize: int = 128, percdamp: float = 0.01,
) -> Tensor:  # fmt: skip
    """`SparseGPT.fasterprune` on a copy: the pruned and updated weight, in `weight`'s dtype."""
    W = weight.clone().float()
    H = hessian.clone().to(W.device)
    rows, columns = W.shape
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    damp = percdamp * torch.mean(torch.diag(H))
    diagonal = torch.arange(columns, device=W.device)
    H[diagonal, diagonal] += damp
    H = torch.linalg.cholesky(H)
    H = torch.cholesky_inverse(H)
    Hinv = torch.linalg.cholesky(H, upper=True)

    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        if prune_n == 0:
            scores = W1**2 / (torch.diag(Hinv1).reshape((1, -1))) ** 2
            threshold = torch.sort(scores.flatten())[0][int(scores.numel() * sparsity)]
            mask1 = scores <= threshold
        else:
            mask1 = torch.zeros_like(W1) == 1
        for i in range(i2 - i1):
            w = W1[:, i]
            d = Hinv1[i, i]
            if prune_n != 0 and i % prune_m == 0:
                scores = W1[:, i : i + prune_m] ** 2 / (torch.diag(Hinv1)[i : i + prune_m].reshape((1, -1))) ** 2
                mask1.scatter_(1, i + torch.topk(scores, prune_n, dim=1, largest=False)[1], True)
            q = w.clone()
            q[mask1[:, i]] = 0
            Q1[:, i] = q
            err1 = (w - q) / d
            W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err1
        W[:, i1:i2] = Q1
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
    return W.to(weight.dtype)


def prune_sparsegpt(
    model: nn.Module, ids: Tensor, sparsity: float, prune_n: int = 0, prune_m: int = 0,
    blocksize: int = 128, percdamp: float = 0.01,
) -> None:  # fmt: skip
    """`prune_sparsegpt` of the Wanda code, in place: every linear of a layer from that layer's dense inputs."""

    def prune(i: int, linears: dict[str, nn.Linear], hessians: dict[str, Hessian]) -> None:
        for name, linear in linears.items():
            linear.weight.data = fasterprune(
                linear.weight.data, hessians[name].H, sparsity, prune_n, prune_m, blocksize, percdamp
            )

    walk_layers(model, ids, Hessian, prune)
