"""The one model walk shared by every local pruner: sequential, block by block.

As in Wanda and SparseGPT (Frantar & Alistarh, 2023), the inputs of a block group are captured
once; then each block gathers its pruner's statistic on its current inputs, is pruned, and is run
again so that its *pruned* outputs become the next block's inputs. Only one block's activations
are alive at a time. Pruners whose statistic is "none" (magnitude) run no forward pass at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import LongTensor, Tensor, nn
from tqdm import tqdm

from pruning.errors import AdapterError
from pruning.local import LocalPruner, local_pruner
from pruning.local.report import PrunedLayer, PruneReport, zero_fraction
from pruning.local.selection import n_m_sparsity
from pruning.local.statistics import STATISTICS, Statistic
from pruning.models.adapters import Adapter, blocks, prunable_linears


def prune_model(
    model: nn.Module,
    adapter: Adapter,
    method_name: str,
    calibration_ids: LongTensor | None = None,
    block_sparsity: dict[str, list[float]] | None = None,
    n_m: str | None = None,
    batch_size: int = 8,
    target: float | None = None,
    progress: bool = True,
) -> PruneReport:
    """Prune every prunable linear of `model` in place with the local method `method_name`.

    `block_sparsity` maps a modality to one target per block (from an allocation: OWL, ECoFLaP);
    a modality it leaves out gets `target` in every block. An N:M pattern fixes every target.
    Groups are processed in `adapter.groups` order (vision before language in a VLM).
    """
    pruner = local_pruner(method_name)
    targets = _block_targets(model, adapter, block_sparsity, target, n_m)
    needs_inputs = pruner.statistic != "none"
    if needs_inputs and calibration_ids is None:
        raise ValueError(
            f"{method_name} needs calibration_ids (it prunes by the {pruner.statistic} of each layer's inputs)"
        )
    pruned_layers: list[PrunedLayer] = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), tqdm(
            total=sum(len(blocks(model, group)) for group in adapter.groups),
            desc=f"prune {method_name}",
            unit="block",
            disable=not progress,
        ) as bar:
            for group in adapter.groups:
                stack = blocks(model, group)
                inputs = _capture_inputs(model, stack, calibration_ids, batch_size) if needs_inputs else None
                for index, block in enumerate(stack):
                    linears = prunable_linears(block, group)
                    statistics = _gather_statistics(pruner, block, index, linears, inputs) if inputs is not None else {}
                    sparsity = targets[group.modality][index]
                    for name, linear in linears.items():
                        linear.weight.copy_(pruner.prune(linear.weight, statistics.get(name), sparsity, n_m))
                        pruned_layers.append(
                            PrunedLayer(
                                modality=group.modality,
                                block=index,
                                layer=f"{group.path}.{index}.{name}",
                                n_params=linear.weight.numel(),
                                target_sparsity=sparsity,
                                achieved_sparsity=zero_fraction(linear.weight),
                            )
                        )
                    # the last block's outputs feed no block of this group; the next group captures afresh
                    if inputs is not None and index + 1 < len(stack):
                        inputs.advance(block, index)
                    bar.update()
    finally:
        model.train(was_training)
    return PruneReport(method=method_name, layers=tuple(pruned_layers))


def _block_targets(
    model: nn.Module,
    adapter: Adapter,
    block_sparsity: dict[str, list[float]] | None,
    target: float | None,
    n_m: str | None,
) -> dict[str, list[float]]:
    """One target sparsity per block of every group, checked against the model's block counts."""
    if n_m is not None:
        implied = n_m_sparsity(n_m)
        if block_sparsity is not None:
            raise ValueError(f"N:M pattern {n_m} fixes every block's sparsity; give block_sparsity or n_m, not both")
        if target is not None and abs(target - implied) > 1e-9:
            raise ValueError(f"N:M pattern {n_m} prunes {implied:g} of the weights, but target={target:g}")
        target = implied
    block_sparsity = block_sparsity or {}
    modalities = [group.modality for group in adapter.groups]
    unknown = sorted(set(block_sparsity) - set(modalities))
    if unknown:
        raise ValueError(f"block_sparsity names modalities {unknown} that {adapter.family!r} does not have ({modalities})")
    targets = {}
    for group in adapter.groups:
        n_blocks = len(blocks(model, group))
        given = block_sparsity.get(group.modality)
        if given is None:
            if target is None:
                raise ValueError(
                    f"no sparsity for the {group.modality} blocks: give `target` or block_sparsity[{group.modality!r}]"
                )
            given = [target] * n_blocks
        if len(given) != n_blocks:
            raise ValueError(f"block_sparsity[{group.modality!r}] has {len(given)} entries for {n_blocks} blocks")
        if not all(0.0 <= s < 1.0 for s in given):
            raise ValueError(f"block_sparsity[{group.modality!r}] must lie in [0, 1), got {list(given)}")
        targets[group.modality] = list(given)
    return targets


class _StopForward(Exception):
    """Ends the capture forward pass once the group's last block has recorded its arguments."""


@dataclass
class _GroupInputs:
    """What a group's blocks are called with, per calibration batch.

    `hidden_states[batch]` is the input of the block being pruned (replaced by its outputs as the
    walk advances); `block_args[block][batch]` holds that block's other (args, kwargs): attention
    mask, rotary embeddings, position ids, as the model's own forward passed them.
    """

    hidden_states: list[Tensor]
    block_args: list[list[tuple[tuple, dict]]]

    def run(self, block: nn.Module, index: int, batch: int) -> Tensor:
        args, kwargs = self.block_args[index][batch]
        outputs = block(self.hidden_states[batch], *args, **kwargs)
        return outputs[0] if isinstance(outputs, (tuple, list)) else outputs  # layers return either

    def advance(self, block: nn.Module, index: int) -> None:
        """Replace every batch's hidden states by the (pruned) block's outputs."""
        for batch in range(len(self.hidden_states)):
            self.hidden_states[batch] = self.run(block, index, batch)


def _capture_inputs(model: nn.Module, stack: nn.ModuleList, calibration_ids: Tensor, batch_size: int) -> _GroupInputs:
    """Run the model on each calibration batch with the group's blocks swapped for recording stubs.

    Every block's arguments are recorded, not only the first's: some families pass each layer its
    own mask and rotary embeddings by layer type (Gemma3's sliding/full layers, Qwen2/3 with sliding
    layers). The stubs return their input untouched, so reaching the last block costs no block
    compute; the last stub stops the forward. Objects shared by the model's forward (one mask for
    all full-attention layers) stay shared, so this holds little beyond the first block's inputs.
    """
    inputs = _GroupInputs(hidden_states=[], block_args=[[] for _ in stack])
    last = len(stack) - 1

    def recorder(index: int):
        def record(*args, **kwargs):
            hidden_states, args = (args[0], args[1:]) if args else (kwargs.pop("hidden_states"), ())
            if index == 0:
                inputs.hidden_states.append(hidden_states)
            inputs.block_args[index].append((args, kwargs))
            if index == last:
                raise _StopForward
            return hidden_states  # decoder layers return a tensor in transformers 5; only block 0's input is kept

        return record

    originals = [block.__dict__.get("forward") for block in stack]  # accelerate may have set one
    for index, block in enumerate(stack):
        block.forward = recorder(index)
    device = next(model.parameters()).device
    batches = calibration_ids.split(batch_size)
    try:
        for batch_ids in batches:
            try:
                model(input_ids=batch_ids.to(device), use_cache=False)
            except _StopForward:
                pass
    finally:
        for block, original in zip(stack, originals):
            if original is None:
                del block.forward
            else:
                block.forward = original
    missed = [index for index, calls in enumerate(inputs.block_args) if len(calls) != len(batches)]
    if missed:
        raise AdapterError(
            f"the model's forward did not call blocks {missed} of its {len(stack)}; the adapter does not match"
        )
    return inputs


def _gather_statistics(
    pruner: LocalPruner, block: nn.Module, index: int, linears: dict[str, nn.Linear], inputs: _GroupInputs
) -> dict[str, Tensor]:
    """Run the (still dense) block on every batch with hooks feeding each linear's inputs to its statistic."""
    accumulators = {name: STATISTICS[pruner.statistic](linear) for name, linear in linears.items()}
    handles = [linear.register_forward_hook(_feeding(accumulators[name])) for name, linear in linears.items()]
    try:
        for batch in range(len(inputs.hidden_states)):
            inputs.run(block, index, batch)
    finally:
        for handle in handles:
            handle.remove()
    return {name: statistic.result() for name, statistic in accumulators.items()}


def _feeding(statistic: Statistic):
    """A forward hook that passes a linear's input to `statistic`."""
    return lambda module, args, output: statistic.update(args[0])
