"""The report's tables as markdown (no plots): for a Prefect artifact and the terminal.

The table builders here (`curve_table`, `cost_table`, ...) give header and text cells; the HTML page
renders the same cells, so both say the same thing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from reports.leaderboard import to_markdown as leaderboard_markdown
from reports.sections import AllocationProfile, Curve, RedundancyMap, ReportSections, RunCosts, stage_rank
from reports.tables import MISSING, markdown_table, number, percent

TOP_REDUNDANT = 3  # adjacent layer pairs listed per redundancy matrix


@dataclass(frozen=True)
class CellTable:
    header: list[str]
    body: list[list[str]]
    right: list[bool]


def report_markdown(sections: ReportSections) -> str:
    """Leaderboard, retention curves as tables, allocation and redundancy summaries, speed and memory."""
    parts = ["## Leaderboard", "", leaderboard_markdown(sections.leaderboard).rstrip(), ""]
    for title, curves, axis in (
        ("Retention vs sparsity", sections.sparsity_curves, "target weight sparsity"),
        ("Retention vs drop ratio", sections.drop_ratio_curves, "drop ratio"),
    ):
        if curves:
            parts += [f"## {title}", "", f"_mean retention vs dense (over the primary metrics), by {axis}_", ""]
            for model in _models(curves):
                parts += [f"### {model}", "", *_markdown(curve_table([c for c in curves if c.model == model])), ""]
    if sections.allocations:
        parts += ["## Per-block sparsity allocation", "", *_markdown(allocation_table(sections.allocations)), ""]
    if sections.redundancy:
        parts += ["## Layer redundancy", "", *_markdown(redundancy_table(sections.redundancy)), ""]
    if sections.costs:
        parts += ["## Speed and memory", "", f"_{COST_LEGEND}_", ""]
        for model in _models(sections.costs):
            parts += [f"### {model}", "", *_markdown(cost_table([c for c in sections.costs if c.model == model])), ""]
    return "\n".join(parts).rstrip() + "\n"


def curve_table(curves: Sequence[Curve]) -> CellTable:
    """A row per line, a column per ratio, cells the mean retention there."""
    xs = sorted({point.x for curve in curves for point in curve.points})
    body = []
    for curve in curves:
        at = {point.x: point for point in curve.points}
        body.append([curve.series, *(percent(at[x].retention) if x in at else MISSING for x in xs)])
    return CellTable(header=["method", *(f"{x:.0%}" if abs(x * 100 - round(x * 100)) < 1e-9 else percent(x) for x in xs)],
                     body=body, right=[False] + [True] * len(xs))  # fmt: skip


def allocation_table(profiles: Sequence[AllocationProfile]) -> CellTable:
    body = []
    for profile in profiles:
        targets = [block.target_sparsity for block in profile.blocks]
        achieved = sum(b.achieved_sparsity * b.n_params for b in profile.blocks) / max(1, sum(b.n_params for b in profile.blocks))
        modalities = ", ".join(dict.fromkeys(block.modality for block in profile.blocks))
        body.append([profile.model, profile.method, modalities, str(len(profile.blocks)), percent(profile.target_sparsity),
                     percent(min(targets)), percent(max(targets)), percent(achieved)])  # fmt: skip
    return CellTable(
        header=["model", "method", "modalities", "blocks", "target", "least pruned block", "most pruned block", "achieved"],
        body=body,
        right=[False, False, False, True, True, True, True, True],
    )


def redundancy_table(maps: Sequence[RedundancyMap]) -> CellTable:
    body = []
    for matrix in maps:
        adjacent = [(matrix.values[i][i + 1], i) for i in range(len(matrix.values) - 1) if matrix.values[i][i + 1] is not None]
        top = sorted(adjacent, reverse=True)[:TOP_REDUNDANT]
        pairs = ", ".join(f"h{i}→h{i + 1} ({value:.3f})" for value, i in top) or MISSING
        body.append([matrix.model, matrix.method, matrix.selector, matrix.kind, str(len(matrix.values)), pairs])
    return CellTable(
        header=["model", "method", "recorded by", "kind", "states", "most similar consecutive states (cos)"],
        body=body,
        right=[False, False, False, False, True, False],
    )


COST_LEGEND = "per stage: wall time · peak resident memory (· peak GPU memory); ↺ = read from the cache of an earlier run"


def cost_table(costs: Sequence[RunCosts]) -> CellTable:
    """A row per run, a column per stage (in pipeline order), then the total wall time and peak memory."""
    stages = sorted({stage.stage for run in costs for stage in run.stages}, key=stage_rank)
    body = []
    for run in costs:
        by_stage = {stage.stage: stage for stage in run.stages}
        cells = [stage_cell(by_stage[name]) if name in by_stage else MISSING for name in stages]
        total = sum(stage.wall_s for stage in run.stages)
        peaks = [stage.peak_rss_gb for stage in run.stages if stage.peak_rss_gb is not None]
        body.append([run.method, *cells, seconds(total), f"{max(peaks):.2f} GB" if peaks else MISSING])
    return CellTable(header=["method", *stages, "total", "peak RSS"], body=body, right=[False] + [True] * (len(stages) + 2))


def stage_cell(stage) -> str:
    parts = [seconds(stage.wall_s)]
    if stage.peak_rss_gb is not None:
        parts.append(f"{stage.peak_rss_gb:.2f} GB")
    if stage.peak_gpu_gb is not None:
        parts.append(f"{stage.peak_gpu_gb:.2f} GB GPU")
    return " · ".join(parts) + (" ↺" if stage.cached else "")


def seconds(wall_s: float) -> str:
    if wall_s >= 3600:
        return f"{wall_s / 3600:.1f} h"
    if wall_s >= 60:
        return f"{wall_s / 60:.1f} min"
    return f"{number(wall_s)} s"


def _markdown(table: CellTable) -> list[str]:
    return markdown_table(table.header, table.body, table.right)


def _models(items) -> list[str]:
    return list(dict.fromkeys(item.model for item in items))
