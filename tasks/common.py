"""What every task shares: its cache policy and how it stamps its cost."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

from prefect.cache_policies import INPUTS, CachePolicy
from prefect.runtime import flow_run
from prefect.tasks import Task

from evals.measure import ResourceUsage
from tasks.artifacts import StageUsage
from tasks.cache import CODE
from tasks.persistence import STAGE_JSON, STAGE_RECORDS

# A stage's key: its inputs, and the code that computes it (its module's closure of project
# modules and the versions of the packages they import; tasks/cache.py). A `label` input names the
# run for people (it shows what tells a method apart from the experiment's others, so it changes
# when another method joins the config): it never decides what a stage computes. The record's
# metadata lives in STAGE_RECORDS, which reads nothing but our JSON records (tasks/persistence.py).
# (`configure` copies the policy it is called on: called on INPUTS' part, it leaves CODE itself in
# CACHED, so `CODE.reread()` and `fix_code_digests` act on the policy the stages use.)
CACHED = (INPUTS - "label").configure(key_storage=STAGE_RECORDS) + CODE
# What a cached stage passes to Prefect: `@task(**STAGE, task_run_name=...)`.
STAGE = dict(cache_policy=CACHED, result_serializer=STAGE_JSON)


def cached_tasks() -> list[Task]:
    """Every task of this package cached under CACHED (each `tasks/*.py` module imported to find them)."""
    found = []
    for path in sorted(Path(__file__).resolve().parent.glob("*.py")):
        module = importlib.import_module(f"{__package__}.{path.stem}")
        found += [value for value in vars(module).values() if isinstance(value, Task) and value.cache_policy is CACHED]
    return found


def stamp(usage: ResourceUsage) -> StageUsage:
    """The measured cost, tagged with the flow run that paid it (so cache hits can be told apart)."""
    return StageUsage(
        wall_s=round(usage.wall_s, 3),
        peak_rss_gb=round(usage.peak_rss_gb, 3),
        peak_gpu_gb=None if usage.peak_gpu_gb is None else round(usage.peak_gpu_gb, 3),
        computed_by=flow_run.get_id(),
    )


def checkpoint_slug(label: str) -> str:
    """A method label as a directory name: `wanda 2:4 +ft` -> `wanda-2of4-+ft`, `interlace[random, train-all] 25%`
    -> `interlacerandom-train-all-25pct`, `sparsegpt 50% (blocksize=32)` -> `sparsegpt-50pct-blocksize32`."""
    slug = label.replace(":", "of").replace("%", "pct")
    slug = re.sub(r"[\[\](),=]", "", slug)
    return re.sub(r"[^\w.+-]+", "-", slug).strip("-")


def is_cached(task: Task, **parameters) -> bool:
    """Whether calling `task(**parameters)` would read its result from the cache rather than compute it:
    a record is stored under the key Prefect would compute for the call (the task's policy over its bound
    arguments; CODE reads only the task from the run context). The flow asks before a stage whose input
    checkpoint may have been removed (`output.keep_checkpoints`): only a stage that computes reads it."""
    from types import SimpleNamespace

    from prefect.results import get_result_store
    from prefect.utilities.callables import get_call_parameters

    from prefect.settings import PREFECT_TASKS_REFRESH_CACHE

    refresh = task.refresh_cache if task.refresh_cache is not None else PREFECT_TASKS_REFRESH_CACHE.value()
    if refresh or not isinstance(task.cache_policy, CachePolicy):
        return False
    inputs = get_call_parameters(task.fn, (), parameters)
    key = task.cache_policy.compute_key(task_ctx=SimpleNamespace(task=task), inputs=inputs, flow_parameters={})
    return key is not None and get_result_store().update_for_task(task).exists(key)
