"""Score an in-memory model on local suites and standard lm-eval tasks, through lm-eval's own evaluator.

Local suites (see `evals.suites`) are read from the directory `build_suites` wrote; any other name
is an lm-eval task whose dataset must already be in the local Hugging Face cache. The Hub is
never contacted unless the user sets HF_HUB_OFFLINE=0 explicitly.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

from evals.harness import BOOTSTRAP_ITERS, SEEDS, HarnessScores, SuiteScore, harness_scores, load_suite, offline_hub, quiet_harness
from evals.suites import IMAGE_SUITES, SUITES, expand_suites, local_suite_names, suite_config_path
from pruning.errors import SuiteError

__all__ = ["HarnessScores", "SuiteScore", "check_suites", "evaluate", "scores_from_results"]


@lru_cache(maxsize=1)
def _standard_task_manager():
    """lm-eval's own tasks, groups and tags; indexing its ~15k YAML files takes ~10 s, so once per process."""
    from lm_eval.tasks import TaskManager

    with quiet_harness():
        return TaskManager(include_defaults=True)


def check_suites(names: Sequence[str]) -> None:
    """Fail early on a name that is neither a local suite nor an lm-eval task (no data is read)."""
    _refuse_image_suites(names)
    unknown = [name for name in expand_suites(names) if name not in SUITES]
    if unknown:
        known = set(_standard_task_manager().all_tasks)
        missing = [name for name in unknown if name not in known]
        if missing:
            raise SuiteError(
                f"unknown suite {', '.join(map(repr, missing))}: not a local suite ({', '.join(local_suite_names())}) "
                f"and not an lm-eval task"
            )


def _refuse_image_suites(names: Sequence[str]) -> None:
    image_suites = [name for name in names if name in IMAGE_SUITES]
    if image_suites:
        raise SuiteError(
            f"suite {', '.join(map(repr, image_suites))} shows images and this is a text-only model; "
            f"image-QA suites need a vision-language model (e.g. packaged:toy-vlm)"
        )


def evaluate(
    model,
    tokenizer,
    suites: list[str],
    suites_dir: Path | None,
    batch_size: int = 8,
    limit: int | None = None,
    max_length: int | None = None,
) -> HarnessScores:
    """Every metric of every suite for `model` (a transformers causal LM in memory), via `HFLM`, and
    every item's values behind them."""
    if tokenizer is None:
        raise SuiteError("evaluation needs a tokenizer, and this checkpoint was saved without one")
    _refuse_image_suites(suites)
    names = expand_suites(suites)
    if not names:
        raise SuiteError(f"no suite to evaluate; local suites: {', '.join(local_suite_names())}")
    local = [name for name in names if name in SUITES]
    standard = [name for name in names if name not in SUITES]
    for name in local:
        if suites_dir is None or not suite_config_path(name, suites_dir).is_file():
            raise SuiteError(
                f"local suite {name!r} has no task file in {suites_dir}; write it first with "
                f"evals.suites.build_suites([{name!r}], <dir>, <cache_dir>)"
            )
    if standard:
        check_suites(standard)

    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    with quiet_harness(), offline_hub():
        local_manager = TaskManager(include_defaults=False, include_path=str(Path(suites_dir).resolve())) if local else None
        tasks = []
        for name in names:
            is_local = name in SUITES
            tasks += _load_task(local_manager if is_local else _standard_task_manager(), name, is_local)
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_length=max_length)
        results = lm_eval.simple_evaluate(
            model=lm,
            tasks=tasks,
            task_manager=local_manager or _standard_task_manager(),  # tasks are loaded already: passed through
            limit=limit,
            bootstrap_iters=BOOTSTRAP_ITERS,
            log_samples=True,  # the per-item values (`evals.harness.sample_scores`)
            **SEEDS,
        )
    if results is None:  # only non-zero ranks of a distributed run get None
        return HarnessScores(scores=[], items=[])
    return scores_from_results(results)


def _load_task(task_manager, name: str, is_local: bool) -> list[Any]:
    """The Task (or Group) objects for one name; reading a standard task's dataset may fail offline."""
    loaded = load_suite(lambda: task_manager.load([name]), name, is_local, "lm-eval")
    if name in loaded["groups"]:  # keep the group so lm-eval also reports its aggregate
        return [loaded["groups"][name]]
    return list(loaded["tasks"].values())


def scores_from_results(results: dict[str, Any]) -> HarnessScores:
    """lm-eval's result dict -> one SuiteScore per (suite, metric), lm-eval's registry filling in
    higher_is_better, and the per-item scores of its logged samples."""
    from lm_eval.api.registry import is_higher_better

    return harness_scores(results, is_higher_better)
