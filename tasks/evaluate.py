from __future__ import annotations

from pathlib import Path

from prefect import task

from evals.lm_eval_bridge import evaluate
from evals.measure import measure_resources
from flows.config import EvalSpec
from pruning.models.sources import load_model
from pruning.specs import ModelSpec
from tasks.artifacts import CheckpointRef, EvalScores, Score
from tasks.common import CACHED, stamp


@task(cache_policy=CACHED, task_run_name="evaluate[{label}]")
def eval_scores(
    checkpoint: CheckpointRef, label: str, model: ModelSpec, eval: EvalSpec, suites_dir: str, code: str
) -> EvalScores:
    """Scores of one checkpoint on every suite, through lm-eval's own evaluator."""
    with measure_resources() as usage:
        network, tokenizer = load_model(Path(checkpoint.path), model)
        suite_scores = evaluate(
            network,
            tokenizer,
            eval.suites,
            Path(suites_dir),
            batch_size=eval.batch_size,
            limit=eval.limit,
            max_length=eval.max_length,
        )
    return EvalScores(scores=[Score(**score.model_dump()) for score in suite_scores], usage=stamp(usage))
