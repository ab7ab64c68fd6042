"""The shared model walk on VLMs: image+text calibration batches, both towers, DeepStack injections."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pruning.errors import AdapterError
from pruning.local.walk import calibration_batches, capture_group_inputs, prune_model
from pruning.models.adapters import adapter_for, blocks, prunable_linears
from tests.pruning.local.test_walk import walked_statistics

FAMILIES = ("llava", "llava_next", "qwen2_5_vl", "qwen3_vl", "blip-2+opt", "blip-2+llama", "instructblip", "clip")


def block_inputs_of_a_plain_forward(model: nn.Module, batches: list[dict]) -> dict[tuple[str, int], list[torch.Tensor]]:
    """(group path, block index) -> the hidden states each block receives in the model's own forward, per batch."""
    received, handles = {}, []
    for group in adapter_for(model).groups:
        for index, block in enumerate(blocks(model, group)):
            received[group.path, index] = []

            def hook(module, args, kwargs, key=(group.path, index)):
                received[key].append((args[0] if args else kwargs["hidden_states"]).clone())

            handles.append(block.register_forward_pre_hook(hook, with_kwargs=True))
    with torch.no_grad():
        for batch in batches:
            model(**batch)
    for handle in handles:
        handle.remove()
    return received


@pytest.mark.parametrize("family", FAMILIES)
def test_a_dense_walk_reproduces_every_blocks_inputs(tiny_vlm, family):
    """Capture, then advance block by block without pruning: each block must see what the model gives it."""
    model, batches = tiny_vlm(family)
    expected = block_inputs_of_a_plain_forward(model, batches)
    for group in adapter_for(model).groups:
        stack = blocks(model, group)
        inputs = capture_group_inputs(model, stack, batches)
        for index, block in enumerate(stack):
            for batch, hidden_states in enumerate(inputs.hidden_states):
                reference = expected[group.path, index][batch]
                torch.testing.assert_close(hidden_states, reference, msg=f"{group.path}.{index}")
            if index + 1 < len(stack):
                with torch.no_grad():
                    inputs.advance(block, index)
        # only Qwen3-VL adds anything between blocks: DeepStack, after text layers 0 and 1
        injected = [index for index, per_batch in enumerate(inputs.injections) if any(i is not None for i in per_batch)]
        assert injected == ([0, 1] if family == "qwen3_vl" and group.modality == "language" else [])


def test_deepstack_injections_touch_image_tokens_only(tiny_vlm):
    model, batches = tiny_vlm("qwen3_vl")
    inputs = capture_group_inputs(model, blocks(model, adapter_for(model).group("language")), batches)
    for batch, injection in zip(batches, inputs.injections[0]):
        image_tokens = batch["input_ids"] == model.config.image_token_id
        assert injection[~image_tokens].eq(0).all() and injection[image_tokens].ne(0).any(dim=-1).all()


def test_no_block_is_recorded_with_a_kv_cache(tiny_vlm):
    """Re-running a block with the forward's cache would make it attend to its own earlier runs."""
    from transformers.cache_utils import Cache

    for family in ("llava", "blip-2+opt"):  # LLaVA's forward names past_key_values; BLIP-2's passes it on unnamed
        model, batches = tiny_vlm(family)
        inputs = capture_group_inputs(model, blocks(model, adapter_for(model).group("language")), batches)
        for per_batch in inputs.block_args:
            for args, kwargs in per_batch:
                assert not any(isinstance(value, Cache) for value in (*args, *kwargs.values())), family


def input_sq_norms(model: nn.Module, linears: dict[str, nn.Linear], batches: list[dict]) -> dict[str, torch.Tensor]:
    """Σ x_j² of each linear's inputs over full forwards of the model (float64)."""
    sums = {name: torch.zeros(linear.in_features, dtype=torch.float64) for name, linear in linears.items()}

    def accumulate(name: str):
        def hook(module, args, output):
            sums[name] += args[0].reshape(-1, args[0].shape[-1]).double().pow(2).sum(0)

        return hook

    handles = [linear.register_forward_hook(accumulate(name)) for name, linear in linears.items()]
    with torch.no_grad():
        for batch in batches:
            model(**batch)
    for handle in handles:
        handle.remove()
    return sums


def reference_sequential_wanda(model: nn.Module, batches: list[dict], sparsity: float, vision_layer_wide: bool = False) -> None:
    """Wanda the slow, obvious way: block i's statistics from full forwards through pruned blocks 0..i-1.

    With `vision_layer_wide`, each vision linear loses the lowest floor(out·in·s) scores of the whole
    layer, as ECoFLaP's ViT pruner compares them (but for its `<=`, which prunes one more)."""
    for group in adapter_for(model).groups:
        for block in blocks(model, group):
            linears = prunable_linears(block, group)
            sums = input_sq_norms(model, linears, batches)
            for name, linear in linears.items():
                scores = linear.weight.detach().abs().double() * sums[name].sqrt()
                with torch.no_grad():
                    if vision_layer_wide and group.modality == "vision":
                        linear.weight.view(-1)[scores.flatten().argsort(stable=True)[: int(scores.numel() * sparsity)]] = 0.0
                    else:
                        linear.weight.scatter_(1, scores.argsort(dim=1, stable=True)[:, : int(linear.in_features * sparsity)], 0.0)


@pytest.mark.parametrize("family", ["llava", "qwen3_vl"])
def test_wanda_matches_sequential_reference_across_both_towers(tiny_vlm, family):
    walked, batches = tiny_vlm(family)
    reference, _ = tiny_vlm(family)
    prune_model(walked, adapter_for(walked), "wanda", batches, target=0.5, progress=False)
    reference_sequential_wanda(reference, batches, 0.5)
    reference_params = dict(reference.named_parameters())
    names = [f"{group.path}.{i}.{name}.weight" for group in adapter_for(walked).groups
             for i, block in enumerate(blocks(walked, group)) for name in group.prunable]
    for name, param in walked.named_parameters():
        if name in names:
            assert torch.equal(param == 0, reference_params[name] == 0), name


def test_calibration_batches_split_ids_and_pass_ready_batches_through():
    ids = torch.arange(30).reshape(6, 5)
    assert [batch["input_ids"].shape[0] for batch in calibration_batches(ids, 4)] == [4, 2]
    ready = [{"input_ids": ids[:2], "pixel_values": torch.zeros(2, 3, 4, 4)}]
    assert calibration_batches(ready, 4)[0].keys() == {"input_ids", "pixel_values"}
    with pytest.raises(ValueError, match="sequence of dicts"):
        calibration_batches([ids], 4)
    with pytest.raises(ValueError, match="non-empty"):
        calibration_batches([], 4)


class AddsBetweenBlocks(nn.Module):
    """Two linear blocks with `between(h)` applied after the first: a hand-made DeepStack."""

    def __init__(self, between):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(4, 4) for _ in range(2))
        self.between = between

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        hidden_states = self.layers[0](input_ids.float())
        return self.layers[1](self.between(hidden_states))


def test_an_addition_between_blocks_is_recorded_and_replayed():
    offset = torch.tensor([1.0, -2.0, 0.5, 0.0])
    model = AddsBetweenBlocks(lambda hidden_states: hidden_states + offset)
    ids = torch.arange(8).reshape(2, 4)
    inputs = capture_group_inputs(model, model.layers, calibration_batches(ids, 2))
    torch.testing.assert_close(inputs.injections[0][0], offset.expand(2, 4))
    with torch.no_grad():
        inputs.advance(model.layers[0], 0)
        torch.testing.assert_close(inputs.hidden_states[0], model.layers[0](ids.float()) + offset)


def test_a_shape_change_between_blocks_is_refused():
    model = AddsBetweenBlocks(lambda hidden_states: hidden_states[:1])
    with pytest.raises(AdapterError, match="cannot reproduce"):
        capture_group_inputs(model, model.layers, calibration_batches(torch.ones(2, 4, dtype=torch.long), 2))


def one_row(batch: dict, row: int, length: int) -> dict:
    """Row `row` of an image-text batch alone, its text cut to `length` positions."""
    alone = {}
    for key, value in batch.items():
        if key in ("input_ids", "attention_mask", "mm_token_type_ids"):
            alone[key] = value[row : row + 1, :length]
        elif key == "pixel_values" and "image_grid_thw" in batch:  # Qwen: every image's patches, one after another
            per_image = batch["image_grid_thw"].prod(dim=-1).tolist()
            alone[key] = value[sum(per_image[:row]) : sum(per_image[: row + 1])]
        else:
            alone[key] = value[row : row + 1]
    return alone


@pytest.mark.parametrize("family", ["llava", "llava_next", "qwen2_5_vl", "blip-2+opt", "instructblip"])
def test_padding_is_left_out_of_the_language_statistics_only(tiny_vlm, family):
    """Row 1's last 2 text positions are padding: left out, the statistics are those of the two rows
    run alone without them; the vision tower's are the same whether padding is excluded or not."""
    model, batches = tiny_vlm(family)
    batch = dict(batches[0])
    length = batch["input_ids"].shape[1] - 2
    batch["attention_mask"] = batch["attention_mask"].clone()
    batch["attention_mask"][1, length:] = 0
    batch["input_ids"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, 0)
    unpadded = walked_statistics(model, "input_sq_norm", [one_row(batch, 0, length + 2), one_row(batch, 1, length)], exclude_padding=False)
    excluded = walked_statistics(model, "input_sq_norm", [batch], exclude_padding=True)
    counted = walked_statistics(model, "input_sq_norm", [batch], exclude_padding=False)
    for key, expected in unpadded.items():
        torch.testing.assert_close(excluded[key], expected, rtol=1e-4, atol=1e-6, msg=str(key))
        if key[0] == "vision":
            assert torch.equal(excluded[key], counted[key]), key
        else:
            assert not torch.allclose(counted[key], expected, rtol=1e-4, atol=1e-6), key


@pytest.mark.parametrize("family", ["llava", "qwen2_5_vl"])
def test_layer_wide_vision_selection_matches_its_reference_and_leaves_language_per_row(tiny_vlm, family):
    walked, batches = tiny_vlm(family)
    reference, _ = tiny_vlm(family)
    prune_model(walked, adapter_for(walked), "wanda", batches, target=0.5, progress=False, modality_options={"vision": {"selection": "layer"}})
    reference_sequential_wanda(reference, batches, 0.5, vision_layer_wide=True)
    reference_params = dict(reference.named_parameters())
    rows_differ = False
    for group in adapter_for(walked).groups:
        for index, block in enumerate(blocks(walked, group)):
            for name, linear in prunable_linears(block, group).items():
                zeros = linear.weight == 0
                assert torch.equal(zeros, reference_params[f"{group.path}.{index}.{name}.weight"] == 0), (group.path, index, name)
                rows_differ |= group.modality == "vision" and len(set(zeros.sum(dim=1).tolist())) > 1
    assert rows_differ  # layer-wide: rows of a vision linear keep different counts
