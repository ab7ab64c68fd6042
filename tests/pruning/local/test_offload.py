"""Pruning an offloaded model block by block (pruning.models.offload through the shared walk).

On CPU the execution device is the storage device, so what is "on the device" is counted at the one
pair of functions every move goes through (`_onload`, `_offload`), and every prunable linear checks,
when it computes, that it holds an onloaded copy and not its stored tensor. Results must be the very
bits of the unoffloaded prune.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from pruning.local.walk import prune_model
from pruning.models import offload
from pruning.models.adapters import adapter_for, blocks, prunable_linears
from pruning.models.offload import offload_model, storage

N_LAYERS = 6


def tiny_llama(seed: int = 0) -> nn.Module:
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(seed)
    config = LlamaConfig(
        hidden_size=64, num_hidden_layers=N_LAYERS, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128, vocab_size=128
    )
    return AutoModelForCausalLM.from_config(config).eval()


def tensor_bytes(modules) -> int:
    return sum(slot.get().nbytes for slot in offload._slots(modules))


class DeviceLedger:
    """What sits on the execution device at each moment, from the calls to `_onload` and `_offload`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, model: nn.Module):
        adapter = adapter_for(model)
        self.blocks = {id(block): block for group in adapter.groups for block in blocks(model, group)}
        in_blocks = {id(module) for block in self.blocks.values() for module in block.modules()}
        self.rest_bytes = tensor_bytes(m for m in model.modules() if id(m) not in in_blocks)
        self.block_bytes = max(tensor_bytes(block.modules()) for block in self.blocks.values())
        self.model_bytes = tensor_bytes(model.modules())
        self.on_device: dict[int, tuple[int | None, int]] = {}  # id(Resident) -> (id of its block or None, bytes)
        self.peak_bytes = self.peak_blocks = self.onloads = 0
        onload, offload_ = offload._onload, offload._offload

        def counted_onload(modules, device):
            resident = onload(modules, device)
            block = id(modules[0]) if id(modules[0]) in self.blocks else None
            self.on_device[id(resident)] = (block, resident.n_bytes)
            self.onloads += 1
            self.peak_bytes = max(self.peak_bytes, sum(n for _, n in self.on_device.values()))
            self.peak_blocks = max(self.peak_blocks, sum(block is not None for block, _ in self.on_device.values()))
            return resident

        def counted_offload(resident, write_back):
            del self.on_device[id(resident)]
            return offload_(resident, write_back)

        monkeypatch.setattr(offload, "_onload", counted_onload)
        monkeypatch.setattr(offload, "_offload", counted_offload)

    def onloaded_blocks(self) -> set[int]:
        return {block for block, _ in self.on_device.values() if block is not None}


def computes_on_copies(model: nn.Module, ledger: DeviceLedger) -> list:
    """Forward pre-hooks on every prunable linear: it must belong to an onloaded block and compute with a copy."""
    adapter = adapter_for(model)
    stored = {p.data_ptr() for block in ledger.blocks.values() for p in block.parameters()}
    handles = []
    for group in adapter.groups:
        for block in blocks(model, group):
            for linear in prunable_linears(block, group).values():

                def check(module, args, block=block):
                    assert id(block) in ledger.onloaded_blocks(), "a block computed without being onloaded"
                    assert module.weight.data_ptr() not in stored, "a linear computed with its stored weight"

                handles.append(linear.register_forward_pre_hook(check))
    return handles


def calibration() -> torch.Tensor:
    return torch.randint(0, 128, (6, 16), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("method", ["wanda", "sparsegpt", "magnitude"])
def test_cpu_offload_holds_one_block_on_the_device_and_prunes_the_same_bits(method, monkeypatch):
    reference = tiny_llama()
    model = copy.deepcopy(reference)
    prune_model(reference, adapter_for(reference), method, calibration(), target=0.5, batch_size=4, progress=False)

    offload_model(model, adapter_for(model), "cpu")
    ledger = DeviceLedger(monkeypatch, model)
    handles = computes_on_copies(model, ledger)
    prune_model(model, adapter_for(model), method, calibration(), target=0.5, batch_size=4, progress=False, execution_device="cpu")
    for handle in handles:
        handle.remove()

    assert ledger.onloads >= N_LAYERS + 1  # every block came over, and the non-block modules once
    assert ledger.peak_blocks == 1
    assert ledger.peak_bytes <= ledger.rest_bytes + ledger.block_bytes < ledger.model_bytes
    assert ledger.on_device == {}  # everything went back
    for (name, ours), theirs in zip(model.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(ours, theirs), name  # masks and surviving weights, bit for bit
    assert next(model.parameters()).device.type == "cpu"


def test_a_model_on_its_execution_device_is_not_onloaded(monkeypatch):
    model = tiny_llama()
    ledger = DeviceLedger(monkeypatch, model)
    prune_model(model, adapter_for(model), "wanda", calibration(), target=0.5, batch_size=4, progress=False, execution_device="cpu")
    prune_model(model, adapter_for(model), "wanda", calibration(), target=0.5, batch_size=4, progress=False)
    assert ledger.onloads == 0


def mapped_file(tensor: torch.Tensor) -> str | None:
    """The file whose mapping holds `tensor`'s first byte (from /proc/self/maps), None for anonymous memory."""
    address = tensor.data_ptr()
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        start, end = (int(x, 16) for x in fields[0].split("-"))
        if start <= address < end:
            return fields[5] if len(fields) == 6 and fields[5].startswith("/") else None
    return None


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads Linux's /proc/self/maps")
@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_disk_offload_maps_the_blocks_from_files_and_prunes_the_same_bits(method, tmp_path, monkeypatch):
    reference = tiny_llama()
    model = copy.deepcopy(reference)
    prune_model(reference, adapter_for(reference), method, calibration(), target=0.5, batch_size=4, progress=False)

    adapter = adapter_for(model)
    assert mapped_file(blocks(model, adapter.groups[0])[0].mlp.up_proj.weight) is None  # the check can fail
    offload_model(model, adapter, "disk", folder=tmp_path)
    assert storage(model) == "disk"

    def block_files() -> set[str]:
        files = {mapped_file(p) for block in blocks(model, adapter.groups[0]) for p in block.parameters()}
        assert None not in files
        return files

    assert all(str(tmp_path) in name for name in block_files())
    assert len(block_files()) == N_LAYERS  # one file per block
    assert mapped_file(model.model.embed_tokens.weight) is None  # non-block modules stay in memory

    ledger = DeviceLedger(monkeypatch, model)
    prune_model(model, adapter, method, calibration(), target=0.5, batch_size=4, progress=False, execution_device="cpu")
    assert ledger.peak_blocks == 1
    assert len(block_files()) == N_LAYERS  # the pruned weights were written back into the mapped files
    for (name, ours), theirs in zip(model.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(ours, theirs), name


@pytest.mark.parametrize("family", ["llava", "qwen3_vl", "blip-2+opt"])
def test_a_vlm_is_onloaded_block_by_block_through_both_towers(family, tiny_vlm, monkeypatch):
    """The language group's capture runs the (pruned) vision tower: its blocks come over on demand, one at a time."""
    reference, batches = tiny_vlm(family)
    model = copy.deepcopy(reference)
    prune_model(reference, adapter_for(reference), "wanda", batches, target=0.5, progress=False)

    offload_model(model, adapter_for(model), "cpu")
    ledger = DeviceLedger(monkeypatch, model)
    handles = computes_on_copies(model, ledger)
    prune_model(model, adapter_for(model), "wanda", batches, target=0.5, progress=False, execution_device="cpu")
    for handle in handles:
        handle.remove()

    assert ledger.peak_blocks == 1
    assert ledger.on_device == {}
    for (name, ours), theirs in zip(model.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(ours, theirs), name


def test_an_onloaded_walk_parks_the_hidden_states_in_cpu_memory(monkeypatch):
    """The calibration set's hidden states (2 GiB for a 7B's 128 x 2048 tokens in bf16) wait in CPU memory
    between blocks of an onloaded walk, each batch moved to the device for its forward; a walk that is not
    onloaded keeps them where they are computed. The bits are those of the unoffloaded prune (above)."""
    from pruning.local import walk

    captured = []
    capture = walk.capture_group_inputs

    def recording(*args, **kwargs):
        captured.append(capture(*args, **kwargs))
        return captured[-1]

    monkeypatch.setattr(walk, "capture_group_inputs", recording)
    model = tiny_llama()
    prune_model(model, adapter_for(model), "wanda", calibration(), target=0.5, batch_size=4, progress=False)
    offloaded = offload_model(tiny_llama(), adapter_for(model), "cpu")
    prune_model(offloaded, adapter_for(offloaded), "wanda", calibration(), target=0.5, batch_size=4, progress=False, execution_device="cpu")
    on_device, parked = captured
    assert on_device.parked is None and parked.parked == torch.device("cpu") and parked.device == torch.device("cpu")
    assert all(hidden.device == parked.parked for hidden in parked.hidden_states)
    assert len(parked.hidden_states) == 2  # 6 samples in batches of 4
