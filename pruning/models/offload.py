"""Sequential onloading: prune (score, measure) a model larger than the execution device's memory.

The weights live in CPU memory (`offload: cpu`) or in memory-mapped files (`offload: disk`); the
modules outside the adapter's blocks (embeddings, rotary tables, norms, a VLM's projector, the head)
stay on the execution device while the model is onloaded, and each block comes over only while it
runs: explicitly for the block a walk is pruning (`Onloader.block`, written back when it ends), on
demand through forward hooks for every other block a forward calls (a VLM's vision tower during the
language group's capture, every layer of a full forward), and is sent back after its forward. So the
device holds one block and its activations, plus the non-block modules.

Every move goes through `_onload` and `_offload` (tests count them). A block's copy on the device
is what it computes with; its stored tensors ("home") are only read to onload it and written when
an explicit onload ends (pruning changed it), so results are the very numbers of an unoffloaded run
on that device: the same kernels see the same weights and inputs.

Disk offload writes each block's tensors to a safetensors file and maps them back with
`torch.from_file(shared=True)`: the pages are the file's (the kernel reads them in on use and may
drop them), and a write-back after pruning goes to the file, not to anonymous memory as a private
(copy-on-write) mapping would. Accelerate's disk offload was not used: its hooks reload a module's
weights from their map at every forward, so a block pruned on the device would come back unpruned.
The files are unlinked once mapped (the mapping keeps them until the tensors die; nothing to clean
up); they go in `tempfile`'s directory (TMPDIR), which must be a disk, not a tmpfs, to save memory.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from pruning.models.adapters import Adapter, blocks

Offload = Literal["none", "cpu", "disk"]
_STORAGE = "_prunebench_offload"  # attribute of a model whose blocks `offload_model` stored: "cpu" or "disk"
_ACTIVE = "_prunebench_onloader"  # attribute of a model while an `onloaded` context runs on it


@dataclass(frozen=True)
class _Slot:
    """One tensor a module holds directly: a parameter (its `.data` is swapped) or a buffer (replaced)."""

    owner: nn.Module
    name: str
    is_parameter: bool

    def get(self) -> Tensor:
        return (self.owner._parameters if self.is_parameter else self.owner._buffers)[self.name]

    def set(self, data: Tensor) -> None:
        if self.is_parameter:
            self.owner._parameters[self.name].data = data  # the same Parameter object: references to it stay valid
        else:
            self.owner._buffers[self.name] = data


def _slots(modules: Iterable[nn.Module]) -> list[_Slot]:
    """The tensors `modules` hold directly (not their children's), each once (a tied weight is one tensor)."""
    seen, slots = set(), []
    for module in modules:
        for is_parameter, tensors in ((True, module._parameters), (False, module._buffers)):
            for name, tensor in tensors.items():
                if tensor is not None and id(tensor) not in seen:
                    seen.add(id(tensor))
                    slots.append(_Slot(module, name, is_parameter))
    return slots


@dataclass
class Resident:
    """Tensors copied to the execution device, with the stored tensors they came from."""

    slots: list[_Slot]
    homes: list[Tensor]

    @property
    def n_bytes(self) -> int:
        return sum(slot.get().nbytes for slot in self.slots)


def _onload(modules: Sequence[nn.Module], device: torch.device) -> Resident:
    """Copy the tensors `modules` hold directly to `device` (a copy even on their own device: a stored
    tensor is never computed with) and point the modules at the copies."""
    slots = _slots(modules)
    homes = [slot.get().data for slot in slots]
    for slot, home in zip(slots, homes):
        slot.set(home.to(device, copy=True))
    return Resident(slots, homes)


def _offload(resident: Resident, write_back: bool) -> None:
    """Point the modules back at their stored tensors, first copying the device's values into them if `write_back`."""
    for slot, home in zip(resident.slots, resident.homes):
        if write_back:
            home.copy_(slot.get().data)
        slot.set(home)


@dataclass(eq=False)
class Onloader:
    """Which blocks are on the execution device now; see the module docstring."""

    device: torch.device
    _pinned: dict[int, Resident] = field(default_factory=dict)  # explicitly onloaded blocks, by id
    _on_demand: dict[int, Resident] = field(default_factory=dict)  # blocks onloaded by their forward's hooks
    _dormant: set[int] = field(default_factory=set)  # blocks whose forward is a stub: never onloaded

    @contextmanager
    def block(self, block: nn.Module, write_back: bool = True) -> Iterator[None]:
        """Hold `block` on the device for the duration (its hooks do nothing meanwhile); write it back after."""
        resident = _onload(list(block.modules()), self.device)
        self._pinned[id(block)] = resident
        try:
            yield
        finally:
            del self._pinned[id(block)]
            _offload(resident, write_back)

    @contextmanager
    def dormant(self, modules: Iterable[nn.Module]) -> Iterator[None]:
        """Leave `modules` where they are when called (their forward is a recording or pass-through stub)."""
        added = {id(module) for module in modules} - self._dormant
        self._dormant |= added
        try:
            yield
        finally:
            self._dormant -= added

    def _before(self, block: nn.Module, args) -> None:
        key = id(block)
        if key not in self._pinned and key not in self._dormant and key not in self._on_demand:
            self._on_demand[key] = _onload(list(block.modules()), self.device)

    def _after(self, block: nn.Module, args, output) -> None:
        resident = self._on_demand.pop(id(block), None)
        if resident is not None:
            _offload(resident, write_back=False)  # a forward does not change weights

    def release(self) -> None:
        """Send back what a failed forward left onloaded."""
        for resident in self._on_demand.values():
            _offload(resident, write_back=False)
        self._on_demand.clear()


def active_onloader(model: nn.Module) -> Onloader | None:
    """The onloader running `model` now (inside `onloaded`), or None."""
    return model.__dict__.get(_ACTIVE)


def dormant(model: nn.Module, modules: Iterable[nn.Module]):
    """A context in which the active onloader (if any) leaves `modules` where they are when called."""
    onloader = active_onloader(model)
    return onloader.dormant(modules) if onloader is not None else nullcontext()


def input_device(model: nn.Module) -> torch.device:
    """Where `model`'s inputs must go: the execution device while it is onloaded, else where its weights are."""
    onloader = active_onloader(model)
    return onloader.device if onloader is not None else next(model.parameters()).device


def storage(model: nn.Module) -> str | None:
    """"cpu" or "disk" for a model `offload_model` stored, else None."""
    return model.__dict__.get(_STORAGE)


@contextmanager
def onloaded(model: nn.Module, adapter: Adapter, execution_device: str | torch.device | None) -> Iterator[Onloader | None]:
    """Run `model` on `execution_device` block by block (yield the Onloader), or as it is (yield None).

    None, or the device the blocks are on when `offload_model` did not store them, means as it is
    (nothing moves). Inside a context already open on the model, the open one is used.
    """
    current = active_onloader(model)
    if current is not None or execution_device is None:
        yield current
        return
    device = torch.device(execution_device)
    stacks = [blocks(model, group) for group in adapter.groups]
    first = next((p for stack in stacks for p in stack.parameters()), None)
    if first is None or (storage(model) is None and _same_device(first.device, device)):
        yield None
        return
    in_blocks = {id(module) for stack in stacks for block in stack for module in block.modules()}
    onloader = Onloader(device)
    rest = _onload([module for module in model.modules() if id(module) not in in_blocks], device)
    handles = []
    try:
        for stack in stacks:
            for block in stack:
                handles.append(block.register_forward_pre_hook(onloader._before))
                handles.append(block.register_forward_hook(onloader._after))
        model.__dict__[_ACTIVE] = onloader
        yield onloader
    finally:
        model.__dict__.pop(_ACTIVE, None)
        for handle in handles:
            handle.remove()
        onloader.release()
        _offload(rest, write_back=True)


def _same_device(a: torch.device, b: torch.device) -> bool:
    """`cuda` and `cuda:N` are one device when N is the current one."""
    def index(device: torch.device) -> int:
        if device.index is not None:
            return device.index
        return torch.cuda.current_device() if device.type == "cuda" else 0

    return a.type == b.type and index(a) == index(b)


def offload_model(model: nn.Module, adapter: Adapter, where: Offload, folder: str | Path | None = None) -> nn.Module:
    """Store `model` for sequential onloading: every tensor in CPU memory ("cpu"), the blocks' tensors
    memory-mapped from files in `folder` (default: a new temporary directory) ("disk"); "none" does nothing."""
    if where == "none":
        return model
    if where not in ("cpu", "disk"):
        raise ValueError(f"offload must be 'none', 'cpu' or 'disk', got {where!r}")
    model.to("cpu")
    if where == "disk":
        made = folder is None
        folder = Path(tempfile.mkdtemp(prefix="prunebench-offload-")) if made else Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for group in adapter.groups:
            for index, block in enumerate(blocks(model, group)):
                _map_to_file(block, folder / f"{group.modality}-{index}.safetensors")
        if made:
            folder.rmdir()  # empty: every file is unlinked once mapped
    model.__dict__[_STORAGE] = where
    return model


def _map_to_file(block: nn.Module, path: Path) -> None:
    """Write `block`'s tensors to a safetensors file and replace them by views of the file, mapped shared."""
    from safetensors.torch import save_file

    slots = _slots(block.modules())
    if not slots:
        return
    save_file({str(number): slot.get().detach().contiguous() for number, slot in enumerate(slots)}, str(path))
    for slot, mapped in zip(slots, _mapped_tensors(path, len(slots))):
        slot.set(mapped)
    os.unlink(path)  # the mapping keeps the file's pages; its name is no longer needed


def _mapped_tensors(path: Path, count: int) -> list[Tensor]:
    """Tensors "0".."count-1" of a safetensors file as views of one shared mapping of the file."""
    with open(path, "rb") as handle:
        (header_size,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(header_size))
    data = torch.from_file(str(path), shared=True, size=path.stat().st_size, dtype=torch.uint8)[8 + header_size :]
    tensors = []
    for number in range(count):
        entry = header[str(number)]
        start, end = entry["data_offsets"]
        tensors.append(data[start:end].view(_DTYPES[entry["dtype"]]).view(entry["shape"]))
    return tensors


_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
}  # fmt: skip
