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
from tasks.common import CACHED, stamp


def _prune_run_name(parameters: dict) -> str:
    method = parameters["method"]
    pattern = method.n_m or f"{method.target:.0%}"
    return f"prune[{method.name}, {pattern}]"


def needs_calibration(method_name: str) -> bool:
    pruner = LOCAL_PRUNERS.get(method_name)
    return pruner is not None and pruner.statistic != "none"


@task(cache_policy=CACHED, task_run_name=_prune_run_name)
def pruned_checkpoint(
    base: CheckpointRef,
    calibration_path: str | None,
    model: ModelSpec,
    calibration: CalibrationSpec,
    method,
    workdir: str,
    code: str,
) -> PrunedCheckpoint:
    """Prune `base` with a local method and save the result; returns its path and per-layer sparsity."""
    with measure_resources() as usage:
        network, preprocessor = load_model(Path(base.path), model)
        inputs = calibration_inputs(Path(calibration_path), preprocessor, calibration.batch_size) if calibration_path else None
        report = prune_model(
            network,
            adapter_for(network),
            method.name,
            inputs,
            target=method.target,
            n_m=method.n_m,
            batch_size=calibration.batch_size,
        )
        slug = method.label.replace(" ", "-").replace(":", "of").replace("%", "pct")
        dest = Path(workdir) / "checkpoints" / model.label / f"{slug}-{spec_hash(method, calibration, base.model_dump(), code)}"
        save_checkpoint(network, preprocessor, dest, extra={"method": method.model_dump(mode="json")})
    return PrunedCheckpoint(
        ref=CheckpointRef(path=str(dest), fingerprint=checkpoint_fingerprint(dest)),
        params_prunable=report.params_prunable,
        params_pruned=report.params_pruned,
        achieved_sparsity=report.achieved_sparsity,
        layers=[LayerSparsity(**layer.__dict__) for layer in report.layers],
        usage=stamp(usage),
    )
