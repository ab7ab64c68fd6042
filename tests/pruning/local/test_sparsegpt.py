import math

import pytest
import torch
from torch import nn

from pruning.local.sparsegpt import sparsegpt_prune
from pruning.local.statistics import STATISTICS, InputHessian, InputSqNorm
from pruning.local.wanda import wanda_prune_mask


def correlated_inputs(tokens: int, features: int, seed: int = 0) -> torch.Tensor:
    """[tokens, features] calibration inputs X = Z @ A: independent sources mixed by a random matrix."""
    generator = torch.Generator().manual_seed(seed)
    sources = torch.randn(tokens, features, generator=generator)
    mixing = torch.eye(features) + 0.5 * torch.randn(features, features, generator=generator)
    return sources @ mixing


def hessian_of(inputs: torch.Tensor) -> torch.Tensor:
    statistic = InputHessian(nn.Linear(inputs.shape[-1], 1))
    statistic.update(inputs)
    return statistic.result()


def random_weight(rows: int, columns: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(rows, columns, generator=torch.Generator().manual_seed(seed))


def test_input_hessian_is_two_x_transpose_x_over_all_tokens_of_all_batches():
    first = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(0))  # [batch, seq, features]
    second = torch.randn(7, 8, generator=torch.Generator().manual_seed(1))
    statistic = STATISTICS["hessian"](nn.Linear(8, 3))
    statistic.update(first)
    statistic.update(second.to(torch.bfloat16))
    tokens = torch.cat([first.reshape(-1, 8), second.to(torch.bfloat16).float()])
    assert statistic.result().dtype == torch.float32
    torch.testing.assert_close(statistic.result(), 2 * tokens.T @ tokens / 17, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sparsity", [0.5, 0.3])
@pytest.mark.parametrize("blocksize", [128, 100])  # 100: blocks of 100, 100, 56
def test_unstructured_prunes_floor_of_each_block(sparsity, blocksize):
    weight = random_weight(16, 256)
    pruned = sparsegpt_prune(weight, hessian_of(correlated_inputs(300, 256)), sparsity, blocksize=blocksize)
    per_block = [math.floor(16 * min(blocksize, 256 - start) * sparsity) for start in range(0, 256, blocksize)]
    zeros_per_block = [pruned[:, start : start + blocksize].eq(0).sum().item() for start in range(0, 256, blocksize)]
    assert zeros_per_block == per_block
    assert pruned.eq(0).sum().item() == sum(per_block)


@pytest.mark.parametrize("n_m, pruned_per_group", [("2:4", 2), ("4:8", 4)])
def test_n_m_pattern_in_every_group_of_every_row(n_m, pruned_per_group):
    weight = random_weight(16, 256)
    m = int(n_m.split(":")[1])
    pruned = sparsegpt_prune(weight, hessian_of(correlated_inputs(300, 256)), 0.5, n_m)
    assert pruned.reshape(16, 256 // m, m).eq(0).sum(dim=-1).eq(pruned_per_group).all()


def test_blocks_only_batch_the_updates_to_later_columns():
    # With N:M the mask never depends on the block boundaries, so every blocksize gives the same weights
    # once the errors of each block are carried to the columns after it (Algorithm 1, lazy batch updates).
    weight = random_weight(8, 64)
    hessian = hessian_of(correlated_inputs(200, 64))
    one_block = sparsegpt_prune(weight, hessian, 0.5, "2:4", blocksize=64)
    for blocksize in (4, 16):
        blocked = sparsegpt_prune(weight, hessian, 0.5, "2:4", blocksize=blocksize)
        assert torch.equal(blocked == 0, one_block == 0)
        torch.testing.assert_close(blocked, one_block, rtol=0, atol=1e-4)


def test_n_m_rejects_blocks_that_split_groups():
    with pytest.raises(ValueError, match="blocksize"):
        sparsegpt_prune(random_weight(2, 16), torch.eye(16), 0.5, "2:4", blocksize=6)


def reconstruction_error(weight: torch.Tensor, pruned: torch.Tensor, inputs: torch.Tensor) -> float:
    return torch.linalg.matrix_norm(inputs @ (weight - pruned).T).item()


@pytest.mark.parametrize("n_m", [None, "2:4"])
def test_reconstructs_layer_outputs_better_than_wanda_and_than_its_mask_alone(n_m):
    inputs = correlated_inputs(400, 128)
    weight = random_weight(32, 128)
    pruned = sparsegpt_prune(weight, hessian_of(inputs), 0.5, n_m)
    sq_norm = InputSqNorm(nn.Linear(128, 32))
    sq_norm.update(inputs)
    wanda = weight.masked_fill(wanda_prune_mask(weight, sq_norm.result(), 0.5, n_m), 0)
    mask_only = weight.masked_fill(pruned == 0, 0)
    sparsegpt_error = reconstruction_error(weight, pruned, inputs)
    assert sparsegpt_error < reconstruction_error(weight, wanda, inputs)
    assert sparsegpt_error < reconstruction_error(weight, mask_only, inputs)


def damped(hessian: torch.Tensor, damp: float = 0.01) -> torch.Tensor:
    return hessian + damp * hessian.diagonal().mean() * torch.eye(len(hessian), dtype=hessian.dtype)


def test_single_pruned_weight_gets_the_textbook_obs_update():
    # SparseGPT freezes the columns left of the one it prunes, so the full OBS update is reached when
    # the pruned weight is in the first column: make w_0 the clear OBS choice.
    hessian = hessian_of(correlated_inputs(200, 4))
    weight = torch.tensor([[0.3, -1.2, 0.8, 1.5]])
    pruned = sparsegpt_prune(weight, hessian, 0.25, blocksize=4)

    hinv = torch.linalg.inv(damped(hessian.double()))
    w = weight.double()[0]
    q = (w.square() / hinv.diagonal()).argmin()
    assert q == 0
    expected = w - w[q] / hinv[q, q] * hinv[:, q]
    assert expected[q].abs() < 1e-12
    torch.testing.assert_close(pruned.double()[0], expected, rtol=0, atol=1e-5)
    assert pruned[0, q] == 0


def test_weight_pruned_mid_row_updates_only_later_columns_by_obs_on_them():
    # Pruning w_2 with w_0, w_1 frozen is OBS on the sub-problem of columns 2.. (Hessian H[2:, 2:]).
    hessian = hessian_of(correlated_inputs(200, 5))
    weight = torch.tensor([[1.1, -0.9, 0.3, 1.3, -0.7]])
    pruned = sparsegpt_prune(weight, hessian, 0.2, blocksize=8)

    hinv_later = torch.linalg.inv(damped(hessian.double())[2:, 2:])
    w_later = weight.double()[0, 2:]
    expected_later = w_later - w_later[0] / hinv_later[0, 0] * hinv_later[:, 0]
    assert torch.equal(pruned[0, :2], weight[0, :2])
    assert pruned[0, 2] == 0
    torch.testing.assert_close(pruned.double()[0, 2:], expected_later, rtol=0, atol=1e-5)


def test_dead_input_gets_its_weight_column_zeroed_without_nan():
    inputs = correlated_inputs(200, 32)
    inputs[:, 5] = 0
    weight = random_weight(8, 32)
    pruned = sparsegpt_prune(weight, hessian_of(inputs), 0.5)
    assert torch.isfinite(pruned).all()
    assert pruned[:, 5].eq(0).all()
    assert pruned.eq(0).sum().item() == 8 * 32 // 2


def test_leaves_its_inputs_untouched_and_keeps_the_dtype():
    hessian = hessian_of(correlated_inputs(200, 64))
    hessian[3, :] = hessian[:, 3] = 0  # a dead input: its diagonal must not be patched in the caller's tensor
    weight = random_weight(8, 64)
    weight_before, hessian_before = weight.clone(), hessian.clone()
    pruned = sparsegpt_prune(weight, hessian, 0.5)
    assert torch.equal(weight, weight_before) and torch.equal(hessian, hessian_before)
    assert pruned.dtype == torch.float32 and pruned is not weight

    pruned_bf16 = sparsegpt_prune(weight.to(torch.bfloat16), hessian, 0.5)
    assert pruned_bf16.dtype == torch.bfloat16
    assert pruned_bf16.eq(0).sum().item() == 8 * 64 // 2


def test_rejects_hessian_of_wrong_shape():
    with pytest.raises(ValueError, match=r"\(4, 4\).*\(2, 4\).*\(3, 3\)"):
        sparsegpt_prune(torch.ones(2, 4), torch.eye(3), 0.5)


def test_rejects_hessian_not_positive_definite_after_damping():
    with pytest.raises(ValueError, match="raise damp"):
        sparsegpt_prune(torch.ones(2, 4), -torch.eye(4), 0.5)


def test_reference_mask_rule_prunes_at_or_below_the_score_at_index_floor_n_s():
    # H = I: H⁻¹ is diagonal, so no weight is updated and the scores are w² / const
    weight = torch.tensor([[0.1, -0.8, 0.4, 0.2], [-0.5, 0.3, 0.9, -0.05]])
    exact = sparsegpt_prune(weight, torch.eye(4), 0.5, blocksize=4)
    reference = sparsegpt_prune(weight, torch.eye(4), 0.5, blocksize=4, mask_rule="reference")
    # |w| sorted: 0.05 0.1 0.2 0.3 | 0.4 ...: exact prunes those 4, the reference also the one at index 4
    assert (exact == 0).tolist() == [[True, False, False, True], [False, True, False, True]]
    assert (reference == 0).tolist() == [[True, False, True, True], [False, True, False, True]]
    assert torch.equal(reference[reference != 0], weight[reference != 0])


def test_reference_mask_rule_prunes_every_tie_and_one_weight_at_sparsity_zero():
    weight = torch.tensor([[1.0, -1.0, 2.0, 1.0]])
    assert sparsegpt_prune(weight, torch.eye(4), 0.25, blocksize=4, mask_rule="reference").eq(0).sum() == 3
    assert sparsegpt_prune(weight, torch.eye(4), 0.25, blocksize=4).eq(0).sum() == 1
    assert sparsegpt_prune(weight, torch.eye(4), 0.0, blocksize=4, mask_rule="reference").eq(0).sum() == 3
    assert sparsegpt_prune(weight, torch.eye(4), 0.0, blocksize=4).eq(0).sum() == 0


@pytest.mark.parametrize("blocksize", [128, 100])
def test_reference_mask_rule_prunes_one_more_per_block_without_ties(blocksize):
    weight = random_weight(16, 256)
    pruned = sparsegpt_prune(weight, hessian_of(correlated_inputs(300, 256)), 0.5, blocksize=blocksize, mask_rule="reference")
    per_block = [math.floor(16 * min(blocksize, 256 - start) * 0.5) + 1 for start in range(0, 256, blocksize)]
    assert [pruned[:, start : start + blocksize].eq(0).sum().item() for start in range(0, 256, blocksize)] == per_block


def test_mask_rule_leaves_n_m_alone_and_rejects_unknown_rules():
    weight, hessian = random_weight(8, 64), hessian_of(correlated_inputs(200, 64))
    assert torch.equal(sparsegpt_prune(weight, hessian, 0.5, "2:4", mask_rule="reference"), sparsegpt_prune(weight, hessian, 0.5, "2:4"))
    with pytest.raises(ValueError, match="mask_rule"):
        sparsegpt_prune(weight, hessian, 0.5, mask_rule="le")


def test_mask_rule_reaches_the_pruner_from_the_spec():
    from pydantic import TypeAdapter, ValidationError

    from pruning.local import local_pruner
    from pruning.specs import MethodSpec

    parse = TypeAdapter(MethodSpec).validate_python
    spec = parse({"name": "sparsegpt", "sparsity": 0.5, "mask_rule": "reference"})
    assert spec.local_options() == {"blocksize": 128, "damp": 0.01, "mask_rule": "reference"}
    assert parse({"name": "owl", "sparsity": 0.5, "local": "sparsegpt", "mask_rule": "reference"}).local_options()["mask_rule"] == "reference"
    legacy = parse({"name": "sparsegpt", "sparsity": 0.5})
    assert spec.method_id != legacy.method_id and "mask_rule" not in legacy.canonical_params()
    assert parse({"name": "sparsegpt", "sparsity": 0.5, "mask_rule": "exact"}).method_id == legacy.method_id
    with pytest.raises(ValidationError, match="mask_rule"):
        parse({"name": "sparsegpt", "sparsity": 0.5, "mask_rule": "le"})
    with pytest.raises(ValidationError, match="mask_rule='reference' chooses how SparseGPT counts a block's mask; local is 'wanda'"):
        parse({"name": "ecoflap", "sparsity": 0.5, "mask_rule": "reference"})
    weight = torch.tensor([[0.1, -0.8, 0.4, 0.2]])
    pruned = local_pruner("sparsegpt").prune(weight, torch.eye(4), 0.25, None, blocksize=4, damp=0.01, mask_rule="reference")
    assert pruned.eq(0).sum() == 2  # floor(4 · 0.25) = 1, and the reference rule one more


def row_major_column_loop(weight: torch.Tensor, hessian: torch.Tensor, sparsity: float, n_m, blocksize: int) -> torch.Tensor:
    """The kernel as it was before the column-major rewrite: W row-major, one column at a time."""
    from pruning.local.selection import prune_mask
    from pruning.local.sparsegpt import _inverse_hessian_cholesky

    group = int(n_m.split(":")[1]) if n_m else None
    pruned = weight.to(torch.float32, copy=True)
    hinv, dead = _inverse_hessian_cholesky(hessian, 0.01)
    pruned[:, dead] = 0
    for start in range(0, pruned.shape[1], blocksize):
        end = min(start + blocksize, pruned.shape[1])
        block, block_hinv = pruned[:, start:end], hinv[start:end, start:end]
        diag, errors = block_hinv.diagonal(), torch.zeros_like(block)
        mask = prune_mask(block.square() / diag.square(), sparsity, per_row=False) if group is None else torch.zeros_like(block, dtype=torch.bool)
        for i in range(end - start):
            if group is not None and i % group == 0:
                mask[:, i : i + group] = prune_mask(block[:, i : i + group].square() / diag[i : i + group].square(), sparsity, n_m, per_row=True)
            column = block[:, i]
            kept = column.masked_fill(mask[:, i], 0)
            error = (column - kept) / block_hinv[i, i]
            block[:, i + 1 :] -= torch.outer(error, block_hinv[i, i + 1 :])
            block[:, i] = kept
            errors[:, i] = error
        pruned[:, end:] -= errors @ hinv[start:end, end:]
    return pruned


@pytest.mark.parametrize("n_m", [None, "2:4"])
@pytest.mark.parametrize("blocksize", [128, 100, 16])
def test_column_major_kernel_computes_what_the_row_major_loop_did(n_m, blocksize):
    # Same masks; same weights to float rounding (bit-identical on the machines this was written on:
    # every product and difference is formed as before, only the memory layout and op count changed).
    inputs = correlated_inputs(400, 256)
    inputs[:, 7] = 0  # a dead input too
    weight, hessian = random_weight(48, 256), hessian_of(inputs)
    pruned = sparsegpt_prune(weight, hessian, 0.5, n_m, blocksize=blocksize)
    expected = row_major_column_loop(weight, hessian, 0.5, n_m, blocksize)
    assert pruned.is_contiguous()
    assert torch.equal(pruned == 0, expected == 0)
    torch.testing.assert_close(pruned, expected, rtol=0, atol=1e-6)
