"""The benchmark flow: the pipeline diagram of DESIGN.md, one Prefect task per stage.

model → calibration set → pruned checkpoint → scores → DuckDB → leaderboard. Every computing
stage is cached on its inputs and on the code and packages that compute it (tasks/cache.py), so
rerunning a config recomputes nothing and a crashed run resumes from the last finished stage. The
stages a study's methods share run first, once; then each (study, method) is a branch, a task of its
own: run in turn here, or all at once under a task runner by the sweep (flows/sweep.py).
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from pathlib import Path

from prefect import flow, get_run_logger, tags, task
from prefect.cache_policies import NO_CACHE
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.runtime import flow_run
from prefect.states import Completed
from prefect.transactions import CommitMode, transaction

from evals.imageqa.generator import tasks_dir
from evals.suites import IMAGE_CORPORA, IMAGE_SUITES, LOCAL_SUITES
from evals.suites.primary import primary_results
from evals.task_files import task_files_digest
from flows import environment, provenance
from flows.checkpoints import BranchCheckpoints, usable
from flows.config import ExperimentConfig, StudySpec, load_config, spec_hash
from flows.deploy import tag_with_process
from pruning.allocation import allocate
from pruning.errors import PrunebenchError
from pruning.files import file_problem
from pruning.models.removal import checkpoint_bytes
from pruning.models.sources import checkpoint_problem, decoder_layer_count
from pruning.layerdrop.selection import n_layers_to_drop
from pruning.models.toy_vlm import ToyVLMSpec
from pruning.specs import LAYER_DROP_METHODS, DenseSpec, model_identity
from reports.records import AllocationRow, ItemScore, RedundancyRow, ResultRow, RunBundle, RunRecord, StageRecord
from tasks.artifacts import (
    Artifact, BlockScoresResult, CalibrationSet, CheckpointRef, DroppedCheckpoint, EvalScores, LayerRedundancyResult, ModelCheckpoint,
    PrunedCheckpoint, SlebResult, StageUsage,
)
from tasks.cache import CODE
from tasks.calibration import calibration_set, check_calibration, fingerprinted
from tasks.common import cached_tasks
from tasks.persistence import STAGE_JSON
from tasks.evaluate import eval_scores
from tasks.model import model_checkpoint
from tasks.finetune import check_finetune_corpus, finetune_corpus, finetuned_checkpoint
from tasks.layerdrop import drop_plan, dropped_checkpoint, layer_redundancy_scores, redundancy_of, sleb_never, sleb_removal_order
from tasks.prune import needs_calibration, pruned_checkpoint
from tasks.scores import block_scores, scores_of
from tasks.record import leaderboard_markdown, recorded_run, regression_check, report_html_for, report_markdown_for
from tasks.suites import eval_suites, imageqa_data
from tasks.toy_vlm import TOY_VLM, toy_vlm_checkpoint

REGRESSED = "Regressed"  # the name of a completed flow run's final state when a result got worse than last time


@flow(name="benchmark", flow_run_name="benchmark[{config_path}]", log_prints=True, persist_result=True, result_serializer=STAGE_JSON)
def benchmark(config_path: str, database: str | None = None, workdir: str | None = None) -> str:
    """Run every study of an experiment config and return the leaderboard as markdown."""
    config = load_config(config_path, {"database": database, "workdir": workdir})
    return run_experiment(config)


class MethodInputs(Artifact):
    """What one (study, method) branch reads from its study's shared stages, all computed before any
    branch starts: concurrent branches then never race to compute the same cached stage."""

    base: ModelCheckpoint
    trained: StageUsage | None = None  # the toy VLM's training, when the study trained it
    calibration: CalibrationSet | None = None
    scores: BlockScoresResult | None = None
    redundancy: LayerRedundancyResult | None = None
    sleb: SlebResult | None = None


def run_experiment(config: ExperimentConfig, fan_out: bool = False) -> str:
    """Shared stages first (suites, image data, then per study: toy-VLM training, model, calibration,
    every distinct block scoring, layer redundancy, SLEB orders), then one branch per (study, method):
    in turn in the flow's thread (`prunebench run`), or submitted to the flow's task runner all at
    once (`fan_out`, `prunebench sweep`). Every branch records its own run; the leaderboard follows.

    The preflight runs first here too (the CLI ran it before Prefect started; a scheduled run on a
    worker comes straight here): a worker whose environment cannot evaluate fails in seconds."""
    preflight(config)
    fix_code_digests()
    tag_with_process()
    logger = get_run_logger()
    workdir = str(config.output.workdir.resolve())
    database = str(config.output.database.resolve())
    cache_dir = str(config.output.cache_dir.resolve())
    local_suites = sorted({s for study in config.studies for s in study.eval.suites if s in LOCAL_SUITES})
    suites_dir = usable(eval_suites, _missing_directory, names=local_suites, workdir=workdir, cache_dir=cache_dir)
    image_root = None
    if any(uses_images(study) for study in config.studies):
        image_root = usable(imageqa_data, _missing_directory, cache_dir=cache_dir)
    image_tasks = str(tasks_dir(Path(image_root))) if image_root else None
    # the user's task files and their data as they are when the run begins, read once: a key of every evaluation
    task_files = {paths: task_files_digest(paths) for paths in {tuple(study.eval.include_path) for study in config.studies} if paths}

    branches = []
    for study in (seeded for listed in config.studies for seeded in per_seed(with_fingerprint(listed))):
        with tags(f"model:{study.model.label}"):
            inputs = study_stages(study, image_root, workdir, cache_dir)
        branches += [
            dict(config=config, study=study, method=method, inputs=method_inputs, suites_dir=suites_dir, image_tasks=image_tasks,
                 task_files=task_files.get(tuple(study.eval.include_path)))
            for method, method_inputs in zip(study.methods, inputs)
        ]
    (_fanned_out if fan_out else _in_turn)(branches)

    models = list(dict.fromkeys(study.model.label for study in config.studies))
    markdown = leaderboard_markdown(database, models, config.name)
    key = config.name.lower().replace("_", "-").replace(".", "-")
    create_markdown_artifact(markdown, key=f"leaderboard-{key}", description=f"prunebench leaderboard for {config.name}")
    try:  # every result is recorded by now: a report that cannot be written is a warning, not a failed run
        page = Path(report_html_for.with_options(retries=0)(database, config.name))
        create_link_artifact(page.as_uri(), link_text=page.name, key=f"report-html-{key}",
                             description=f"prunebench report for {config.name} with plots (a self-contained HTML file)")
        create_markdown_artifact(report_markdown_for(database, config.name), key=f"report-{key}",
                                 description=f"prunebench report for {config.name}: curves, allocations, redundancy, speed")
    except Exception as error:
        logger.warning("the report of %s was not written (%s: %s); every result is recorded: `prunebench report "
                       "--database %s --format html` writes it again", config.name, type(error).__name__, error, database)
    outcome = regression_check(database, flow_run.get_id() or "local")
    create_markdown_artifact(outcome.markdown, key=f"regressions-{key}",
                             description=f"{config.name}: results that moved beyond their noise margin since the previous run")
    if outcome.n_worse:
        # the run still completed; its state's name says that something got worse (visible in the UI and the API)
        logger.warning("%d result(s) got worse than the previous run of the same configuration", outcome.n_worse)
        return Completed(name=REGRESSED, message=f"{outcome.n_worse} result(s) worse than the previous run",
                         data=f"{markdown}\n\n{outcome.markdown}")
    return markdown


def with_fingerprint(study: StudySpec) -> StudySpec:
    """The study with its calibration keyed on the contents of the user's corpus (`tasks.calibration.fingerprinted`),
    read once, here, before any stage: where no method reads calibration data, as it is."""
    if not any(needs_calibration(method) for method in study.methods):
        return study
    return study.model_copy(update={"calibration": fingerprinted(study.calibration)})


def per_seed(study: StudySpec) -> list[StudySpec]:
    """The study once per calibration seed (`calibration.seeds`): every method with the first seed, and
    with each further seed the methods that read calibration data (the others would only repeat
    themselves: same checkpoint, same scores). One study, as it is, without `seeds`."""
    draws = study.calibration.per_seed()
    if len(draws) == 1:
        return [study]
    seeded = []
    for index, calibration in enumerate(draws):
        methods = study.methods if index == 0 else [method for method in study.methods if needs_calibration(method)]
        if methods:
            seeded.append(study.model_copy(update={"calibration": calibration, "methods": methods}))
    return seeded


def fix_code_digests() -> None:
    """Read every cached stage's code once, here, before any branch starts: the whole run keys its stages
    on the code as it was when it began (an edit during a long run cannot split it between two
    versions), and branch threads never read source trees or package metadata side by side."""
    for cached in cached_tasks():
        CODE.digest(cached.fn.__module__)


def _in_turn(branches: list[dict]) -> None:
    """`prunebench run`: branch after branch in the flow's thread; the first failure stops the run."""
    for branch in branches:
        with tags(*branch_tags(branch["study"], branch["method"])):
            method_run(**branch)


def _fanned_out(branches: list[dict]) -> None:
    """`prunebench sweep`: every branch submitted to the flow's task runner at once. A failed branch
    does not stop the others (each records its own run); the sweep fails at the end, naming it."""
    futures = []
    for branch in branches:
        with tags(*branch_tags(branch["study"], branch["method"])):
            futures.append(method_run.submit(**branch))
    failures = []
    for branch, future in zip(branches, futures):
        try:
            future.result()
        except Exception as error:
            failures.append(f"{branch['study'].model.label} / {branch['method'].label} ({type(error).__name__}: {error})")
    if failures:
        get_run_logger().error("%d of %d branches failed: %s", len(failures), len(branches), "; ".join(failures))
        raise PrunebenchError(f"{len(failures)} of {len(branches)} branches failed, the others are recorded: {'; '.join(failures)}")


def branch_tags(study: StudySpec, method) -> tuple[str, str]:
    """Tags of every task run of a branch, to filter the UI (and set concurrency limits) by model and method."""
    return f"model:{study.model.label}", f"method:{method.name}"


def study_stages(study: StudySpec, image_root: str | None, workdir: str, cache_dir: str) -> list[MethodInputs]:
    """Each stage that several methods of the study may read, computed once; one MethodInputs per method."""
    trained = None
    if study.model.source == f"packaged:{TOY_VLM}":
        trained = usable(
            toy_vlm_checkpoint,
            # no fingerprint check: the trained model lives in the cache directory, which several
            # workdirs may share; any complete training of the same spec will do
            lambda t: checkpoint_problem(Path(t.ref.path)),
            spec=ToyVLMSpec(), imageqa_root=image_root, cache_dir=cache_dir,
        ).usage
    base = model_checkpoint(study.model, cache_dir)
    calibration = None
    if any(needs_calibration(method) for method in study.methods):
        calibration = usable(
            calibration_set,
            lambda c: file_problem(Path(c.path), c.digest),
            base=base.ref, model=study.model, calibration=study.calibration, workdir=workdir, cache_dir=cache_dir,
        )
    measured = dict(base=base.ref, calibration_path=calibration.path if calibration else None, model=study.model,
                    calibration=study.calibration)
    scores: dict = {}  # ScoreSpec -> BlockScoresResult: one scoring serves every ratio and local pruner
    sleb: dict = {}  # (layers to drop, samples, layers never tried) -> SlebResult
    redundancy: dict = {}  # RedundancySpec -> LayerRedundancyResult: one measurement serves every method asking for it
    inputs = []
    for method in study.methods:
        spec = getattr(method, "scores", None)
        if spec is not None and spec not in scores:
            scores[spec] = block_scores(**measured, scores=spec)
        dropping = method.name in LAYER_DROP_METHODS
        measure = method.redundancy if dropping and needs_calibration(method) else None
        if measure is not None and measure not in redundancy:
            redundancy[measure] = layer_redundancy_scores(**measured, measure=measure)
        order = None
        if dropping and method.selector == "sleb":
            n_layers = len(redundancy[measure].cos_mean) - 1 if measure is not None else decoder_layer_count(Path(base.ref.path))
            order = (n_layers_to_drop(method.drop_ratio, n_layers), method.n_samples, sleb_never(method, n_layers))
            if order not in sleb:
                sleb[order] = sleb_removal_order(**measured, n_drop=order[0], n_samples=order[1], never=order[2])
        inputs.append(MethodInputs(
            base=base, trained=trained, calibration=calibration, scores=scores.get(spec),
            redundancy=redundancy.get(measure), sleb=sleb.get(order),
        ))
    return inputs


def _method_run_name(parameters: dict) -> str:
    return f"run[{parameters['study'].model.label}, {parameters['method'].label}]"


# A branch computes nothing itself: its stages are the cached tasks it calls (nested task runs), so
# the branch is neither cached nor retried; it must run every time to record its run.
@task(task_run_name=_method_run_name, cache_policy=NO_CACHE, persist_result=False)
def method_run(
    config: ExperimentConfig,
    study: StudySpec,
    method,
    inputs: MethodInputs,
    suites_dir: str,
    image_tasks: str | None,
    task_files: str | None = None,
) -> str:
    """One (study, method) branch: pruned or dropped checkpoint, optional finetune, eval, record; returns the run id.

    Each stage's result is committed to the cache the moment it finishes: nested task runs would
    otherwise join the branch's transaction and be committed only when the whole branch succeeds, so
    a branch killed during evaluation (or failing to record) would lose its finished prune."""
    with transaction(commit_mode=CommitMode.EAGER):
        return _branch(config, study, method, inputs, suites_dir, image_tasks, task_files)


def _branch(config: ExperimentConfig, study: StudySpec, method, inputs: MethodInputs, suites_dir: str, image_tasks: str | None,
            task_files: str | None) -> str:  # fmt: skip
    """The branch's checkpoints go through `BranchCheckpoints` (flows/checkpoints.py): made whole only
    where a stage must read them or the policy keeps them, and removed as `output.keep_checkpoints` says."""
    started_at = datetime.now(timezone.utc)
    workdir = str(config.output.workdir.resolve())
    cache_dir = str(config.output.cache_dir.resolve())
    base, calibration = inputs.base, inputs.calibration
    stages = {"train": inputs.trained} if inputs.trained is not None else {}
    allocation: dict = {}
    if inputs.scores is not None:
        stages["scores"] = inputs.scores.usage
        allocation = {"block_sparsity": allocate(method, scores_of(inputs.scores)), "block_score": inputs.scores.scores}
    with BranchCheckpoints(config.output.keep_checkpoints) as checkpoints:
        last = None  # the branch's latest checkpoint stage; None: the base model
        if method.name in LAYER_DROP_METHODS:
            last = _dropped(study, method, inputs, workdir, stages, checkpoints)
        elif method.name != "dense":
            last = checkpoints.stage(
                pruned_checkpoint,
                base=base.ref,
                calibration_path=calibration.path if calibration and needs_calibration(method) else None,
                model=study.model,
                calibration=study.calibration,
                method=method,
                workdir=workdir,
                compress=config.output.compress_checkpoints,
                **allocation,
            )
        pruned = last
        if getattr(method, "finetune", None) is not None:  # only a pruning or dropping method has one
            # weight pruning keeps every layer: count them in the base model, whose files are always there
            train_layers = pruned.result.train_layers if method.name in LAYER_DROP_METHODS else list(range(decoder_layer_count(Path(base.ref.path))))
            last = checkpoints.stage(
                finetuned_checkpoint, pruned,
                model=study.model, train_layers=train_layers, finetune_spec=method.finetune,
                corpus=finetune_corpus(method.finetune, study.calibration.corpus),
                label=method.label, workdir=workdir, cache_dir=cache_dir, compress=config.output.compress_checkpoints,
            )  # fmt: skip
        scores = checkpoints.evaluation(
            eval_scores,
            lambda evaluation: evaluation.samples_dir and _missing_directory(evaluation.samples_dir),
            last or base.ref,
            label=f"{study.model.label}, {method.label}", model=study.model, eval=study.eval.evaluated(),
            suites_dir=suites_dir, image_tasks_dir=image_tasks, task_files=task_files,
            samples_root=str(Path(workdir) / "samples") if study.eval.log_samples else None,
        )
        if last is not pruned:
            stages["finetune"] = last.result.usage
        if scores.samples_dir is not None:
            get_run_logger().info("per-sample logs of %s / %s: %s", study.model.label, method.label, scores.samples_dir)
        # the stages' latest results: a checkpoint rebuilt on the way was computed by this run
        bundle = run_bundle(config, study, method, base, calibration, pruned.result if pruned else None, scores, started_at, stages, inputs.redundancy,
                            evaluated=last.result.ref if last is not None else base.ref, task_files=task_files,
                            checkpoint_kept=checkpoints.kept(last))  # fmt: skip
        recorded_run(bundle, str(config.output.database.resolve()))
        get_run_logger().info("recorded %s / %s as run %s", study.model.label, method.label, bundle.run.run_id)
        checkpoints.remove_unkept(evaluated=True)
    return bundle.run.run_id


def _dropped(study: StudySpec, method, inputs: MethodInputs, workdir: str, stages: dict, checkpoints: BranchCheckpoints):
    """Drop plan (from the shared redundancy or SLEB order) → dropped checkpoint; the stages' costs go into `stages`."""
    redundancy, sleb = inputs.redundancy, inputs.sleb
    if redundancy is not None:
        stages["redundancy"] = redundancy.usage
    if sleb is not None:
        stages["sleb"] = sleb.usage
    n_layers = len(redundancy.cos_mean) - 1 if redundancy is not None else decoder_layer_count(Path(inputs.base.ref.path))
    plan = drop_plan(method, n_layers, redundancy, sleb)
    built = checkpoints.stage(dropped_checkpoint, base=inputs.base.ref, model=study.model, plan=plan.to_dict(), label=method.label, workdir=workdir)
    dropped = built.result
    get_run_logger().info("%s drops layers %s, finetunes %s, anchors %s", method.label, dropped.drop, dropped.finetune, dropped.anchor)
    return built


def uses_images(study: StudySpec) -> bool:
    """Whether a study needs the image-QA build: the toy VLM, image calibration, or an image suite."""
    return (
        study.model.source == f"packaged:{TOY_VLM}"
        or study.calibration.corpus in IMAGE_CORPORA
        or any(name in IMAGE_SUITES for name in study.eval.suites)
    )


def _missing_directory(path: str) -> str | None:
    return None if Path(path).is_dir() else f"{path} does not exist"


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
    evaluated: CheckpointRef | None = None,
    task_files: str | None = None,
    checkpoint_kept: bool = True,
) -> RunBundle:
    """Everything one (model, method) run records, with provenance. `evaluated` is the checkpoint the
    scores are of (default: the pruned or dropped one, else the base model); `task_files`, the digest of
    the user's task files (`eval.include_path`), is part of the config hash: a run on other items is
    another config. `checkpoint_kept`: whether the run leaves that checkpoint on disk (`output.keep_checkpoints`)."""
    uses_calibration = needs_calibration(method)
    evaluation = (study.eval.evaluated(), *([task_files] if task_files else []))  # a config without its own tasks keeps its hash
    config_hash = spec_hash(study.model, method.canonical_params(), study.calibration if uses_calibration else "no-calibration", *evaluation)
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
        model_source=study.model.identity()[0],
        method=method.name,
        method_id=method.method_id,
        method_label=method.label,
        method_params=json.dumps(method.canonical_params()),
        **_removed(method, base, pruned),
        seed=study.calibration.seed,
        git_commit=provenance.git_commit(),
        package_versions=provenance.package_versions(),
        host=provenance.host(),
        device=provenance.device_description(study.model.device),
        started_at=started_at,
        finished_at=datetime.now(timezone.utc),
        environment_digest=environment.environment_digest(),
        lock_digest=environment.lock_digest(),
        model_id=model_identity(base.digest, study.model.dtype, study.model.device, study.model.adapter_digest),
        model_dtype=study.model.dtype,
        model_device=study.model.device,
        **_checkpoint_columns(evaluated or (pruned.ref if pruned is not None else base.ref), checkpoint_kept),
    )
    primary = primary_results([(score.suite, score.metric) for score in scores.scores], study.eval.suites, study.eval.primary_metrics)
    unreported = sorted(set(study.eval.primary_metrics.items()) - primary)
    if unreported:  # a standard task's metric is known only once it ran
        get_run_logger().warning("eval.primary_metrics names results the evaluation did not report, so those suites count in "
                                 "no mean retention: %s", ", ".join(f"{suite}/{metric}" for suite, metric in unreported))
    return RunBundle(
        run=run,
        results=[ResultRow(run_id=run_id, **score.model_dump(), is_primary=(score.suite, score.metric) in primary)
                 for score in scores.scores],  # fmt: skip
        items=[ItemScore(run_id=run_id, **item.model_dump()) for item in scores.items],
        stages=[_stage_record(run_id, name, usage, flow_run_id) for name, usage in stages.items()],
        redundancy=_redundancy_rows(run_id, method.name, redundancy) if redundancy is not None else [],
        allocations=_drop_allocations(run_id, pruned, redundancy) if dropped else [
            AllocationRow(run_id=run_id, **layer.model_dump()) for layer in (pruned.layers if pruned else [])
        ],
    )


def _checkpoint_columns(ref: CheckpointRef, kept: bool) -> dict:
    """Where the evaluated checkpoint is (or was: not kept), its size while it is on disk, and whether it stays."""
    path = Path(ref.path)
    return {"checkpoint": str(path), "checkpoint_bytes": checkpoint_bytes(path) if path.is_dir() else None,
            "checkpoint_kept": kept and path.is_dir()}  # fmt: skip


def _removed(method, base: ModelCheckpoint, pruned: PrunedCheckpoint | DroppedCheckpoint | None) -> dict:
    """What the run took out of the model, each in its own column: weight sparsity (0 for dense) or
    the layers dropped, and the share of all parameters pruned either way."""
    if isinstance(pruned, DroppedCheckpoint):
        removed = dict(target_drop_ratio=method.drop_ratio, layers_dropped=len(pruned.drop), layers_total=pruned.n_layers)
        params_pruned = pruned.params_removed
    else:
        removed = dict(target_weight_sparsity=method.target, achieved_weight_sparsity=pruned.achieved_sparsity if pruned else 0.0)
        params_pruned = pruned.params_pruned if pruned else 0
    share = params_pruned / base.params_total if base.params_total else None
    return {**removed, "params_total": base.params_total, "params_pruned": params_pruned, "params_pruned_share": share}


def _drop_allocations(run_id: str, dropped: DroppedCheckpoint, redundancy: LayerRedundancyResult | None) -> list[AllocationRow]:
    """One row per decoder layer: sparsity 1 for a dropped layer, 0 for a kept one; its block score is
    ShortGPT's block influence 1 - s_1(i) where the redundancy was measured."""
    influence = redundancy_of(redundancy).block_influence() if redundancy is not None else None
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


def preflight(config: ExperimentConfig, *, full: bool = True) -> None:
    """Fail before Prefect starts or any model loads: unknown packaged models, missing paths, a model no adapter
    covers (or whose layout its adapter does not match), unknown suites, a device this machine lacks, a calibration
    text too short; with `full` (what `run` does), also a database that cannot be written and an evaluation
    backend that cannot run here (a rehearsal on two items)."""
    from evals.lm_eval_bridge import check_suites, has_chat_template
    from pruning.errors import ConfigError, ModelSourceError
    from pruning.models.sources import PACKAGED, TRAINED, checkpoint_adapter, count_parameters, device_problem, resolve_checkpoint, takes_images
    from reports.store import ResultStore

    for index, study in enumerate(config.studies):
        problem = device_problem(study.model.device)
        if problem:
            raise ConfigError(f"studies.{index}.model.device: {problem}")
    known = sorted([*PACKAGED, *TRAINED])
    text_suites: list[str] = []
    image_suites: list[str] = []
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
            if not all(isinstance(method, DenseSpec) for method in study.methods):  # from config.json, on the meta device
                checkpoint_adapter(path, study.model)
        if any(needs_calibration(method) for method in study.methods):
            check_calibration(study.calibration, source, multimodal, config.output.cache_dir)
        for method in study.methods:
            if getattr(method, "finetune", None) is not None:
                check_finetune_corpus(method.finetune, study.calibration.corpus, multimodal, config.output.cache_dir)
        text_local = [name for name in study.eval.suites if name in LOCAL_SUITES]
        others = [name for name in study.eval.suites if name not in LOCAL_SUITES and name not in IMAGE_SUITES]
        if multimodal:
            check_suites(text_local)
            if others:
                from evals.lmms_eval_bridge import check_multimodal_suites  # seconds to import: a VLM's run only

                check_multimodal_suites(others, study.eval.include_path)
            if study.eval.apply_chat_template and len(text_local) < len(study.eval.suites):
                raise ConfigError(f"eval.apply_chat_template: {source} is evaluated on image suites through lmms-eval, whose prompts "
                                  f"are prunebench's own (evals/vlm_prompt.py) without a chat template; set it for text models only")  # fmt: skip
            text_suites += text_local
            image_suites += [name for name in study.eval.suites if name not in LOCAL_SUITES]
        else:
            check_suites(study.eval.suites, study.eval.include_path)  # refuses image suites for a text-only model
            text_suites += study.eval.suites
        if study.eval.apply_chat_template and not source.startswith("packaged:") and not has_chat_template(path):
            raise ConfigError(f"eval.apply_chat_template: the tokenizer of {source} has no chat template "
                              f"(no chat_template.jinja, nor one in tokenizer_config.json)")  # fmt: skip
    if full:
        check_environment(config, list(dict.fromkeys(text_suites)), list(dict.fromkeys(image_suites)))
        ResultStore(config.output.database).check_writable()  # last: a run refused for another reason creates no file


_WARNED: set[tuple] = set()


def check_environment(config: ExperimentConfig, text_suites: list[str], image_suites: list[str]) -> None:
    """Before any model loads: say how the environment differs from requirements.lock (a warning: results
    then carry another environment digest), and rehearse every evaluation backend the config needs on
    two items per suite (`evals.rehearsal`), which fails with one line naming the package at fault.

    A rehearsal that passed is remembered in the cache, keyed by the environment digest, the digest of
    the rehearsal's code (`tasks.cache.code_digest`) and the suites: the same environment and code pass
    the same rehearsal."""
    import hashlib
    import sys
    import time
    import traceback

    from evals.rehearsal import BackendError, rehearse
    from pruning.files import write_text_atomic
    from tasks.cache import code_digest

    found = environment.environment_differences()
    if found and tuple(found) not in _WARNED:  # once per process (the CLI and the flow both check)
        _WARNED.add(tuple(found))
        shown = "; ".join(map(str, found[:3])) + (f"; and {len(found) - 3} more" if len(found) > 3 else "")
        print(
            f"prunebench: warning: this environment differs from requirements.lock in {len(found)} package(s) ({shown}); "
            f"results are recorded with its own environment digest. `make venv` installs the lock "
            f"(`python flows/environment.py check` lists every difference)",
            file=sys.stderr,
        )
    key = hashlib.sha256(repr((environment.environment_digest(), code_digest("evals.rehearsal"), text_suites, image_suites)).encode()).hexdigest()[:24]
    marker = config.output.cache_dir / "rehearsals" / f"{key}.ok"
    if marker.is_file():
        return
    started = time.monotonic()
    try:
        done = rehearse(text_suites, image_suites, config.output.cache_dir)
    except BackendError as failed:
        if isinstance(failed.error, PrunebenchError):  # ours: already says what to do
            raise
        line = environment.describe_failure(f"{failed.backend} cannot evaluate in this environment", failed.error, environment.lock_pins())
        log = marker.parent / "failed.log"  # the harness's own output and the traceback, for whoever digs further
        log.parent.mkdir(parents=True, exist_ok=True)
        trace = "".join(traceback.format_exception(failed.error))
        write_text_atomic(log, f"{line}\n\n--- what the harness printed ---\n{failed.output}\n--- traceback ---\n{trace}")
        raise BackendError(failed.backend, failed.error, f"{line}; details in {log}") from failed.error
    if done:
        print(f"preflight: {' and '.join(done)} rehearsed on 2 items per suite in {time.monotonic() - started:.1f} s", flush=True)
        marker.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(marker, "\n".join(done) + "\n")

