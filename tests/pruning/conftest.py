"""Tiny random-init decoders built offline from configs (seeded), one per supported family."""

from __future__ import annotations

from typing import Callable

import pytest
import torch
from torch import nn

SHAPE = dict(
    hidden_size=64,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=128,
    vocab_size=128,
)


def _config(family: str):
    import transformers as tf

    if family == "llama":
        return tf.LlamaConfig(**SHAPE)
    if family == "mistral":
        return tf.MistralConfig(**SHAPE, sliding_window=8)
    if family == "qwen2":  # sliding attention on the upper layers: blocks get different masks
        return tf.Qwen2Config(**SHAPE, use_sliding_window=True, max_window_layers=2, sliding_window=4)
    if family == "qwen3":
        return tf.Qwen3Config(**SHAPE, head_dim=16)
    if family == "gemma3":  # sliding and full layers alternate: different masks *and* rotary bases per block
        return tf.Gemma3TextConfig(
            **SHAPE,
            head_dim=16,
            sliding_window=4,
            layer_types=["sliding_attention", "full_attention"] * 2,
        )
    raise ValueError(family)


FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma3")


def build_tiny(family: str, seed: int = 0) -> nn.Module:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(_config(family)).eval()


@pytest.fixture
def tiny_model() -> Callable[..., nn.Module]:
    return build_tiny


@pytest.fixture
def calibration_batch() -> torch.Tensor:
    """6 sequences of 16 random token ids: two batches of 4 and 2 with batch_size=4."""
    return torch.randint(0, SHAPE["vocab_size"], (6, 16), generator=torch.Generator().manual_seed(1))
