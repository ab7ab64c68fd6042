"""The report as markdown: the same tables as the HTML page, no plots."""

from __future__ import annotations

from reports.markdown import cost_table, curve_table, report_markdown, seconds
from reports.sections import Curve, CurvePoint, RunCosts, StageCost, report_sections
from reports.store import ResultStore


def test_every_table_is_there_in_order(synthetic_store):
    markdown = report_markdown(report_sections(synthetic_store))
    headings = [line for line in markdown.splitlines() if line.startswith("## ")]
    assert headings == ["## Leaderboard", "## Retention vs sparsity", "## Retention vs drop ratio",
                        "## Per-block sparsity allocation", "## Layer redundancy", "## Speed and memory"]  # fmt: skip
    assert "<svg" not in markdown and "<" not in markdown.replace("<-", "")
    curves = markdown.split("## Retention vs sparsity")[1].split("## Retention vs drop ratio")[0]
    wanda = next(line for line in curves.splitlines() if line.startswith("| wanda "))
    assert curves.splitlines()[6].split("|")[2:-1] == ["   50% ", "   60% ", "   70% "]
    assert [cell.strip() for cell in wanda.split("|")[1:-1]] == ["wanda", "80.0%", "65.0%", "40.0%"]


def test_curve_table_has_a_column_per_ratio_and_dashes_for_gaps():
    curves = [
        Curve(model="m", series="a", series_id="a", points=[CurvePoint(x=0.5, retention=0.9, n_metrics=1, method="a 50%", run_id="1")]),
        Curve(model="m", series="b", series_id="b", points=[CurvePoint(x=0.625, retention=0.5, n_metrics=1, method="b", run_id="2")]),
    ]
    table = curve_table(curves)
    assert table.header == ["method", "50%", "62.5%"]
    assert table.body == [["a", "90.0%", "—"], ["b", "—", "50.0%"]]


def test_cost_table_cells_show_time_memory_and_cache():
    costs = [RunCosts(model="m", method="wanda 50%", run_id="1", stages=[
        StageCost(stage="model", wall_s=2.0, peak_rss_gb=0.5, peak_gpu_gb=None, cached=True),
        StageCost(stage="prune", wall_s=95.0, peak_rss_gb=1.25, peak_gpu_gb=3.5, cached=False),
    ])]  # fmt: skip
    table = cost_table(costs)
    assert table.header == ["method", "model", "prune", "total", "peak RSS"]
    assert table.body == [["wanda 50%", "2.00 s · 0.50 GB ↺", "1.6 min · 1.25 GB · 3.50 GB GPU", "1.6 min", "1.25 GB"]]
    assert (seconds(0.25), seconds(7200)) == ("0.250 s", "2.0 h")


def test_an_empty_store_says_so(tmp_path):
    markdown = report_markdown(report_sections(ResultStore(tmp_path / "none.duckdb")))
    assert "no results recorded" in markdown and markdown.count("## ") == 1
