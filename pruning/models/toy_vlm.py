"""`packaged:toy-vlm`: a small LLaVA trained from scratch, because no VLM weights can be downloaded.

It is a stock `LlavaForConditionalGeneration` (CLIP vision tower → 2-layer MLP projector → Llama
decoder), so everything that loads, prunes, drops layers of or evaluates it works unchanged on a
real LLaVA checkpoint. Its tokenizer is word-level over the image-QA vocabulary; its processor is
a stock `LlavaProcessor`. Training (`train_toy_vlm`) is plain PyTorch with the loss on the answer
tokens only, seeded and reproducible; the Prefect task that calls it caches the checkpoint.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from pydantic import Field
from torch import nn

from pruning.specs import Spec

IMAGE_TOKEN = "<image>"
SPECIAL_TOKENS = ("<pad>", "<unk>", "<s>", "</s>", IMAGE_TOKEN)


class ToyVLMSpec(Spec):
    """Shape and training recipe of the embedded VLM (every field is part of its cache key)."""

    image_size: int = Field(48, ge=16)
    patch_size: int = Field(8, ge=2)
    vision_hidden: int = 128
    vision_layers: int = Field(4, ge=1)
    text_hidden: int = 128
    text_layers: int = Field(12, ge=1)
    heads: int = 4
    mlp_ratio: float = 2.75
    # training
    # Measured on 2 cores with the first four question types: at batch 64 (4x fewer steps than at
    # 16) the model had not yet learned to look at the image.
    train_examples: int = Field(6000, ge=1)  # taken (seeded) from the image-QA training split
    epochs: int = Field(5, ge=1)
    # Each image can be shown with up to this many questions its scene answers (multi-turn, loss on
    # every answer). Measured on 2 cores: 4 turns at the same steps fell to 45% test accuracy (the
    # scene types at chance) against 74% with 1, so the default is the record's own question only.
    max_turns: int = Field(1, ge=1)
    # question-type weights of the training mix (`training_conversations`); empty: the split's own mix.
    # Measured on 2 cores (4,800 examples, 6 epochs): {"shape": 2, "relation": 1.5} fell to 49% test
    # accuracy (shape at chance) against 74% with the split's own mix; with the vision pretraining
    # below, {"relation": 2.5, "shape": 1.5} (6,000 examples, 5 epochs) fell to 74% against 82%.
    type_weights: dict[str, float] = {}
    batch_size: int = Field(16, ge=1)
    lr: float = Field(1e-3, gt=0)
    warmup_fraction: float = Field(0.05, ge=0, lt=1)
    weight_decay: float = 0.01
    seed: int = 0
    # Vision-tower pretraining before the QA training (`pretrain_vision_tower`): steps of
    # `vision_pretrain_batch` training images classified per patch (colour, shape, row, column)
    # and per image (count, digit) by throw-away linear heads; 0 skips it. Measured on 2 cores
    # (benchmarks/toy_vlm_recipe.py, 4,800 examples x 6 QA epochs), test accuracy: none 73.8%;
    # 1,500 steps without row/column 82.2% (colour 0.86 -> 1.00, count 0.77 -> 0.89, shape 0.34 ->
    # 0.54; 166 s); with row/column 83.3% (shape 0.65); and the tower then frozen 84.2% (shape
    # 0.77; train split 90.7%: it overfits); frozen, 6,000 examples x 5 epochs (the default) 86.3%
    # (shape 0.89; 514 s in all). Relation stays at 0.49-0.53, what reading the question alone
    # gives: the LM does not learn to compare two shapes' places in this budget.
    vision_pretrain_steps: int = Field(1500, ge=0)
    vision_pretrain_batch: int = Field(64, ge=1)
    vision_pretrain_lr: float = Field(1e-3, gt=0)
    # keep the (pretrained) vision tower as it is while the rest learns the questions, as LLaVA does
    freeze_vision_tower: bool = True


def build_tokenizer(vocabulary: Iterable[str]):
    """A word-level fast tokenizer: each word and punctuation mark of the image-QA language is one token."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = sorted({word.lower() for word in vocabulary} - set(SPECIAL_TOKENS))
    vocab = {token: index for index, token in enumerate([*SPECIAL_TOKENS, *words])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(behavior="isolated")]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        extra_special_tokens={"image_token": IMAGE_TOKEN},
        padding_side="left",  # generation appends on the right
    )


def build_processor(tokenizer, spec: ToyVLMSpec):
    """A stock LlavaProcessor: PIL-backed CLIP image processing (no torchvision) + the word-level tokenizer."""
    from transformers import LlavaProcessor
    from transformers.models.clip import CLIPImageProcessorPil

    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": spec.image_size},
        crop_size={"height": spec.image_size, "width": spec.image_size},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=spec.patch_size,
        vision_feature_select_strategy="default",  # drop CLS: one token per patch
        image_token=IMAGE_TOKEN,
        num_additional_image_tokens=1,  # CLIP's CLS
    )


def build_model(tokenizer, spec: ToyVLMSpec) -> nn.Module:
    """A randomly initialised LlavaForConditionalGeneration of the spec's shape (seeded)."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    def mlp(hidden: int) -> int:
        return int(round(hidden * spec.mlp_ratio / 32)) * 32

    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=spec.vision_hidden,
            intermediate_size=mlp(spec.vision_hidden),
            num_hidden_layers=spec.vision_layers,
            num_attention_heads=spec.heads,
            image_size=spec.image_size,
            patch_size=spec.patch_size,
            projection_dim=spec.vision_hidden,
        ),
        text_config=LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=spec.text_hidden,
            intermediate_size=mlp(spec.text_hidden),
            num_hidden_layers=spec.text_layers,
            num_attention_heads=spec.heads,
            num_key_value_heads=spec.heads,
            max_position_embeddings=256,
            tie_word_embeddings=True,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        image_seq_length=(spec.image_size // spec.patch_size) ** 2,
        tie_word_embeddings=True,
    )
    torch.manual_seed(spec.seed)
    model = LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model


@dataclass(frozen=True)
class TrainingExample:
    """One image and a conversation about it: (question text, answer text) turns, each question
    without the image token (the first turn gets it through `prompt_format`)."""

    image: object  # PIL.Image
    turns: tuple[tuple[str, str], ...]


def encode_examples(processor, examples: Sequence[TrainingExample], prompt_format: Callable[[str], str]) -> dict:
    """A padded batch of the examples' conversations with answer-token labels (`pruning.calibration.conversation_batch`)."""
    from pruning.calibration import conversation_batch

    return conversation_batch(processor, [example.image for example in examples], [example.turns for example in examples], prompt_format)


@dataclass(frozen=True)
class VisionExample:
    """An image with classification targets for the vision tower, by label name: one per patch of
    the tower's grid (row-major) and one per image; -100 where a label does not apply."""

    image: object  # PIL.Image
    patch_labels: Mapping[str, Sequence[int]]
    image_labels: Mapping[str, int]


def vision_features(model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """The vision tower's patch features that a LLaVA hands its projector: the hidden states of
    `vision_feature_layer`, without CLS under the "default" selection strategy."""
    config = model.config
    layer = config.vision_feature_layer
    if not isinstance(layer, int):
        raise ValueError(f"vision pretraining takes one vision_feature_layer, the config has {layer!r}")
    hidden = model.model.vision_tower(pixel_values, output_hidden_states=True).hidden_states[layer]
    return hidden[:, 1:] if config.vision_feature_select_strategy == "default" else hidden


def _labelled_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the entries with a label (not -100); zero when none has one."""
    labelled = target != -100
    if not labelled.any():
        return logits.sum() * 0.0
    return nn.functional.cross_entropy(logits[labelled], target[labelled])


def pretrain_vision_tower(
    model: nn.Module, processor, examples: Sequence[VisionExample], spec: ToyVLMSpec, log: Callable[[str], None] = print
) -> list[float]:
    """Train the vision tower alone to classify every patch and image label of `examples` through
    linear heads that are thrown away afterwards (the model stays a stock LLaVA), for
    `spec.vision_pretrain_steps` steps of `spec.vision_pretrain_batch` images (seeded sampling,
    AdamW, warmup + cosine). Returns the mean loss (summed over labels) of each tenth of the steps."""
    from tqdm import tqdm

    steps = spec.vision_pretrain_steps
    if steps == 0 or not examples:
        return []
    tower = model.model.vision_tower
    pixel_values = processor.image_processor(images=[example.image for example in examples], return_tensors="pt")["pixel_values"]
    patch_targets = {name: torch.tensor([list(e.patch_labels[name]) for e in examples]) for name in examples[0].patch_labels}
    image_targets = {name: torch.tensor([e.image_labels[name] for e in examples]) for name in examples[0].image_labels}
    with torch.no_grad():
        n_patches = vision_features(model, pixel_values[:1]).shape[1]
    for name, target in patch_targets.items():
        if target.shape[1] != n_patches:
            raise ValueError(f"patch label {name!r} has {target.shape[1]} entries per image; the vision tower makes {n_patches} patch features")
    torch.manual_seed(spec.seed)
    hidden = model.config.vision_config.hidden_size
    heads = nn.ModuleDict(
        {f"patch_{name}": nn.Linear(hidden, int(t.max()) + 1) for name, t in patch_targets.items()}
        | {f"image_{name}": nn.Linear(hidden, int(t.max()) + 1) for name, t in image_targets.items()}
    )
    params = [*tower.parameters(), *heads.parameters()]
    optimizer = torch.optim.AdamW(params, lr=spec.vision_pretrain_lr, betas=(0.9, 0.98), weight_decay=spec.weight_decay)
    warmup = max(1, int(spec.warmup_fraction * steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: cosine_with_warmup(step, steps, warmup))
    generator = torch.Generator().manual_seed(spec.seed)
    order, cursor, losses, chunk = torch.randperm(len(examples), generator=generator), 0, [], []
    tower.train()
    with tqdm(total=steps, desc="pretrain toy-vlm vision", unit="step") as bar:
        for step in range(steps):
            if cursor + spec.vision_pretrain_batch > len(order):
                order, cursor = torch.randperm(len(examples), generator=generator), 0
            index = order[cursor : cursor + spec.vision_pretrain_batch]
            cursor += spec.vision_pretrain_batch
            features = vision_features(model, pixel_values[index])
            loss = sum(
                _labelled_cross_entropy(heads[f"patch_{name}"](features).flatten(0, 1), target[index].flatten())
                for name, target in patch_targets.items()
            ) + sum(_labelled_cross_entropy(heads[f"image_{name}"](features.mean(dim=1)), target[index]) for name, target in image_targets.items())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            chunk.append(loss.item())
            bar.set_postfix(loss=f"{loss.item():.3f}")
            bar.update()
            if len(chunk) == max(1, steps // 10) or step == steps - 1:
                losses.append(sum(chunk) / len(chunk))
                log(f"toy-vlm vision pretraining step {step + 1}/{steps}: loss {losses[-1]:.4f}")
                chunk = []
    for parameter in tower.parameters():
        parameter.grad = None
    return losses


def cosine_with_warmup(step: int, total: int, warmup: int) -> float:
    """Learning-rate multiplier: linear warmup, then cosine decay to zero."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def train_toy_vlm(
    model: nn.Module,
    processor,
    examples: Sequence[TrainingExample],
    spec: ToyVLMSpec,
    prompt_format: Callable[[str], str],
    log: Callable[[str], None] = print,
) -> list[float]:
    """Train every parameter (but the vision tower's under `spec.freeze_vision_tower`) on the answer-token
    loss for `spec.epochs` epochs; returns the per-epoch mean loss (per answer token, every turn's)."""
    from tqdm import tqdm

    generator = random.Random(spec.seed)
    torch.manual_seed(spec.seed)
    steps_per_epoch = math.ceil(len(examples) / spec.batch_size)
    total = steps_per_epoch * spec.epochs
    warmup = max(1, int(spec.warmup_fraction * total))
    flags = {id(p): p.requires_grad for p in model.parameters()}
    if spec.freeze_vision_tower:
        model.model.vision_tower.requires_grad_(False)
    trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [p for n, p in trained if p.ndim >= 2 and "embed" not in n]
    no_decay = [p for n, p in trained if not (p.ndim >= 2 and "embed" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": spec.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=spec.lr,
        betas=(0.9, 0.98),
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: cosine_with_warmup(step, total, warmup))
    model.train()
    epoch_losses = []
    started = time.perf_counter()
    with tqdm(total=total, desc="train toy-vlm", unit="step") as bar:
        for epoch in range(spec.epochs):
            order = list(range(len(examples)))
            generator.shuffle(order)
            losses = []
            for first in range(0, len(order), spec.batch_size):
                batch = encode_examples(processor, [examples[i] for i in order[first : first + spec.batch_size]], prompt_format)
                loss = model(**batch, use_cache=False).loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                schedule.step()
                losses.append(loss.item())
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
                bar.update()
            epoch_losses.append(sum(losses) / len(losses))
            log(f"toy-vlm epoch {epoch + 1}/{spec.epochs}: answer loss {epoch_losses[-1]:.4f} ({time.perf_counter() - started:.0f} s)")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(flags[id(p)])
    return epoch_losses
