"""The pruning stage with the model offloaded: the checkpoint it saves is the one the whole model gives."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pruning.calibration import save_calibration
from pruning.models.sources import checkpoint_fingerprint, save_checkpoint
from pruning.specs import CalibrationSpec, ModelSpec, SparseGPTSpec
from tasks.artifacts import CheckpointRef
from tasks.prune import pruned_checkpoint
from tests.pruning.local.test_offload import tiny_llama


@pytest.mark.parametrize("offload", ["cpu", "disk"])
def test_an_offloaded_model_saves_the_same_pruned_checkpoint(offload, tmp_path):
    base = save_checkpoint(tiny_llama(), None, tmp_path / "base")
    ref = CheckpointRef(path=str(base), fingerprint=checkpoint_fingerprint(base))
    ids = save_calibration(torch.randint(0, 128, (6, 16), generator=torch.Generator().manual_seed(1)), tmp_path / "calibration.safetensors")
    method = SparseGPTSpec(name="sparsegpt", sparsity=0.5)

    def prune(offload: str) -> dict[str, torch.Tensor]:
        model = ModelSpec(source=str(base), offload=offload)
        made = pruned_checkpoint.fn(ref, str(ids), model, CalibrationSpec(batch_size=4), method, str(tmp_path / offload))
        assert made.achieved_sparsity == pytest.approx(0.5, abs=0.01)
        return load_file(str(Path(made.ref.path) / "model.safetensors"))

    whole, offloaded = prune("none"), prune(offload)
    assert whole.keys() == offloaded.keys()
    assert all(torch.equal(offloaded[name], tensor) for name, tensor in whole.items())
