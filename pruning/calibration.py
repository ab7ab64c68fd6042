"""Calibration token windows: N seeded random windows of L tokens from one tokenized corpus.

As in the Wanda/SparseGPT data loaders, the documents are joined and tokenized once and each
sample is a random contiguous window, so samples cross document boundaries ("\n\n" marks them).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Sequence

import torch
from safetensors.torch import load_file, save_file
from torch import LongTensor

_KEY = "input_ids"


def calibration_ids(texts: Sequence[str], tokenizer, n_samples: int, seq_len: int, seed: int) -> LongTensor:
    """[n_samples, seq_len] token ids, each row a window starting at a seeded random offset."""
    token_ids = tokenizer("\n\n".join(texts), add_special_tokens=False, verbose=False)[_KEY]
    n_tokens = len(token_ids)
    if n_tokens < seq_len + 1:
        raise ValueError(
            f"the calibration text has {n_tokens} tokens; windows of seq_len={seq_len} need at least {seq_len + 1}"
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
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        save_file({_KEY: ids.contiguous()}, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_calibration(path: Path) -> LongTensor:
    tensors = load_file(str(path))
    if _KEY not in tensors:
        raise ValueError(f"{path} holds no {_KEY!r} tensor; it is not a calibration set")
    return tensors[_KEY]


def multimodal_batches(processor, images: Sequence, texts: Sequence[str], batch_size: int) -> list[dict[str, torch.Tensor]]:
    """Image-text calibration pairs as model-ready batches (the processor's own keys, padded per batch).

    For a VLM the calibration "sequence" is an image with its prompt and answer, as ECoFLaP
    calibrates BLIP-2 on image-caption pairs; the processor inserts the image tokens.
    """
    if len(images) != len(texts):
        raise ValueError(f"{len(images)} images but {len(texts)} texts")
    if not texts:
        raise ValueError("no image-text pairs to calibrate on")
    return [
        dict(processor(text=list(texts[i : i + batch_size]), images=list(images[i : i + batch_size]), return_tensors="pt", padding=True))
        for i in range(0, len(texts), batch_size)
    ]
