"""The layer-dropping stage's checkpoint: where it goes and what it holds."""

from __future__ import annotations

from pathlib import Path

import torch

from pruning.layerdrop.selection import DropPlan
from pruning.models.sources import checkpoint_fingerprint, load_model, save_checkpoint
from pruning.specs import ModelSpec
from tasks.artifacts import CheckpointRef
from tasks.layerdrop import dropped_checkpoint
from tests.pruning.local.test_offload import N_LAYERS, tiny_llama


def test_one_base_dropped_in_two_dtypes_gives_two_checkpoints(tmp_path):
    """Two configs sharing a workdir (two one-line prunes) may drop the same layers of one model in
    float32 and bfloat16: each keeps its own checkpoint instead of overwriting the other's."""
    base = save_checkpoint(tiny_llama(), None, tmp_path / "base")
    ref = CheckpointRef(path=str(base), fingerprint=checkpoint_fingerprint(base))
    plan = DropPlan(drop=(2, 3), finetune=(), anchor=(), n_layers=N_LAYERS).to_dict()
    made = {dtype: dropped_checkpoint.fn(ref, ModelSpec(source=str(base), dtype=dtype), plan, "shortgpt 33%", str(tmp_path / "work"))
            for dtype in ("float32", "bfloat16")}  # fmt: skip
    assert made["float32"].ref.path != made["bfloat16"].ref.path
    for dtype, dropped in made.items():
        model, _ = load_model(Path(dropped.ref.path), ModelSpec(source=dropped.ref.path, dtype=dtype))
        assert len(model.model.layers) == N_LAYERS - 2 and next(model.parameters()).dtype == getattr(torch, dtype)
        assert checkpoint_fingerprint(Path(dropped.ref.path)) == dropped.ref.fingerprint  # neither was overwritten
