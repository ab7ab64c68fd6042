"""The benchmark flow: the pipeline diagram of DESIGN.md, one Prefect task per stage.

model → calibration set → pruned checkpoint → scores → DuckDB → leaderboard. Every computing
stage is cached on its inputs and the code fingerprint, so rerunning a config recomputes nothing
and a crashed run resumes from the last finished stage.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from prefect.states import Completed

from evals.imageqa.generator import tasks_dir
from evals.suites import IMAGE_CORPORA, IMAGE_SUITES, LOCAL_SUITES
from flows import provenance
from flows.config import ExperimentConfig, StudySpec, load_config, spec_hash
from pruning.allocation import allocate
from pruning.models.sources import decoder_layer_count, is_complete_checkpoint
from pruning.layerdrop.selection import n_layers_to_drop
from pruning.models.toy_vlm import ToyVLMSpec
from pruning.specs import LAYER_DROP_METHODS
from reports.records import AllocationRow, RedundancyRow, ResultRow, RunBundle, RunRecord, StageRecord
from tasks.artifacts import (
    CalibrationSet, DroppedCheckpoint, EvalScores, LayerRedundancyResult, ModelCheckpoint, PrunedCheckpoint, StageUsage,
)
from tasks.calibration import calibration_set
from tasks.common import code_fingerprint
from tasks.evaluate import eval_scores
from tasks.model import model_checkpoint
from tasks.finetune import finetuned_checkpoint
from tasks.layerdrop import drop_plan, dropped_checkpoint, layer_redundancy_scores, sleb_removal_order
from tasks.prune import needs_calibration, pruned_checkpoint
from tasks.scores import block_scores
from tasks.record import leaderboard_markdown, recorded_run, regression_check, report_markdown_for
from tasks.suites import eval_suites, imageqa_data
from tasks.toy_vlm import TOY_VLM, toy_vlm_checkpoint


@flow(name="benchmark", flow_run_name="benchmark[{config_path}]", log_prints=True, persist_result=True)
def benchmark(config_path: str, database: str | None = None, workdir: str | None = None) -> str:
    """Run every study of an experiment config and return the leaderboard as markdown."""
    config = load_config(config_path, {"database": database, "workdir": workdir})
    return run_experiment(config)


def run_experiment(config: ExperimentConfig) -> str:
    logger = get_run_logger()
    code = code_fingerprint()
    workdir = str(config.output.workdir.resolve())
    database = str(config.output.database.resolve())
    cache_dir = str(config.output.cache_dir.resolve())
    local_suites = sorted({s for study in config.studies for s in study.eval.suites if s in LOCAL_SUITES})
    suites_dir = _rebuilt_if_missing(eval_suites, lambda p: Path(p).is_dir(), names=local_suites, workdir=workdir, cache_dir=cache_dir, code=code)
    image_root = None
    if any(uses_images(study) for study in config.studies):
        image_root = _rebuilt_if_missing(imageqa_data, lambda p: Path(p).is_dir(), cache_dir=cache_dir, code=code)
    image_tasks = str(tasks_dir(Path(image_root))) if image_root else None

    models = []
    for study in config.studies:
        models.append(study.model.label)
        trained_stages = {}
        if study.model.source == f"packaged:{TOY_VLM}":
            trained = _rebuilt_if_missing(
                toy_vlm_checkpoint,
                lambda t: is_complete_checkpoint(Path(t.ref.path)),
                spec=ToyVLMSpec(), imageqa_root=image_root, cache_dir=cache_dir, code=code,
            )
            trained_stages["train"] = trained.usage
        base = model_checkpoint(study.model, cache_dir)
        calibration = None
        if any(needs_calibration(method) for method in study.methods):
            calibration = _rebuilt_if_missing(
                calibration_set,
                lambda c: Path(c.path).is_file(),
                base=base.ref, model=study.model, calibration=study.calibration, workdir=workdir, cache_dir=cache_dir, code=code,
            )
        for method in study.methods:
            started_at = datetime.now(timezone.utc)
            pruned = None
            checkpoint = base.ref
            method_stages = dict(trained_stages)
            allocation: dict = {}
            redundancy = None
            if getattr(method, "scores", None) is not None:
                scored = block_scores(
                    base=base.ref, calibration_path=calibration.path, model=study.model,
                    calibration=study.calibration, scores=method.scores, code=code,
                )
                method_stages["scores"] = scored.usage
                allocation = {"block_sparsity": allocate(method, scored.block_scores()), "block_score": scored.scores}
            if method.name in LAYER_DROP_METHODS:
                pruned, redundancy = _dropped(study, method, base, calibration, workdir, code, method_stages)
                checkpoint = pruned.ref
            elif method.name != "dense":
                pruned = _rebuilt_if_missing(
                    pruned_checkpoint,
                    lambda p: is_complete_checkpoint(Path(p.ref.path)),
                    base=base.ref,
                    calibration_path=calibration.path if calibration and needs_calibration(method) else None,
                    model=study.model,
                    calibration=study.calibration,
                    method=method,
                    workdir=workdir,
                    code=code,
                    **allocation,
                )
                checkpoint = pruned.ref
            if getattr(method, "finetune", None) is not None:
                train_layers = pruned.train_layers if method.name in LAYER_DROP_METHODS else list(range(decoder_layer_count(Path(checkpoint.path))))
                finetuned = _rebuilt_if_missing(
                    finetuned_checkpoint,
                    lambda f: is_complete_checkpoint(Path(f.ref.path)),
                    checkpoint=checkpoint, model=study.model, train_layers=train_layers, finetune_spec=method.finetune,
                    corpus=study.calibration.corpus, label=method.label, workdir=workdir, cache_dir=cache_dir, code=code,
                )
                method_stages["finetune"] = finetuned.usage
                checkpoint = finetuned.ref
            scores = eval_scores(
                checkpoint, f"{study.model.label}, {method.label}", study.model, study.eval, suites_dir, image_tasks, code
            )
            bundle = run_bundle(config, study, method, base, calibration, pruned, scores, started_at, method_stages, redundancy)
            recorded_run(bundle, database)
            logger.info("recorded %s / %s as run %s", study.model.label, method.label, bundle.run.run_id)

    markdown = leaderboard_markdown(database, models, config.name)
    key = config.name.lower().replace("_", "-").replace(".", "-")
    create_markdown_artifact(markdown, key=f"leaderboard-{key}", description=f"prunebench leaderboard for {config.name}")
    create_markdown_artifact(report_markdown_for(database, config.name), key=f"report-{key}",
                             description=f"prunebench report for {config.name}: curves, allocations, redundancy, speed")
    outcome = regression_check(database, flow_run.get_id() or "local")
    create_markdown_artifact(outcome.markdown, key=f"regressions-{key}",
                             description=f"{config.name}: results that moved beyond their noise margin since the previous run")
    if outcome.n_worse:
        # the run still completed; its state's name says that something got worse (visible in the UI and the API)
        logger.warning("%d result(s) got worse than the previous run of the same configuration", outcome.n_worse)
        return Completed(name="Regressed", message=f"{outcome.n_worse} result(s) worse than the previous run",
                         data=f"{markdown}\n\n{outcome.markdown}")
    return markdown


def _dropped(study: StudySpec, method, base: ModelCheckpoint, calibration, workdir: str, code: str, stages: dict):
    """Redundancy (or SLEB's order) → drop plan → dropped checkpoint; the stages' costs go into `stages`."""
    redundancy = sleb = None
    if needs_calibration(method):
        redundancy = layer_redundancy_scores(base=base.ref, calibration_path=calibration.path, model=study.model,
                                             calibration=study.calibration, code=code)
        stages["redundancy"] = redundancy.usage
    n_layers = len(redundancy.cos_mean) - 1 if redundancy is not None else decoder_layer_count(Path(base.ref.path))
    if method.selector == "sleb":
        sleb = sleb_removal_order(base=base.ref, calibration_path=calibration.path, model=study.model, calibration=study.calibration,
                                  n_drop=n_layers_to_drop(method.drop_ratio, n_layers), n_samples=method.n_samples, code=code)
        stages["sleb"] = sleb.usage
    plan = drop_plan(method, n_layers, redundancy, sleb)
    dropped = _rebuilt_if_missing(
        dropped_checkpoint,
        lambda d: is_complete_checkpoint(Path(d.ref.path)),
        base=base.ref, model=study.model, plan=plan.to_dict(), label=method.label, workdir=workdir, code=code,
    )
    get_run_logger().info("%s drops layers %s, finetunes %s, anchors %s", method.label, dropped.drop, dropped.finetune, dropped.anchor)
    return dropped, redundancy


def uses_images(study: StudySpec) -> bool:
    """Whether a study needs the image-QA build: the toy VLM, image calibration, or an image suite."""
    return (
        study.model.source == f"packaged:{TOY_VLM}"
        or study.calibration.corpus in IMAGE_CORPORA
        or any(name in IMAGE_SUITES for name in study.eval.suites)
    )


def _rebuilt_if_missing(task, is_intact, **parameters):
    """Call a cached task; if the file it points to is gone or incomplete, recompute it with a warning."""
    result = task(**parameters)
    if is_intact(result):
        return result
    get_run_logger().warning("cached result of %s points to missing or incomplete files; rebuilding it", task.name)
    return task.with_options(refresh_cache=True)(**parameters)


def run_bundle(
    config: ExperimentConfig,
    study: StudySpec,
    method,
    base: ModelCheckpoint,
    calibration: CalibrationSet | None,
    pruned: PrunedCheckpoint | None,
    scores: EvalScores,
    started_at: datetime,
    extra_stages: dict[str, StageUsage] | None = None,
    redundancy: LayerRedundancyResult | None = None,
) -> RunBundle:
    """Everything one (model, method) run records, with provenance."""
    uses_calibration = needs_calibration(method)
    config_hash = spec_hash(study.model, method, study.calibration if uses_calibration else "no-calibration", study.eval)
    flow_run_id = flow_run.get_id() or "local"
    run_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{flow_run_id}/{config_hash}"))
    stages = {**(extra_stages or {}), "model": base.usage, "evaluate": scores.usage}
    if calibration is not None and uses_calibration:
        stages["calibration"] = calibration.usage
    dropped = isinstance(pruned, DroppedCheckpoint)
    if pruned is not None:
        stages["drop" if dropped else "prune"] = pruned.usage
    run = RunRecord(
        run_id=run_id,
        flow_run_id=flow_run_id,
        experiment=config.name,
        config_hash=config_hash,
        model=study.model.label,
        model_source=study.model.source,
        method=method.name,
        method_label=method.label,
        method_params=method.model_dump_json(),
        target_sparsity=method.target,
        achieved_sparsity=pruned.achieved_sparsity if pruned else 0.0,
        params_total=base.params_total,
        params_pruned=(pruned.params_removed if dropped else pruned.params_pruned) if pruned else 0,
        seed=study.calibration.seed,
        git_commit=provenance.git_commit(),
        package_versions=provenance.package_versions(),
        host=provenance.host(),
        device=provenance.device_description(study.model.device),
        started_at=started_at,
        finished_at=datetime.now(timezone.utc),
    )
    return RunBundle(
        run=run,
        results=[ResultRow(run_id=run_id, **score.model_dump()) for score in scores.scores],
        stages=[_stage_record(run_id, name, usage, flow_run_id) for name, usage in stages.items()],
        redundancy=_redundancy_rows(run_id, method.name, redundancy) if redundancy is not None else [],
        allocations=_drop_allocations(run_id, pruned, redundancy) if dropped else [
            AllocationRow(run_id=run_id, **layer.model_dump()) for layer in (pruned.layers if pruned else [])
        ],
    )


def _drop_allocations(run_id: str, dropped: DroppedCheckpoint, redundancy: LayerRedundancyResult | None) -> list[AllocationRow]:
    """One row per decoder layer: sparsity 1 for a dropped layer, 0 for a kept one; its block score is
    ShortGPT's block influence 1 - s_1(i) where the redundancy was measured."""
    influence = redundancy.layer_redundancy().block_influence() if redundancy is not None else None
    return [
        AllocationRow(
            run_id=run_id, modality=dropped.modality, block=index, layer="(whole layer)", n_params=n_params,
            target_sparsity=float(index in dropped.drop), achieved_sparsity=float(index in dropped.drop),
            block_score=influence[index] if influence else None,
        )
        for index, n_params in enumerate(dropped.layer_params)
    ]


def _redundancy_rows(run_id: str, method: str, redundancy: LayerRedundancyResult) -> list[RedundancyRow]:
    """The upper triangles of both cosine matrices (they are symmetric with a unit diagonal)."""
    return [
        RedundancyRow(run_id=run_id, method=method, kind=kind, i=i, j=j, value=matrix[i][j])
        for kind, matrix in (("cos_mean", redundancy.cos_mean), ("cos_last", redundancy.cos_last))
        for i in range(len(matrix))
        for j in range(i + 1, len(matrix))
    ]


def _stage_record(run_id: str, stage: str, usage: StageUsage, flow_run_id: str) -> StageRecord:
    return StageRecord(
        run_id=run_id,
        stage=stage,
        wall_s=usage.wall_s,
        peak_rss_gb=usage.peak_rss_gb,
        peak_gpu_gb=usage.peak_gpu_gb,
        cached=usage.computed_by is not None and usage.computed_by != flow_run_id,
    )


def preflight(config: ExperimentConfig) -> None:
    """Fail before Prefect starts or any model loads: unknown packaged models, missing paths, unknown suites."""
    from evals.lm_eval_bridge import check_suites
    from pruning.errors import ConfigError, ModelSourceError
    from evals.lmms_eval_bridge import check_multimodal_suites
    from pruning.models.sources import PACKAGED, TRAINED, count_parameters, resolve_checkpoint, takes_images

    known = sorted([*PACKAGED, *TRAINED])
    for study in config.studies:
        source = study.model.source
        if source.startswith("packaged:"):
            if source.removeprefix("packaged:") not in known:
                raise ModelSourceError(f"unknown packaged model {source!r}; known: {', '.join(f'packaged:{n}' for n in known)}")
            multimodal = source.removeprefix("packaged:") in TRAINED
        else:  # cheap: reads safetensors headers only, so a corrupt file fails here
            path = resolve_checkpoint(study.model, config.output.cache_dir / "models")
            count_parameters(path)
            multimodal = takes_images(path)
        if any(needs_calibration(method) for method in study.methods):
            image_corpus = study.calibration.corpus in IMAGE_CORPORA
            if image_corpus and not multimodal:
                raise ConfigError(f"calibration.corpus {study.calibration.corpus!r}: image-QA calibration needs a vision-language model; {source} is text-only")
            if multimodal and not image_corpus:
                raise ConfigError(
                    f"calibration.corpus {study.calibration.corpus!r}: {source} takes images; calibrate it on an image corpus "
                    f"({', '.join(sorted(IMAGE_CORPORA))})"
                )
        text_local = [name for name in study.eval.suites if name in LOCAL_SUITES]
        others = [name for name in study.eval.suites if name not in LOCAL_SUITES and name not in IMAGE_SUITES]
        if multimodal:
            check_suites(text_local)
            if others:
                check_multimodal_suites(others, None)
        else:
            check_suites(study.eval.suites)  # refuses image suites for a text-only model
