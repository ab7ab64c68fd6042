"""The global-scores stage: one number per block, computed once per (model, calibration, score
settings) and shared by every target sparsity and local method that allocates from it."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from evals.measure import measure_resources
from pruning.local.walk import calibration_batches
from pruning.models.adapters import adapter_for
from pruning.models.sources import load_model
from pruning.scores import BlockScores, first_order_scores, outlier_ratios, zeroth_order_scores
from pruning.specs import CalibrationSpec, ModelSpec, ScoreSpec
from tasks.artifacts import BlockScoresResult, CheckpointRef
from tasks.calibration import calibration_inputs
from tasks.common import STAGE, stamp


@task(**STAGE, task_run_name="scores[{scores.label}]")
def block_scores(
    base: CheckpointRef, calibration_path: str, model: ModelSpec, calibration: CalibrationSpec, scores: ScoreSpec
) -> BlockScoresResult:
    """Score every block of the dense model on (the first `scores.n_samples` of) the calibration set."""
    with measure_resources() as usage:
        network, preprocessor = load_model(Path(base.path), model)
        adapter = adapter_for(network, model.declared_adapter())
        inputs = calibration_inputs(Path(calibration_path), preprocessor, calibration.batch_size)
        if scores.kind == "outlier_ratio":
            result = outlier_ratios(network, adapter, inputs, scores.outlier_m, calibration.batch_size, execution_device=model.device)
            used = calibration_batches(inputs, calibration.batch_size)
        else:
            used = _first_samples(calibration_batches(inputs, calibration.batch_size), scores.n_samples)
            if scores.kind == "zeroth":
                result = zeroth_order_scores(
                    network, adapter, used, scores.epsilon, scores.seed, scores.aggregate, scores.weighted,
                    estimator=scores.estimator, execution_device=model.device,
                )
            else:
                result = first_order_scores(network, adapter, used, scores.aggregate)
    return BlockScoresResult(
        kind=result.kind,
        scores=result.scores,
        n_params=result.n_params,
        n_samples=sum(len(batch["input_ids"]) for batch in used),
        usage=stamp(usage),
    )


def scores_of(result: BlockScoresResult) -> BlockScores:
    """The stage's plain numbers back as `pruning.scores.BlockScores`, what allocators read."""
    return BlockScores(kind=result.kind, scores=result.scores, n_params=result.n_params)


def _first_samples(batches: list[dict], n_samples: int | None) -> list[dict]:
    """Whole calibration batches, in order, until they hold at least `n_samples` samples (all if None).

    Batches are not cut: a VLM batch's image tensors need not have one row per sample."""
    if n_samples is None:
        return batches
    kept, held = [], 0
    for batch in batches:
        if held >= n_samples:
            break
        kept.append(batch)
        held += len(batch["input_ids"])
    return kept
