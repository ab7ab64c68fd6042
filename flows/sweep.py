"""`prunebench sweep`: models × methods × ratios, the branches running at once under a task runner.

Ratios come from the command line (`--sparsity 0.5,0.6`, `--drop-ratio 0.25,0.5`): every method
with that field runs once per value. The stages methods share (model, calibration, block scores,
layer redundancy, SLEB orders) run first, once, in the flow (`flows.benchmark.run_experiment`);
then each (study, method) branch is submitted to the flow's task runner: Prefect's thread pool, or
a Dask cluster through prefect-dask (a local cluster of worker processes, or a running one by
address). No scheduler of our own.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from prefect import flow
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from pydantic import ValidationError

from flows.benchmark import run_experiment
from flows.config import ExperimentConfig, describe_validation_error, load_config
from tasks.persistence import STAGE_JSON
from pruning.errors import ConfigError

RUNNERS = ("thread", "dask")
_FLAGS = {"sparsity": "--sparsity", "drop_ratio": "--drop-ratio"}


@flow(name="sweep", flow_run_name="sweep[{config_path}]", log_prints=True, persist_result=True, result_serializer=STAGE_JSON)
def sweep(
    config_path: str,
    sparsity: list[float] | None = None,
    drop_ratio: list[float] | None = None,
    database: str | None = None,
    workdir: str | None = None,
) -> str:
    """Every study × method × ratio of a config, the branches at once under the flow's task runner;
    returns the leaderboard as markdown."""
    config = load_config(config_path, {"database": database, "workdir": workdir})
    return run_experiment(expand_ratios(config, sparsity, drop_ratio, source=config_path), fan_out=True)


def expand_ratios(
    config: ExperimentConfig,
    sparsity: Sequence[float] | None = None,
    drop_ratio: Sequence[float] | None = None,
    source: str | None = None,
) -> ExperimentConfig:
    """The config with every method that has a `sparsity` (`drop_ratio`) field once per given value.

    Dense and methods without the field stay once, and so do N:M methods (their pattern fixes the
    sparsity). The result is validated as the YAML is, so a bad value fails here, before anything runs,
    with the field and the value; a value the config already lists runs once. Swept methods are labelled
    as grids are: each shows the ratio it runs at.
    """
    ratios = {field: list(values) for field, values in (("sparsity", sparsity), ("drop_ratio", drop_ratio)) if values}
    if not ratios:
        return config
    flags = " ".join(f"{_FLAGS[field]} {','.join(f'{value:g}' for value in values)}" for field, values in ratios.items())
    where = f"{source or config.name} swept with {flags}"
    raw = config.model_dump(mode="json")
    # a method's `id`, the model's `name`, the seeds, offloading are no parameters, so not dumped
    for study, dumped in zip(config.studies, raw["studies"]):
        if study.calibration.seeds is not None:
            dumped["calibration"]["seeds"] = study.calibration.seeds
        if study.model.offload != "none":
            dumped["model"]["offload"] = study.model.offload
        if study.model.name is not None:
            dumped["model"]["name"] = study.model.name
        for method, entry in zip(study.methods, dumped["methods"]):
            if method.id is not None:
                entry["id"] = method.id
    for field in ratios:
        if not any(_swept_field(method, ratios) == field for study in raw["studies"] for method in study["methods"]):
            raise ConfigError(f"{where}: no method has a `{field}` field to sweep")
    for study in raw["studies"]:
        methods: list[dict] = []
        for method in study["methods"]:
            field = _swept_field(method, ratios)
            for expanded in [method] if field is None else [{**method, field: value} for value in ratios[field]]:
                if expanded not in methods:  # a value the config already lists
                    methods.append(expanded)
        study["methods"] = methods
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(f"{where}: {describe_validation_error(err)}") from None


def _swept_field(method: dict, ratios: dict) -> str | None:
    if method.get("n_m"):
        return None
    return next((field for field in ratios if field in method), None)


def task_runner(runner: str = "thread", concurrency: int = 2, dask_address: str | None = None, dask_workers: int | None = None) -> TaskRunner:
    """Prefect's thread pool of `concurrency` threads, or prefect-dask's runner on the cluster at
    `dask_address` or on a local cluster of `dask_workers` (default `concurrency`) processes."""
    if runner == "thread":
        return ThreadPoolTaskRunner(max_workers=concurrency)
    if runner != "dask":
        raise ConfigError(f"runner {runner!r}: expected one of {', '.join(RUNNERS)}")
    from prefect_dask import DaskTaskRunner

    if dask_address:
        return DaskTaskRunner(address=dask_address)
    # One branch per worker process at a time (a branch holds a whole model); no memory limit, since
    # the nanny would kill a worker in the middle of a stage when a model outgrows its share; the
    # dashboard on a free port of the loopback interface only (it has no authentication), so that two
    # sweeps on one machine do not collide.
    cluster = {"n_workers": dask_workers or concurrency, "threads_per_worker": 1, "processes": True,
               "dashboard_address": "127.0.0.1:0", "memory_limit": 0}  # fmt: skip
    return DaskTaskRunner(cluster_kwargs=cluster)


def run_sweep(
    config_path: str,
    runner: TaskRunner,
    sparsity: list[float] | None = None,
    drop_ratio: list[float] | None = None,
    database: str | None = None,
    workdir: str | None = None,
    return_state: bool = False,
):
    """Run the sweep flow under `runner`; returns the leaderboard as markdown (or, with `return_state`,
    the flow run's final state, whose result it is)."""
    # lm-eval's stderr bootstrap forks a process pool unless DISABLE_MULTIPROC is set; the harness sets
    # it around each evaluation and restores it after, which two concurrent evaluations would race on.
    os.environ.setdefault("DISABLE_MULTIPROC", "1")
    # Dask workers are other processes: they reach the API the caller set up (`deploy.run_api`, which
    # puts its URL into the environment they are spawned with and into the settings prefect-dask sends).
    return sweep.with_options(task_runner=runner)(
        config_path, sparsity=sparsity, drop_ratio=drop_ratio, database=database, workdir=workdir, return_state=return_state
    )
