from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

from prefect import task

from evals.lm_eval_bridge import evaluate
from evals.suites import IMAGE_SUITES, LOCAL_SUITES
from evals.measure import measure_resources
from flows.config import EvalSpec, spec_hash
from pruning.models.adapters import adapter_for
from pruning.models.offload import onloaded
from pruning.models.sources import is_multimodal, load_model, text_tokenizer
from pruning.specs import ModelSpec
from tasks.artifacts import CheckpointRef, EvalScores
from tasks.cache import code_digest
from tasks.common import STAGE, stamp


@task(**STAGE, task_run_name="evaluate[{label}]")
def eval_scores(
    checkpoint: CheckpointRef,
    label: str,
    model: ModelSpec,
    eval: EvalSpec,
    suites_dir: str,
    image_tasks_dir: str | None,
    task_files: str | None = None,
    samples_root: str | None = None,
) -> EvalScores:
    """Scores of one checkpoint on every suite, and each item's values behind them: text suites through
    lm-eval, image suites through lmms-eval.

    For a vision-language model, names that are not local text suites go to lmms-eval (its
    standard tasks and the user's own, `eval.include_path`); for a text model, to lm-eval.
    `task_files`: the digest of the user's task YAMLs and the local data they read
    (`evals.task_files.task_files_digest`), read by no one here: it is in the key so that editing
    them recomputes the scores. `samples_root`: where the per-sample logs go (`eval.log_samples`),
    in a directory of this evaluation's own.
    """
    samples_dir = None
    if samples_root is not None:
        samples_dir = Path(samples_root) / model.label / spec_hash(checkpoint.model_dump(), eval, str(task_files), code_digest(__name__))
    with measure_resources() as usage, ExitStack() as onloading:
        network, preprocessor = load_model(Path(checkpoint.path), model)
        if model.offload != "none":  # its forwards run on `model.device`, one block there at a time (`pruning.models.offload`)
            onloading.enter_context(onloaded(network, adapter_for(network, model.declared_adapter()), model.device))
        multimodal = is_multimodal(preprocessor)
        if multimodal:
            text_suites = [name for name in eval.suites if name in LOCAL_SUITES]
            image_suites = [name for name in eval.suites if name not in LOCAL_SUITES]
        else:
            text_suites, image_suites = list(eval.suites), []
        evaluations = []
        if text_suites:
            evaluations.append(
                evaluate(
                    network,
                    text_tokenizer(preprocessor),
                    text_suites,
                    Path(suites_dir),
                    batch_size=eval.batch_size,
                    limit=eval.limit,
                    max_length=eval.max_length,
                    include_path=[] if multimodal else eval.include_path,  # a VLM's text suites are ours; its user tasks, lmms-eval's
                    num_fewshot=eval.num_fewshot,
                    apply_chat_template=eval.apply_chat_template,
                    samples_dir=samples_dir,
                )
            )
        if image_suites:
            # lmms-eval takes seconds to import (its `evaluate` pulls in transformers' pipelines): only a VLM's run pays it
            from evals.lmms_eval_bridge import evaluate_multimodal

            images = [Path(image_tasks_dir)] if image_tasks_dir and any(n in IMAGE_SUITES for n in image_suites) else []
            evaluations.append(
                evaluate_multimodal(
                    network, preprocessor, image_suites, [*images, *eval.include_path], batch_size=eval.batch_size,
                    limit=eval.limit, num_fewshot=eval.num_fewshot, samples_dir=samples_dir,
                )
            )
    return EvalScores(
        scores=[score for evaluation in evaluations for score in evaluation.scores],
        items=[item for evaluation in evaluations for item in evaluation.items],
        usage=stamp(usage),
        samples_dir=str(samples_dir) if samples_dir is not None else None,
    )
