"""The one model walk shared by every local pruner: sequential, block by block.

As in Wanda and SparseGPT (Frantar & Alistarh, 2023), the inputs of a block group are captured
once; then each block gathers its pruner's statistic on its current inputs, is pruned, and is run
again so that its *pruned* outputs become the next block's inputs. Only one block's activations
are alive at a time. Pruners whose statistic is "none" (magnitude) run no forward pass at all.

Calibration is token ids (text) or ready batches of model keyword arguments (a VLM's processor
output: input_ids, pixel_values, image_grid_thw, ...). A VLM's groups are walked in forward order
and each group is captured afresh, so the language blocks see the already pruned vision tower.
"""

from __future__ import annotations

import inspect
import weakref
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, get_args

import torch
from torch import Tensor, nn
from transformers.cache_utils import Cache
from tqdm import tqdm

from pruning.errors import AdapterError
from pruning.local import local_pruner
from pruning.local.report import PrunedLayer, PruneReport, zero_fraction
from pruning.local.selection import n_m_sparsity
from pruning.local.statistics import STATISTICS, Statistic
from pruning.models.adapters import Adapter, BlockGroup, Modality, as_block_output, blocks, prunable_linears
from pruning.models.offload import dormant, input_device, onloaded
from pruning.specs import BlockReturns


def prune_model(
    model: nn.Module,
    adapter: Adapter,
    method_name: str,
    calibration: Tensor | Sequence[Mapping[str, Any]] | None = None,
    block_sparsity: dict[str, list[float]] | None = None,
    n_m: str | None = None,
    batch_size: int = 8,
    target: float | None = None,
    progress: bool = True,
    options: Mapping[str, Any] | None = None,
    modality_options: Mapping[str, Mapping[str, Any]] | None = None,
    exclude_padding: bool = False,
    execution_device: str | torch.device | None = None,
) -> PruneReport:
    """Prune every prunable linear of `model` in place with the local method `method_name`.

    `calibration` is a [n, seq_len] LongTensor of token ids, run in batches of `batch_size`, or a
    sequence of ready batches, each a dict of the model's forward keyword arguments.

    `block_sparsity` maps a modality to one target per block (from an allocation: OWL, ECoFLaP);
    a modality it leaves out gets `target` in every block. An N:M pattern fixes every target.
    Groups are processed in `adapter.groups` order (vision before language in a VLM). `options`
    are the pruner's own keyword arguments (SparseGPT's `blocksize`, `damp`); `modality_options`
    adds some for one modality's blocks only (Wanda's `selection` in the vision tower).
    `exclude_padding` leaves padded positions out of the statistics (see `walk_blocks`).
    `execution_device`: where to compute (see `walk_blocks`).
    """
    pruner = local_pruner(method_name)
    targets = _block_targets(model, adapter, block_sparsity, target, n_m)
    if pruner.statistic != "none" and calibration is None:
        raise ValueError(
            f"{method_name} needs calibration (it prunes by the {pruner.statistic} of each layer's inputs)"
        )
    modality_options = dict(modality_options or {})
    unknown = sorted(set(modality_options) - set(get_args(Modality)))
    if unknown:
        raise ValueError(f"modality_options names modalities {unknown}; known: {list(get_args(Modality))}")
    block_options = {group.modality: {**(options or {}), **modality_options.get(group.modality, {})} for group in adapter.groups}
    pruned_layers: list[PrunedLayer] = []

    def prune_block(group: BlockGroup, index: int, linears: dict[str, nn.Linear], statistics: dict[str, Tensor]) -> None:
        sparsity = targets[group.modality][index]
        for name, linear in linears.items():
            linear.weight.copy_(pruner.prune(linear.weight, statistics.get(name), sparsity, n_m, **block_options[group.modality]))
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

    walk_blocks(
        model, adapter, pruner.statistic, calibration, prune_block, batch_size, f"prune {method_name}", progress, exclude_padding,
        execution_device,
    )
    return PruneReport(method=method_name, layers=tuple(pruned_layers))


BlockVisit = Callable[[BlockGroup, int, dict[str, nn.Linear], dict[str, Tensor]], None]


def walk_blocks(
    model: nn.Module,
    adapter: Adapter,
    statistic: str,
    calibration: Tensor | Sequence[Mapping[str, Any]] | None,
    visit: BlockVisit,
    batch_size: int = 8,
    desc: str = "walk",
    progress: bool = True,
    exclude_padding: bool = False,
    execution_device: str | torch.device | None = None,
) -> None:
    """Call `visit(group, index, linears, statistics)` on every block in forward order, then feed the
    block's outputs, as `visit` left the block (pruned or not), to the next block.

    `statistics` maps each prunable linear's name to its `statistic` (a key of
    `statistics.STATISTICS`) over the block's current inputs, or is empty for "none", in which case
    no forward pass runs at all. No gradients; the model is in eval mode during the walk.

    With `exclude_padding`, the language blocks' statistics leave out the positions where a batch's
    `attention_mask` is 0 (`padding_masks`); vision blocks' tokens are image patches, which have none.

    `execution_device` None, or the device the weights are on, runs the model where it is. Another
    device, or any device for a model `offload_model` stored, onloads it block by block
    (`pruning.models.offload`): each block is on that device for its statistics, `visit` and
    propagation, then written back, so `visit` sees (and changes) the block's device copy.
    """
    needs_inputs = statistic != "none"
    if needs_inputs and calibration is None:
        raise ValueError(f"gathering {statistic} needs calibration data")
    batches = calibration_batches(calibration, batch_size) if needs_inputs else []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), onloaded(model, adapter, execution_device) as onloader, tqdm(
            total=sum(len(blocks(model, group)) for group in adapter.groups), desc=desc, unit="block", disable=not progress
        ) as bar:
            for group in adapter.groups:
                stack = blocks(model, group)
                # an onloaded walk parks the hidden states in CPU memory: the device holds one block and one batch
                park = torch.device("cpu") if onloader is not None else None
                inputs = capture_group_inputs(model, stack, batches, group.returns, park) if needs_inputs else None
                masked = inputs is not None and exclude_padding and group.modality == "language"
                token_masks = padding_masks(batches, inputs, group.path) if masked else None
                for index, block in enumerate(stack):
                    with onloader.block(block) if onloader is not None else nullcontext():
                        linears = prunable_linears(block, group)
                        statistics = _gather_statistics(statistic, block, index, linears, inputs, token_masks) if inputs is not None else {}
                        visit(group, index, linears, statistics)
                        # the last block's outputs feed no block of this group; the next group captures afresh
                        if inputs is not None and index + 1 < len(stack):
                            inputs.advance(block, index)
                    bar.update()
    finally:
        model.train(was_training)


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


def calibration_batches(calibration: Tensor | Sequence[Mapping[str, Any]], batch_size: int) -> list[dict[str, Any]]:
    """Forward keyword arguments per batch: token ids split into `batch_size` rows, or the given batches."""
    if isinstance(calibration, Tensor):
        return [{"input_ids": batch_ids} for batch_ids in calibration.split(batch_size)]
    batches = list(calibration)
    if not batches or not all(isinstance(batch, Mapping) for batch in batches):
        raise ValueError(
            "calibration must be a LongTensor of token ids or a non-empty sequence of dicts of model inputs, "
            f"got {type(calibration).__name__} of {sorted({type(batch).__name__ for batch in batches})}"
        )
    return [dict(batch) for batch in batches]


class _StopForward(Exception):
    """Ends the capture forward pass once the group's last block has recorded its arguments."""


@dataclass
class GroupInputs:
    """What a group's blocks are called with, per calibration batch.

    `hidden_states[batch]` is the input of the block being pruned (replaced by its outputs as the
    walk advances); `block_args[block][batch]` holds that block's other (args, kwargs): attention
    mask, rotary embeddings, position ids, as the model's own forward passed them.
    `injections[block][batch]` is what the model adds to the block's output before the next block
    (Qwen3-VL's DeepStack visual features), None where it passes the output on unchanged.

    `parked`: where the hidden states and injections wait between blocks when not where the blocks
    run (an onloaded walk parks them in CPU memory: 2 GiB for a 7B's 128 x 2048 calibration tokens in
    bf16, more than a block), each batch's moved to `device` for its forward; None: they stay where computed.
    """

    hidden_states: list[Tensor]
    block_args: list[list[tuple[tuple, dict]]]
    injections: list[list[Tensor | None]]
    parked: torch.device | None = None
    device: torch.device | None = None  # where the blocks run, when `parked`

    def compute_device(self, batch: int) -> torch.device:
        """Where batch `batch` is computed on."""
        return self.device if self.parked is not None else self.hidden_states[batch].device

    def run(self, block: nn.Module, index: int, batch: int) -> Tensor:
        args, kwargs = self.block_args[index][batch]
        outputs = block(self.hidden_states[batch].to(self.compute_device(batch)), *args, **kwargs)
        return outputs[0] if isinstance(outputs, (tuple, list)) else outputs  # layers return either

    def advance(self, block: nn.Module, index: int) -> None:
        """Replace every batch's hidden states by the (pruned) block's outputs plus what the model adds after it."""
        for batch in range(len(self.hidden_states)):
            outputs = self.run(block, index, batch)
            injection = self.injections[index][batch]
            outputs = outputs if injection is None else outputs + injection.to(outputs.device)
            self.hidden_states[batch] = outputs if self.parked is None else outputs.to(self.parked)


def capture_group_inputs(
    model: nn.Module,
    stack: nn.ModuleList,
    batches: Sequence[Mapping[str, Any]],
    returns: BlockReturns = "tensor",
    park: torch.device | None = None,
) -> GroupInputs:
    """Run the model on each batch with the group's blocks swapped for recording stubs (which return
    what the blocks do: `BlockGroup.returns`).

    Every block's arguments are recorded, not only the first's: some families pass each layer its
    own mask and rotary embeddings by layer type (Gemma3's sliding/full layers, Qwen2/3 with sliding
    layers, Qwen2.5-VL's windowed vision blocks). The stubs return their input untouched, so
    reaching the last block costs no block compute; the last stub stops the forward. Whatever
    reaches a stub other than the tensor the previous stub returned was added between the two
    blocks; it is kept as that block's injection (assumed additive, as DeepStack's is). Objects
    shared by the model's forward (one mask for all full-attention layers) stay shared, so this
    holds little beyond the first block's inputs and the injections, which wait on `park` if given
    (`GroupInputs.parked`).
    """
    device = input_device(model)
    inputs = GroupInputs(hidden_states=[], block_args=[[] for _ in stack], injections=[[] for _ in stack], parked=park, device=device)
    to_park = (lambda tensor: tensor) if park is None else (lambda tensor: None if tensor is None else tensor.to(park))
    last = len(stack) - 1
    returned: list[Tensor | None] = [None]  # what the previous stub handed back, in the current forward

    def recorder(index: int):
        def record(*args, **kwargs):
            hidden_states, args = (args[0], args[1:]) if args else (kwargs.pop("hidden_states"), ())
            if index == 0:
                inputs.hidden_states.append(to_park(hidden_states))
            else:
                inputs.injections[index - 1].append(to_park(_injection(returned[0], hidden_states, index)))
            # the walk runs each block many times; a cache would make every run attend to the previous ones
            kwargs = {name: None if isinstance(value, Cache) else value for name, value in kwargs.items()}
            inputs.block_args[index].append((args, kwargs))
            if index == last:
                raise _StopForward
            returned[0] = hidden_states
            return as_block_output(hidden_states, returns)

        return record

    originals = [block.__dict__.get("forward") for block in stack]  # accelerate may have set one
    for index, block in enumerate(stack):
        block.forward = recorder(index)
    no_cache = {"use_cache": False} if keeps_a_cache(model) else {}
    try:
        with torch.no_grad(), dormant(model, stack):  # an onloaded model leaves the stubbed blocks where they are
            for batch in batches:
                returned[0] = None
                try:
                    model(**{**{name: _to(value, device) for name, value in batch.items()}, **no_cache})
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


def _injection(previous_output: Tensor | None, next_input: Tensor, index: int) -> Tensor | None:
    """What the model added to block index-1's output before calling block `index`; None if nothing."""
    if next_input is previous_output:
        return None
    if previous_output is None or next_input.shape != previous_output.shape:
        raise AdapterError(
            f"block {index} was not called with block {index - 1}'s output (or that plus an addition); "
            "the walk cannot reproduce what the model does between them"
        )
    return next_input - previous_output


def keeps_a_cache(model: nn.Module) -> bool:
    """Whether the forward names `use_cache` or `past_key_values`, so `use_cache=False` is understood.

    CLIP names neither and is given none; a forward that builds a cache without naming it (BLIP-2
    passes its kwargs to the language model) is covered by dropping caches from the recorded arguments.
    """
    parameters = inspect.signature(model.forward).parameters
    return "use_cache" in parameters or "past_key_values" in parameters


def _to(value: Any, device: torch.device) -> Any:
    return value.to(device) if isinstance(value, Tensor) else value


def _gather_statistics(
    statistic: str,
    block: nn.Module,
    index: int,
    linears: dict[str, nn.Linear],
    inputs: GroupInputs,
    token_masks: Sequence[Tensor | None] | None = None,
) -> dict[str, Tensor]:
    """Run the (still dense) block on every batch with hooks feeding each linear's inputs to its statistic
    (only the positions `token_masks[batch]` keeps, where given).

    Linears called on the same input (q/k/v, gate/up) share one accumulator (`_SharedFeeds`).
    """
    feeds = _SharedFeeds(STATISTICS[statistic], linears)
    handles = [linear.register_forward_hook(feeds.hook(name)) for name, linear in linears.items()]
    try:
        for batch in range(len(inputs.hidden_states)):
            feeds.new_forward(token_masks[batch] if token_masks is not None else None)
            inputs.run(block, index, batch)
    finally:
        for handle in handles:
            handle.remove()
    return feeds.results()


def padding_masks(batches: Sequence[Mapping[str, Any]], inputs: GroupInputs, path: str) -> list[Tensor | None]:
    """Per calibration batch, True at the positions a group's blocks compute on (attention_mask == 1);
    None where nothing is padded (no mask, or no zero in it).

    The mask indexes the group's hidden states [batch, seq, hidden] position by position, which holds
    where the model puts image features in place of placeholder tokens (LLaVA, Qwen-VL, BLIP-2 in
    transformers 5); a model whose blocks see another number of positions is refused.
    """
    masks: list[Tensor | None] = []
    for index, (batch, hidden_states) in enumerate(zip(batches, inputs.hidden_states)):
        attention_mask = batch.get("attention_mask")
        if attention_mask is None or bool(attention_mask.all()):
            masks.append(None)
            continue
        if tuple(hidden_states.shape[:2]) != tuple(attention_mask.shape):
            raise AdapterError(
                f"the blocks of {path} see positions of shape {tuple(hidden_states.shape[:2])} but the batch's attention_mask "
                f"is {tuple(attention_mask.shape)}: the walk cannot tell which are padding (use padding: included)"
            )
        masks.append(attention_mask.to(inputs.compute_device(index)).bool())
    return masks


def kept_tokens(inputs: Tensor, token_mask: Tensor) -> Tensor:
    """The rows of a linear's `inputs` at the True positions of `token_mask` [batch, seq]: inputs laid out
    as [batch, seq, features], or flattened to [batch·seq, features] in that order (OPT's MLP)."""
    if tuple(inputs.shape[:-1]) == tuple(token_mask.shape):
        return inputs[token_mask]
    if inputs.dim() == 2 and inputs.shape[0] == token_mask.numel():
        return inputs[token_mask.reshape(-1)]
    raise AdapterError(
        f"a linear's input of shape {tuple(inputs.shape)} does not lay its positions out as the block's "
        f"input {tuple(token_mask.shape)}: the walk cannot tell which rows are padding (use padding: included)"
    )


class _SharedFeeds:
    """Forward hooks that pass each linear's input to its statistic, once per distinct input tensor.

    Linears called on the very same tensor in one forward (a Llama block's q/k/v on the normed hidden
    states, gate/up in its MLP) get one accumulator: the statistic depends on the inputs alone, so it
    is gathered once (a Hessian costs tokens · in² per update) and the same result is returned for
    each. A linear shares the accumulator of an earlier one ("its owner") when its first call gets the
    tensor the owner's first call got, unmodified since (same object, same version counter); from then
    on its k-th call in every forward must get exactly the owner's k-th input, and both must be called
    equally often, or the walk stops with an AdapterError rather than return a wrong statistic. A
    linear never called gets its statistic's empty result, as before.
    """

    def __init__(self, make: Callable[[nn.Linear], Statistic], linears: dict[str, nn.Linear]):
        self.make, self.linears = make, linears
        self.owner: dict[str, str] = {}  # linear -> the linear whose accumulator it uses (itself or an earlier one)
        self.accumulators: dict[str, Statistic] = {}
        # this forward: each owner's inputs in call order, as (weak reference, version when it was fed);
        # weak, so that no input outlives the forward's own use of it and no freed tensor's id is matched
        self.fed: dict[str, list[tuple[weakref.ref, int]]] = {}
        self.calls: Counter[str] = Counter()  # this forward: calls per linear
        self.token_mask: Tensor | None = None  # this forward: the positions the statistics keep (None: all)

    def new_forward(self, token_mask: Tensor | None = None) -> None:
        self._check_forward()
        self.fed.clear()
        self.calls.clear()
        self.token_mask = token_mask

    def _check_forward(self) -> None:
        for name, owner in self.owner.items():
            if owner != name and self.calls[name] != self.calls[owner]:
                raise AdapterError(
                    f"{name} shares the input statistic of {owner}, but one forward called it {self.calls[name]} "
                    f"time(s) and {owner} {self.calls[owner]}"
                )

    def hook(self, name: str):
        def feed(module: nn.Module, args: tuple, output: Any) -> None:
            tensor, call = args[0], self.calls[name]
            self.calls[name] += 1
            if name not in self.owner:  # the first call ever: share the accumulator of an owner fed this tensor first
                first = {owner: inputs[0] for owner, inputs in self.fed.items() if inputs}
                self.owner[name] = next((owner for owner, fed in first.items() if _same(fed, tensor)), name)
                if self.owner[name] == name:
                    self.accumulators[name] = self.make(self.linears[name])
            owner = self.owner[name]
            if owner == name:
                self.accumulators[name].update(tensor if self.token_mask is None else kept_tokens(tensor, self.token_mask))
                self.fed.setdefault(name, []).append((weakref.ref(tensor), tensor._version))
            elif not (call < len(self.fed.get(owner, ())) and _same(self.fed[owner][call], tensor)):
                raise AdapterError(
                    f"{name} was first called on the same input as {owner}, but its call {call + 1} of a forward "
                    f"got another one; a statistic shared between them would be wrong"
                )

        return feed

    def results(self) -> dict[str, Tensor]:
        """{linear: its statistic's result}, in the order of `linears`; shared ones are the same tensor."""
        self._check_forward()
        done = {name: accumulator.result() for name, accumulator in self.accumulators.items()}
        return {
            name: done[self.owner[name]] if name in self.owner else self.make(linear).result()
            for name, linear in self.linears.items()
        }


def _same(fed: tuple[weakref.ref, int], tensor: Tensor) -> bool:
    """Whether `tensor` is the tensor that was fed, unmodified since (same object, same version counter)."""
    reference, version = fed
    return reference() is tensor and tensor._version == version
