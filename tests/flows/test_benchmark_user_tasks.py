"""End to end: a config names a task of the user's own (`eval.include_path`), logs its samples, and
an edit of the task's data recomputes the evaluation (the key holds the task files' contents)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.flows.test_benchmark import prunebench, query

pytestmark = pytest.mark.e2e


def user_task_config(tmp: Path, cache_dir: Path, include_path: Path) -> Path:
    config = {
        "name": "user-tasks",
        "studies": [{
            "model": {"source": "packaged:smollm2-135m"},
            "methods": [{"name": "dense"}],
            "eval": {"suites": ["my_mc"], "include_path": str(include_path), "log_samples": True},
        }],
        "output": {"database": str(tmp / "results.duckdb"), "workdir": str(tmp / "work"), "cache": str(cache_dir)},
    }  # fmt: skip
    path = tmp / "user-tasks.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def runs(module_tmp, cache_dir, user_mc_task):
    """Three runs: six items; the JSONL cut to three; the same three again."""
    tmp = module_tmp("user-tasks")
    config = user_task_config(tmp, cache_dir, user_mc_task(tmp))
    results = [prunebench("run", str(config))]
    user_mc_task(tmp, n_items=3)
    results += [prunebench("run", str(config)), prunebench("run", str(config))]
    for result in results:
        assert result.returncode == 0, result.stderr[-3000:]
    flow_runs = [row[0] for row in query(tmp / "results.duckdb", "SELECT flow_run_id FROM runs ORDER BY started_at")]
    return tmp, results, flow_runs


def evaluation(tmp: Path, flow_run_id: str) -> tuple:
    """(n_samples, whether the evaluate stage was a cache hit) of one flow run."""
    return query(tmp / "results.duckdb", f"""
        SELECT any_value(r.n_samples), any_value(s.cached) FROM results r JOIN runs USING (run_id)
        JOIN stages s USING (run_id) WHERE runs.flow_run_id = '{flow_run_id}' AND r.suite = 'my_mc' AND s.stage = 'evaluate'""")[0]


def test_a_user_task_is_recorded_with_its_per_sample_log(runs):
    tmp, results, flow_runs = runs
    assert len(flow_runs) == 3
    (acc,) = query(tmp / "results.duckdb", f"SELECT metric, is_primary FROM results JOIN runs USING (run_id) WHERE flow_run_id = '{flow_runs[0]}'")
    assert acc == ("acc", True)
    logs = sorted((tmp / "work" / "samples" / "smollm2-135m").glob("*/my_mc.jsonl"))
    assert len(logs) == 2  # one per evaluation: six items, then three
    by_items = {len(path.read_text().splitlines()): path for path in logs}
    assert sorted(by_items) == [3, 6]
    assert [json.loads(line)["doc_id"] for line in by_items[6].read_text().splitlines()] == list(range(6))
    assert str(by_items[6].parent) in results[0].stdout + results[0].stderr  # where the log went is printed


def test_cutting_the_data_recomputes_the_evaluation(runs):
    tmp, _, flow_runs = runs
    assert evaluation(tmp, flow_runs[0]) == (6, False)
    assert evaluation(tmp, flow_runs[1]) == (3, False)  # the same config, other data: computed again
    assert evaluation(tmp, flow_runs[2]) == (3, True)  # the same files: cached
