from __future__ import annotations

from prefect import task

from reports.leaderboard import leaderboard, to_markdown
from reports.records import RunBundle
from reports.store import ResultStore
from tasks.artifacts import RegressionOutcome


# Not cached: recording is idempotent (keyed by run id + suite + metric) and must happen every run.
@task(persist_result=False, task_run_name="record[{bundle.run.model}, {bundle.run.method_label}]", retries=2, retry_delay_seconds=5)
def recorded_run(bundle: RunBundle, database: str) -> str:
    ResultStore(database).record(bundle)
    return bundle.run.run_id


@task(persist_result=False, task_run_name="leaderboard", retries=2, retry_delay_seconds=5)
def leaderboard_markdown(database: str, models: list[str], experiment: str | None = None) -> str:
    store = ResultStore(database)
    rows = [row for row in leaderboard(store, experiment=experiment) if row.model in models]
    return to_markdown(rows)


@task(persist_result=False, task_run_name="report[{experiment}]", retries=2, retry_delay_seconds=5)
def report_markdown_for(database: str, experiment: str) -> str:
    """The full report of an experiment (leaderboard, curves, allocations, redundancy, speed) as markdown."""
    from reports.markdown import report_markdown
    from reports.sections import report_sections

    return report_markdown(report_sections(ResultStore(database), experiment=experiment))


@task(persist_result=False, task_run_name="regressions[{flow_run_id}]", retries=2, retry_delay_seconds=5)
def regression_check(database: str, flow_run_id: str) -> RegressionOutcome:
    """Every run this flow run recorded against the previous run of its configuration."""
    from reports.regressions import compare_flow_run, to_markdown as comparison_markdown

    comparison = compare_flow_run(ResultStore(database), flow_run_id)
    return RegressionOutcome(
        markdown=comparison_markdown(comparison) if not comparison.is_empty else "No earlier run of these configurations to compare with.",
        n_worse=len(comparison.worse),
        n_better=len(comparison.better),
    )


@task(persist_result=False, task_run_name="report-html[{experiment}]", retries=2, retry_delay_seconds=5)
def report_html_for(database: str, experiment: str) -> str:
    """The experiment's HTML report (plots included) written beside the database; returns its path."""
    from pathlib import Path

    from pruning.files import write_text_atomic
    from reports.html import to_html
    from reports.sections import report_sections

    page = to_html(report_sections(ResultStore(database), experiment=experiment), source=database)
    path = Path(database).parent / f"report-{experiment}.html"
    write_text_atomic(path, page)  # readers see the old page or the new one, never half of one
    return str(path)
