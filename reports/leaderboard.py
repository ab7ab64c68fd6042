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
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pruning.specs import distinct_tail
from reports.statistics import MIN_ITEMS, across_seeds, aggregation, column_statistics, item_scores
from reports.store import ResultStore
from reports.tables import MISSING, markdown_table, number, percent, text_table

DENSE = "dense"  # the method name of the unpruned baseline


class LeaderboardRow(BaseModel):
    """One metric of the latest run of one (model, method identity)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str  # the model's label, with what tells it from another model of the same label recorded here
    model_id: str | None  # pruning.specs.model_identity (None for runs recorded before schema 7)
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
    # Statistics from the per-item scores (reports.statistics); None for runs recorded without them.
    n_items: int | None = None
    low: float | None = None  # the value's 95% percentile-bootstrap interval over the suite's items
    high: float | None = None
    retention_low: float | None = None  # retention's 95% interval, items resampled jointly with dense's
    retention_high: float | None = None
    # Against the best non-dense method of this (model, suite, metric): the best itself, tied with it
    # (paired test, Holm-corrected over the methods compared), or worse. None for dense and unpaired runs.
    versus_best: Literal["best", "tied", "worse"] | None = None
    # Calibration seeds: the method's runs in its latest flow run, one per seed (the row shows the
    # lowest); this metric in each, in seed order. One entry for a method run with one seed.
    seeds: list[int] = Field(default_factory=list)
    seed_values: list[float] = Field(default_factory=list)


# `model` is, from `scoped` on, the model's label in this leaderboard (`model_labels`): one per model
# identity, so every partition by it is a partition by model. Only the models in $keys are kept.
_SCOPED_RUNS = """
    SELECT r.* REPLACE (l.label AS model)
    FROM (SELECT *, coalesce(model_id, 'source:' || model_source) AS model_key FROM runs) r
    JOIN (SELECT unnest($keys) AS model_key, unnest($labels) AS label) l USING (model_key)
    WHERE $experiment IS NULL OR experiment = $experiment
"""
# One row per model identity (runs before schema 7: per source), as its latest run recorded it.
_MODELS_SQL = """
SELECT coalesce(model_id, 'source:' || model_source) AS key, model AS label, model_source AS source,
       model_dtype AS dtype, model_device AS device, model_id
FROM runs
WHERE $experiment IS NULL OR experiment = $experiment
QUALIFY row_number() OVER (PARTITION BY key ORDER BY finished_at DESC, run_id DESC) = 1
"""
# Per (model, method identity): its latest flow run, and in it one run per calibration seed (the latest
# of each); the row shows the lowest seed's run, and lists the metric over all of them. The latest
# dense run per model is the baseline. All chosen among the runs the filters keep, so a leaderboard of
# one experiment compares within it.
_LEADERBOARD_SQL = f"""
WITH scoped AS ({_SCOPED_RUNS}),
latest_flow AS (
    SELECT model, method_id, flow_run_id FROM scoped
    QUALIFY row_number() OVER (PARTITION BY model, method_id ORDER BY finished_at DESC, run_id DESC) = 1
),
seeded AS (
    SELECT s.* FROM scoped s JOIN latest_flow f USING (model, method_id, flow_run_id)
    QUALIFY row_number() OVER (PARTITION BY s.model, s.method_id, s.seed ORDER BY s.finished_at DESC, s.run_id DESC) = 1
),
latest AS (
    SELECT * FROM seeded
    QUALIFY row_number() OVER (PARTITION BY model, method_id ORDER BY seed, run_id) = 1
),
spread AS (
    SELECT s.model, s.method_id, r.suite, r.metric, list(s.seed ORDER BY s.seed) AS seeds,
           list(r.value ORDER BY s.seed) AS seed_values
    FROM seeded s JOIN results r ON r.run_id = s.run_id
    GROUP BY s.model, s.method_id, r.suite, r.metric
),
baseline AS (
    SELECT model, run_id FROM scoped WHERE method = $dense
    QUALIFY row_number() OVER (PARTITION BY model ORDER BY finished_at DESC, run_id DESC) = 1
)
SELECT l.model, l.model_id, l.method_label AS method, l.method AS method_name, l.method_id, l.method_params, l.experiment,
       l.target_weight_sparsity, l.achieved_weight_sparsity, l.target_drop_ratio, l.layers_dropped, l.layers_total,
       l.params_pruned_share, r.suite, r.metric, r.value, r.stderr, r.higher_is_better, r.is_primary,
       d.value AS dense_value, b.run_id AS dense_run_id, l.run_id, l.finished_at, sp.seeds, sp.seed_values
FROM latest l
JOIN results r ON r.run_id = l.run_id
JOIN spread sp ON sp.model = l.model AND sp.method_id = l.method_id AND sp.suite = r.suite AND sp.metric = r.metric
LEFT JOIN baseline b ON b.model = l.model
LEFT JOIN results d ON d.run_id = b.run_id AND d.suite = r.suite AND d.metric = r.metric
ORDER BY l.model, l.method <> $dense, l.method_label, l.method_id, r.suite, r.metric
"""


def leaderboard(store: ResultStore, model: str | None = None, experiment: str | None = None, *,
                statistics: bool = True) -> list[LeaderboardRow]:  # fmt: skip
    """One row per (model, method identity, suite, metric) of the latest run, dense runs first; with
    `statistics`, each value's interval, retention's paired interval and ties with the best method from
    the per-item scores (`with_statistics`)."""
    rows, dense_runs = [], {}
    models = [RecordedModel(**entry) for entry in store.query(_MODELS_SQL, {"experiment": experiment})]
    recorded = {entry.key: entry.label for entry in models}
    labels = {key: label for key, label in model_labels(models).items() if model is None or model in (label, recorded[key])}
    shown = {"keys": list(labels), "labels": list(labels.values())}
    for entry in store.query(_LEADERBOARD_SQL, {"experiment": experiment, **shown, "dense": DENSE}):
        entry["retention"] = retention(entry["value"], entry.pop("dense_value"), entry["higher_is_better"])
        entry["method_params"] = json.loads(entry["method_params"])
        dense_runs[entry["model"]] = entry.pop("dense_run_id")
        rows.append(LeaderboardRow(**entry, mean_retention=None))
    by_run: dict[str, list[LeaderboardRow]] = {}
    for row in rows:
        by_run.setdefault(row.run_id, []).append(row)
    means = {run_id: mean_retention(results).value for run_id, results in by_run.items()}
    rows = [row.model_copy(update={"mean_retention": means[row.run_id]}) for row in rows]
    return with_statistics(store, rows, dense_runs) if statistics else rows


@dataclass(frozen=True)
class RecordedModel:
    """A model as its runs recorded it: `key` is its identity (`model_id`, or for runs before schema 7
    its source), `label` the label its experiment gave it."""

    key: str
    label: str
    source: str
    dtype: str | None
    device: str | None
    model_id: str | None


def model_labels(models: Sequence[RecordedModel]) -> dict[str, str]:
    """key -> the label to show: the recorded label, and where different models share it (two
    experiments' `llama-7b`, a float32 and a bfloat16 study in two configs), what differs in parentheses:
    the end of the path, the dtype, the device, else the model id (the same path, its files changed)."""
    groups: dict[str, list[RecordedModel]] = {}
    for entry in models:
        groups.setdefault(entry.label, []).append(entry)
    labels = {}
    for label, members in groups.items():
        if len(members) == 1:
            labels[members[0].key] = label
            continue
        sources = [member.source for member in members]
        identified = [member for member in members if member.model_id is not None]
        named = {}
        for member in members:
            shown = [distinct_tail(member.source, sources)] if len(set(sources)) > 1 else []
            if member.model_id is None:
                shown.append("recorded before model ids")
            else:
                shown += [f"{field}={getattr(member, field)}" for field in ("dtype", "device")
                          if len({getattr(other, field) for other in identified}) > 1]  # fmt: skip
            named[member.key] = shown
        counts = Counter(tuple(shown) for shown in named.values())
        for member in members:
            shown = named[member.key]
            if counts[tuple(shown)] > 1:  # the same source, dtype and device: its files changed
                shown = [*shown, f"model {member.model_id[:8]}"]
            labels[member.key] = f"{label} ({', '.join(shown)})"
    return labels


def with_statistics(store: ResultStore, rows: Sequence[LeaderboardRow], dense_runs: Mapping[str, str | None]) -> list[LeaderboardRow]:
    """The rows with what their runs' per-item scores say (reports.statistics): each value's 95%
    percentile-bootstrap interval; retention's, dense's items resampled jointly (the same items, so
    what both get right or wrong alike cancels out); and, per (model, suite, metric), the best
    non-dense method and which others are statistically tied with it (paired tests, Holm-corrected).
    Rows whose run has no per-item scores (recorded before schema 6) are left as they are."""
    items = store.item_values({row.run_id for row in rows} | {run for run in dense_runs.values() if run})
    columns: dict[tuple[str, str, str], list[LeaderboardRow]] = {}
    for row in rows:
        columns.setdefault((row.model, row.suite, row.metric), []).append(row)
    updates: dict[tuple[str, str, str], dict[str, Any]] = {}
    for (model, suite, metric), column in columns.items():
        updates |= {(run_id, suite, metric): update for run_id, update in _column_statistics(column, items, dense_runs.get(model)).items()}
    return [row.model_copy(update=updates.get((row.run_id, row.suite, row.metric), {})) for row in rows]


def _column_statistics(column: list[LeaderboardRow], items: dict, dense_run: str | None) -> dict[str, dict[str, Any]]:
    """run_id -> the statistics fields of its row, for one (model, suite, metric). The runs scored on the
    dense run's items (or, without them, on the first scored run's) share one paired bootstrap; a run
    scored on other items gets its own interval, and neither a retention interval nor a tie."""
    suite, metric = column[0].suite, column[0].metric
    by_run = {row.run_id: row for row in column}
    scored = {run: items[(run, suite, metric)] for run in by_run if items.get((run, suite, metric))}
    dense_items = items.get((dense_run, suite, metric))
    if dense_items:
        scored = {dense_run: dense_items, **scored}  # the baseline, also when the filters left its rows out
    if not scored:
        return {}
    reference = next(iter(scored.values())).keys()
    groups = [[run for run, own in scored.items() if own.keys() == reference]]
    groups += [[run] for run, own in scored.items() if own.keys() != reference]
    updates: dict[str, dict[str, Any]] = {}
    for runs in groups:
        if len(scored[runs[0]]) < MIN_ITEMS:
            continue
        dense = dense_run if dense_run in runs and len(runs) > 1 else None
        contenders = [run for run in runs if run != dense_run and not math.isnan(by_run[run].value)]
        best = max(contenders, key=lambda run: _oriented(by_run[run])) if len(contenders) > 1 else None
        compared = [run for run in runs if run == dense or best is None or run in contenders]
        statistics = column_statistics({run: item_scores(scored[run]) for run in compared}, aggregation(metric), dense=dense, best=best)
        for run in compared:
            if run not in by_run:
                continue
            interval, kept = statistics.intervals[run], statistics.retention.get(run)
            update: dict[str, Any] = dict(n_items=interval.n_items, low=interval.low, high=interval.high)
            if kept is not None and by_run[run].retention is not None and math.isfinite(kept.low) and math.isfinite(kept.high):
                update |= dict(retention_low=kept.low, retention_high=kept.high)
            if statistics.ties is not None and run != dense_run:
                ties = statistics.ties
                update["versus_best"] = "best" if run == best else "tied" if run in ties.tied else "worse"
            updates[run] = update
    return updates


def _oriented(row: LeaderboardRow) -> float:
    return row.value if row.higher_is_better else -row.value


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
    def finite(value: Any) -> Any:
        if isinstance(value, list):
            return [finite(entry) for entry in value]
        return None if isinstance(value, float) and not math.isfinite(value) else value

    objects = [{key: finite(value) for key, value in row.model_dump(mode="json").items()} for row in rows]
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
    return "\n".join(parts) + "\n" + "  \n".join(legend(rows)) + "\n"


def to_text(rows: Sequence[LeaderboardRow], metrics: Collection[str] | None = None) -> str:
    """The same tables for a terminal: plain aligned columns, no markdown punctuation."""
    parts = []
    for table in leaderboard_tables(rows, metrics):
        parts += [table.model, *text_table(table.header, table.body, table.right), *table.notes, ""]
    if not parts:
        return "no results recorded\n"
    return "\n".join([*parts, *legend(rows)]) + "\n"


LEGEND = (
    "↑ higher is better, ↓ lower is better. Cells: value [95% interval] (retention vs dense: value / dense for ↑, "
    "dense / value for ↓; 100% = as good as dense [95% interval]).",
    "Columns marked * hold each suite's primary metric; mean retention averages the retention of those shown, "
    "one per suite (k/n when only k of them have a dense baseline). The other columns are views or parts of them.",
    "sparsity: achieved share of prunable-linear weights that are zero, or decoder layers dropped. params pruned: "
    "share of all the model's parameters zeroed or removed. A row is one method with all its parameters, "
    "at its latest run.",
)
INTERVAL_LEGEND = (
    "Intervals: percentile bootstrap over the suite's items (2,000 resamples, seeded); retention's resamples the same "
    "items for the method and dense (paired). ▲ the best non-dense method of the column; ≈ not significantly different "
    "from it (McNemar's exact test for accuracy, the paired bootstrap otherwise; Holm-corrected, 5%). "
    "Runs recorded without per-item scores show no interval.",
)
SEED_LEGEND = (
    "k seeds m ± s: the mean and standard deviation of the value over the method's calibration seeds (the cell shows "
    "the lowest seed's run).",
)


def legend(rows: Sequence[LeaderboardRow]) -> tuple[str, ...]:
    """The legend lines that apply to these rows: intervals and seeds only where some row has them."""
    lines = LEGEND
    if any(row.low is not None for row in rows):
        lines += INTERVAL_LEGEND
    if any(len(row.seed_values) > 1 for row in rows):
        lines += SEED_LEGEND
    return lines


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
    """value [95% interval] (retention [its paired interval]), ▲ best / ≈ tied with it, seeds' mean ± sd."""
    if row is None:
        return MISSING
    text = number(row.value)
    if row.low is not None and row.high is not None:
        text += f" [{number(row.low)}–{number(row.high)}]"
    if row.retention is not None:
        text += f" ({row.retention:.1%}"
        if row.retention_low is not None and row.retention_high is not None:
            text += f" [{100 * row.retention_low:.1f}–{100 * row.retention_high:.1f}]"
        text += ")"
    text += {"best": " ▲", "tied": " ≈"}.get(row.versus_best or "", "")
    if len(row.seed_values) > 1:
        spread = across_seeds(row.seed_values)
        text += f"; {spread.n_seeds} seeds {number(spread.mean)} ± {number(spread.sd)}"
    return text
