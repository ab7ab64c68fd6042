"""Adapters describe architecture families as data: where the blocks are, which linears prune.

An algorithm never asks "is this Llama?"; it asks the adapter for block groups and their
prunable linears. Embeddings, lm_head and norms are never listed, so they are never pruned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

from pruning.errors import AdapterError

Modality = Literal["vision", "language"]

LLAMA_LINEARS = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
)


@dataclass(frozen=True)
class BlockGroup:
    """A stack of transformer blocks of one modality: `path` names the ModuleList from the top model."""

    modality: Modality
    path: str
    prunable: tuple[str, ...]
    droppable: bool = False  # decoder layers that layer-dropping methods may remove


@dataclass(frozen=True)
class Adapter:
    family: str
    model_types: tuple[str, ...]  # config.model_type values this family covers
    groups: tuple[BlockGroup, ...]  # in forward order

    def group(self, modality: Modality) -> BlockGroup:
        for group in self.groups:
            if group.modality == modality:
                return group
        raise AdapterError(f"adapter {self.family!r} has no {modality} blocks")


ADAPTERS: dict[str, Adapter] = {}


def register_adapter(adapter: Adapter) -> Adapter:
    ADAPTERS[adapter.family] = adapter
    return adapter


LLAMA_LIKE = register_adapter(
    Adapter(
        family="llama-like",
        model_types=("llama", "mistral", "qwen2", "qwen3", "gemma3_text", "smollm3"),
        groups=(BlockGroup("language", "model.layers", LLAMA_LINEARS, droppable=True),),
    )
)


def supported_families() -> str:
    return ", ".join(f"{a.family} ({'/'.join(a.model_types)})" for a in ADAPTERS.values())


def adapter_for(model: nn.Module) -> Adapter:
    """The adapter whose family covers `model.config.model_type`, checked against the model's layout."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    for adapter in ADAPTERS.values():
        if model_type in adapter.model_types:
            for group in adapter.groups:
                for block in blocks(model, group):
                    prunable_linears(block, group)
            return adapter
    raise AdapterError(f"no adapter for model family {model_type!r}; supported: {supported_families()}")


def get_submodule(root: nn.Module, path: str) -> nn.Module:
    try:
        return root.get_submodule(path)
    except AttributeError as err:
        raise AdapterError(f"{type(root).__name__} has no submodule {path!r}") from err


def blocks(model: nn.Module, group: BlockGroup) -> nn.ModuleList:
    module = get_submodule(model, group.path)
    if not isinstance(module, nn.ModuleList):
        raise AdapterError(f"{group.path!r} in {type(model).__name__} is a {type(module).__name__}, not a ModuleList")
    return module


def prunable_linears(block: nn.Module, group: BlockGroup) -> dict[str, nn.Linear]:
    """The block's prunable linear layers by their dotted names, in forward order."""
    linears = {}
    for name in group.prunable:
        module = get_submodule(block, name)
        if not isinstance(module, nn.Linear):
            raise AdapterError(f"{name!r} is a {type(module).__name__}, expected nn.Linear")
        linears[name] = module
    return linears
