"""Score an in-memory model on local suites and standard lm-eval tasks, through lm-eval's own evaluator.

Local suites (see `evals.suites`) are read from the directory `build_suites` wrote; the user's own
tasks from the YAMLs under `eval.include_path` (lm-eval's `TaskManager(include_path=...)`); any other
name is an lm-eval task whose dataset must already be in the local Hugging Face cache. The Hub is
never contacted unless the user sets HF_HUB_OFFLINE=0 explicitly.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

from evals.harness import (
    BOOTSTRAP_ITERS, SEEDS, HarnessScores, SuiteScore, did_you_mean, harness_scores, load_suite, offline_hub, quiet_harness,
    write_samples,
)
from evals.suites import IMAGE_SUITES, LOCAL_SUITES, SUITES, expand_suites, local_suite_names, suite_config_path
from pruning.errors import SuiteError

__all__ = ["HarnessScores", "SuiteScore", "check_suites", "evaluate", "scores_from_results"]


@lru_cache(maxsize=1)
def _standard_task_manager():
    """lm-eval's own tasks, groups and tags; indexing its ~15k YAML files takes ~10 s, so once per process."""
    from lm_eval.tasks import TaskManager

    with quiet_harness():
        return TaskManager(include_defaults=True)


def check_suites(names: Sequence[str], include_path: Sequence[Path] = ()) -> None:
    """Fail early on a name that is neither a local suite, nor a task of the YAMLs under `include_path`,
    nor an lm-eval task, or that is a task of yours and one of ours (no data is read)."""
    _refuse_image_suites(names)
    user_names = _user_names(include_path)
    unknown = [name for name in expand_suites(names) if name not in SUITES and name not in user_names]
    if unknown:
        known = set(_standard_task_manager().all_tasks)
        missing = [name for name in unknown if name not in known]
        if missing:
            yours = f", not a task under include_path ({', '.join(map(str, include_path))})" if include_path else ""
            raise SuiteError(
                f"unknown suite {', '.join(map(repr, missing))}: not a local suite ({', '.join(local_suite_names())}){yours} "
                f"and not an lm-eval task{did_you_mean(missing, [*local_suite_names(), *user_names, *known])}"
            )


def _user_task_manager(include_path: Sequence[Path]):
    """The tasks, groups and tags of the YAMLs under `include_path` alone (lm-eval's own are indexed apart);
    None without one. A name of ours there is refused: which suite a result belongs to must be clear."""
    if not include_path:
        return None
    for directory in include_path:
        if not Path(directory).is_dir():
            raise SuiteError(f"eval.include_path {directory} is not a directory of task YAMLs")
    from lm_eval.tasks import TaskManager

    with quiet_harness():
        manager = TaskManager(include_defaults=False, include_path=[str(Path(directory).resolve()) for directory in include_path])
    ours = sorted(set(manager.all_tasks) & LOCAL_SUITES)
    if ours:
        raise SuiteError(f"a task under eval.include_path is named {', '.join(map(repr, ours))}, as a local suite of prunebench; rename it")
    return manager


def _user_names(include_path: Sequence[Path]) -> set[str]:
    manager = _user_task_manager(include_path)
    return set(manager.all_tasks) if manager else set()


def has_chat_template(checkpoint: Path) -> bool:
    """Whether the tokenizer saved in `checkpoint` has a chat template (read from its files, nothing loaded):
    transformers keeps it in chat_template.jinja (or .json), older saves in tokenizer_config.json."""
    checkpoint = Path(checkpoint)
    if (checkpoint / "chat_template.jinja").is_file() or (checkpoint / "chat_template.json").is_file():
        return True
    config = checkpoint / "tokenizer_config.json"
    return config.is_file() and bool(json.loads(config.read_text(encoding="utf-8")).get("chat_template"))


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
    include_path: Sequence[Path] = (),
    num_fewshot: int | None = None,
    apply_chat_template: bool = False,
    samples_dir: Path | None = None,
) -> HarnessScores:
    """Every metric of every suite for `model` (a transformers causal LM in memory), via `HFLM`, and
    every item's values behind them.

    `include_path`: directories of the user's own task YAMLs, whose tasks `suites` may name;
    `num_fewshot`, `apply_chat_template`: lm-eval's own (`simple_evaluate`); `samples_dir`: where the
    harness's per-sample log goes, one `<suite>.jsonl` each (`evals.harness.write_samples`)."""
    if tokenizer is None:
        raise SuiteError("evaluation needs a tokenizer, and this checkpoint was saved without one")
    if apply_chat_template and not getattr(tokenizer, "chat_template", None):
        raise SuiteError(
            f"eval.apply_chat_template: the tokenizer ({type(tokenizer).__name__}, {getattr(tokenizer, 'name_or_path', '') or 'unnamed'}) "
            f"has no chat template; evaluate without it, or use a checkpoint whose tokenizer has one (chat_template.jinja)"
        )
    _refuse_image_suites(suites)
    names = expand_suites(suites)
    if not names:
        raise SuiteError(f"no suite to evaluate; local suites: {', '.join(local_suite_names())}")
    user_manager = _user_task_manager(include_path)
    user_names = set(user_manager.all_tasks) if user_manager else set()
    local = [name for name in names if name in SUITES]
    standard = [name for name in names if name not in SUITES and name not in user_names]
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
            if name in SUITES or name in user_names:
                tasks += _load_task(local_manager if name in SUITES else user_manager, name, is_local=True)
            else:
                tasks += _load_task(_standard_task_manager(), name, is_local=False)
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_length=max_length)
        results = lm_eval.simple_evaluate(
            model=lm,
            tasks=tasks,
            task_manager=local_manager or user_manager or _standard_task_manager(),  # tasks are loaded already: passed through
            limit=limit,
            num_fewshot=num_fewshot,
            apply_chat_template=apply_chat_template,
            bootstrap_iters=BOOTSTRAP_ITERS,
            log_samples=True,  # the per-item values (`evals.harness.sample_scores`)
            **SEEDS,
        )
    if results is None:  # only non-zero ranks of a distributed run get None
        return HarnessScores(scores=[], items=[])
    if samples_dir is not None:
        write_samples(results, samples_dir)
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
