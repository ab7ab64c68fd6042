"""OWL's outlier ratios from the walk: one per block, on the dense model, the model left unchanged."""

from __future__ import annotations

import torch

from pruning.allocation import outlier_ratio
from pruning.models.adapters import adapter_for, prunable_linears
from pruning.scores import outlier_ratios


def test_one_ratio_per_block_and_the_first_matches_a_hand_computation(tiny_model, calibration_batch):
    model = tiny_model("llama")
    adapter = adapter_for(model)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    ratios = outlier_ratios(model, adapter, calibration_batch, m=5.0, batch_size=4, progress=False)
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())
    assert len(ratios.scores["language"]) == 4 and all(0.0 <= r <= 1.0 for r in ratios.scores["language"])

    # block 0 by hand: hooks on its linears during a plain forward give the same input norms
    group = adapter.groups[0]
    linears = prunable_linears(model.model.layers[0], group)
    sq_norms = {name: torch.zeros(linear.in_features) for name, linear in linears.items()}

    def accumulate(name):
        def hook(module, args, output):
            sq_norms[name].add_(args[0].reshape(-1, args[0].shape[-1]).square().sum(0))  # returns None: output kept

        return hook

    hooks = [linear.register_forward_hook(accumulate(name)) for name, linear in linears.items()]
    with torch.no_grad():
        model(input_ids=calibration_batch)
    for hook in hooks:
        hook.remove()
    metrics = [linear.weight.abs() * sq_norms[name].sqrt() for name, linear in linears.items()]
    assert ratios.scores["language"][0] == outlier_ratio(metrics, 5.0)
    assert ratios.n_params["language"][0] == sum(linear.weight.numel() for linear in linears.values())


def test_a_lower_threshold_finds_more_outliers(tiny_model, calibration_batch):
    model = tiny_model("llama")
    adapter = adapter_for(model)
    strict = outlier_ratios(model, adapter, calibration_batch, m=5.0, progress=False).scores["language"]
    loose = outlier_ratios(model, adapter, calibration_batch, m=2.0, progress=False).scores["language"]
    assert all(l >= s for l, s in zip(loose, strict)) and sum(loose) > sum(strict)


def test_an_offloaded_model_gives_the_same_ratios(calibration_batch, monkeypatch):
    from pruning.models.offload import offload_model
    from tests.pruning.local.test_offload import DeviceLedger, tiny_llama

    model = tiny_llama()
    adapter = adapter_for(model)
    expected = outlier_ratios(model, adapter, calibration_batch, batch_size=4, progress=False)
    offload_model(model, adapter, "cpu")
    ledger = DeviceLedger(monkeypatch, model)
    assert outlier_ratios(model, adapter, calibration_batch, batch_size=4, progress=False, execution_device="cpu") == expected
    assert ledger.peak_blocks == 1
