"""Shared by the flow tests: a tiny random-init toy VLM saved as an ordinary checkpoint directory,
exactly how a user points `model:` at a real LLaVA on disk."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest


@pytest.fixture(scope="session")
def tiny_vlm_checkpoint() -> Callable[..., Path]:
    def save(directory: Path, text_layers: int) -> Path:
        from evals.imageqa.questions import vocabulary
        from pruning.models.sources import save_checkpoint
        from pruning.models.toy_vlm import ToyVLMSpec, build_model, build_processor, build_tokenizer

        spec = ToyVLMSpec(vision_hidden=32, vision_layers=2, text_hidden=32, text_layers=text_layers, heads=2)
        tokenizer = build_tokenizer(vocabulary())
        return save_checkpoint(build_model(tokenizer, spec), build_processor(tokenizer, spec), directory)

    return save
