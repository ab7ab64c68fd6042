"""Dropping decoder layers: same logits as skipping them, cache-consistent generation, reloadable checkpoints."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pruning.errors import AdapterError
from pruning.layerdrop.selection import DropPlan
from pruning.layerdrop.surgery import (
    drop_layers,
    finetune_indices,
    kept_index,
    protected_layers,
    skipping_layers,
)
from pruning.models.adapters import adapter_for, blocks


def language_layers(model: nn.Module) -> nn.ModuleList:
    return blocks(model, adapter_for(model).group("language"))


def logits_with_identity(model: nn.Module, batch: dict, skip: list[int]) -> torch.Tensor:
    """The original model's logits with layers `skip` replaced by an identity, written here independently."""
    layers = language_layers(model)
    for index in skip:
        layers[index].forward = lambda hidden_states, *args, **kwargs: hidden_states
    try:
        with torch.no_grad():
            return model(**batch, use_cache=False).logits
    finally:
        for index in skip:
            del layers[index].forward


def logits(model: nn.Module, batch: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch, use_cache=False).logits


def text_config(model: nn.Module):
    return getattr(model.config, "text_config", model.config)


@pytest.mark.parametrize(
    "family, drop, layer_types",
    [
        ("llama", [1], None),
        ("qwen3", [0, 2], None),
        # sliding layers at max_window_layers=2 and above: the forward picks masks by config.layer_types[position]
        ("qwen2", [0], ["full_attention", "sliding_attention", "sliding_attention"]),
        ("gemma3", [1], ["sliding_attention", "sliding_attention", "full_attention"]),
    ],
)
def test_dropping_equals_skipping_and_survives_a_reload(tiny_model, calibration_batch, tmp_path, family, drop, layer_types):
    model = tiny_model(family)
    batch = {"input_ids": calibration_batch[:2]}
    expected = logits_with_identity(model, batch, drop)
    assert not torch.allclose(expected, logits(model, batch), atol=1e-4)  # the skipped layers matter

    mapping = drop_layers(model, adapter_for(model), drop)

    n_kept = 4 - len(drop)
    assert mapping == {original: new for new, original in enumerate(i for i in range(4) if i not in drop)}
    assert len(language_layers(model)) == n_kept == model.config.num_hidden_layers
    assert [layer.self_attn.layer_idx for layer in language_layers(model)] == list(range(n_kept))
    if layer_types is not None:
        assert model.config.layer_types == layer_types
    if family == "qwen2":
        assert model.config.max_window_layers == 1  # layer 1 (was 2) is the first sliding one
    torch.testing.assert_close(logits(model, batch), expected, rtol=1e-5, atol=1e-5)

    model.save_pretrained(tmp_path, safe_serialization=True)
    reloaded = type(model).from_pretrained(tmp_path).eval()
    assert reloaded.config.num_hidden_layers == n_kept and len(language_layers(reloaded)) == n_kept
    torch.testing.assert_close(logits(reloaded, batch), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma3"])
def test_generation_with_a_kv_cache_matches_generation_without(tiny_model, family):
    model = tiny_model(family)
    drop_layers(model, adapter_for(model), [1])
    prompt = torch.randint(0, 128, (2, 6), generator=torch.Generator().manual_seed(3))  # longer than the 4-token window
    settings = dict(attention_mask=torch.ones_like(prompt), max_new_tokens=8, min_new_tokens=8, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        cached = model.generate(prompt, use_cache=True, **settings)
        uncached = model.generate(prompt, use_cache=False, **settings)
    assert cached.shape == (2, 14)
    assert torch.equal(cached, uncached)


def test_tiny_llava_drops_a_language_layer_and_reloads(tiny_vlm, tmp_path):
    model, batches = tiny_vlm("llava")
    expected = logits_with_identity(model, batches[0], [0])
    vision_before = len(blocks(model, adapter_for(model).group("vision")))

    drop_layers(model, adapter_for(model), [0])

    assert model.config.text_config.num_hidden_layers == 1
    assert len(blocks(model, adapter_for(model).group("vision"))) == vision_before  # the vision tower is untouched
    torch.testing.assert_close(logits(model, batches[0]), expected, rtol=1e-5, atol=1e-5)
    model.save_pretrained(tmp_path, safe_serialization=True)
    reloaded = type(model).from_pretrained(tmp_path).eval()
    assert reloaded.config.text_config.num_hidden_layers == 1
    torch.testing.assert_close(logits(reloaded, batches[0]), expected, rtol=1e-5, atol=1e-5)


def test_skipping_layers_equals_dropping_them_and_restores_the_forwards(tiny_model, calibration_batch):
    model = tiny_model("gemma3")
    batch = {"input_ids": calibration_batch[:2]}
    dense = logits(model, batch)
    with skipping_layers(model, adapter_for(model), [0, 3]):
        skipped = logits(model, batch)
    assert all("forward" not in vars(layer) for layer in language_layers(model))
    torch.testing.assert_close(logits(model, batch), dense)
    drop_layers(model, adapter_for(model), [0, 3])
    torch.testing.assert_close(logits(model, batch), skipped, rtol=1e-5, atol=1e-5)


def test_qwen3_vl_deepstack_layers_are_protected(tiny_vlm):
    """DeepStack adds vision features after text layers 0 and 1 (of 3): those stay, layer 2 may go."""
    model, batches = tiny_vlm("qwen3_vl")
    adapter = adapter_for(model)
    assert protected_layers(model, adapter) == {0, 1}
    for drop in ([0], [1]):
        with pytest.raises(ValueError, match=r"layers \[\d\] cannot be dropped.*DeepStack"):
            drop_layers(model, adapter, drop)
        with pytest.raises(ValueError, match="DeepStack"):
            with skipping_layers(model, adapter, drop):
                pass
    assert len(language_layers(model)) == 3  # a refused drop changes nothing

    expected = logits_with_identity(model, batches[0], [2])
    drop_layers(model, adapter, [2])
    assert model.config.text_config.num_hidden_layers == 2
    torch.testing.assert_close(logits(model, batches[0]), expected, rtol=1e-5, atol=1e-5)


def test_models_without_deepstack_protect_nothing(tiny_model, tiny_vlm):
    model = tiny_model("llama")
    assert protected_layers(model, adapter_for(model)) == frozenset()
    vlm, _ = tiny_vlm("llava")
    assert protected_layers(vlm, adapter_for(vlm)) == frozenset()


def test_bad_drops_are_refused_with_the_reason(tiny_model, tiny_vlm):
    model = tiny_model("llama")
    adapter = adapter_for(model)
    with pytest.raises(ValueError, match=r"layers \[4\] do not exist.*4 decoder layers"):
        drop_layers(model, adapter, [4])
    with pytest.raises(ValueError, match="at least one must stay"):
        drop_layers(model, adapter, [0, 1, 2, 3])
    assert len(language_layers(model)) == 4
    clip, _ = tiny_vlm("clip")
    with pytest.raises(AdapterError, match="not droppable"):
        drop_layers(clip, adapter_for(clip), [0])


def test_kept_index_maps_original_to_new_positions():
    plan = DropPlan(drop=(1, 4), finetune=(2, 5), anchor=(3,), n_layers=6)
    assert kept_index(plan) == {0: 0, 2: 1, 3: 2, 5: 3}
    assert finetune_indices(plan) == (1, 3)
