"""Layer-dropping stages: layer redundancy and SLEB's removal order (cached, shared by every method
and ratio that reads them), then the dropped checkpoint."""

from __future__ import annotations

import math
from pathlib import Path

from prefect import task

from evals.measure import measure_resources
from flows.config import spec_hash
from pruning.layerdrop import LayerRedundancy, drop_layers, finetune_indices, layer_redundancy, protected_layers, select_layers, sleb_order
from pruning.layerdrop.selection import DropPlan, edge_layers, n_layers_to_drop
from pruning.layerdrop.surgery import droppable_group
from pruning.models.adapters import adapter_for, blocks, prunable_linears
from pruning.models.sources import checkpoint_fingerprint, load_model, save_checkpoint
from pruning.specs import CalibrationSpec, ModelSpec, RedundancySpec
from tasks.artifacts import CheckpointRef, DroppedCheckpoint, LayerRedundancyResult, SlebResult
from tasks.calibration import calibration_inputs
from tasks.cache import code_digest
from tasks.common import STAGE, checkpoint_slug, stamp


@task(**STAGE, task_run_name="redundancy[{model.label}, {calibration.n_samples}x{calibration.seq_len}, {measure.states}, {measure.padding}]")
def layer_redundancy_scores(
    base: CheckpointRef, calibration_path: str, model: ModelSpec, calibration: CalibrationSpec, measure: RedundancySpec
) -> LayerRedundancyResult:
    """Token-mean and last-token cosines between every pair of decoder-layer boundaries h_0..h_L."""
    with measure_resources() as usage:
        network, preprocessor = load_model(Path(base.path), model)
        adapter = adapter_for(network, model.declared_adapter())
        inputs = calibration_inputs(Path(calibration_path), preprocessor, calibration.batch_size)
        redundancy = layer_redundancy(
            network, adapter, inputs, batch_size=calibration.batch_size, states=measure.states, padding=measure.padding,
            execution_device=model.device,
        )
        protected = sorted(protected_layers(network, adapter))
    return LayerRedundancyResult(**redundancy.to_dict(), protected=protected, usage=stamp(usage))


@task(**STAGE, task_run_name="sleb[{model.label}, drop {n_drop}]")
def sleb_removal_order(
    base: CheckpointRef,
    calibration_path: str,
    model: ModelSpec,
    calibration: CalibrationSpec,
    n_drop: int,
    n_samples: int | None,
    never: tuple[int, ...] = (),
) -> SlebResult:
    """SLEB's greedy removal order of `n_drop` layers by calibration NLL (on the first `n_samples`),
    never trying the layers in `never`."""
    with measure_resources() as usage:
        network, preprocessor = load_model(Path(base.path), model)
        inputs = calibration_inputs(Path(calibration_path), preprocessor, calibration.batch_size)
        if n_samples is not None:  # token ids: rows; image QA: whole batches covering n_samples
            inputs = inputs[:n_samples] if hasattr(inputs, "shape") else inputs[: math.ceil(n_samples / calibration.batch_size)]
        order = sleb_order(
            network, adapter_for(network, model.declared_adapter()), inputs, n_drop, batch_size=calibration.batch_size, never=never,
            execution_device=model.device,
        )
    return SlebResult(**order.to_dict(), usage=stamp(usage))


def drop_plan(method, n_layers: int, redundancy: LayerRedundancyResult | None, sleb: SlebResult | None) -> DropPlan:
    """Which layers the method drops, trains and anchors (original indices)."""
    return select_layers(
        method.selector,
        method.drop_ratio,
        n_layers,
        redundancy=redundancy_of(redundancy) if redundancy is not None else None,
        sleb_order=sleb.removed if sleb is not None else None,
        protected=redundancy.protected if redundancy is not None else (),
        seed=getattr(method, "seed", 0),
        finetune=method.train_layers,
        protect_first=method.protected_edges[0],
        protect_last=method.protected_edges[1],
        options=method.selector_options(),
    )


def redundancy_of(result: LayerRedundancyResult) -> LayerRedundancy:
    """The stage's plain numbers back as `pruning.layerdrop.LayerRedundancy` (kept out of tasks/artifacts.py,
    which every stage imports: what an artifact can be turned into is not what computes it)."""
    return LayerRedundancy.from_dict(
        {"cos_mean": result.cos_mean, "cos_last": result.cos_last, "angle_last": result.angle_last, "n_sequences": result.n_sequences}
    )


def sleb_layers(method, n_layers: int) -> int:
    return n_layers_to_drop(method.drop_ratio, n_layers)


def sleb_never(method, n_layers: int) -> tuple[int, ...]:
    """The layers SLEB's order may not try for this method: its protected first and last layers."""
    return tuple(sorted(edge_layers(n_layers, *method.protected_edges)))


def _drop_run_name(parameters: dict) -> str:
    return f"drop[{parameters['label']}: {', '.join(str(i) for i in parameters['plan']['drop'])}]"


@task(**STAGE, task_run_name=_drop_run_name)
def dropped_checkpoint(base: CheckpointRef, model: ModelSpec, plan: dict, label: str, workdir: str) -> DroppedCheckpoint:
    """Remove the plan's decoder layers and save a checkpoint `from_pretrained` loads as a smaller model."""
    drop_plan_ = DropPlan.from_dict(plan)
    with measure_resources() as usage:
        network, preprocessor = load_model(Path(base.path), model)
        adapter = adapter_for(network, model.declared_adapter())
        group = droppable_group(adapter)
        stack = blocks(network, group)
        n_layers = len(stack)
        layer_params = [sum(p.numel() for p in layer.parameters()) for layer in stack]
        prunable = [sum(linear.weight.numel() for linear in prunable_linears(layer, group).values()) for layer in stack]
        prunable_total = sum(
            linear.weight.numel() for g in adapter.groups for layer in blocks(network, g) for linear in prunable_linears(layer, g).values()
        )
        drop_layers(network, adapter, drop_plan_.drop)
        slug = checkpoint_slug(label)
        dest = Path(workdir) / "checkpoints" / model.label / f"{slug}-{spec_hash(plan, base.model_dump(), code_digest(__name__), {'dtype': model.dtype})}"  # one base in two dtypes: two checkpoints
        save_checkpoint(network, preprocessor, dest, extra={"drop_plan": plan, "method": label})
    return DroppedCheckpoint(
        ref=CheckpointRef(path=str(dest), fingerprint=checkpoint_fingerprint(dest)),
        n_layers=n_layers,
        drop=list(drop_plan_.drop),
        finetune=list(drop_plan_.finetune),
        anchor=list(drop_plan_.anchor),
        train_layers=list(finetune_indices(drop_plan_)),
        modality=group.modality,
        layer_params=layer_params,
        params_removed=sum(layer_params[i] for i in drop_plan_.drop),
        prunable_removed=sum(prunable[i] for i in drop_plan_.drop),
        prunable_total=prunable_total,
        usage=stamp(usage),
    )
