"""Train the embedded VLM once per cache directory: `packaged:toy-vlm` resolves to what this writes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prefect import get_run_logger, task

from evals.imageqa.generator import split_path
from evals.imageqa.labels import vision_examples
from evals.imageqa.prompts import training_conversations
from evals.imageqa.questions import vocabulary
from evals.imageqa.records import load_records
from evals.measure import measure_resources
from evals.vlm_prompt import vlm_prompt
from pruning.models.sources import checkpoint_fingerprint, save_checkpoint
from pruning.models.toy_vlm import (
    ToyVLMSpec,
    TrainingExample,
    VisionExample,
    build_model,
    build_processor,
    build_tokenizer,
    pretrain_vision_tower,
    train_toy_vlm,
)
from tasks.artifacts import CheckpointRef, TrainedModel
from tasks.common import STAGE, stamp

TOY_VLM = "toy-vlm"


@dataclass
class TrainedToyVLM:
    model: object
    processor: object
    vision_losses: list[float]  # pretraining loss per tenth of its steps
    epoch_losses: list[float]  # answer loss per QA epoch
    n_examples: int


def train_from_records(records: list, spec: ToyVLMSpec, log: Callable[[str], None] = print) -> TrainedToyVLM:
    """The toy LLaVA built and trained from scratch on image-QA training records: the vision tower
    pretrained on every record's image, then the questions (`spec.train_examples` of them, seeded).
    What the cached task below saves, and what `benchmarks/toy_vlm_recipe.py` measures."""
    examples = [TrainingExample(*pair) for pair in training_conversations(records, spec.train_examples, spec.max_turns, spec.seed, spec.type_weights)]
    tokenizer = build_tokenizer(vocabulary())
    processor = build_processor(tokenizer, spec)
    model = build_model(tokenizer, spec)
    vision_losses = []
    if spec.vision_pretrain_steps:
        vision = [VisionExample(*example) for example in vision_examples(records, spec.image_size // spec.patch_size)]
        log(f"pretraining the toy-vlm vision tower on {len(vision)} training images ({spec.vision_pretrain_steps} steps)")
        vision_losses = pretrain_vision_tower(model, processor, vision, spec, log=log)
    log(f"training toy-vlm ({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters) on {len(examples)} examples")
    losses = train_toy_vlm(model, processor, examples, spec, lambda text: vlm_prompt(processor, text), log=log)
    return TrainedToyVLM(model, processor, vision_losses, losses, len(examples))


@task(**STAGE, task_run_name="train[toy-vlm]")
def toy_vlm_checkpoint(spec: ToyVLMSpec, imageqa_root: str, cache_dir: str) -> TrainedModel:
    """Train the toy LLaVA on the image-QA training split and save it under `<cache_dir>/models/toy-vlm`."""
    logger = get_run_logger()
    with measure_resources() as usage:
        trained = train_from_records(load_records(split_path(Path(imageqa_root), "train")), spec, log=logger.info)
        dest = Path(cache_dir) / "models" / TOY_VLM
        extra = {
            "source": f"packaged:{TOY_VLM}",
            "spec": spec.model_dump(),
            "vision_pretrain_losses": trained.vision_losses,
            "epoch_losses": trained.epoch_losses,
            "imageqa": imageqa_root,
        }
        save_checkpoint(trained.model, trained.processor, dest, extra=extra)
    return TrainedModel(
        ref=CheckpointRef(path=str(dest), fingerprint=checkpoint_fingerprint(dest)),
        epoch_losses=trained.epoch_losses,
        n_examples=trained.n_examples,
        usage=stamp(usage),
    )
