"""What the lm-eval and lmms-eval bridges share: the score record, seeds, offline and quiet runs, result parsing.

Both harnesses return the same result dict (`results`, `higher_is_better`, `n-samples`, metric keys
`"<metric>,<filter>"`, and with `log_samples` one dict per document in `samples`), so one parser
turns either into `SuiteScore`s and the per-item `SampleScore`s behind them. Importing this module
first makes the Hub offline for `datasets` / `huggingface_hub` unless the user set HF_HUB_OFFLINE=0.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import os
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from numbers import Real
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from pydantic import BaseModel, ConfigDict

from pruning.errors import SuiteError, first_line
from pruning.files import write_text_atomic

Loaded = TypeVar("Loaded")

# Seeds handed to the harness (lm-eval's own defaults, fixed here so every run draws the same way).
SEEDS = dict(random_seed=0, numpy_random_seed=1234, torch_random_seed=1234, fewshot_random_seed=1234)
# Bootstrap resamples for the stderr of non-mean metrics (perplexity, median). The harness default,
# 100000 in a process pool, is slow on two cores and forks a process holding the model; 1000 is
# plenty for a standard error.
BOOTSTRAP_ITERS = 1000
# lm-eval's rolling log-likelihood metrics: a document's value is (log-likelihood, weight), the weight
# its words or UTF-8 bytes (lm_eval/api/task.py:1468-1486), and the aggregate exp(-Σll / Σweight)
# (bits_per_byte: -Σll / Σweight / ln 2; lm_eval/api/metrics.py weighted_perplexity, bits_per_byte).
WEIGHTED_METRICS = frozenset({"word_perplexity", "byte_perplexity", "bits_per_byte"})
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


class SampleScore(BaseModel):
    """One metric of one item (a document of a suite), as the harness logged it: 0/1 for accuracy
    metrics (acc, acc_norm, exact_match), the log-likelihood for perplexity metrics. `weight` is the
    document's words or bytes for the weighted ones (`WEIGHTED_METRICS`), None where the suite's
    score aggregates the values alone (a mean; `perplexity` is exp(-mean log-likelihood))."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    suite: str
    item: str  # the harness's doc_id: the same document has the same id in every run of the suite
    metric: str  # named as SuiteScore.metric ("exact_match/strict-match" for a filter other than "none")
    value: float
    weight: float | None = None


class HarnessScores(BaseModel):
    """What one evaluation reports: each suite's metrics, and every item's values behind them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scores: list[SuiteScore]
    items: list[SampleScore]


def network_allowed() -> bool:
    """Only an explicit HF_HUB_OFFLINE=0 (set by the user) lets a harness reach the Hub."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _FALSE


if not network_allowed():  # before datasets / huggingface_hub read them, where this module is imported first
    for _name in _OFFLINE_ENV:
        os.environ.setdefault(_name, "1")


def harness_scores(results: dict[str, Any], registry_higher_is_better: Callable[[str], bool | None]) -> HarnessScores:
    """A harness result dict (run with `log_samples=True`) -> its suite scores and per-item scores."""
    return HarnessScores(scores=suite_scores(results, registry_higher_is_better), items=sample_scores(results))


def suite_scores(results: dict[str, Any], registry_higher_is_better: Callable[[str], bool | None]) -> list[SuiteScore]:
    """A harness result dict -> one SuiteScore per (suite, metric); "acc,none" keys are split on the comma.

    `registry_higher_is_better` (the harness's metric registry) decides where the task config does not.
    """
    scores = []
    for suite, metrics in results["results"].items():
        higher = results.get("higher_is_better", {}).get(suite, {})
        n_samples = results.get("n-samples", {}).get(suite, {}).get("effective")
        for metric, filter_name in _reported_metrics(metrics):
            stderr = metrics.get(f"{metric}_stderr,{filter_name}")
            stderr = float(stderr) if isinstance(stderr, (int, float)) and math.isfinite(stderr) else None
            is_better = higher.get(metric)
            if is_better is None:
                is_better = bool(registry_higher_is_better(metric))
            scores.append(
                SuiteScore(
                    suite=suite,
                    metric=_metric_name(metric, filter_name),
                    value=float(metrics[f"{metric},{filter_name}"]),
                    stderr=stderr,
                    higher_is_better=bool(is_better),
                    n_samples=n_samples,
                )
            )
    return scores


def sample_scores(results: dict[str, Any]) -> list[SampleScore]:
    """Every item's value of every metric its suite reports, from the harness's logged samples
    (`results["samples"][suite]`, one dict per document and filter; nothing without `log_samples`).

    Only the numbers are kept, not the prompts, responses and documents around them. A metric whose
    per-item values are not numbers (BLEU's or F1's (reference, prediction) pairs, lmms-eval's
    dicts for task-specific aggregation) is aggregated over the corpus only and has no per-item score.
    """
    items = []
    for suite, samples in results.get("samples", {}).items():
        reported = _reported_metrics(results["results"].get(suite, {}))
        filters = list(dict.fromkeys(filter_name for _, filter_name in reported))
        for filter_name, logged in _samples_by_filter(suite, samples, filters).items():
            for metric in [metric for metric, reported_filter in reported if reported_filter == filter_name]:
                for sample in logged:
                    number = _item_value(sample.get(metric), weighted=metric in WEIGHTED_METRICS)
                    if number is not None:
                        items.append(SampleScore(suite=suite, item=str(sample["doc_id"]), metric=_metric_name(metric, filter_name),
                                                 value=number[0], weight=number[1]))  # fmt: skip
    return items


def _reported_metrics(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """(metric, filter) of each numeric "<metric>,<filter>" key of one suite's results. Stderr keys
    (`acc_stderr,none`, lmms-eval's `acc_stderr_clt,none`) are not metrics of their own."""
    reported = []
    for key, value in metrics.items():
        if "," not in key or not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        metric, filter_name = key.split(",", 1)
        if not (metric.endswith("_stderr") or "_stderr_" in metric):
            reported.append((metric, filter_name))
    return reported


def _metric_name(metric: str, filter_name: str) -> str:
    return metric if filter_name == "none" else f"{metric}/{filter_name}"


def _samples_by_filter(suite: str, samples: list[dict[str, Any]], filters: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The logged samples of each filter. lm-eval names each sample's filter; lmms-eval 0.7.3 logs every
    document once per filter, filter after filter in the order of the result keys, without naming it
    (evaluator.py:1322-1392), so its samples are cut into equal runs."""
    if all("filter" in sample for sample in samples):
        by_filter: dict[str, list[dict[str, Any]]] = {}
        for sample in samples:
            by_filter.setdefault(sample["filter"], []).append(sample)
        return by_filter
    if not filters:
        return {}
    per_filter, left_over = divmod(len(samples), len(filters))
    if left_over:
        raise ValueError(f"suite {suite!r}: {len(samples)} logged samples cannot be {len(filters)} filters' ({', '.join(filters)}) documents")
    return {filter_name: samples[index * per_filter : (index + 1) * per_filter] for index, filter_name in enumerate(filters)}


def _item_value(value: Any, weighted: bool) -> tuple[float, float | None] | None:
    """(value, weight) of one logged metric value: a number, or for a weighted metric its
    (log-likelihood, weight) pair; None for anything else."""
    if weighted:
        if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(part, Real) for part in value):
            return float(value[0]), float(value[1])
        return None
    return (float(value), None) if isinstance(value, Real) else None


def write_samples(results: dict[str, Any], directory: Path) -> list[Path]:
    """What the harness logged of every document (its prompt arguments, responses, filtered responses,
    target, per-item metrics, the document itself) as one JSONL per suite, `<directory>/<suite>.jsonl`,
    a line per logged sample in the harness's order, as lm-eval's own `--log_samples` writes them."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for suite, samples in results.get("samples", {}).items():
        lines = [json.dumps(sample, default=_jsonable, ensure_ascii=False) for sample in samples]
        written.append(directory / f"{suite}.jsonl")
        write_text_atomic(written[-1], "".join(f"{line}\n" for line in lines))
    return written


def _jsonable(value: Any) -> Any:
    """JSON's fallback for what a harness logs: numpy numbers and arrays (and tensors) as numbers, sets as
    lists, anything else (an image) as its str(). lm-eval's `handle_non_serializable` does the same, but
    importing lm-eval here would put it in the cache key of every stage that reads `SampleScore`."""
    if callable(getattr(value, "tolist", None)):
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    return str(value)


def did_you_mean(unknown: Sequence[str], known: Iterable[str]) -> str:
    """"; did you mean 'my_mc'?": the closest known name to each unknown one (difflib), or "" when none is close."""
    known = list(known)
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=1)
        if close:
            hints.append(repr(close[0]) + (f" for {name!r}" if len(unknown) > 1 else ""))
    return f"; did you mean {', '.join(hints)}?" if hints else ""


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
            raise SuiteError(f"local suite {name!r} cannot be loaded by {harness}: {type(err).__name__}: {first_line(err)}") from err
        from huggingface_hub import constants

        raise SuiteError(
            f"suite {name!r} is an {harness} task whose dataset is not in the local Hugging Face cache "
            f"({constants.HF_HOME}); "
            f"run it once on a machine with network and copy the cache here ({type(err).__name__}: {first_line(err)})"
        ) from err
