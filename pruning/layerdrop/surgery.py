"""Remove decoder layers from a model in place, keeping it runnable, cacheable and loadable.

A dropped model must behave exactly like the original with those layers skipped, generate with a
KV cache (every attention's `layer_idx` addresses its own cache slot, so kept layers are renumbered
0..L-K-1), and reload with `from_pretrained` (`num_hidden_layers` and the per-layer lists that
decoders index by position — `layer_types`, SmolLM3's `no_rope_layers` — lose the dropped entries).
The config edited is the one the layers' owner holds (`config`, or a VLM's `text_config`: the same
object). Layers the model feeds extra inputs by position (Qwen3-VL DeepStack adds vision features
after text layers 0..n-1) cannot be dropped: every later injection would land one layer early.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from torch import nn

from pruning.errors import AdapterError
from pruning.layerdrop.selection import DropPlan
from pruning.models.adapters import Adapter, BlockGroup, as_block_output, blocks, get_submodule
from pruning.models.offload import dormant

# config lists with one entry per decoder layer, read by position in the decoders' forward or __init__
PER_LAYER_CONFIG_LISTS = ("layer_types", "no_rope_layers")


def droppable_group(adapter: Adapter) -> BlockGroup:
    """The language group, if layer-dropping methods may remove its blocks."""
    group = adapter.group("language")
    if not group.droppable:
        raise AdapterError(f"{adapter.family!r} language blocks ({group.path}) are not droppable decoder layers")
    return group


def protected_layers(model: nn.Module, adapter: Adapter) -> frozenset[int]:
    """Original indices of decoder layers that must stay: the leading layers fed by position (DeepStack)."""
    path = droppable_group(adapter).undroppable_prefix_from
    if path is None:
        return frozenset()
    value = model.config
    for name in path.split("."):
        value = getattr(value, name, None)
        if value is None:
            raise AdapterError(f"{type(model).__name__}'s config has no {path!r}, which {adapter.family!r} reads")
    return frozenset(range(len(value)))


def check_droppable(model: nn.Module, adapter: Adapter, drop: Iterable[int]) -> tuple[int, ...]:
    """`drop` as sorted unique indices, after checking they exist, leave a layer, and spare protected layers."""
    n_layers = len(blocks(model, droppable_group(adapter)))
    drop = tuple(sorted(set(int(index) for index in drop)))
    outside = [index for index in drop if not 0 <= index < n_layers]
    if outside:
        raise ValueError(f"layers {outside} do not exist: the language model has {n_layers} decoder layers")
    if len(drop) >= n_layers:
        raise ValueError(f"cannot drop {len(drop)} of {n_layers} decoder layers: at least one must stay")
    hit = sorted(set(drop) & protected_layers(model, adapter))
    if hit:
        raise ValueError(
            f"layers {hit} cannot be dropped: the model adds inputs after its first "
            f"{len(protected_layers(model, adapter))} decoder layers by position (DeepStack), "
            "so dropping one would shift every later injection"
        )
    return drop


def drop_layers(model: nn.Module, adapter: Adapter, drop: Iterable[int]) -> dict[int, int]:
    """Remove the decoder layers `drop` (original indices) in place; returns original -> new index of kept layers."""
    group = droppable_group(adapter)
    drop = check_droppable(model, adapter, drop)
    stack = blocks(model, group)
    n_layers = len(stack)
    config = _stack_config(model, group, n_layers)
    kept = [index for index in range(n_layers) if index not in drop]
    model.set_submodule(group.path, nn.ModuleList([stack[index] for index in kept]))
    for new_index, original in enumerate(kept):
        _renumber(stack[original], new_index)
    _drop_config_entries(config, kept, n_layers)
    return {original: new_index for new_index, original in enumerate(kept)}


def kept_index(plan: DropPlan) -> dict[int, int]:
    """Original -> new index of every layer the plan keeps (what `drop_layers` returns)."""
    return {original: new_index for new_index, original in enumerate(plan.kept)}


def finetune_indices(plan: DropPlan) -> tuple[int, ...]:
    """The new indices, after dropping, of the layers the plan marks for finetuning."""
    index = kept_index(plan)
    return tuple(index[original] for original in plan.finetune)


@contextmanager
def skipping_layers(model: nn.Module, adapter: Adapter, skip: Iterable[int]) -> Iterator[None]:
    """Run the model as if `skip` were dropped: those layers pass their input through unchanged.

    Equivalent to `drop_layers` for a forward without cache (tested), without touching the config:
    decoders index `layer_types` by position, so swapping in a shorter ModuleList alone would give
    Qwen2/Gemma3 sliding layers the wrong masks. The forwards are restored on exit.
    """
    group = droppable_group(adapter)
    stack = blocks(model, group)
    skip = check_droppable(model, adapter, skip)
    originals = {index: stack[index].__dict__.get("forward") for index in skip}  # accelerate may have set one

    def pass_through(*args, **kwargs):
        return as_block_output(args[0] if args else kwargs["hidden_states"], group.returns)

    for index in skip:
        stack[index].forward = pass_through
    try:
        with dormant(model, [stack[index] for index in skip]):  # an onloaded model leaves skipped layers where they are
            yield
    finally:
        for index, original in originals.items():
            if original is None:
                del stack[index].forward
            else:
                stack[index].forward = original


def _stack_config(model: nn.Module, group: BlockGroup, n_layers: int):
    """The config of the module that owns the layers (a VLM's text_config), checked against the layer count."""
    owner = get_submodule(model, group.path.rpartition(".")[0]) if "." in group.path else model
    config = getattr(owner, "config", None)
    if getattr(config, "num_hidden_layers", None) != n_layers:
        raise AdapterError(
            f"{type(owner).__name__} owns {group.path!r} ({n_layers} layers) but its config says "
            f"num_hidden_layers={getattr(config, 'num_hidden_layers', None)}"
        )
    return config


def _renumber(layer: nn.Module, new_index: int) -> None:
    """Point every `layer_idx` inside the layer (its attention's KV-cache slot) at its new position."""
    for module in layer.modules():
        if isinstance(vars(module).get("layer_idx"), int):
            module.layer_idx = new_index


def _drop_config_entries(config, kept: list[int], n_layers: int) -> None:
    for name in PER_LAYER_CONFIG_LISTS:
        values = getattr(config, name, None)
        if values is None:
            continue
        if len(values) != n_layers:
            raise AdapterError(f"config.{name} has {len(values)} entries for {n_layers} decoder layers")
        setattr(config, name, [values[index] for index in kept])
    # Qwen2/3: layers at or above max_window_layers use sliding attention; keep the same layers there
    if isinstance(getattr(config, "max_window_layers", None), int):
        config.max_window_layers = sum(1 for index in kept if index < config.max_window_layers)
    config.num_hidden_layers = len(kept)
