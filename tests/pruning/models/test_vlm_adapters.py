"""VLM adapters on tiny random-init models of every family (conftest `tiny_vlm`)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pruning.errors import AdapterError
from pruning.local.walk import prune_model
from pruning.models.adapters import (
    BLIP2_VISION_LINEARS,
    CLIP_LINEARS,
    LLAMA_LINEARS,
    OPT_LINEARS,
    QWEN2_5_VISION_LINEARS,
    QWEN3_VISION_LINEARS,
    adapter_for,
    blocks,
    projectors,
    prunable_linears,
)

# tiny model -> (adapter family, vision linears, language linears, projectors)
EXPECTED = {
    "llava": ("llava", CLIP_LINEARS, LLAMA_LINEARS, ("model.multi_modal_projector",)),
    "llava_next": ("llava", CLIP_LINEARS, LLAMA_LINEARS, ("model.multi_modal_projector",)),
    "qwen2_5_vl": ("qwen2.5-vl", QWEN2_5_VISION_LINEARS, LLAMA_LINEARS, ("model.visual.merger",)),
    "qwen3_vl": (
        "qwen3-vl",
        QWEN3_VISION_LINEARS,
        LLAMA_LINEARS,
        ("model.visual.merger", "model.visual.deepstack_merger_list"),
    ),
    "blip-2+opt": ("blip-2+opt", BLIP2_VISION_LINEARS, OPT_LINEARS, ("qformer", "language_projection")),
    "blip-2+llama": ("blip-2+llama-like", BLIP2_VISION_LINEARS, LLAMA_LINEARS, ("qformer", "language_projection")),
    "instructblip": ("blip-2+llama-like", BLIP2_VISION_LINEARS, LLAMA_LINEARS, ("qformer", "language_projection")),
    "clip": ("clip", CLIP_LINEARS, CLIP_LINEARS, ("visual_projection", "text_projection")),
}


def n_layers(config) -> int:
    return getattr(config, "num_hidden_layers", None) or config.depth  # Qwen vision configs say depth


def logits(outputs) -> torch.Tensor:
    return outputs.logits if hasattr(outputs, "logits") else outputs.logits_per_image  # CLIP scores image-text pairs


@pytest.mark.parametrize("family", EXPECTED)
def test_finds_every_block_every_prunable_linear_and_the_projectors(tiny_vlm, family):
    model, _ = tiny_vlm(family)
    adapter = adapter_for(model)
    adapter_family, vision_linears, language_linears, projector_paths = EXPECTED[family]
    assert adapter.family == adapter_family and adapter.projectors == projector_paths
    assert [group.modality for group in adapter.groups] == ["vision", "language"]
    vision, language = adapter.groups
    assert len(blocks(model, vision)) == n_layers(model.config.vision_config)
    assert len(blocks(model, language)) == n_layers(model.config.text_config)
    assert language.droppable == (family != "clip") and not vision.droppable  # CLIP's text tower is an encoder
    listed = set()
    for group, linears in ((vision, vision_linears), (language, language_linears)):
        for index, block in enumerate(blocks(model, group)):
            assert tuple(prunable_linears(block, group)) == linears
            # every linear inside a block is prunable: attention and MLP, nothing left out
            assert {name for name, module in block.named_modules() if isinstance(module, nn.Linear)} == set(linears)
            listed |= {f"{group.path}.{index}.{name}" for name in linears}
    # every other linear of the model is a projector's or the output head
    found = projectors(model, adapter)
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and name not in listed:
            assert name.endswith("lm_head") or any(name == path or name.startswith(f"{path}.") for path in found), name


@pytest.mark.parametrize("method", ["wanda", "magnitude"])
@pytest.mark.parametrize("family", EXPECTED)
def test_half_sparsity_on_both_towers_leaves_projectors_and_the_rest_untouched(tiny_vlm, family, method):
    model, batches = tiny_vlm(family)
    adapter = adapter_for(model)
    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    report = prune_model(model, adapter, method, batches, target=0.5, progress=False)
    assert {layer.modality for layer in report.layers} == {"vision", "language"}
    n_linears = sum(len(group.prunable) * len(blocks(model, group)) for group in adapter.groups)
    assert len(report.layers) == n_linears
    assert all(layer.achieved_sparsity == 0.5 for layer in report.layers)
    pruned = {f"{layer.layer}.weight" for layer in report.layers}
    params = dict(model.named_parameters())
    for name in before:
        if name not in pruned:  # projectors, embeddings, norms, biases, lm_head
            assert torch.equal(before[name], params[name]), name
    assert any(name.startswith(adapter.projectors[0]) for name in before)  # not vacuous
    with torch.no_grad():
        assert torch.isfinite(logits(model(**batches[0]))).all()


def test_blip2_with_a_t5_language_model_names_it_and_the_supported_ones():
    from transformers import Blip2Config, Blip2ForConditionalGeneration, T5Config

    tower = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    config = Blip2Config(
        vision_config=dict(tower, image_size=28, patch_size=14),
        qformer_config=dict(tower, encoder_hidden_size=32),
        text_config=T5Config(d_model=32, d_ff=64, d_kv=16, num_layers=1, num_heads=2, vocab_size=64),
        num_query_tokens=2,
    )
    with pytest.raises(AdapterError, match="'blip-2' with a 't5' language model") as caught:
        adapter_for(Blip2ForConditionalGeneration(config))
    assert "supported with: gemma3_text, llama, mistral, opt, qwen2, qwen3, smollm3" in str(caught.value)


def test_unknown_family_lists_the_vlm_families_too():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=64, n_positions=32))
    with pytest.raises(AdapterError, match="'gpt2'") as caught:
        adapter_for(model)
    for listed in ("llava (llava/llava_next with text llama/", "qwen2.5-vl (qwen2_5_vl)", "qwen3-vl (qwen3_vl)",
                   "blip-2+opt (blip-2/instructblip with text opt)", "clip (clip)"):
        assert listed in str(caught.value)
