"""OWL's outlier ratios and ECoFLaP's per-tensor zeroth-order scores against the transcriptions of
their reference code (tests/reference)."""

from __future__ import annotations

import inspect

import pytest
import torch

import pruning.scores.gradient as gradient
from pruning.local.walk import calibration_batches
from pruning.models.adapters import adapter_for, blocks, prunable_linears
from pruning.scores.gradient import zeroth_order_scores
from pruning.scores.outliers import outlier_ratios
from tests.reference import ecoflap as reference_ecoflap
from tests.reference import owl as reference_owl


@pytest.mark.parametrize("m", [3.0, 5.0])
def test_outlier_ratios_equal_the_reference(tiny_model, calibration_batch, m):
    model = tiny_model("llama")
    ours = outlier_ratios(model, adapter_for(model), calibration_batch, m=m, batch_size=4, progress=False)
    reference = reference_owl.outlier_ratios(model, calibration_batch, hyper_m=m)
    assert all(ratio > 0 for ratio in reference) and len(set(reference)) == len(reference)
    # a percentage there, a fraction here; one entry of a block's 36,864 may flip on float rounding
    assert [100 * r for r in ours.scores["language"]] == pytest.approx(reference, abs=100 / 36864 + 1e-9)


PER_TENSOR = "estimator" in inspect.signature(zeroth_order_scores).parameters


@pytest.mark.skipif(not PER_TENSOR, reason="zeroth_order_scores(estimator='per_tensor') has not landed on this branch yet")
@pytest.mark.parametrize("aggregate, reference_aggregate", [("sum", "sum"), ("mean", "avg")])
def test_per_tensor_zeroth_order_scores_equal_the_reference_given_the_same_z(
    tiny_model, calibration_batch, monkeypatch, aggregate, reference_aggregate
):
    """The same z for every (tensor, batch) on both sides: one seeded generator each, drawn in the
    reference's order (tensors in model order, then batches); ours asks `_noise` once per pair."""
    ours_model, reference_model = tiny_model("llama"), tiny_model("llama")
    adapter = adapter_for(ours_model)
    batches = calibration_batches(calibration_batch, 2)  # 3 batches of 2 sequences
    ours_z = torch.Generator().manual_seed(7)
    monkeypatch.setattr(
        gradient, "_noise", lambda weights, seed: [torch.randn(w.shape, generator=ours_z) for w in weights]
    )
    ours = zeroth_order_scores(
        ours_model, adapter, batches, epsilon=1e-3, aggregate=aggregate, estimator="per_tensor", progress=False
    )

    group = adapter.groups[0]
    names, block_of, sizes = [], {}, {}
    for index, block in enumerate(blocks(reference_model, group)):
        for name, linear in prunable_linears(block, group).items():
            full = f"{group.path}.{index}.{name}.weight"
            names.append(full)
            block_of[full], sizes[full] = str(index), linear.weight.numel()
    reference_z = torch.Generator().manual_seed(7)
    tensor_scores = reference_ecoflap.zeroth_order_tensor_scores(
        reference_model, names, batches,
        loss=lambda model, batch: model(**batch, labels=batch["input_ids"], use_cache=False).loss.float(),
        draw_z=lambda param: torch.randn(param.shape, generator=reference_z),
        eps=1e-3,
    )  # fmt: skip
    reference_scores, reference_sizes = reference_ecoflap.group_scores(tensor_scores, block_of, sizes, reference_aggregate)

    assert ours.n_params["language"] == list(reference_sizes.values())
    assert ours.scores["language"] == pytest.approx([float(s) for s in reference_scores.values()], rel=1e-3)
    assert len(set(ours.scores["language"])) == len(ours.scores["language"])
