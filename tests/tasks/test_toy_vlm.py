"""The toy VLM's two training stages on a small image-QA build and a tiny spec."""

from __future__ import annotations

import torch

from evals.imageqa import build_imageqa
from evals.imageqa.generator import split_path
from evals.imageqa.records import load_records
from pruning.models.toy_vlm import ToyVLMSpec
from tasks.toy_vlm import train_from_records

TINY = ToyVLMSpec(vision_hidden=32, vision_layers=1, text_hidden=32, text_layers=2, heads=2, train_examples=24, epochs=1,
                  batch_size=8, vision_pretrain_steps=10, vision_pretrain_batch=16)


def test_training_pretrains_the_vision_tower_on_every_image_then_learns_the_questions(tmp_path):
    records = load_records(split_path(build_imageqa(tmp_path, seed=3, train=60, calibration=12, test=12), "train"))
    logged: list[str] = []
    trained = train_from_records(records, TINY, log=logged.append)
    assert len(trained.vision_losses) == 10 and len(trained.epoch_losses) == 1 and trained.n_examples == 24
    assert any("on 60 training images (10 steps)" in line for line in logged)
    again = train_from_records(records, TINY, log=lambda _: None)
    assert (again.vision_losses, again.epoch_losses) == (trained.vision_losses, trained.epoch_losses)  # seeded
    for (name, p), q in zip(trained.model.state_dict().items(), again.model.state_dict().values()):
        assert torch.equal(p, q), name
    skipped = train_from_records(records, TINY.model_copy(update={"vision_pretrain_steps": 0}), log=lambda _: None)
    assert skipped.vision_losses == []
