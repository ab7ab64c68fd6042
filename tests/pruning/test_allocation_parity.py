"""OWL's and ECoFLaP's allocations against the transcriptions of their reference code (tests/reference)."""

from __future__ import annotations

import math
import random

import pytest
import torch

from pruning.allocation import ecoflap_sparsities, owl_sparsities
from pruning.local.walk import prune_model
from pruning.models.adapters import adapter_for
from pruning.scores.outliers import outlier_ratios
from tests.reference import ecoflap as reference_ecoflap
from tests.reference import owl as reference_owl
from tests.reference import wanda as reference_wanda
from tests.reference.agreement import agreement, zero_masks


@pytest.mark.parametrize("target, lam", [(0.5, 0.08), (0.7, 0.2)])
def test_owl_sparsities_equal_the_reference_for_equal_blocks(target, lam):
    percents = [7.1, 3.2, 5.0, 5.0, 12.4, 0.9]  # the reference's unit; ours are fractions
    ours = owl_sparsities([p / 100 for p in percents], [1000] * 6, target, lam)
    reference = reference_owl.layer_sparsities(percents, target, lam)
    assert ours == pytest.approx(reference, abs=1e-12)
    assert max(ours) - min(ours) == pytest.approx(2 * lam) and sum(ours) / 6 == pytest.approx(target)
    assert ours[4] < target < ours[5]  # more outliers keep more


def test_owl_with_wanda_prunes_like_the_reference(tiny_model, calibration_batch):
    ours, reference = tiny_model("llama"), tiny_model("llama")
    adapter = adapter_for(ours)
    ratios = outlier_ratios(ours, adapter, calibration_batch, m=3.0, batch_size=4, progress=False)
    values, sizes = ratios.flat()
    sparsities = owl_sparsities(values, sizes, 0.6, lam=0.08)
    prune_model(ours, adapter, "wanda", calibration_batch, block_sparsity=ratios.split(sparsities), batch_size=4, progress=False)

    reference_ratios = reference_owl.outlier_ratios(reference, calibration_batch, hyper_m=3.0)
    reference_sparsities = reference_owl.layer_sparsities(reference_ratios, 0.6, lamda=0.08)
    assert sparsities == pytest.approx(reference_sparsities, abs=1e-9)
    assert max(sparsities) - min(sparsities) == pytest.approx(0.16)
    reference_wanda.prune_wanda(reference, calibration_batch, 0.6, layer_sparsities=reference_sparsities)
    assert agreement(zero_masks(ours), zero_masks(reference)) >= 0.999


def keeps(sparsities, sizes) -> list[int]:
    return [round((1 - s) * n) for s, n in zip(sparsities, sizes)]


def reference_allocation(scores, sizes, target, max_extra) -> list[float]:
    groups = {str(b): torch.FloatTensor([score]).sum() for b, score in enumerate(scores)}
    allocation = reference_ecoflap.allocation(groups, {str(b): n for b, n in enumerate(sizes)}, target, target + max_extra)
    return list(allocation.values())


def test_ecoflap_allocation_equals_the_reference_when_every_share_is_whole():
    # sizes 100, 100, 1000 at 50% (keep 600), s_max 0.6 (keep >= 40, 40, 400); scores 10:1:1 give block 0
    # 100 of the 120 left, more than its room of 60: it fills, and 60 goes to the others, 30 each.
    scores, sizes = [10.0, 1.0, 1.0], [100, 100, 1000]
    assert keeps(ecoflap_sparsities(scores, sizes, 0.5, 0.1), sizes) == [100, 70, 430]
    assert keeps(reference_allocation(scores, sizes, 0.5, 0.1), sizes) == [100, 70, 430]


def test_ecoflap_reference_rounds_every_share_up_and_adds_its_surplus_to_the_largest_block():
    # 3 blocks of 100 at 50% (keep 150), s_max 0.8: 20 each, then 90 left shared 1:2:4 = 12.86, 25.71, 51.43.
    # Ours: largest remainders, exactly 150. The reference: ceil, 13 + 26 + 52 = 91, one too many; its
    # surplus loop then adds (`+=`) that one to the block keeping most, so it keeps 152.
    scores, sizes = [1.0, 2.0, 4.0], [100, 100, 100]
    assert keeps(ecoflap_sparsities(scores, sizes, 0.5, 0.3), sizes) == [33, 46, 71]
    assert keeps(reference_allocation(scores, sizes, 0.5, 0.3), sizes) == [33, 46, 73]


@pytest.mark.parametrize("seed", range(20))
def test_ecoflap_allocation_is_the_reference_s_to_its_rounding(seed):
    """Random scores on SmolLM2-sized and VLM-like mixed blocks: ours keeps exactly K; the reference keeps
    at least K, and differs from ours per block by at most one weight per fill round plus its surplus
    (each at most one per block), so by at most 2 × blocks weights."""
    rng = random.Random(seed)
    n_blocks = rng.choice([4, 12, 30])
    sizes = [rng.choice([36864, 1327104, 3538944]) for _ in range(n_blocks)] if seed % 2 else [3538944] * n_blocks
    scores = [rng.random() ** 3 * (10 if rng.random() < 0.2 else 1) for _ in range(n_blocks)]
    target, max_extra = rng.choice([0.5, 0.6, 0.7]), rng.choice([0.1, 0.2])
    ours = keeps(ecoflap_sparsities(scores, sizes, target, max_extra), sizes)
    reference = keeps(reference_allocation(scores, sizes, target, max_extra), sizes)
    keep_budget = sum(sizes) * (1 - target)
    assert abs(sum(ours) - keep_budget) <= 1
    assert sum(reference) >= math.floor(keep_budget) - 8  # fp32 sums in the reference's loop test
    assert max(abs(a - b) for a, b in zip(ours, reference)) <= 2 * n_blocks
