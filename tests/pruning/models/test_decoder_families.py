"""OPT, Phi-3 and GPT-NeoX go through every method on a tiny random-init model: the weight pruners
(magnitude, Wanda, SparseGPT, N:M, OWL, ECoFLaP), the layer droppers (ShortGPT, angular, SLEB,
INTERLACE) and the finetune, with nothing in the algorithms but what their adapters say."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from pruning.allocation import allocate
from pruning.finetune import finetune, layer_prefixes
from pruning.layerdrop import drop_layers, finetune_indices, layer_redundancy, select_layers, sleb_order
from pruning.local.walk import calibration_batches, prune_model
from pruning.models.adapters import GPT_NEOX, OPT, PHI3, adapter_for, blocks
from pruning.models.sources import save_checkpoint
from pruning.scores import first_order_scores, outlier_ratios, zeroth_order_scores
from pruning.specs import ECoFLaPSpec, OWLSpec

ADAPTERS = {"opt": OPT, "phi3": PHI3, "gpt_neox": GPT_NEOX}
DECODERS = tuple(ADAPTERS)


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


def reloaded(model, tmp_path):
    """The model saved as the stages save it and read back by plain transformers."""
    save_checkpoint(model, None, tmp_path / "checkpoint")
    return AutoModelForCausalLM.from_pretrained(tmp_path / "checkpoint").eval()


def prunable_zero_fraction(model, adapter) -> float:
    (group,) = adapter.groups
    weights = [linear.weight for block in blocks(model, group) for linear in (block.get_submodule(name) for name in group.prunable)]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


@pytest.mark.parametrize("family", DECODERS)
def test_the_built_in_adapter_covers_the_family(tiny_model, family):
    model = tiny_model(family)
    adapter = adapter_for(model)
    assert adapter is ADAPTERS[family]
    assert len(blocks(model, adapter.group("language"))) == 4


def _block_sparsity(method, model, adapter, calibration):
    if method == "owl":
        return allocate(OWLSpec(name="owl", sparsity=0.5), outlier_ratios(model, adapter, calibration, batch_size=4, progress=False))
    if method.startswith("ecoflap"):
        batches = calibration_batches(calibration, 4)[:1]
        scores = (first_order_scores if method == "ecoflap first" else zeroth_order_scores)(model, adapter, batches, progress=False)
        return allocate(ECoFLaPSpec(name="ecoflap", sparsity=0.5), scores)
    return None


@pytest.mark.parametrize("family", DECODERS)
@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt", "wanda 2:4", "owl", "ecoflap", "ecoflap first"])
def test_weight_pruning_reaches_its_sparsity_and_the_checkpoint_reloads(tiny_model, calibration_batch, tmp_path, family, method):
    model = tiny_model(family)
    adapter = adapter_for(model)
    dense = logits(model, calibration_batch[:2])
    local, _, n_m = method.partition(" ") if ":" in method else (method, "", "")
    block_sparsity = _block_sparsity(method, model, adapter, calibration_batch)
    report = prune_model(
        model, adapter, "wanda" if block_sparsity else local, calibration_batch, block_sparsity=block_sparsity,
        target=None if block_sparsity else 0.5, n_m=n_m or None, batch_size=4, progress=False,
    )

    # Wanda keeps a whole number of weights per row: a block target like 0.531 rounds by up to 1/64 (64 inputs)
    assert abs(report.achieved_sparsity - 0.5) <= (1 / 64 if block_sparsity else 0.0)
    assert len(report.layers) == 4 * len(adapter.group("language").prunable)
    if block_sparsity:  # one target per block, 50% over all of them
        assert len(block_sparsity["language"]) == 4 and {layer.block for layer in report.layers} == {0, 1, 2, 3}
    pruned = logits(model, calibration_batch[:2])
    assert torch.isfinite(pruned).all() and not torch.allclose(pruned, dense)
    again = reloaded(model, tmp_path)
    assert type(again) is type(model)
    assert prunable_zero_fraction(again, adapter) == pytest.approx(report.achieved_sparsity, abs=1e-3)
    torch.testing.assert_close(logits(again, calibration_batch[:2]), pruned)


def _plan(selector, model, adapter, calibration):
    if selector == "sleb":
        order = sleb_order(model, adapter, calibration, n_drop=1, batch_size=4, progress=False)
        return select_layers("sleb", 0.25, 4, sleb_order=order.removed)
    redundancy = layer_redundancy(model, adapter, calibration, batch_size=4, progress=False)
    return select_layers(selector, 0.25, 4, redundancy=redundancy)


@pytest.mark.parametrize("family", DECODERS)
@pytest.mark.parametrize("selector", ["shortgpt", "angular", "sleb", "interlace"])
def test_layer_dropping_leaves_a_smaller_model_whose_config_agrees(tiny_model, calibration_batch, tmp_path, family, selector):
    model = tiny_model(family)
    adapter = adapter_for(model)
    plan = _plan(selector, model, adapter, calibration_batch)
    assert len(plan.drop) == 1

    drop_layers(model, adapter, plan.drop)

    layers = blocks(model, adapter.group("language"))
    assert len(layers) == 3 == model.config.num_hidden_layers
    attention_indices = [m.layer_idx for layer in layers for m in layer.modules() if isinstance(vars(m).get("layer_idx"), int)]
    assert sorted(set(attention_indices)) == [0, 1, 2]
    prompt = calibration_batch[:2, :6]
    settings = dict(attention_mask=torch.ones_like(prompt), max_new_tokens=4, min_new_tokens=4, do_sample=False, pad_token_id=0)
    with torch.no_grad():  # each kept layer addresses its own KV-cache slot
        assert torch.equal(model.generate(prompt, use_cache=True, **settings), model.generate(prompt, use_cache=False, **settings))
    again = reloaded(model, tmp_path)
    assert again.config.num_hidden_layers == 3 and len(blocks(again, adapter.group("language"))) == 3
    torch.testing.assert_close(logits(again, calibration_batch[:2]), logits(model, calibration_batch[:2]))

    # INTERLACE's interleaved finetune (the others heal all kept layers when asked): only those layers move
    train = finetune_indices(plan) or (0,)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    examples = [{"input_ids": calibration_batch[row : row + 1]} for row in range(4)]
    report = finetune(model, examples, layer_prefixes(adapter, train), lr=1e-3, effective_batch=2, progress=False)
    assert report.steps == 2 and torch.isfinite(torch.tensor(report.losses)).all()
    prefixes = tuple(layer_prefixes(adapter, train))
    moved = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert moved and all(name.startswith(prefixes) for name in moved)


@pytest.mark.parametrize("family", DECODERS)
def test_finetuning_a_pruned_model_keeps_its_zeros(tiny_model, calibration_batch, family):
    model = tiny_model(family)
    adapter = adapter_for(model)
    report = prune_model(model, adapter, "magnitude", target=0.5, progress=False)
    examples = [{"input_ids": calibration_batch[row : row + 1]} for row in range(4)]
    finetune(model, examples, layer_prefixes(adapter, range(4)), lr=1e-3, effective_batch=2, progress=False)
    assert prunable_zero_fraction(model, adapter) == pytest.approx(report.achieved_sparsity, abs=1e-6)
