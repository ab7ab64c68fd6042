from __future__ import annotations

from pathlib import Path

from prefect import task

from evals.suites import build_suites
from tasks.common import CACHED


@task(cache_policy=CACHED, task_run_name="suites[{names}]")
def eval_suites(names: list[str], workdir: str, cache_dir: str, code: str) -> str:
    """lm-eval task files (YAML + JSONL) for our local suites; returns the include path."""
    return str(build_suites(names, Path(workdir) / "suites", Path(cache_dir)))
