from __future__ import annotations

from pathlib import Path

from prefect import task

from evals.lm_eval_bridge import evaluate
from evals.lmms_eval_bridge import evaluate_multimodal
from evals.suites import IMAGE_SUITES, LOCAL_SUITES
from evals.measure import measure_resources
from flows.config import EvalSpec
from pruning.models.sources import is_multimodal, load_model, text_tokenizer
from pruning.specs import ModelSpec
from tasks.artifacts import CheckpointRef, EvalScores
from tasks.common import STAGE, stamp


@task(**STAGE, task_run_name="evaluate[{label}]")
def eval_scores(
    checkpoint: CheckpointRef,
    label: str,
    model: ModelSpec,
    eval: EvalSpec,
    suites_dir: str,
    image_tasks_dir: str | None,
) -> EvalScores:
    """Scores of one checkpoint on every suite, and each item's values behind them: text suites through
    lm-eval, image suites through lmms-eval.

    For a vision-language model, names that are not local text suites go to lmms-eval (its
    standard tasks); for a text model, to lm-eval.
    """
    with measure_resources() as usage:
        network, preprocessor = load_model(Path(checkpoint.path), model)
        if is_multimodal(preprocessor):
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
                )
            )
        if image_suites:
            include = Path(image_tasks_dir) if image_tasks_dir and any(n in IMAGE_SUITES for n in image_suites) else None
            evaluations.append(
                evaluate_multimodal(network, preprocessor, image_suites, include, batch_size=eval.batch_size, limit=eval.limit)
            )
    return EvalScores(
        scores=[score for evaluation in evaluations for score in evaluation.scores],
        items=[item for evaluation in evaluations for item in evaluation.items],
        usage=stamp(usage),
    )
