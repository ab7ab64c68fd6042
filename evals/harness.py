"""What the lm-eval and lmms-eval bridges share: the score record, seeds, offline and quiet runs, result parsing.

Both harnesses return the same result dict (`results`, `higher_is_better`, `n-samples`, metric keys
`"<metric>,<filter>"`), so one parser turns either into `SuiteScore`s. Importing this module first
makes the Hub offline for `datasets` / `huggingface_hub` unless the user set HF_HUB_OFFLINE=0.
"""

from __future__ import annotations

import logging
import math
import os
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar

from pydantic import BaseModel, ConfigDict

from pruning.errors import SuiteError

Loaded = TypeVar("Loaded")

# Seeds handed to the harness (lm-eval's own defaults, fixed here so every run draws the same way).
SEEDS = dict(random_seed=0, numpy_random_seed=1234, torch_random_seed=1234, fewshot_random_seed=1234)
# Bootstrap resamples for the stderr of non-mean metrics (perplexity, median). The harness default,
# 100000 in a process pool, is slow on two cores and forks a process holding the model; 1000 is
# plenty for a standard error.
BOOTSTRAP_ITERS = 1000
_OFFLINE_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
_FALSE = ("0", "false", "no", "off")


class SuiteScore(BaseModel):
    """One metric of one suite, as the harness reported it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    suite: str
    metric: str
    value: float
    stderr: float | None
    higher_is_better: bool
    n_samples: int | None = None


def network_allowed() -> bool:
    """Only an explicit HF_HUB_OFFLINE=0 (set by the user) lets a harness reach the Hub."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _FALSE


if not network_allowed():  # before datasets / huggingface_hub read them, where this module is imported first
    for _name in _OFFLINE_ENV:
        os.environ.setdefault(_name, "1")


def suite_scores(results: dict[str, Any], registry_higher_is_better: Callable[[str], bool | None]) -> list[SuiteScore]:
    """A harness result dict -> one SuiteScore per (suite, metric); "acc,none" keys are split on the comma.

    `registry_higher_is_better` (the harness's metric registry) decides where the task config does not.
    Stderr keys (`acc_stderr,none`, lmms-eval's `acc_stderr_clt,none`) are not metrics of their own.
    """
    scores = []
    for suite, metrics in results["results"].items():
        higher = results.get("higher_is_better", {}).get(suite, {})
        n_samples = results.get("n-samples", {}).get(suite, {}).get("effective")
        for key, value in metrics.items():
            if "," not in key or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            metric, filter_name = key.split(",", 1)
            if metric.endswith("_stderr") or "_stderr_" in metric:
                continue
            stderr = metrics.get(f"{metric}_stderr,{filter_name}")
            stderr = float(stderr) if isinstance(stderr, (int, float)) and math.isfinite(stderr) else None
            is_better = higher.get(metric)
            if is_better is None:
                is_better = bool(registry_higher_is_better(metric))
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
def offline_hub() -> Iterator[None]:
    """Offline for the datasets/hub modules already imported (they read the env once, at import)."""
    if network_allowed():
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
def quiet_harness() -> Iterator[None]:
    """Harness info/warning logs and dataset-preparation bars off; request progress bars stay.

    lm-eval logs through `logging`, lmms-eval through loguru (which has no per-module level: its
    messages are switched off for the duration; its errors surface as exceptions).
    """
    import datasets
    from loguru import logger as loguru_logger

    loggers = [logging.getLogger(name) for name in ("lm_eval", "lm-eval", "datasets")]
    levels = [logger.level for logger in loggers]
    bars_were_enabled = datasets.is_progress_bar_enabled()
    multiproc = os.environ.get("DISABLE_MULTIPROC")
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        loguru_logger.disable("lmms_eval")
        datasets.disable_progress_bars()
        os.environ["DISABLE_MULTIPROC"] = "1"  # lm-eval bootstraps stderrs in-process: no worker pool
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
        loguru_logger.enable("lmms_eval")
        if bars_were_enabled:
            datasets.enable_progress_bars()
        if multiproc is None:
            os.environ.pop("DISABLE_MULTIPROC", None)
        else:
            os.environ["DISABLE_MULTIPROC"] = multiproc


def load_suite(load: Callable[[], Loaded], name: str, is_local: bool, harness: str) -> Loaded:
    """`load()` (the harness reading one suite's task files and dataset); a failure becomes a SuiteError
    that says what to do: fix the local task files, or bring the standard task's dataset into the cache."""
    try:
        return load()
    except Exception as err:
        if is_local:
            raise SuiteError(f"local suite {name!r} cannot be loaded by {harness}: {type(err).__name__}: {_first_line(err)}") from err
        from huggingface_hub import constants

        raise SuiteError(
            f"suite {name!r} is an {harness} task whose dataset is not in the local Hugging Face cache "
            f"({constants.HF_HOME}); "
            f"run it once on a machine with network and copy the cache here ({type(err).__name__}: {_first_line(err)})"
        ) from err


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else ""
