"""What a report shows, read from the store in one pass: the leaderboard, retention curves, per-block
allocations, layer-redundancy matrices and stage costs. Renderers (reports/html.py,
reports/markdown.py) turn a `ReportSections` into a page without touching the database.

Every section covers the leaderboard's runs: the latest run of each (model, method identity).

How a run lands on a curve: a layer-drop run (one with a `target_drop_ratio`) is drawn against that
ratio, any other non-dense run against its target weight sparsity, at its mean retention
(`reports.leaderboard.mean_retention`). Runs whose method parameters (`runs.method_params`) are equal
but for that ratio (`drop_ratio`, `sparsity`) form one line, keyed on the identity of the rest
(`series_id`); the line is named after its runs' labels without the ratio ("wanda 50%" and "wanda
60%" are the line "wanda"; "interlace 25% no-ft" is on "interlace no-ft").
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime

from pydantic import BaseModel, ConfigDict

from pruning.specs import method_identity
from reports.leaderboard import DENSE, LeaderboardRow, distinct_names, leaderboard, mean_retention
from reports.store import ResultStore

# the pipeline's stages in the order they run; others follow alphabetically
STAGE_ORDER = ("train", "model", "calibration", "scores", "redundancy", "sleb", "prune", "drop", "finetune", "evaluate")
_RATIO_IN_LABEL = re.compile(r"\s*\b\d+(?:\.\d+)?%")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CurvePoint(Section):
    x: float  # target weight sparsity or drop ratio, a fraction
    retention: float  # mean retention vs dense over the run's primary metrics
    n_metrics: int  # how many metrics the mean is over
    method: str  # the run's method label
    run_id: str


class Curve(Section):
    """One line of a retention chart: one method's runs at several ratios, sorted by x."""

    model: str
    series: str  # display name, from the labels
    series_id: str  # identity of the method parameters but the ratio: what the line is keyed on
    points: list[CurvePoint]


class BlockAllocation(Section):
    """A block's sparsity, parameter-weighted over its prunable layers."""

    modality: str
    block: int
    n_params: int
    target_sparsity: float
    achieved_sparsity: float
    block_score: float | None


class AllocationProfile(Section):
    model: str
    method: str
    run_id: str
    target_sparsity: float  # the run's overall target: weight sparsity, or share of layers to drop
    blocks: list[BlockAllocation]  # by modality (as recorded), then block


class RedundancyMap(Section):
    """A square matrix of similarities between hidden states h_0..h_L; None where unrecorded."""

    model: str
    method: str  # the run's method label
    selector: str  # the layer-drop method that recorded it
    kind: str
    run_id: str
    values: list[list[float | None]]


class StageCost(Section):
    stage: str
    wall_s: float
    peak_rss_gb: float | None
    peak_gpu_gb: float | None
    cached: bool


class RunCosts(Section):
    model: str
    method: str
    run_id: str
    stages: list[StageCost]  # in pipeline order


class ReportSections(Section):
    generated_at: datetime
    leaderboard: list[LeaderboardRow]
    sparsity_curves: list[Curve]
    drop_ratio_curves: list[Curve]
    allocations: list[AllocationProfile]
    redundancy: list[RedundancyMap]
    costs: list[RunCosts]

    @property
    def is_empty(self) -> bool:
        return not self.leaderboard


def report_sections(
    store: ResultStore, model: str | None = None, experiment: str | None = None, *, generated_at: datetime | None = None
) -> ReportSections:
    """Everything a report shows for the latest run of each (model, method identity) the filters keep."""
    rows = leaderboard(store, model=model, experiment=experiment)
    runs = {row.run_id: row for row in rows}  # one row per run is enough for its model/label/target
    run_ids = sorted(runs)
    sparsity_curves, drop_ratio_curves = _curves(rows)
    return ReportSections(
        generated_at=generated_at or datetime.now().astimezone(),
        leaderboard=rows,
        sparsity_curves=sparsity_curves,
        drop_ratio_curves=drop_ratio_curves,
        allocations=_allocations(store, runs, run_ids),
        redundancy=_redundancy(store, runs, run_ids),
        costs=_costs(store, runs, run_ids),
    )


def series_label(method_label: str) -> str:
    """A method label without its ratio: the display name of the line its runs draw together."""
    return " ".join(_RATIO_IN_LABEL.sub("", method_label).split()) or method_label


def series_id(method_params: dict, ratio_field: str) -> str:
    """The identity of a method's parameters but its ratio: equal for the runs of one line."""
    return method_identity({key: value for key, value in method_params.items() if key != ratio_field})


def _curves(rows: list[LeaderboardRow]) -> tuple[list[Curve], list[Curve]]:
    """(sparsity curves, drop-ratio curves), each by model, then by name."""
    by_run: dict[str, list[LeaderboardRow]] = defaultdict(list)
    for row in rows:
        by_run[row.run_id].append(row)
    # (layer dropping?, model) -> series_id -> points
    charts: dict[tuple[bool, str], dict[str, list[CurvePoint]]] = defaultdict(lambda: defaultdict(list))
    for run_id, results in by_run.items():
        row = results[0]
        dropping = row.target_drop_ratio is not None
        x = row.target_drop_ratio if dropping else row.target_weight_sparsity
        mean = mean_retention(results)
        if row.method_name == DENSE or x is None or mean.value is None:
            continue
        line = series_id(row.method_params, "drop_ratio" if dropping else "sparsity")
        charts[(dropping, row.model)][line].append(
            CurvePoint(x=x, retention=mean.value, n_metrics=mean.n_metrics, method=row.method, run_id=run_id)
        )
    curves: tuple[list[Curve], list[Curve]] = ([], [])
    for (dropping, model), lines in sorted(charts.items()):
        for line, points in lines.items():
            points.sort(key=lambda point: (point.x, point.method))
        names = distinct_names({line: series_label(points[0].method) for line, points in lines.items()})
        chart = [Curve(model=model, series=names[line], series_id=line, points=points) for line, points in lines.items()]
        curves[dropping].extend(sorted(chart, key=lambda curve: curve.series))
    return curves


def _allocations(store: ResultStore, runs: dict[str, LeaderboardRow], run_ids: list[str]) -> list[AllocationProfile]:
    """Per-block sparsity of the runs whose blocks were not all given the same target: OWL and ECoFLaP,
    and layer-drop runs (the flow records a dropped layer as a block of sparsity 1)."""
    blocks = _rows_of(
        store,
        "allocations",
        """run_id, modality, block, sum(n_params) AS n_params,
           sum(target_sparsity * n_params) / nullif(sum(n_params), 0) AS target_sparsity,
           sum(achieved_sparsity * n_params) / nullif(sum(n_params), 0) AS achieved_sparsity,
           max(block_score) AS block_score""",
        run_ids,
        group_by="run_id, modality, block",
        order_by="run_id, modality DESC, block",  # vision before language, as the model runs them
    )
    by_run: dict[str, list[BlockAllocation]] = defaultdict(list)
    for entry in blocks:
        run_id = entry.pop("run_id")
        entry["target_sparsity"] = entry["target_sparsity"] or 0.0
        entry["achieved_sparsity"] = entry["achieved_sparsity"] or 0.0
        by_run[run_id].append(BlockAllocation(**entry))
    profiles = []
    for run_id, allocation in by_run.items():
        targets = [block.target_sparsity for block in allocation]
        if max(targets) - min(targets) <= 1e-9:  # uniform: one number says it all (the leaderboard's)
            continue
        row = runs[run_id]
        target = row.target_weight_sparsity if row.target_drop_ratio is None else row.target_drop_ratio
        profiles.append(AllocationProfile(model=row.model, method=row.method, run_id=run_id,
                                          target_sparsity=target or 0.0, blocks=allocation))  # fmt: skip
    return sorted(profiles, key=lambda profile: (profile.model, profile.method))


def _redundancy(store: ResultStore, runs: dict[str, LeaderboardRow], run_ids: list[str]) -> list[RedundancyMap]:
    cells = _rows_of(store, "redundancy", "run_id, method, kind, i, j, value", run_ids)
    grouped: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for cell in cells:
        grouped[(cell["run_id"], cell["method"], cell["kind"])].append(cell)
    maps = []
    for (run_id, selector, kind), entries in grouped.items():
        size = 1 + max(max(entry["i"], entry["j"]) for entry in entries)
        values: list[list[float | None]] = [[None] * size for _ in range(size)]
        for entry in entries:
            values[entry["i"]][entry["j"]] = entry["value"]
        row = runs[run_id]
        maps.append(RedundancyMap(model=row.model, method=row.method, selector=selector, kind=kind, run_id=run_id,
                                  values=values))  # fmt: skip
    return sorted(maps, key=lambda m: (m.model, m.method, m.selector, m.kind))


def _costs(store: ResultStore, runs: dict[str, LeaderboardRow], run_ids: list[str]) -> list[RunCosts]:
    stages = _rows_of(store, "stages", "run_id, stage, wall_s, peak_rss_gb, peak_gpu_gb, cached", run_ids)
    by_run: dict[str, list[StageCost]] = defaultdict(list)
    for entry in stages:
        by_run[entry.pop("run_id")].append(StageCost(**entry))
    costs = []
    for run_id, run_stages in by_run.items():
        row = runs[run_id]
        costs.append(RunCosts(model=row.model, method=row.method, run_id=run_id,
                              stages=sorted(run_stages, key=lambda s: stage_rank(s.stage))))  # fmt: skip
    dense_first = {row.run_id: row.method_name != DENSE for row in runs.values()}
    return sorted(costs, key=lambda c: (c.model, dense_first[c.run_id], c.method))


def stage_rank(stage: str) -> tuple[int, str]:
    return (STAGE_ORDER.index(stage), "") if stage in STAGE_ORDER else (len(STAGE_ORDER), stage)


def _rows_of(
    store: ResultStore,
    table: str,
    columns: str,
    run_ids: Iterable[str],
    *,
    group_by: str | None = None,
    order_by: str | None = None,
) -> list[dict]:
    """Rows of one of our tables for the given runs, in one query (the run ids travel as one list
    parameter; `IN (SELECT unnest(...))` is a hash join, fast for thousands of runs)."""
    run_ids = list(run_ids)
    if not run_ids:
        return []
    sql = f"SELECT {columns} FROM {table} WHERE run_id IN (SELECT unnest($run_ids))"
    if group_by:
        sql += f" GROUP BY {group_by}"
    if order_by:
        sql += f" ORDER BY {order_by}"
    return store.query(sql, {"run_ids": run_ids})
