"""The embedded VLM's pieces on a tiny spec: tokenizer, answer-only labels, seeded training, save/load."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from pruning.models.sources import is_multimodal, load_model, save_checkpoint
from pruning.models.toy_vlm import (
    IMAGE_TOKEN,
    ToyVLMSpec,
    TrainingExample,
    VisionExample,
    build_model,
    build_processor,
    build_tokenizer,
    cosine_with_warmup,
    encode_examples,
    pretrain_vision_tower,
    train_toy_vlm,
    vision_features,
)
from pruning.specs import ModelSpec

TINY = ToyVLMSpec(vision_hidden=32, vision_layers=1, text_hidden=32, text_layers=2, heads=2, epochs=6, batch_size=4, lr=5e-3)
WORDS = ["question", ":", "what", "colour", "is", "it", "?", "answer", "red", "blue"]
COLOURS = {"red": (230, 30, 30), "blue": (30, 30, 230)}


def prompt_format(text: str) -> str:
    return f"{IMAGE_TOKEN}\n{text}"


def examples(n: int) -> list[TrainingExample]:
    names = list(COLOURS)
    return [
        TrainingExample(Image.new("RGB", (48, 48), COLOURS[names[i % 2]]), (("Question: what colour is it? Answer:", f" {names[i % 2]}"),))
        for i in range(n)
    ]


def pieces(spec: ToyVLMSpec = TINY):
    tokenizer = build_tokenizer(WORDS)
    processor = build_processor(tokenizer, spec)
    return tokenizer, processor, build_model(tokenizer, spec)


def test_tokenizer_is_word_level_and_knows_every_word():
    tokenizer = build_tokenizer(WORDS)
    tokens = tokenizer.tokenize("Question: What colour is it? Answer: red")
    assert tokens == ["question", ":", "what", "colour", "is", "it", "?", "answer", ":", "red"]
    assert tokenizer.unk_token_id not in tokenizer("Question: what colour is it? Answer: blue")["input_ids"]


def test_labels_cover_only_the_answer_and_end_of_sequence():
    tokenizer, processor, _ = pieces()
    batch = encode_examples(processor, examples(2), prompt_format)
    for row in range(2):
        kept = batch["labels"][row][batch["labels"][row] != -100].tolist()
        answer = tokenizer.convert_tokens_to_ids(["red", "blue"][row])
        assert kept == [answer, tokenizer.eos_token_id]
    image_tokens = (batch["input_ids"] == tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)).sum(dim=1)
    assert image_tokens.tolist() == [(48 // 8) ** 2] * 2


def test_every_turn_of_a_conversation_is_labelled():
    tokenizer, processor, _ = pieces()
    long = TrainingExample(
        Image.new("RGB", (48, 48), COLOURS["red"]),
        (("Question: what colour is it? Answer:", " red"), ("Question: what colour is it? Answer:", " blue")),
    )
    batch = encode_examples(processor, [long, examples(1)[0]], prompt_format)  # the short one is left-padded
    ids = tokenizer.convert_tokens_to_ids
    assert batch["labels"][0][batch["labels"][0] != -100].tolist() == [ids("red"), tokenizer.eos_token_id, ids("blue"), tokenizer.eos_token_id]
    assert batch["labels"][1][batch["labels"][1] != -100].tolist() == [ids("red"), tokenizer.eos_token_id]
    # each label sits right after an "answer :" cue
    row = batch["input_ids"][0].tolist()
    for position in (batch["labels"][0] != -100).nonzero().flatten().tolist()[::2]:
        assert row[position - 2 : position] == [ids("answer"), ids(":")]


def test_cosine_schedule_warms_up_then_decays_to_zero():
    assert cosine_with_warmup(0, 100, 10) == 0.1
    assert cosine_with_warmup(9, 100, 10) == 1.0
    assert abs(cosine_with_warmup(55, 100, 10) - 0.5) < 1e-9
    assert cosine_with_warmup(100, 100, 10) == 0.0


def test_training_is_seeded_and_learns_a_visual_answer():
    runs = []
    for _ in range(2):
        _, processor, model = pieces()
        runs.append((train_toy_vlm(model, processor, examples(16), TINY, prompt_format, log=lambda _: None), model))
    (losses, model), (again, _) = runs
    assert losses == again  # same seed, same losses, bit for bit
    assert losses[-1] < 0.5 * losses[0]
    tokenizer = build_tokenizer(WORDS)
    processor = build_processor(tokenizer, TINY)
    batch = processor(text=[prompt_format("Question: what colour is it? Answer:")] * 2,
                      images=[e.image for e in examples(2)], return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**batch).logits[:, -1]
    red, blue = tokenizer.convert_tokens_to_ids(["red", "blue"])
    assert logits[0, red] > logits[0, blue] and logits[1, blue] > logits[1, red]  # it reads the image


def test_saved_toy_vlm_loads_with_its_processor_and_same_logits(tmp_path):
    _, processor, model = pieces()
    save_checkpoint(model, processor, tmp_path / "toy")
    loaded, preprocessor = load_model(tmp_path / "toy", ModelSpec(source=str(tmp_path / "toy")))
    assert type(loaded).__name__ == "LlavaForConditionalGeneration" and is_multimodal(preprocessor)
    batch = preprocessor(text=[prompt_format("Question: what colour is it? Answer:")], images=[examples(1)[0].image], return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(model.eval()(**batch).logits, loaded(**batch).logits)


def vision_examples(n: int, n_patches: int) -> list[VisionExample]:
    """Solid red or blue images: every patch labelled with the colour (1, 2), the image with it too (0, 1)."""
    names = list(COLOURS)
    return [
        VisionExample(Image.new("RGB", (48, 48), COLOURS[names[i % 2]]), {"colour": [1 + i % 2] * n_patches}, {"which": i % 2})
        for i in range(n)
    ]


def test_vision_pretraining_is_seeded_learns_and_leaves_a_stock_llava():
    spec = TINY.model_copy(update={"vision_pretrain_steps": 30, "vision_pretrain_batch": 4, "vision_pretrain_lr": 5e-3})
    n_patches = (spec.image_size // spec.patch_size) ** 2
    runs = []
    for _ in range(2):
        _, processor, model = pieces(spec)
        before = {name: p.detach().clone() for name, p in model.state_dict().items()}
        losses = pretrain_vision_tower(model, processor, vision_examples(8, n_patches), spec, log=lambda _: None)
        runs.append((losses, model, before))
    (losses, model, before), (again, _, _) = runs
    assert losses == again and len(losses) == 10  # one mean per tenth of the steps, bit for bit
    assert losses[-1] < 0.2 * losses[0]
    after = model.state_dict()
    assert after.keys() == before.keys()  # the heads were thrown away
    changed = {name for name in after if not torch.equal(after[name], before[name])}
    assert changed and all(name.startswith("model.vision_tower.") for name in changed)
    assert all(p.grad is None for p in model.parameters())
    # what the projector is handed: one feature per patch (CLS dropped)
    pixel_values = processor.image_processor(images=[e.image for e in vision_examples(2, n_patches)], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        features = vision_features(model, pixel_values)
    assert features.shape[1] == n_patches


def test_vision_pretraining_checks_the_patch_grid_and_can_be_skipped():
    _, processor, model = pieces()
    before = {name: p.detach().clone() for name, p in model.state_dict().items()}
    skip = TINY.model_copy(update={"vision_pretrain_steps": 0})
    assert pretrain_vision_tower(model, processor, vision_examples(4, 36), skip) == []
    assert all(torch.equal(p, before[name]) for name, p in model.state_dict().items())
    spec = TINY.model_copy(update={"vision_pretrain_steps": 2})
    with pytest.raises(ValueError, match="patch label 'colour' has 5 entries per image; the vision tower makes 36"):
        pretrain_vision_tower(model, processor, vision_examples(4, 5), spec)


def test_a_frozen_vision_tower_stays_bit_identical_while_the_rest_learns():
    spec = TINY.model_copy(update={"freeze_vision_tower": True, "epochs": 1})
    _, processor, model = pieces(spec)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    train_toy_vlm(model, processor, examples(8), spec, prompt_format, log=lambda _: None)
    after = dict(model.named_parameters())
    vision = [name for name in after if name.startswith("model.vision_tower.")]
    assert vision and all(torch.equal(after[name], before[name]) for name in vision)
    assert not torch.equal(after["model.multi_modal_projector.linear_1.weight"], before["model.multi_modal_projector.linear_1.weight"])
    assert all(p.requires_grad for p in model.parameters())  # flags restored
