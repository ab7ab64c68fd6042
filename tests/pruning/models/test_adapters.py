import pytest
import torch

from pruning.errors import AdapterError
from pruning.local.walk import prune_model
from pruning.models.adapters import LLAMA_LINEARS, adapter_for, blocks, prunable_linears

FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma3")


@pytest.mark.parametrize("family", FAMILIES)
def test_finds_every_block_and_all_seven_linears(tiny_model, family):
    model = tiny_model(family)
    adapter = adapter_for(model)
    (group,) = adapter.groups
    assert adapter.family == "llama-like" and group.modality == "language"
    assert len(blocks(model, group)) == 4
    for block in blocks(model, group):
        assert tuple(prunable_linears(block, group)) == LLAMA_LINEARS


@pytest.mark.parametrize("family", FAMILIES)
def test_wanda_half_runs_and_the_model_still_works(tiny_model, calibration_batch, family):
    model = tiny_model(family)
    report = prune_model(model, adapter_for(model), "wanda", calibration_batch, target=0.5, batch_size=4, progress=False)
    assert report.achieved_sparsity == 0.5
    with torch.no_grad():
        assert torch.isfinite(model(calibration_batch).logits).all()


def test_unknown_family_names_it_and_lists_the_supported_ones():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=64, n_positions=32))
    with pytest.raises(AdapterError, match="'gpt2'") as caught:
        adapter_for(model)
    assert "supported: llama-like (llama/mistral/qwen2/qwen3/gemma3_text" in str(caught.value)
