"""Leaderboard: the latest run of each (model, method), every metric next to its retention vs dense.

A method is its identity (`runs.method_id`: every parameter of its spec), never its label: two
SparseGPT block sizes are two rows. Retention is the score a method keeps relative to the dense model
on the same benchmark; for lower-is-better metrics (perplexity) it is dense / value, so 1.0 means "as
good as dense" and less means worse either way. Mean retention, the headline number (INTERLACE, arXiv
2511.19676), averages it over the primary metric of each suite only (`evals.suites.primary`): one
number per suite, whatever views of it the suite also reports.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from reports.store import ResultStore
from reports.tables import MISSING, markdown_table, number, percent, text_table

DENSE = "dense"  # the method name of the unpruned baseline


class LeaderboardRow(BaseModel):
    """One metric of the latest run of one (model, method identity)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    method: str  # the run's method label, e.g. "sparsegpt 50% (blocksize=32)"
    method_name: str  # e.g. "sparsegpt"
    method_id: str  # what the row is keyed on
    method_params: dict[str, Any]  # every parameter of the method
    experiment: str
    target_weight_sparsity: float | None  # None for layer dropping (see reports.records.RunRecord)
    achieved_weight_sparsity: float | None
    target_drop_ratio: float | None  # None for weight pruning and dense
    layers_dropped: int | None
    layers_total: int | None
    params_pruned_share: float | None
    suite: str
    metric: str
    value: float
    stderr: float | None
    higher_is_better: bool
    is_primary: bool  # the suite's primary metric: the one mean retention averages
    retention: float | None  # vs the latest dense run of the same model; None without one
    mean_retention: float | None  # the run's mean over its primary metrics (`mean_retention`)
    run_id: str
    finished_at: datetime


# Latest run per (model, method identity), and the latest dense run per model as the baseline; both
# chosen among the runs the filters keep, so a leaderboard of one experiment compares within it.
_LEADERBOARD_SQL = """
WITH scoped AS (
    SELECT * FROM runs
    WHERE ($model IS NULL OR model = $model) AND ($experiment IS NULL OR experiment = $experiment)
),
latest AS (
    SELECT * FROM scoped
    QUALIFY row_number() OVER (PARTITION BY model, method_id ORDER BY finished_at DESC, run_id DESC) = 1
),
baseline AS (
    SELECT model, run_id FROM scoped WHERE method = $dense
    QUALIFY row_number() OVER (PARTITION BY model ORDER BY finished_at DESC, run_id DESC) = 1
)
SELECT l.model, l.method_label AS method, l.method AS method_name, l.method_id, l.method_params, l.experiment,
       l.target_weight_sparsity, l.achieved_weight_sparsity, l.target_drop_ratio, l.layers_dropped, l.layers_total,
       l.params_pruned_share, r.suite, r.metric, r.value, r.stderr, r.higher_is_better, r.is_primary,
       d.value AS dense_value, l.run_id, l.finished_at
FROM latest l
JOIN results r ON r.run_id = l.run_id
LEFT JOIN baseline b ON b.model = l.model
LEFT JOIN results d ON d.run_id = b.run_id AND d.suite = r.suite AND d.metric = r.metric
ORDER BY l.model, l.method <> $dense, l.method_label, l.method_id, r.suite, r.metric
"""


def leaderboard(store: ResultStore, model: str | None = None, experiment: str | None = None) -> list[LeaderboardRow]:
    """One row per (model, method identity, suite, metric) of the latest run, dense runs first."""
    rows = []
    for entry in store.query(_LEADERBOARD_SQL, {"model": model, "experiment": experiment, "dense": DENSE}):
        entry["retention"] = retention(entry["value"], entry.pop("dense_value"), entry["higher_is_better"])
        entry["method_params"] = json.loads(entry["method_params"])
        rows.append(LeaderboardRow(**entry, mean_retention=None))
    by_run: dict[str, list[LeaderboardRow]] = {}
    for row in rows:
        by_run.setdefault(row.run_id, []).append(row)
    means = {run_id: mean_retention(results).value for run_id, results in by_run.items()}
    return [row.model_copy(update={"mean_retention": means[row.run_id]}) for row in rows]


def retention(value: float, dense_value: float | None, higher_is_better: bool) -> float | None:
    """value / dense (higher is better) or dense / value (lower is better); None when undefined."""
    if dense_value is None:
        return None
    numerator, denominator = (value, dense_value) if higher_is_better else (dense_value, value)
    if denominator == 0 or math.isnan(numerator) or math.isnan(denominator):
        return None
    ratio = numerator / denominator
    return None if math.isnan(ratio) else ratio  # inf / inf


@dataclass(frozen=True)
class MeanRetention:
    value: float | None  # None when no primary metric has a dense baseline
    n_metrics: int  # primary metrics the mean is over (those with a retention)
    n_primary: int  # primary metrics among the results given


def mean_retention(results: Iterable[LeaderboardRow]) -> MeanRetention:
    """The one definition of mean retention, for every report: the mean of the retentions of one run's
    primary metrics (one per suite); the other metrics are views or parts of those and do not count."""
    primary = [result for result in results if result.is_primary]
    retentions = [result.retention for result in primary if result.retention is not None]
    return MeanRetention(sum(retentions) / len(retentions) if retentions else None, len(retentions), len(primary))


# -- rendering ---------------------------------------------------------------------------------


def to_json(rows: Sequence[LeaderboardRow]) -> str:
    """A JSON list of row objects. Non-finite numbers (a diverged perplexity) become null: strict
    JSON has no Infinity/NaN, and such a row still carries its retention (0 for an infinite ppl)."""
    objects = [
        {key: None if isinstance(value, float) and not math.isfinite(value) else value for key, value in row.items()}
        for row in (row.model_dump(mode="json") for row in rows)
    ]
    return json.dumps(objects, indent=2, ensure_ascii=False, allow_nan=False)


def to_markdown(rows: Sequence[LeaderboardRow], metrics: Collection[str] | None = None) -> str:
    """One table per model, a row per method (dense first, then by mean retention), then a legend.

    Columns are padded so the markdown also reads as a table in a terminal.
    """
    parts = []
    for table in leaderboard_tables(rows, metrics):
        parts += [f"### {table.model}", "", *markdown_table(table.header, table.body, table.right)]
        parts += [line for note in table.notes for line in ("", f"_{note}_")] + [""]
    if not parts:
        return "_no results recorded_\n"
    return "\n".join(parts) + "\n" + "  \n".join(LEGEND) + "\n"


def to_text(rows: Sequence[LeaderboardRow], metrics: Collection[str] | None = None) -> str:
    """The same tables for a terminal: plain aligned columns, no markdown punctuation."""
    parts = []
    for table in leaderboard_tables(rows, metrics):
        parts += [table.model, *text_table(table.header, table.body, table.right), *table.notes, ""]
    if not parts:
        return "no results recorded\n"
    return "\n".join([*parts, *LEGEND]) + "\n"


LEGEND = (
    "↑ higher is better, ↓ lower is better. Cells: value (retention vs dense: value / dense for ↑, "
    "dense / value for ↓; 100% = as good as dense).",
    "Columns marked * hold each suite's primary metric; mean retention averages the retention of those shown, "
    "one per suite (k/n when only k of them have a dense baseline). The other columns are views or parts of them.",
    "sparsity: achieved share of prunable-linear weights that are zero, or decoder layers dropped. params pruned: "
    "share of all the model's parameters zeroed or removed. A row is one method with all its parameters, "
    "at its latest run.",
)


@dataclass(frozen=True)
class LeaderboardTable:
    """One model's leaderboard, ready to render: cells as text, ranked, with what each cell retains."""

    model: str
    header: list[str]
    body: list[list[str]]  # one line per method, ranked
    right: list[bool]  # right-align this column (numbers)
    notes: list[str]
    retention: list[list[float | None]]  # per body cell: the retention it shows (None: not a retention)


def leaderboard_tables(rows: Sequence[LeaderboardRow], metrics: Collection[str] | None = None) -> list[LeaderboardTable]:
    """A table per model (sorted), columns per (suite, metric), methods ranked by mean retention."""
    tables = []
    for model in sorted({row.model for row in rows}):
        shown = [row for row in rows if row.model == model and _selected(row, metrics)]
        if shown:
            tables.append(_model_table(model, shown))
    return tables


def _model_table(model: str, rows: list[LeaderboardRow]) -> LeaderboardTable:
    higher_is_better = {(row.suite, row.metric): row.higher_is_better for row in rows}
    primary = {(row.suite, row.metric) for row in rows if row.is_primary}
    columns = sorted(higher_is_better)
    by_method: dict[str, dict[tuple[str, str], LeaderboardRow]] = {}
    for row in rows:
        by_method.setdefault(row.method_id, {})[(row.suite, row.metric)] = row
    labels = distinct_names({method_id: next(iter(cells.values())).method for method_id, cells in by_method.items()})
    ranked = []
    for method_id, cells in by_method.items():
        first = next(iter(cells.values()))
        mean = mean_retention(cells.values())
        mean_cell = MISSING if mean.value is None else percent(mean.value)
        if 0 < mean.n_metrics < mean.n_primary:
            mean_cell += f" ({mean.n_metrics}/{mean.n_primary})"
        shared = MISSING if first.params_pruned_share is None else percent(first.params_pruned_share)
        line = [labels[method_id], pruned_cell(first), shared, *(_cell(cells.get(column)) for column in columns), mean_cell]
        shown = [None, None, None, *(cells[column].retention if column in cells else None for column in columns), mean.value]
        rank = (first.method_name != DENSE, mean.value is None, -(mean.value or 0.0), labels[method_id])
        ranked.append((rank, line, shown))
    arrows = [f"{' '.join(column)} {'↑' if higher_is_better[column] else '↓'}{' *' if column in primary else ''}" for column in columns]
    has_dense = any(row.method_name == DENSE for row in rows)
    ranked.sort(key=lambda entry: entry[0])
    return LeaderboardTable(
        model=model,
        header=["method", "sparsity", "params pruned", *arrows, "mean retention"],
        body=[line for _, line, _ in ranked],
        right=[False] + [True] * (len(columns) + 3),
        notes=[] if has_dense else [f"no dense run of {model}, so no retention"],
        retention=[shown for _, _, shown in ranked],
    )


def distinct_names(names: Mapping[str, str]) -> dict[str, str]:
    """identity -> the name to show: its name, followed by the start of the identity where several
    identities share a name (runs of older configs, or of two experiments, under one label)."""
    shared = Counter(names.values())
    return {identity: name if shared[name] == 1 else f"{name} (id {identity[:6]})" for identity, name in names.items()}


def pruned_cell(row: LeaderboardRow) -> str:
    """What the method took out, in its own unit: the weight sparsity it achieved, or the layers it dropped."""
    if row.layers_dropped is not None:
        of_total = "" if row.layers_total is None else f"/{row.layers_total}"
        return f"{row.layers_dropped}{of_total} layers"
    if row.target_drop_ratio is not None:
        return f"{percent(row.target_drop_ratio)} of layers"
    return MISSING if row.achieved_weight_sparsity is None else percent(row.achieved_weight_sparsity)


def _selected(row: LeaderboardRow, metrics: Collection[str] | None) -> bool:
    """A metrics filter entry names a suite, a metric, or one "suite/metric"."""
    return metrics is None or bool({row.suite, row.metric, f"{row.suite}/{row.metric}"} & set(metrics))


def _cell(row: LeaderboardRow | None) -> str:
    if row is None:
        return MISSING
    if row.retention is None:
        return number(row.value)
    return f"{number(row.value)} ({row.retention:.0%})"

