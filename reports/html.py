"""The report as one static HTML page: CSS inline, charts as inline SVG, no script, nothing fetched.

It opens from a file, an e-mail attachment or a CI artifact store alike. Every piece of text from
the database is escaped; sections without data are left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from reports import svg
from reports.leaderboard import DENSE, LeaderboardRow, LeaderboardTable, distinct_names, leaderboard_tables, legend
from reports.markdown import (
    COST_LEGEND,
    CellTable,
    allocation_table,
    cost_table,
    curve_table,
    redundancy_table,
)
from reports.sections import AllocationProfile, Curve, RedundancyMap, ReportSections
from reports.tables import percent

TITLE = "prunebench report"

_CSS = """
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; color: #1d1d1f;
       background: #fafafa; margin: 0; }
header { background: #1f3a5f; color: #fff; padding: 18px 32px 12px; }
header h1 { margin: 0 0 4px; font-size: 22px; }
header p { margin: 0 0 8px; opacity: .85; }
nav a { color: #cfe2ff; margin-right: 16px; text-decoration: none; }
main { padding: 8px 32px 32px; max-width: 1400px; }
section { background: #fff; border: 1px solid #e2e2e2; border-radius: 6px; padding: 4px 20px 16px; margin: 18px 0; }
h2 { font-size: 18px; border-bottom: 2px solid #1f3a5f; padding-bottom: 4px; }
h3 { font-size: 15px; margin: 18px 0 6px; }
table { border-collapse: collapse; margin: 6px 0 10px; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ddd; padding: 4px 9px; white-space: nowrap; }
th { background: #f0f3f7; font-weight: 600; }
td.num, th.num { text-align: right; }
tbody tr:hover td { outline: 1px solid #bbb; }
.note, .legend { color: #555; font-size: 12.5px; margin: 4px 0; }
.grid { display: flex; flex-wrap: wrap; gap: 14px 28px; }
figure { margin: 8px 0; }
figcaption { font-size: 13px; color: #333; margin-bottom: 4px; }
figcaption code { font-size: 11px; color: #777; }
svg.chart { font-family: inherit; background: #fff; overflow: visible; }
details { margin: 2px 0 10px; }
summary { cursor: pointer; color: #1f3a5f; font-size: 13px; }
"""

_SECTIONS = (
    ("leaderboard", "Leaderboard"),
    ("retention-vs-sparsity", "Retention vs sparsity"),
    ("retention-vs-drop-ratio", "Retention vs drop ratio"),
    ("allocation", "Per-block sparsity"),
    ("redundancy", "Layer redundancy"),
    ("speed-memory", "Speed and memory"),
)


def to_html(sections: ReportSections, *, source: str = "") -> str:
    """The whole page. `source` (e.g. the database path) is shown under the title."""
    bodies = {
        "leaderboard": _leaderboard(sections),
        "retention-vs-sparsity": _curves(sections.sparsity_curves, "target weight sparsity"),
        "retention-vs-drop-ratio": _curves(sections.drop_ratio_curves, "drop ratio (share of decoder layers removed)"),
        "allocation": _allocations(sections.allocations),
        "redundancy": _redundancy(sections.redundancy),
        "speed-memory": _costs(sections),
    }
    shown = [(anchor, title) for anchor, title in _SECTIONS if bodies[anchor]]
    runs = len({row.run_id for row in sections.leaderboard})
    about = f"{runs} runs, {len(sections.leaderboard)} results · generated {sections.generated_at:%Y-%m-%d %H:%M %Z}"
    if source:
        about += f" · {source}"
    parts = [
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(TITLE)}</title><style>{_CSS}</style></head><body>",
        f"<header><h1>{escape(TITLE)}</h1><p>{escape(about)}</p>",
        "<nav>" + "".join(f'<a href="#{anchor}">{escape(title)}</a>' for anchor, title in shown) + "</nav></header><main>",
    ]
    if sections.is_empty:
        parts.append('<section><p class="note">No results recorded yet: run <code>prunebench run CONFIG</code>.</p></section>')
    for anchor, title in shown:
        parts.append(f'<section id="{anchor}"><h2>{escape(title)}</h2>{bodies[anchor]}</section>')
    parts.append("</main></body></html>\n")
    return "".join(parts)


# -- sections ----------------------------------------------------------------------------------


def _leaderboard(sections: ReportSections) -> str:
    tables = leaderboard_tables(sections.leaderboard)
    if not tables:
        return ""
    parts = []
    for table in tables:
        parts.append(f"<h3>{escape(table.model)}</h3>{_leaderboard_table(table)}")
        parts += [f'<p class="note">{escape(note)}</p>' for note in table.notes]
        parts.append(_retention_intervals([row for row in sections.leaderboard if row.model == table.model]))
    parts += [f'<p class="legend">{escape(line)}</p>' for line in legend(sections.leaderboard)]
    return "".join(parts)


_VERSUS_BEST = {"best": ("best", "#009E73"), "tied": ("tied with the best", "#0072B2"),
                "worse": ("worse than the best", "#D55E00"), None: ("not compared", "#888888")}  # fmt: skip


def _retention_intervals(rows: Sequence[LeaderboardRow]) -> str:
    """Per primary metric, each method's retention with its paired 95% interval as error bars, coloured by
    whether it is the best non-dense method, tied with it, or worse; in the table's order."""
    primary = [row for row in rows if row.is_primary and row.method_name != DENSE and row.retention is not None]
    if not any(row.retention_low is not None for row in primary):
        return ""
    names = distinct_names({row.method_id: row.method for row in primary})
    figures = []
    for suite, metric in dict.fromkeys((row.suite, row.metric) for row in primary):
        column = sorted((row for row in primary if (row.suite, row.metric) == (suite, metric)),
                        key=lambda row: -(row.retention or 0.0))  # fmt: skip
        estimates = [
            svg.Estimate(
                label=names[row.method_id], group=_VERSUS_BEST[row.versus_best][0], value=row.retention,
                low=row.retention_low, high=row.retention_high,
                tooltip=f"{names[row.method_id]}: {suite} {metric} retention {percent(row.retention)}"
                + (f" [{percent(row.retention_low)}, {percent(row.retention_high)}]" if row.retention_low is not None else ""),
            )
            for row in column
        ]  # fmt: skip
        chart = svg.forest_plot(estimates, x_label=f"retention of {metric} vs dense", reference=1.0,
                                reference_label="dense", group_colours=dict(_VERSUS_BEST.values()))  # fmt: skip
        figures.append(_figure([suite, metric], "", chart))
    return f'<div class="grid">{"".join(figures)}</div>'


def _leaderboard_table(table: LeaderboardTable) -> str:
    """Cells tinted by the retention they show: red at half or less of dense, green at dense or better."""
    rows = []
    for line, retentions in zip(table.body, table.retention):
        cells = []
        for cell, retention, right in zip(line, retentions, table.right):
            style = f' style="background:{_retention_tint(retention)}"' if retention is not None else ""
            cells.append(f'<td{" class=num" if right else ""}{style}>{escape(cell)}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return _table_html(table.header, table.right, rows)


def _curves(curves: Sequence[Curve], axis: str) -> str:
    if not curves:
        return ""
    parts = []
    for model in dict.fromkeys(curve.model for curve in curves):
        mine = [curve for curve in curves if curve.model == model]
        # every line starts at the dense model: ratio 0 keeps 100% by definition
        origin = svg.Point(0.0, 1.0, "dense: 100% by definition")
        series = [
            svg.Series(
                name=curve.series,
                points=[origin, *(svg.Point(point.x, point.retention,
                                            f"{point.method}: {percent(point.retention)} of dense "
                                            f"(mean of {point.n_metrics} primary metrics)") for point in curve.points)],
            )  # fmt: skip
            for curve in mine
        ]
        chart = svg.line_chart(series, x_label=axis, y_label="mean retention vs dense", reference=1.0, reference_label="dense")
        parts.append(f"<figure><figcaption><b>{escape(model)}</b></figcaption>{chart}</figure>")
        parts.append(f"<details><summary>numbers</summary>{_cell_table(curve_table(mine))}</details>")
    return "".join(parts)


def _allocations(profiles: Sequence[AllocationProfile]) -> str:
    figures = []
    for profile in profiles:
        bars = [
            svg.Bar(
                group=block.modality,
                label=str(block.block),
                height=block.target_sparsity,
                marker=block.achieved_sparsity,
                tooltip=f"{block.modality} block {block.block}: target {percent(block.target_sparsity)}, achieved "
                f"{percent(block.achieved_sparsity)}"
                + (f", score {block.block_score:.4g}" if block.block_score is not None else ""),
            )
            for block in profile.blocks
        ]
        chart = svg.bar_chart(bars, x_label="block", y_label="sparsity", reference=profile.target_sparsity,
                              reference_label="overall target", marker_label="achieved")  # fmt: skip
        figures.append(_figure([profile.model, profile.method], profile.run_id, chart))
    note = (
        "Target sparsity per block (bars, parameter-weighted over its layers), what pruning achieved (black tick), "
        "and the run's overall target (dashed); a layer-drop run shows its dropped layers at 100%. Hover a bar "
        "for its global score."
    )
    return _gallery(note, figures, allocation_table(profiles)) if profiles else ""


def _redundancy(maps: Sequence[RedundancyMap]) -> str:
    figures = []
    for matrix in maps:
        chart = svg.heatmap(
            matrix.values,
            x_label="h_j",
            y_label="h_i",
            value_label=matrix.kind,
            tooltip=lambda i, j, value: f"cos(h{i}, h{j}) = {value:.4f}",
        )
        figures.append(_figure([matrix.model, matrix.method, matrix.kind], matrix.selector, chart))
    note = (
        "Cosine similarity of hidden states h_i (row) and h_j (column), where h_i enters decoder layer i and h_L "
        "leaves the last one: bright = alike, so the layers between change little. cos_mean averages over tokens, "
        "cos_last uses the last token. INTERLACE ranks triplets by cell (i, i+3); ShortGPT drops where (i, i+1) is "
        "brightest."
    )
    return _gallery(note, figures, redundancy_table(maps)) if maps else ""


def _costs(sections: ReportSections) -> str:
    if not sections.costs:
        return ""
    parts = [f'<p class="note">{escape(COST_LEGEND)}</p>']
    for model in dict.fromkeys(cost.model for cost in sections.costs):
        table = cost_table([cost for cost in sections.costs if cost.model == model])
        parts.append(f"<h3>{escape(model)}</h3>{_cell_table(table)}")
    return "".join(parts)


# -- pieces ------------------------------------------------------------------------------------


def _figure(caption: Sequence[str], tag: str, chart: str) -> str:
    """A chart under a caption: the first part bold, then the rest, then a small grey tag."""
    first, *rest = (escape(part) for part in caption)
    text = " · ".join([f"<b>{first}</b>", *rest])
    return f"<figure><figcaption>{text} <code>{escape(tag[:12])}</code></figcaption>{chart}</figure>"


def _gallery(note: str, figures: Sequence[str], summary: CellTable) -> str:
    """A note, the figures side by side as space allows, and their numbers folded away."""
    return (f'<p class="note">{escape(note)}</p><div class="grid">{"".join(figures)}</div>'
            f"<details><summary>summary table</summary>{_cell_table(summary)}</details>")  # fmt: skip


def _cell_table(table: CellTable) -> str:
    rows = [
        "<tr>" + "".join(f'<td{" class=num" if right else ""}>{escape(cell)}</td>' for cell, right in zip(line, table.right))
        + "</tr>"
        for line in table.body
    ]
    return _table_html(table.header, table.right, rows)


def _table_html(header: Sequence[str], right: Sequence[bool], rows: Sequence[str]) -> str:
    head = "".join(f'<th{" class=num" if is_right else ""}>{escape(cell)}</th>' for cell, is_right in zip(header, right))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _retention_tint(retention: float) -> str:
    """A light background from red (≤ 50% of dense) through amber to green (≥ 100%)."""
    fraction = min(1.0, max(0.0, (retention - 0.5) / 0.5))
    return f"hsl({fraction * 120:.0f}, 65%, 88%)"
