from __future__ import annotations

from prefect import task

from reports.leaderboard import leaderboard, to_markdown
from reports.records import RunBundle
from reports.store import ResultStore


# Not cached: recording is idempotent (keyed by run id + suite + metric) and must happen every run.
@task(task_run_name="record[{bundle.run.model}, {bundle.run.method_label}]", retries=2, retry_delay_seconds=5)
def recorded_run(bundle: RunBundle, database: str) -> str:
    ResultStore(database).record(bundle)
    return bundle.run.run_id


@task(task_run_name="leaderboard")
def leaderboard_markdown(database: str, models: list[str], experiment: str | None = None) -> str:
    store = ResultStore(database)
    rows = [row for row in leaderboard(store, experiment=experiment) if row.model in models]
    return to_markdown(rows)
