"""Leaderboard: the latest run of each (model, method), every metric next to its retention vs dense.

Retention is the score a method keeps relative to the dense model on the same benchmark, averaged
over benchmarks for a headline number (INTERLACE, arXiv 2511.19676). For lower-is-better metrics
(perplexity) it is dense / value, so 1.0 means "as good as dense" and less means worse either way.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, ConfigDict

from reports.store import ResultStore
from reports.tables import MISSING, markdown_table, number, percent, text_table

DENSE = "dense"  # the method name of the unpruned baseline


class LeaderboardRow(BaseModel):
    """One metric of the latest run of one (model, method label)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    method: str  # the method label, e.g. "wanda 2:4"
    method_name: str  # e.g. "wanda"
    experiment: str
    sparsity: float  # target
    achieved_sparsity: float
    suite: str
    metric: str
    value: float
    stderr: float | None
    higher_is_better: bool
    retention: float | None  # vs the latest dense run of the same model; None without one
    run_id: str
    finished_at: datetime


# Latest run per (model, method_label), and the latest dense run per model as the baseline; both
# chosen among the runs the filters keep, so a leaderboard of one experiment compares within it.
_LEADERBOARD_SQL = """
WITH scoped AS (
    SELECT * FROM runs
    WHERE ($model IS NULL OR model = $model) AND ($experiment IS NULL OR experiment = $experiment)
),
latest AS (
    SELECT * FROM scoped
    QUALIFY row_number() OVER (PARTITION BY model, method_label ORDER BY finished_at DESC, run_id DESC) = 1
),
baseline AS (
    SELECT model, run_id FROM scoped WHERE method = $dense
    QUALIFY row_number() OVER (PARTITION BY model ORDER BY finished_at DESC, run_id DESC) = 1
)
SELECT l.model, l.method_label AS method, l.method AS method_name, l.experiment,
       l.target_sparsity AS sparsity, l.achieved_sparsity, r.suite, r.metric, r.value, r.stderr,
       r.higher_is_better, d.value AS dense_value, l.run_id, l.finished_at
FROM latest l
JOIN results r ON r.run_id = l.run_id
LEFT JOIN baseline b ON b.model = l.model
LEFT JOIN results d ON d.run_id = b.run_id AND d.suite = r.suite AND d.metric = r.metric
ORDER BY l.model, l.method <> $dense, l.method_label, r.suite, r.metric
"""


def leaderboard(store: ResultStore, model: str | None = None, experiment: str | None = None) -> list[LeaderboardRow]:
    """One row per (model, method label, suite, metric) of the latest run, dense runs first."""
    rows = []
    for row in store.query(_LEADERBOARD_SQL, {"model": model, "experiment": experiment, "dense": DENSE}):
        dense_value = row.pop("dense_value")
        rows.append(LeaderboardRow(**row, retention=retention(row["value"], dense_value, row["higher_is_better"])))
    return rows


def retention(value: float, dense_value: float | None, higher_is_better: bool) -> float | None:
    """value / dense (higher is better) or dense / value (lower is better); None when undefined."""
    if dense_value is None:
        return None
    numerator, denominator = (value, dense_value) if higher_is_better else (dense_value, value)
    if denominator == 0 or math.isnan(numerator) or math.isnan(denominator):
        return None
    ratio = numerator / denominator
    return None if math.isnan(ratio) else ratio  # inf / inf


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
    "sparsity: achieved fraction of prunable weights that are zero. mean retention: average over the "
    "columns shown (k/n when only k of them have a dense baseline). Each method's latest run.",
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
    columns = sorted(higher_is_better)
    by_method: dict[str, dict[tuple[str, str], LeaderboardRow]] = {}
    for row in rows:
        by_method.setdefault(row.method, {})[(row.suite, row.metric)] = row
    ranked = []
    for method, cells in by_method.items():
        first = next(iter(cells.values()))
        retentions = [cell.retention for cell in cells.values() if cell.retention is not None]
        mean = sum(retentions) / len(retentions) if retentions else None
        mean_cell = MISSING if mean is None else percent(mean)
        if 0 < len(retentions) < len(columns):
            mean_cell += f" ({len(retentions)}/{len(columns)})"
        line = [method, percent(first.achieved_sparsity), *(_cell(cells.get(column)) for column in columns), mean_cell]
        shown = [None, None, *(cells[column].retention if column in cells else None for column in columns), mean]
        ranked.append(((first.method_name != DENSE, mean is None, -(mean or 0.0), method), line, shown))
    arrows = [f"{suite} {metric} {'↑' if higher_is_better[(suite, metric)] else '↓'}" for suite, metric in columns]
    has_dense = any(row.method_name == DENSE for row in rows)
    ranked.sort(key=lambda entry: entry[0])
    return LeaderboardTable(
        model=model,
        header=["method", "sparsity", *arrows, "mean retention"],
        body=[line for _, line, _ in ranked],
        right=[False] + [True] * (len(columns) + 2),
        notes=[] if has_dense else [f"no dense run of {model}, so no retention"],
        retention=[shown for _, _, shown in ranked],
    )


def _selected(row: LeaderboardRow, metrics: Collection[str] | None) -> bool:
    """A metrics filter entry names a suite, a metric, or one "suite/metric"."""
    return metrics is None or bool({row.suite, row.metric, f"{row.suite}/{row.metric}"} & set(metrics))


def _cell(row: LeaderboardRow | None) -> str:
    if row is None:
        return MISSING
    if row.retention is None:
        return number(row.value)
    return f"{number(row.value)} ({row.retention:.0%})"

