"""Adapters describe architecture families as data: where the blocks are, which linears prune.

An algorithm never asks "is this Llama?"; it asks the adapter for block groups and their
prunable linears. Embeddings, lm_head, norms and patch embeddings are never listed, so they are
never pruned; projectors (the modules that carry vision features into the language model) are
listed so that methods can report or skip them, and no local method prunes them.

A VLM wraps a language model whose linears depend on its own family (BLIP-2 ships with OPT or
with Llama-family decoders), so an adapter may also name the `text_config.model_type`s it covers:
the adapter is chosen by the pair (model_type, text model_type), never by code that inspects it.

Families we do not ship come from the user as data: an adapter YAML named by `model.adapter`
(`pruning.specs.AdapterSpec`, which takes precedence), or an installed package's entry point in the
`prunebench.adapters` group whose object is an `Adapter` (or a callable returning one).
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from functools import cache

from torch import nn

from pruning.errors import AdapterError
from pruning.specs import BlockReturns, Modality

# Llama-family decoder layer (Llama, Mistral, Qwen2/3, Gemma3, SmolLM, and the Qwen-VL text models)
LLAMA_LINEARS = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
)
# CLIP encoder layer: the LLaVA vision tower and both CLIP towers
CLIP_LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "mlp.fc1", "mlp.fc2")
# BLIP-2 / InstructBLIP ViT layer: one fused qkv projection
BLIP2_VISION_LINEARS = ("self_attn.qkv", "self_attn.projection", "mlp.fc1", "mlp.fc2")
OPT_LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "fc1", "fc2")
# Phi-3: fused q/k/v and fused gate/up projections
PHI3_LINEARS = ("self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj")
# GPT-NeoX (Pythia): fused q/k/v; attention and MLP read the block input in parallel
GPT_NEOX_LINEARS = ("attention.query_key_value", "attention.dense", "mlp.dense_h_to_4h", "mlp.dense_4h_to_h")
QWEN2_5_VISION_LINEARS = ("attn.qkv", "attn.proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
QWEN3_VISION_LINEARS = ("attn.qkv", "attn.proj", "mlp.linear_fc1", "mlp.linear_fc2")

LLAMA_LIKE_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gemma3_text", "smollm3")


@dataclass(frozen=True)
class BlockGroup:
    """A stack of transformer blocks of one modality: `path` names the ModuleList from the top model."""

    modality: Modality
    path: str
    prunable: tuple[str, ...]
    droppable: bool = False  # decoder layers that layer-dropping methods may remove
    # dotted path, from the top model's config, to a list whose length is how many leading blocks the
    # model feeds extra inputs by block position (Qwen3-VL DeepStack); dropping one would shift them
    undroppable_prefix_from: str | None = None
    # what a block returns: the hidden states (transformers 5 decoders), or a tuple of them first (Falcon,
    # whose model reads `outputs[0]`); the stand-ins the walk and SLEB put in a block's place return the same
    returns: BlockReturns = "tensor"


@dataclass(frozen=True)
class Adapter:
    family: str
    model_types: tuple[str, ...]  # config.model_type values this family covers
    groups: tuple[BlockGroup, ...]  # in forward order
    projectors: tuple[str, ...] = ()  # modules between the towers, by path from the top model; never pruned
    text_model_types: tuple[str, ...] = ()  # config.text_config.model_type values covered; () = any

    def group(self, modality: Modality) -> BlockGroup:
        for group in self.groups:
            if group.modality == modality:
                return group
        raise AdapterError(f"adapter {self.family!r} has no {modality} blocks")

    def covers(self, model_type: str | None, text_model_type: str | None) -> bool:
        return model_type in self.model_types and (not self.text_model_types or text_model_type in self.text_model_types)


ADAPTERS: dict[str, Adapter] = {}


def register_adapter(adapter: Adapter) -> Adapter:
    ADAPTERS[adapter.family] = adapter
    return adapter


LLAMA_LIKE = register_adapter(
    Adapter(
        family="llama-like",
        model_types=LLAMA_LIKE_TYPES,
        groups=(BlockGroup("language", "model.layers", LLAMA_LINEARS, droppable=True),),
    )
)

OPT = register_adapter(
    Adapter(family="opt", model_types=("opt",), groups=(BlockGroup("language", "model.decoder.layers", OPT_LINEARS, droppable=True),))
)

PHI3 = register_adapter(
    Adapter(family="phi3", model_types=("phi3",), groups=(BlockGroup("language", "model.layers", PHI3_LINEARS, droppable=True),))
)

GPT_NEOX = register_adapter(
    Adapter(
        family="gpt-neox",
        model_types=("gpt_neox",),
        groups=(BlockGroup("language", "gpt_neox.layers", GPT_NEOX_LINEARS, droppable=True),),
    )
)

# transformers 5 keeps LLaVA's towers under the base model: model.vision_tower, model.language_model
LLAVA = register_adapter(
    Adapter(
        family="llava",
        model_types=("llava", "llava_next"),
        text_model_types=LLAMA_LIKE_TYPES,
        groups=(
            BlockGroup("vision", "model.vision_tower.encoder.layers", CLIP_LINEARS),
            BlockGroup("language", "model.language_model.layers", LLAMA_LINEARS, droppable=True),
        ),
        projectors=("model.multi_modal_projector",),
    )
)

QWEN2_5_VL = register_adapter(
    Adapter(
        family="qwen2.5-vl",
        model_types=("qwen2_5_vl",),
        groups=(
            BlockGroup("vision", "model.visual.blocks", QWEN2_5_VISION_LINEARS),
            BlockGroup("language", "model.language_model.layers", LLAMA_LINEARS, droppable=True),
        ),
        projectors=("model.visual.merger",),
    )
)

# DeepStack: the deepstack mergers feed features of early vision blocks into early decoder layers
QWEN3_VL = register_adapter(
    Adapter(
        family="qwen3-vl",
        model_types=("qwen3_vl",),
        groups=(
            BlockGroup("vision", "model.visual.blocks", QWEN3_VISION_LINEARS),
            BlockGroup(
                "language",
                "model.language_model.layers",
                LLAMA_LINEARS,
                droppable=True,
                undroppable_prefix_from="vision_config.deepstack_visual_indexes",
            ),
        ),
        projectors=("model.visual.merger", "model.visual.deepstack_merger_list"),
    )
)

# BLIP-2 and InstructBLIP share one layout; the Q-Former is a projector (its query_tokens a parameter of the top model)
BLIP2_VISION = BlockGroup("vision", "vision_model.encoder.layers", BLIP2_VISION_LINEARS)
BLIP2_PROJECTORS = ("qformer", "language_projection")

BLIP2_OPT = register_adapter(
    Adapter(
        family="blip-2+opt",
        model_types=("blip-2", "instructblip"),
        text_model_types=("opt",),
        groups=(BLIP2_VISION, BlockGroup("language", "language_model.model.decoder.layers", OPT_LINEARS, droppable=True)),
        projectors=BLIP2_PROJECTORS,
    )
)

BLIP2_LLAMA_LIKE = register_adapter(
    Adapter(
        family="blip-2+llama-like",
        model_types=("blip-2", "instructblip"),
        text_model_types=LLAMA_LIKE_TYPES,
        groups=(BLIP2_VISION, BlockGroup("language", "language_model.model.layers", LLAMA_LINEARS, droppable=True)),
        projectors=BLIP2_PROJECTORS,
    )
)

# CLIP's text encoder is its language tower; an encoder, so not droppable like a decoder
CLIP = register_adapter(
    Adapter(
        family="clip",
        model_types=("clip",),
        groups=(
            BlockGroup("vision", "vision_model.encoder.layers", CLIP_LINEARS),
            BlockGroup("language", "text_model.encoder.layers", CLIP_LINEARS),
        ),
        projectors=("visual_projection", "text_projection"),
    )
)


# the entry points' modules are code every stage that finds an adapter runs: the stages' cache keys
# count them as imported, at their installed versions (tasks/cache.py)
READS_ENTRY_POINTS = ("prunebench.adapters",)
ENTRY_POINT_GROUP = READS_ENTRY_POINTS[0]
HOW_TO_ADD = (
    "describe the family in a YAML file named by model.adapter (keys: family, model_types, groups: "
    "[{modality, path, prunable, droppable}], projectors) or install a package exposing an Adapter "
    f"under the {ENTRY_POINT_GROUP!r} entry point group (README: Architectures)"
)


@cache
def entry_point_adapters() -> tuple[Adapter, ...]:
    """Adapters installed packages register under the `prunebench.adapters` entry point group."""
    found = []
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            value = entry_point.load()
            adapter = value() if callable(value) and not isinstance(value, Adapter) else value
        except Exception as err:
            raise AdapterError(f"entry point {entry_point.name!r} ({entry_point.value}) of {ENTRY_POINT_GROUP!r} failed: {err}") from err
        if not isinstance(adapter, Adapter):
            raise AdapterError(
                f"entry point {entry_point.name!r} ({entry_point.value}) of {ENTRY_POINT_GROUP!r} gave a "
                f"{type(adapter).__name__}, expected a pruning.models.adapters.Adapter"
            )
        found.append(adapter)
    return tuple(found)


def known_adapters(declared: Adapter | None = None) -> list[Adapter]:
    """Every adapter a model may be matched with, in order of precedence: the user's, built-in, installed."""
    return [*([declared] if declared is not None else []), *ADAPTERS.values(), *entry_point_adapters()]


def supported_families(adapters: list[Adapter] | None = None) -> str:
    return ", ".join(
        f"{a.family} ({'/'.join(a.model_types)}"
        + (f" with text {'/'.join(a.text_model_types)})" if a.text_model_types else ")")
        for a in (adapters if adapters is not None else known_adapters())
    )


def find_adapter(model_type: str | None, text_model_type: str | None, declared: Adapter | None = None) -> Adapter:
    """The first adapter (`known_adapters` order) covering (model_type, text model_type); one line if none does.

    A declared adapter (the config's `model.adapter`) that does not cover the model is an error, not skipped."""
    if declared is not None and not declared.covers(model_type, text_model_type):
        raise AdapterError(
            f"model.adapter {declared.family!r} covers model_types {list(declared.model_types)}"
            + (f" with text {list(declared.text_model_types)}" if declared.text_model_types else "")
            + f", but the model is {model_type!r}" + (f" with a {text_model_type!r} language model" if text_model_type else "")
        )
    adapters = known_adapters(declared)
    family = [adapter for adapter in adapters if model_type in adapter.model_types]
    if not family:
        raise AdapterError(f"no adapter for model family {model_type!r} (supported: {supported_families(adapters)}); {HOW_TO_ADD}")
    for adapter in family:
        if adapter.covers(model_type, text_model_type):
            return adapter
    text_types = sorted({text_type for adapter in family for text_type in adapter.text_model_types})
    raise AdapterError(
        f"no adapter for {model_type!r} with a {text_model_type!r} language model; "
        f"{model_type!r} is supported with: {', '.join(text_types)}; {HOW_TO_ADD}"
    )


def check_layout(model: nn.Module, adapter: Adapter) -> Adapter:
    """`adapter` after checking every path and prunable linear it names exists in `model` (a meta-device
    model will do: only module types are looked at)."""
    for group in adapter.groups:
        for block in blocks(model, group):
            prunable_linears(block, group)
    projectors(model, adapter)
    return adapter


def model_types(model: nn.Module) -> tuple[str | None, str | None]:
    """The model's (config.model_type, config.text_config.model_type)."""
    config = getattr(model, "config", None)
    return getattr(config, "model_type", None), getattr(getattr(config, "text_config", None), "model_type", None)


def adapter_for(model: nn.Module, declared: Adapter | None = None) -> Adapter:
    """The adapter covering the model's (model_type, text_config.model_type), checked against its layout.

    `declared` is the user's adapter (`ModelSpec.declared_adapter()`): it wins over every other."""
    return check_layout(model, find_adapter(*model_types(model), declared))


def as_block_output(hidden_states, returns: BlockReturns):
    """What a stand-in for a block of a group that `returns` so hands back to the model's forward."""
    return (hidden_states,) if returns == "tuple" else hidden_states


def get_submodule(root: nn.Module, path: str) -> nn.Module:
    try:
        return root.get_submodule(path)
    except AttributeError as err:
        raise AdapterError(f"{type(root).__name__} has no submodule {path!r}; the adapter does not match the model") from err


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


def projectors(model: nn.Module, adapter: Adapter) -> dict[str, nn.Module]:
    """The model's projector modules by path (empty for a text-only family)."""
    return {path: get_submodule(model, path) for path in adapter.projectors}
