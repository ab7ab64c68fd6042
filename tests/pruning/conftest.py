"""Tiny random-init models built offline from configs (seeded): decoders and VLMs, one per supported family
(4 decoder layers: Llama-like families, OPT, Phi-3, GPT-NeoX).

VLMs come with hand-made image+text batches: pixel values and prompts holding as many image
tokens as the model fills in, as the family's processor would produce them.
"""

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
    # the three non-Llama decoder layouts: OPT (learned positions, fc1/fc2 on flattened tokens), Phi-3 (fused
    # qkv and gate/up), GPT-NeoX (fused qkv, parallel attention and MLP, partial rotary)
    if family == "opt":
        return tf.OPTConfig(
            hidden_size=64, num_hidden_layers=4, num_attention_heads=4, ffn_dim=128, vocab_size=128,
            word_embed_proj_dim=64, max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        )
    if family == "phi3":
        return tf.Phi3Config(**SHAPE, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    if family == "gpt_neox":
        return tf.GPTNeoXConfig(
            hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128, vocab_size=128,
            max_position_embeddings=64, bos_token_id=1, eos_token_id=2,
        )
    raise ValueError(family)


FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma3")
OTHER_DECODERS = ("opt", "phi3", "gpt_neox")  # built-in adapters of their own (pruning.models.adapters)


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


# --- vision-language models: 2 blocks per tower, 28-32 px images ---

VOCAB = 128
IMAGE_TOKEN = 127  # every family's image placeholder id; text tokens are drawn below 100
TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
TEXT = dict(TOWER, num_key_value_heads=1, vocab_size=VOCAB)
CLIP_VISION = dict(TOWER, image_size=28, patch_size=14)
QFORMER = dict(TOWER, encoder_hidden_size=32, vocab_size=64)
QWEN_VISION = dict(
    depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32,
    patch_size=8, spatial_merge_size=2, temporal_patch_size=2,
)
# M-RoPE splits the 8 rotary frequencies of a 16-dim head over (time, height, width)
QWEN_TEXT = dict(TEXT, head_dim=16, rope_parameters={"rope_type": "default", "rope_theta": 1e4, "mrope_section": [2, 3, 3]})
QWEN_TOKENS = dict(image_token_id=IMAGE_TOKEN, video_token_id=126, vision_start_token_id=125, vision_end_token_id=124)

N_BATCHES, BATCH_ROWS, TEXT_LEN = 2, 2, 6

VLM_FAMILIES = ("llava", "llava_next", "qwen2_5_vl", "qwen3_vl", "blip-2+opt", "blip-2+llama", "instructblip", "clip")


def _model(family: str) -> nn.Module:
    import transformers as tf

    if family == "llava":
        config = tf.LlavaConfig(
            vision_config=tf.CLIPVisionConfig(**CLIP_VISION), text_config=tf.LlamaConfig(**TEXT), image_token_index=IMAGE_TOKEN
        )
        return tf.LlavaForConditionalGeneration(config)
    if family == "llava_next":  # one 28 px tile besides the base image
        config = tf.LlavaNextConfig(
            vision_config=tf.CLIPVisionConfig(**CLIP_VISION), text_config=tf.MistralConfig(**TEXT),
            image_token_index=IMAGE_TOKEN, image_grid_pinpoints=[[28, 28]],
        )
        return tf.LlavaNextForConditionalGeneration(config)
    if family == "qwen2_5_vl":  # the second vision block attends fully, the first by windows
        vision_config = dict(QWEN_VISION, window_size=16, fullatt_block_indexes=[1])
        config = tf.Qwen2_5_VLConfig(vision_config=vision_config, text_config=QWEN_TEXT, **QWEN_TOKENS)
        return tf.Qwen2_5_VLForConditionalGeneration(config)
    if family == "qwen3_vl":  # DeepStack adds features of both vision blocks after text layers 0 and 1 of 3
        config = tf.Qwen3VLConfig(
            vision_config=dict(QWEN_VISION, num_position_embeddings=16, deepstack_visual_indexes=[0, 1]),
            text_config=dict(QWEN_TEXT, num_hidden_layers=3), **QWEN_TOKENS,
        )
        return tf.Qwen3VLForConditionalGeneration(config)
    if family.startswith("blip-2") or family == "instructblip":
        text_config = (
            tf.OPTConfig(
                hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=2, vocab_size=VOCAB, word_embed_proj_dim=32
            )
            if family == "blip-2+opt"
            else tf.LlamaConfig(**TEXT)
        )
        shared = dict(
            vision_config=CLIP_VISION, qformer_config=QFORMER, text_config=text_config,
            num_query_tokens=4, image_token_index=IMAGE_TOKEN,
        )
        if family == "instructblip":
            return tf.InstructBlipForConditionalGeneration(tf.InstructBlipConfig(**shared))
        return tf.Blip2ForConditionalGeneration(tf.Blip2Config(**shared))
    if family == "clip":
        text_config = dict(TOWER, vocab_size=VOCAB)
        return tf.CLIPModel(tf.CLIPConfig(vision_config=CLIP_VISION, text_config=text_config, projection_dim=16))
    raise ValueError(family)


def _image_batch(family: str, model: nn.Module, generator: torch.Generator) -> dict:
    """One batch of BATCH_ROWS images and prompts, with as many image tokens as the model fills in."""
    rows = BATCH_ROWS

    def prompt(n_tokens: int) -> torch.Tensor:
        return torch.randint(1, 100, (rows, n_tokens), generator=generator)

    if family == "clip":
        return dict(input_ids=prompt(TEXT_LEN), pixel_values=torch.randn(rows, 3, 28, 28, generator=generator))
    if family.startswith("qwen"):  # 32 px images: a 4 x 4 grid of 8 px patches, merged 2 x 2 into 4 tokens
        grid = torch.tensor([[1, 4, 4]] * rows)
        patches = torch.randn(rows * 16, 3 * 2 * 8 * 8, generator=generator)
        image = torch.tensor([QWEN_TOKENS["vision_start_token_id"], *[IMAGE_TOKEN] * 4, QWEN_TOKENS["vision_end_token_id"]])
        input_ids = torch.cat([prompt(2), image.expand(rows, -1), prompt(TEXT_LEN)], dim=1)
        batch = dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids))
        batch.update(pixel_values=patches, image_grid_thw=grid)
        if family == "qwen3_vl":  # M-RoPE finds the image by token type: text 0, image 1
            batch["mm_token_type_ids"] = (input_ids == IMAGE_TOKEN).int()
        return batch
    if family == "llava_next":
        pixel_values = torch.randn(rows, 2, 3, 28, 28, generator=generator)  # base image + one tile
        image_sizes = torch.tensor([[28, 28]] * rows)
        with torch.no_grad():
            features = model.model.get_image_features(pixel_values, image_sizes, return_dict=True).pooler_output
        n_image_tokens = features[0].shape[0]  # base image + tile, unpadded, with newline tokens
        input_ids = torch.cat([torch.full((rows, n_image_tokens), IMAGE_TOKEN), prompt(TEXT_LEN)], dim=1)
        batch = dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids))
        return dict(batch, pixel_values=pixel_values, image_sizes=image_sizes)
    # LLaVA: 2 x 2 patches of 14 px, CLS dropped; BLIP-2 / InstructBLIP: 4 query tokens
    pixel_values = torch.randn(rows, 3, 28, 28, generator=generator)
    input_ids = torch.cat([torch.full((rows, 4), IMAGE_TOKEN), prompt(TEXT_LEN)], dim=1)
    batch = dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), pixel_values=pixel_values)
    if family == "instructblip":
        qformer_ids = torch.randint(1, QFORMER["vocab_size"], (rows, 5), generator=generator)  # the Q-Former's instruction
        batch.update(qformer_input_ids=qformer_ids, qformer_attention_mask=torch.ones_like(qformer_ids))
    return batch


def build_tiny_vlm(family: str, seed: int = 0) -> tuple[nn.Module, list[dict]]:
    """A tiny `family` VLM in eval mode and N_BATCHES calibration batches of images and prompts."""
    torch.manual_seed(seed)
    model = _model(family).eval()
    generator = torch.Generator().manual_seed(seed + 1)
    return model, [_image_batch(family, model, generator) for _ in range(N_BATCHES)]


@pytest.fixture
def tiny_vlm() -> Callable[..., tuple[nn.Module, list[dict]]]:
    return build_tiny_vlm
