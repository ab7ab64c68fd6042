"""The calibration walk of the Wanda code (locuslab/wanda, lib/prune.py: `prepare_calibration_input`,
`prune_wanda`, `prune_sparsegpt`; luuyin/OWL lib/prune_all.py has the same loop), for Llama-family
models (`model.model.layers`).

Each calibration sample goes through the model alone up to layer 0, whose inputs are recorded. Then,
layer by layer: hooks feed every linear's input to its accumulator while each sample runs through
the (dense) layer; the layer's linears are pruned (or only measured); each sample runs through the
layer again and the outputs become the next layer's inputs. The reference records layer 0's
`attention_mask` and `position_ids` and passes them to every layer; transformers 5 layers also need
the rotary `position_embeddings`, so every keyword argument of layer 0's call is kept (caches dropped).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn


def find_linears(module: nn.Module, name: str = "") -> dict[str, nn.Linear]:
    """Every nn.Linear under `module` by dotted name, depth first in child order (the reference `find_layers`)."""
    if type(module) is nn.Linear:
        return {name: module}
    found = {}
    for child_name, child in module.named_children():
        found.update(find_linears(child, f"{name}.{child_name}" if name else child_name))
    return found


class _Stop(Exception):
    pass


def first_layer_inputs(model: nn.Module, ids: Tensor) -> tuple[list[Tensor], dict]:
    """Per calibration sample, layer 0's input hidden states [1, L, d]; and layer 0's keyword arguments."""
    inputs: list[Tensor] = []
    kwargs_seen: dict = {}

    def catch(module, args, kwargs):
        inputs.append(args[0] if args else kwargs["hidden_states"])
        kwargs_seen.clear()
        kwargs_seen.update({k: v for k, v in kwargs.items() if k not in ("hidden_states", "past_key_values", "past_key_value")})
        raise _Stop

    handle = model.model.layers[0].register_forward_pre_hook(catch, with_kwargs=True)
    try:
        with torch.no_grad():
            for sample in ids:
                try:
                    model(input_ids=sample[None], use_cache=False)
                except _Stop:
                    pass
    finally:
        handle.remove()
    kwargs_seen["use_cache"] = False
    return inputs, kwargs_seen


def run_layer(layer: nn.Module, hidden: Tensor, kwargs: dict) -> Tensor:
    out = layer(hidden, **kwargs)
    return out[0] if isinstance(out, (tuple, list)) else out


def walk_layers(
    model: nn.Module,
    ids: Tensor,
    accumulator: Callable[[nn.Linear], object],
    visit: Callable[[int, dict[str, nn.Linear], dict[str, object]], None],
) -> None:
    """For each layer i: `accumulator(linear).add_batch(input)` on every sample's input of every linear,
    then `visit(i, linears, accumulators)` (which prunes or measures), then the layer's new outputs
    feed layer i + 1."""
    was_training = model.training
    model.eval()
    inps, kwargs = first_layer_inputs(model, ids)
    with torch.no_grad():
        for i, layer in enumerate(model.model.layers):
            linears = find_linears(layer)
            accumulators = {name: accumulator(linear) for name, linear in linears.items()}
            handles = [
                linear.register_forward_hook(lambda m, args, out, acc=accumulators[name]: acc.add_batch(args[0].data))
                for name, linear in linears.items()
            ]
            for hidden in inps:
                run_layer(layer, hidden, kwargs)
            for handle in handles:
                handle.remove()
            visit(i, linears, accumulators)
            inps = [run_layer(layer, hidden, kwargs) for hidden in inps]
    model.train(was_training)
