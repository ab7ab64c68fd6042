"""Calibration token windows: N seeded random windows of L tokens from one tokenized corpus.

As in the Wanda/SparseGPT data loaders, the documents are joined and tokenized once and each
sample is a random contiguous window, so samples cross document boundaries ("\n\n" marks them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch
from safetensors.torch import load_file, save_file
from torch import LongTensor

from pruning.errors import ConfigError
from pruning.files import atomic_path

_KEY = "input_ids"


def calibration_ids(texts: Sequence[str], tokenizer, n_samples: int, seq_len: int, seed: int) -> LongTensor:
    """[n_samples, seq_len] token ids, each row a window starting at a seeded random offset."""
    token_ids = tokenizer("\n\n".join(texts), add_special_tokens=False, verbose=False)[_KEY]
    n_tokens = len(token_ids)
    if n_tokens < seq_len + 1:
        raise ConfigError(
            f"calibration.seq_len={seq_len}: the calibration text has {n_tokens} tokens; windows of {seq_len} need at least {seq_len + 1}"
        )
    stream = torch.as_tensor(token_ids, dtype=torch.long)
    generator = torch.Generator().manual_seed(seed)
    # starts in [0, n_tokens - seq_len - 1], as the reference loaders' randint(0, n - seqlen - 1)
    starts = torch.randint(0, n_tokens - seq_len, (n_samples,), generator=generator)
    return stream[starts[:, None] + torch.arange(seq_len)]


def save_calibration(ids: LongTensor, path: Path) -> Path:
    """Write `ids` as safetensors next to `path`, then rename into place (never a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file({_KEY: ids.contiguous()}, str(tmp))
    return path


def load_calibration(path: Path) -> LongTensor:
    tensors = load_file(str(path))
    if _KEY not in tensors:
        raise ValueError(f"{path} holds no {_KEY!r} tensor; it is not a calibration set")
    return tensors[_KEY]


def conversation_batch(
    processor, images: Sequence, conversations: Sequence[Sequence[tuple[str, str]]], prompt_format: Callable[[str], str]
) -> dict[str, torch.Tensor]:
    """One padded batch of image conversations, `prompt_format(q1) a1 </s> q2 a2 </s> ...`, with
    `labels` -100 everywhere but each answer's tokens and the end-of-turn token after it.

    `prompt_format` places the image placeholder (and any chat template) around the first question;
    later questions follow as plain text. Label positions come from tokenizing each prefix of the
    text and adding how many tokens the processor makes of the image placeholder beyond one.
    """
    if len(images) != len(conversations):
        raise ValueError(f"{len(images)} images but {len(conversations)} conversations")
    if not images:
        raise ValueError("no image conversations to encode")
    tokenizer = getattr(processor, "tokenizer", processor)
    texts, answer_spans = [], []
    for turns in conversations:
        text, spans = "", []
        for index, (question, answer) in enumerate(turns):
            text += prompt_format(question) if index == 0 else f" {question}"
            start = len(tokenizer(text)["input_ids"])
            text += f"{answer}{tokenizer.eos_token}"
            spans.append((start, len(tokenizer(text)["input_ids"])))
        texts.append(text)
        answer_spans.append(spans)
    batch = dict(processor(text=texts, images=list(images), return_tensors="pt", padding=True))
    # the image comes before every answer: the first prompt holds its placeholder
    surplus = _image_token_surplus(processor, prompt_format(conversations[0][0][0]), images[0])
    labels = torch.full_like(batch["input_ids"], -100)
    left_padded = getattr(tokenizer, "padding_side", "right") == "left"
    for row, spans in enumerate(answer_spans):
        pad = batch["input_ids"].shape[1] - int(batch["attention_mask"][row].sum()) if left_padded else 0
        for start, end in spans:
            labels[row, pad + surplus + start : pad + surplus + end] = batch["input_ids"][row, pad + surplus + start : pad + surplus + end]
    batch["labels"] = labels
    return batch


def _image_token_surplus(processor, prompt: str, image) -> int:
    """How many more tokens the processor makes of `prompt` (holding one image placeholder) than the tokenizer does."""
    tokenizer = getattr(processor, "tokenizer", processor)
    expanded = processor(text=[prompt], images=[image])["input_ids"][0]
    return len(expanded) - len(tokenizer(prompt)["input_ids"])


def multimodal_batches(
    processor, images: Sequence, prompts: Sequence[str], answers: Sequence[str], batch_size: int
) -> list[dict[str, torch.Tensor]]:
    """Image-question-answer calibration pairs as model-ready batches (the processor's own keys,
    padded per batch) with answer-token `labels`, for a loss on the answers (ECoFLaP's scores).

    For a VLM the calibration "sequence" is an image with its prompt and answer, as ECoFLaP
    calibrates BLIP-2 on image-caption pairs; the processor inserts the image tokens. `prompts`
    are complete (image placeholder and any chat template included: `evals.vlm_prompt`).
    """
    if not (len(images) == len(prompts) == len(answers)):
        raise ValueError(f"{len(images)} images, {len(prompts)} prompts and {len(answers)} answers")
    if not prompts:
        raise ValueError("no image-text pairs to calibrate on")
    return [
        conversation_batch(
            processor,
            images[i : i + batch_size],
            [[(prompt, answer)] for prompt, answer in zip(prompts[i : i + batch_size], answers[i : i + batch_size])],
            lambda prompt: prompt,
        )
        for i in range(0, len(prompts), batch_size)
    ]
