"""pruning.models.offload on its own: whole forwards (evaluation, generation) of an onloaded model,
the model's placement after `offload_model` and `load_model`, and the spec field's identity."""

from __future__ import annotations

import copy

import pytest
import torch

from pruning.models.adapters import adapter_for, blocks
from pruning.models.offload import input_device, offload_model, onloaded, storage
from pruning.models.sources import load_model, save_checkpoint
from pruning.specs import ModelSpec
from tests.pruning.local.test_offload import N_LAYERS, DeviceLedger, computes_on_copies, mapped_file, tiny_llama


def test_whole_forwards_and_generation_onload_one_block_at_a_time(monkeypatch):
    """What evaluation runs (lm-eval's log-likelihoods, generation with a KV cache) gives the same bits."""
    reference = tiny_llama()
    model = copy.deepcopy(reference)
    ids = torch.randint(0, 128, (2, 10), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        logits = reference(input_ids=ids).logits
    generated = reference.generate(ids, max_new_tokens=4, do_sample=False)

    adapter = adapter_for(model)
    offload_model(model, adapter, "cpu")
    ledger = DeviceLedger(monkeypatch, model)
    handles = computes_on_copies(model, ledger)
    with onloaded(model, adapter, "cpu") as onloader:
        assert onloader is not None and input_device(model) == torch.device("cpu")
        with torch.no_grad():
            assert torch.equal(model(input_ids=ids).logits, logits)
        assert torch.equal(model.generate(ids, max_new_tokens=4, do_sample=False), generated)
    for handle in handles:
        handle.remove()
    assert ledger.peak_blocks == 1 and ledger.on_device == {}
    assert ledger.onloads > 5 * N_LAYERS  # every layer came over for every forward and decoding step


def test_a_failed_forward_sends_its_blocks_back(monkeypatch):
    model = tiny_llama()
    adapter = adapter_for(model)
    offload_model(model, adapter, "cpu")
    ledger = DeviceLedger(monkeypatch, model)

    def fail(module, args, output):
        raise RuntimeError("out of memory")

    blocks(model, adapter.groups[0])[2].mlp.register_forward_hook(fail)
    with pytest.raises(RuntimeError, match="out of memory"), onloaded(model, adapter, "cpu"):
        model(input_ids=torch.zeros(1, 4, dtype=torch.long))
    assert ledger.on_device == {}


def test_offload_model_places_the_weights_and_refuses_an_unknown_place(tmp_path):
    model = tiny_llama()
    adapter = adapter_for(model)
    assert offload_model(model, adapter, "none") is model and storage(model) is None
    with pytest.raises(ValueError, match="'none', 'cpu' or 'disk'"):
        offload_model(model, adapter, "gpu")
    offload_model(model, adapter, "disk", folder=tmp_path / "offload")
    assert storage(model) == "disk"
    assert list((tmp_path / "offload").iterdir()) == []  # the files are unlinked once mapped


@pytest.mark.parametrize("offload", ["none", "cpu", "disk"])
def test_load_model_stores_the_model_as_the_spec_says(offload, tmp_path):
    checkpoint = save_checkpoint(tiny_llama(), None, tmp_path / "tiny")
    network, _ = load_model(checkpoint, ModelSpec(source=str(checkpoint), offload=offload))
    assert storage(network) == (None if offload == "none" else offload)
    up_proj = blocks(network, adapter_for(network).groups[0])[0].mlp.up_proj.weight
    # transformers maps the checkpoint's own file too (copy on write): the offload file is another one
    assert ("prunebench-offload-" in (mapped_file(up_proj) or "")) == (offload == "disk")


def test_offload_is_no_part_of_a_models_identity_or_dump():
    plain, offloaded = ModelSpec(source="packaged:smollm2-135m"), ModelSpec(source="packaged:smollm2-135m", offload="cpu")
    assert plain.identity() == offloaded.identity()
    assert plain.model_dump() == offloaded.model_dump()
    with pytest.raises(ValueError, match="offload"):
        ModelSpec(source="packaged:smollm2-135m", offload="gpu")


def test_a_disk_offloaded_model_saves_a_checkpoint_that_loads_the_same(tmp_path):
    model = tiny_llama()
    expected = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    offload_model(model, adapter_for(model), "disk", folder=tmp_path / "offload")
    checkpoint = save_checkpoint(model, None, tmp_path / "saved")  # views of one mapping per block, saved apart
    reloaded, _ = load_model(checkpoint, ModelSpec(source=str(checkpoint)))
    assert reloaded.state_dict().keys() == expected.keys()
    assert all(torch.equal(tensor, expected[name]) for name, tensor in reloaded.state_dict().items())
