from __future__ import annotations

from pathlib import Path

from prefect import task

from evals.measure import measure_resources
from flows.config import spec_hash
from pruning.local import LOCAL_PRUNERS
from pruning.local.walk import prune_model
from pruning.models.adapters import adapter_for
from pruning.models.sources import checkpoint_fingerprint, load_model, save_checkpoint
from pruning.specs import CalibrationSpec, ModelSpec
from tasks.calibration import calibration_inputs
from tasks.artifacts import CheckpointRef, LayerSparsity, PrunedCheckpoint
from tasks.cache import code_digest
from tasks.common import STAGE, checkpoint_slug, stamp


def _prune_run_name(parameters: dict) -> str:
    method = parameters["method"]
    pattern = method.n_m or f"{method.target:.0%}"
    name = method.name if method.name == method.local else f"{method.name}+{method.local}"
    return f"prune[{name}, {pattern}]"


def needs_calibration(method) -> bool:
    """Whether a method spec reads calibration data: for its scores (OWL, ECoFLaP), its layer
    redundancy (layer dropping but for random selection) or its local pruner."""
    if getattr(method, "scores", None) is not None:
        return True
    if getattr(method, "selector", None) is not None:
        return method.selector != "random"
    pruner = LOCAL_PRUNERS.get(getattr(method, "local", method.name))
    return pruner is not None and pruner.statistic != "none"


@task(**STAGE, task_run_name=_prune_run_name)
def pruned_checkpoint(
    base: CheckpointRef,
    calibration_path: str | None,
    model: ModelSpec,
    calibration: CalibrationSpec,
    method,
    workdir: str,
    block_sparsity: dict[str, list[float]] | None = None,
    block_score: dict[str, list[float]] | None = None,
    compress: bool = True,
) -> PrunedCheckpoint:
    """Prune `base` with the method's local pruner at its target, or at the per-block sparsities its
    allocation gave (`block_sparsity`, with the `block_score`s that set them); save the result,
    in compressed-tensors' sparse format with `compress` (`output.compress_checkpoints`)."""
    with measure_resources() as usage:
        network, preprocessor = load_model(Path(base.path), model)
        needs_inputs = LOCAL_PRUNERS[method.local].statistic != "none"
        inputs = calibration_inputs(Path(calibration_path), preprocessor, calibration.batch_size) if needs_inputs else None
        report = prune_model(
            network,
            adapter_for(network, model.declared_adapter()),
            method.local,
            inputs,
            block_sparsity=block_sparsity,
            target=None if block_sparsity else method.target,
            n_m=method.n_m,
            batch_size=calibration.batch_size,
            options=method.local_options(),
            modality_options=method.modality_options(),
            exclude_padding=method.exclude_padding,
            execution_device=model.device,  # where the weights are, unless `model.offload` left them elsewhere
        )
        slug = checkpoint_slug(method.base_label)
        dest = Path(workdir) / "checkpoints" / model.label / f"{slug}-{spec_hash(method, calibration, base.model_dump(), code_digest(__name__), {'compress': compress, 'dtype': model.dtype})}"  # one base in two dtypes: two checkpoints
        save_checkpoint(network, preprocessor, dest, extra={
            "method": method.model_dump(mode="json"), "calibration": calibration.model_dump(mode="json") if needs_inputs else None,
            "achieved_sparsity": report.achieved_sparsity,
        }, compress=compress)  # fmt: skip
    return PrunedCheckpoint(
        ref=CheckpointRef(path=str(dest), fingerprint=checkpoint_fingerprint(dest)),
        params_prunable=report.params_prunable,
        params_pruned=report.params_pruned,
        achieved_sparsity=report.achieved_sparsity,
        layers=[
            LayerSparsity(**layer.__dict__, block_score=block_score[layer.modality][layer.block] if block_score else None)
            for layer in report.layers
        ],
        usage=stamp(usage),
    )
