"""Score an in-memory model on local suites and standard lm-eval tasks, through lm-eval's own evaluator.

Local suites (see `evals.suites`) are read from the directory `build_suites` wrote; any other name
is an lm-eval task whose dataset must already be in the local Hugging Face cache. The Hub is
never contacted unless the user sets HF_HUB_OFFLINE=0 explicitly.
"""

from __future__ import annotations

import logging
import math
import os
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Sequence

from pydantic import BaseModel, ConfigDict

from evals.suites import SUITES, expand_suites, local_suite_names, suite_config_path
from pruning.errors import SuiteError

# Seeds handed to lm-eval (its own defaults, fixed here so every run draws the same way).
SEEDS = dict(random_seed=0, numpy_random_seed=1234, torch_random_seed=1234, fewshot_random_seed=1234)
# Bootstrap resamples for the stderr of non-mean metrics (cloze perplexity). lm-eval's default,
# 100000 in a forked process pool, is slow on two cores and forks a process holding the model;
# 1000 in-process (seeded by lm-eval) is plenty for a standard error.
BOOTSTRAP_ITERS = 1000
_OFFLINE_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
_FALSE = ("0", "false", "no", "off")


class SuiteScore(BaseModel):
    """One metric of one suite, as lm-eval reported it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    suite: str
    metric: str
    value: float
    stderr: float | None
    higher_is_better: bool
    n_samples: int | None = None


def _network_allowed() -> bool:
    """Only an explicit HF_HUB_OFFLINE=0 (set by the user) lets lm-eval reach the Hub."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _FALSE


if not _network_allowed():  # before datasets / huggingface_hub read them, where this module is imported first
    for _name in _OFFLINE_ENV:
        os.environ.setdefault(_name, "1")


@lru_cache(maxsize=1)
def _standard_task_manager():
    """lm-eval's own tasks, groups and tags; indexing its ~15k YAML files takes ~10 s, so once per process."""
    from lm_eval.tasks import TaskManager

    with _quiet():
        return TaskManager(include_defaults=True)


def check_suites(names: Sequence[str]) -> None:
    """Fail early on a name that is neither a local suite nor an lm-eval task (no data is read)."""
    unknown = [name for name in expand_suites(names) if name not in SUITES]
    if unknown:
        known = set(_standard_task_manager().all_tasks)
        missing = [name for name in unknown if name not in known]
        if missing:
            raise SuiteError(
                f"unknown suite {', '.join(map(repr, missing))}: not a local suite ({', '.join(local_suite_names())}) "
                f"and not an lm-eval task"
            )


def evaluate(
    model,
    tokenizer,
    suites: list[str],
    suites_dir: Path | None,
    batch_size: int = 8,
    limit: int | None = None,
    max_length: int | None = None,
) -> list[SuiteScore]:
    """Every metric of every suite for `model` (a transformers causal LM in memory), via `HFLM`."""
    if tokenizer is None:
        raise SuiteError("evaluation needs a tokenizer, and this checkpoint was saved without one")
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

    with _quiet(), _offline():
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
            log_samples=False,
            **SEEDS,
        )
    if results is None:  # only non-zero ranks of a distributed run get None
        return []
    return scores_from_results(results)


def _load_task(task_manager, name: str, is_local: bool) -> list[Any]:
    """The Task (or Group) objects for one name; reading a standard task's dataset may fail offline."""
    try:
        loaded = task_manager.load([name])
    except Exception as err:
        if is_local:
            raise SuiteError(f"local suite {name!r} cannot be loaded by lm-eval: {type(err).__name__}: {_first_line(err)}") from err
        from huggingface_hub import constants

        raise SuiteError(
            f"suite {name!r} is an lm-eval task whose dataset is not in the local Hugging Face cache "
            f"({constants.HF_HOME}); "
            f"run it once on a machine with network and copy the cache here ({type(err).__name__}: {_first_line(err)})"
        ) from err
    if name in loaded["groups"]:  # keep the group so lm-eval also reports its aggregate
        return [loaded["groups"][name]]
    return list(loaded["tasks"].values())


def scores_from_results(results: dict[str, Any]) -> list[SuiteScore]:
    """lm-eval's result dict -> one SuiteScore per (suite, metric); "acc,none" keys are split on the comma."""
    from lm_eval.api.registry import is_higher_better

    scores = []
    for suite, metrics in results["results"].items():
        higher = results.get("higher_is_better", {}).get(suite, {})
        n_samples = results.get("n-samples", {}).get(suite, {}).get("effective")
        for key, value in metrics.items():
            if "," not in key or "_stderr," in key or not isinstance(value, (int, float)):
                continue
            metric, filter_name = key.split(",", 1)
            stderr = metrics.get(f"{metric}_stderr,{filter_name}")
            stderr = float(stderr) if isinstance(stderr, (int, float)) and math.isfinite(stderr) else None
            is_better = higher.get(metric)
            if is_better is None:
                is_better = bool(is_higher_better(metric))
            scores.append(
                SuiteScore(
                    suite=suite,
                    metric=metric if filter_name == "none" else f"{metric}/{filter_name}",
                    value=float(value),
                    stderr=stderr,
                    higher_is_better=bool(is_better),
                    n_samples=n_samples,
                )
            )
    return scores


@contextmanager
def _offline() -> Iterator[None]:
    """Offline for the datasets/hub modules already imported (they read the env once, at import)."""
    if _network_allowed():
        yield
        return
    import datasets.config
    import huggingface_hub.constants

    patched = [
        (huggingface_hub.constants, "HF_HUB_OFFLINE"),
        (datasets.config, "HF_HUB_OFFLINE"),
        (datasets.config, "HF_DATASETS_OFFLINE"),
    ]
    saved = [(module, name, getattr(module, name)) for module, name in patched if hasattr(module, name)]
    try:
        for module, name, _ in saved:
            setattr(module, name, True)
        yield
    finally:
        for module, name, value in saved:
            setattr(module, name, value)


@contextmanager
def _quiet() -> Iterator[None]:
    """lm-eval's info/warning logs and dataset-preparation bars off; its request progress bars stay."""
    import datasets

    loggers = [logging.getLogger(name) for name in ("lm_eval", "lm-eval", "datasets")]
    levels = [logger.level for logger in loggers]
    bars_were_enabled = datasets.is_progress_bar_enabled()
    multiproc = os.environ.get("DISABLE_MULTIPROC")
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        datasets.disable_progress_bars()
        os.environ["DISABLE_MULTIPROC"] = "1"  # lm-eval bootstraps stderrs in-process: no worker pool
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
        if bars_were_enabled:
            datasets.enable_progress_bars()
        if multiproc is None:
            os.environ.pop("DISABLE_MULTIPROC", None)
        else:
            os.environ["DISABLE_MULTIPROC"] = multiproc


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else ""
