"""`prunebench sweep`: ratios expanded at the door, shared stages computed once, branches concurrent
under Prefect's thread pool and on a local Dask cluster of processes, every result recorded once."""

from __future__ import annotations

import re
from contextlib import closing
from pathlib import Path

import pytest
import yaml

from flows.cli import build_parser
from flows.config import ExperimentConfig
from flows.sweep import expand_ratios
from pruning.errors import ConfigError
from tests.flows.test_benchmark import prunebench, query

SWEPT = ["dense", "magnitude 30%", "magnitude 50%", "shortgpt 25%", "wanda 30%", "wanda 50%"]


def tiny_llama(dest: Path, tokenizer_from: Path) -> Path:
    """An 8-layer random-init Llama with SmolLM2's tokenizer (as in test_benchmark_layerdrop)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from pruning.models.sources import save_checkpoint

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_from)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=8,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)  # fmt: skip
    return save_checkpoint(LlamaForCausalLM(config), tokenizer, dest)


def write_config(tmp: Path, name: str, source: Path, methods: list[dict], cache_dir: Path, workdir: str = "work") -> Path:
    config = {
        "name": name,
        "studies": [{
            "model": {"source": str(source)},
            "calibration": {"n_samples": 4, "seq_len": 32, "batch_size": 4},
            "methods": methods,
            "eval": {"suites": ["jargon_ppl"], "limit": 2},
        }],
        "output": {"database": str(tmp / "results.duckdb"), "workdir": str(tmp / workdir), "cache": str(cache_dir)},
    }  # fmt: skip
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def finished_task_runs(output: str, name: str) -> list[str]:
    """The final states Prefect logged for task runs whose name starts with `name[`."""
    return re.findall(rf"Task run '{re.escape(name)}\[[^']*' - Finished in state (\w+)", output)


# --------------------------------------------------------------------------- ratios at the door


def _config(*methods: dict) -> ExperimentConfig:
    return ExperimentConfig.model_validate({
        "name": "t",
        "studies": [{"model": {"source": "packaged:smollm2-135m"}, "methods": list(methods), "eval": {"suites": ["jargon_ppl"]}}],
    })  # fmt: skip


def test_ratios_expand_every_method_with_the_field_and_nothing_else():
    config = _config(
        {"name": "dense"}, {"name": "wanda", "sparsity": 0.5}, {"name": "sparsegpt", "n_m": "2:4"},
        {"name": "ecoflap", "sparsity": 0.6}, {"name": "shortgpt", "drop_ratio": 0.25}, {"name": "interlace", "drop_ratio": 0.25},
    )  # fmt: skip
    swept = expand_ratios(config, sparsity=[0.3, 0.5], drop_ratio=[0.25, 0.5])
    assert [m.label for m in swept.studies[0].methods] == [
        "dense", "wanda 30%", "wanda 50%", "sparsegpt 2:4", "ecoflap(zeroth)+wanda 30%", "ecoflap(zeroth)+wanda 50%",
        "shortgpt 25%", "shortgpt 50%", "interlace 25%", "interlace 50%",
    ]  # fmt: skip
    assert expand_ratios(config) is config


def test_a_swept_config_keeps_its_calibration_seeds():
    config = ExperimentConfig.model_validate({
        "name": "t",
        "studies": [{"model": {"source": "packaged:smollm2-135m"}, "calibration": {"seeds": [2, 5]},
                     "methods": [{"name": "wanda", "sparsity": 0.5}], "eval": {"suites": ["jargon_ppl"]}}],
    })  # fmt: skip
    swept = expand_ratios(config, sparsity=[0.3, 0.5])
    assert swept.studies[0].calibration.seeds == [2, 5] and swept.studies[0].calibration.seed == 2


def test_a_swept_config_keeps_its_offloading_and_model_name():
    config = ExperimentConfig.model_validate({
        "name": "t",
        "studies": [{"model": {"source": "packaged:smollm2-135m", "offload": "cpu", "name": "small"},
                     "methods": [{"name": "wanda", "sparsity": 0.5}], "eval": {"suites": ["jargon_ppl"]}}],
    })  # fmt: skip
    model = expand_ratios(config, sparsity=[0.3, 0.5]).studies[0].model
    assert model.offload == "cpu" and model.name == "small" and model.label == "small"  # results are recorded under the user's label


def test_a_value_the_config_already_has_is_run_once():
    config = _config({"name": "wanda", "sparsity": 0.5}, {"name": "wanda", "sparsity": 0.6})
    swept = expand_ratios(config, sparsity=[0.5, 0.6])
    assert [m.label for m in swept.studies[0].methods] == ["wanda 50%", "wanda 60%"]


def test_swept_methods_that_differ_in_another_parameter_show_it():
    config = _config({"name": "sparsegpt", "sparsity": 0.5}, {"name": "sparsegpt", "sparsity": 0.6, "blocksize": 64},
                     {"name": "wanda", "sparsity": 0.5, "id": "mine"})  # fmt: skip
    swept = expand_ratios(config, sparsity=[0.5])
    assert [m.label for m in swept.studies[0].methods] == [
        "sparsegpt 50% (blocksize=128)", "sparsegpt 50% (blocksize=64)", "mine",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "methods, ratios, message",
    [
        ([{"name": "wanda", "sparsity": 0.5}], {"sparsity": [0.5, 1.0]},
         "t swept with --sparsity 0.5,1: studies.0.methods.1.wanda.sparsity: Input should be less than 1 (got 1.0)"),
        ([{"name": "shortgpt", "drop_ratio": 0.25}], {"drop_ratio": [0.0]}, "drop_ratio: Input should be greater than 0"),
        ([{"name": "dense"}, {"name": "shortgpt", "drop_ratio": 0.25}], {"sparsity": [0.5]},
         "t swept with --sparsity 0.5: no method has a `sparsity` field to sweep"),
    ],
)  # fmt: skip
def test_bad_ratios_fail_at_the_door_naming_field_and_value(methods, ratios, message):
    with pytest.raises(ConfigError) as caught:
        expand_ratios(_config(*methods), **ratios)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--sparsity", "0.5,abc"], "expected comma-separated numbers"),
        (["--concurrency", "0"], "must be at least 1"),
        (["--runner", "process"], "invalid choice"),
    ],
)
def test_sweep_options_are_checked_by_the_parser(argv, message, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["sweep", "c.yaml", *argv])
    assert message in capsys.readouterr().err


def test_dask_options_need_the_dask_runner(tmp_path):
    result = prunebench("sweep", str(tmp_path / "c.yaml"), "--runner", "thread", "--dask-workers", "2", timeout=120)
    assert result.returncode == 2 and "--dask-address and --dask-workers need --runner dask" in result.stderr


# --------------------------------------------------------------------------- end to end

METHODS = [
    {"name": "dense"},
    {"name": "magnitude", "sparsity": 0.5},
    {"name": "wanda", "sparsity": 0.5},
    {"name": "shortgpt", "drop_ratio": 0.25},
]


@pytest.fixture(scope="module")
def tiny_model(module_tmp, smollm2_checkpoint) -> Path:
    return tiny_llama(module_tmp("sweep-model") / "tiny-llama", smollm2_checkpoint)


def _sweep(tmp: Path, tiny_model: Path, cache_dir: Path, *options: str, own_server: bool = False):
    config = write_config(tmp, "sweep-smoke", tiny_model, METHODS, cache_dir)
    result = prunebench("sweep", str(config), "--sparsity", "0.3,0.5", "--drop-ratio", "0.25", *options, own_server=own_server)
    assert result.returncode == 0, result.stderr[-4000:]
    return tmp / "results.duckdb", result.stdout + result.stderr


@pytest.fixture(scope="module")
def thread_sweep(module_tmp, tiny_model, cache_dir):
    return _sweep(module_tmp("sweep-thread"), tiny_model, cache_dir, "--concurrency", "2", own_server=True)  # Prefect's own database is read below


@pytest.fixture(scope="module")
def dask_sweep(module_tmp, tiny_model, cache_dir):
    return _sweep(module_tmp("sweep-dask"), tiny_model, cache_dir, "--runner", "dask", "--dask-workers", "2")


def _values(database: Path) -> dict[tuple[str, str, str], float]:
    rows = query(database, "SELECT r.method_label, v.suite, v.metric, v.value FROM runs r JOIN results v USING (run_id)")
    return {(label, suite, metric): value for label, suite, metric, value in rows}


@pytest.mark.e2e
def test_thread_sweep_records_every_method_and_ratio_once(thread_sweep):
    database, output = thread_sweep
    labels = sorted(label for (label,) in query(database, "SELECT method_label FROM runs"))
    assert labels == SWEPT
    (n_results, n_distinct) = query(database, "SELECT count(*), count(DISTINCT (run_id, suite, metric)) FROM results")[0]
    assert n_results == n_distinct == len(SWEPT) * 3  # jargon_ppl: word and byte perplexity, bits per byte
    leaderboard = output[output.index("### tiny-llama"):]
    assert all(f"| {label} " in leaderboard for label in SWEPT)
    # and, as `run` does, where each run's checkpoint is
    listed = output[output.index("checkpoints (output.keep_checkpoints: last;"):]
    assert all(f"tiny-llama / {label}  " in listed for label in SWEPT)


@pytest.mark.e2e
def test_task_runs_carry_readable_names_and_model_and_method_tags(thread_sweep):
    import json
    import sqlite3

    database, _ = thread_sweep
    # Prefect's own database (the ephemeral API's, under the workdir) holds every task run the sweep made
    with closing(sqlite3.connect(database.parent / "work" / "prefect" / "prefect.db")) as prefect_db:
        task_runs = {name: set(json.loads(tags)) for name, tags in prefect_db.execute("SELECT name, tags FROM task_run")}
    assert task_runs["prune[wanda, 30%]"] == task_runs["evaluate[tiny-llama, wanda 30%]"] == {"model:tiny-llama", "method:wanda"}
    (drop,) = [name for name in task_runs if name.startswith("drop[shortgpt 25%: ")]  # then the layers it drops
    assert task_runs["run[tiny-llama, shortgpt 25%]"] == task_runs[drop] == {"model:tiny-llama", "method:shortgpt"}
    assert task_runs["record[tiny-llama, dense]"] == {"model:tiny-llama", "method:dense"}
    assert task_runs["calibration[jargon, 4x32]"] == task_runs["redundancy[tiny-llama, 4x32, block_io, masked]"] == {"model:tiny-llama"}


@pytest.mark.e2e
def test_shared_stages_are_computed_once_before_the_branches(thread_sweep):
    database, output = thread_sweep
    # one calibration set and one layer redundancy for the whole sweep, read by every branch that needs it
    assert finished_task_runs(output, "calibration") == ["Completed"]
    assert finished_task_runs(output, "redundancy") == ["Completed"]
    assert sorted(finished_task_runs(output, "prune")) == ["Completed"] * 4
    calibration = query(database, "SELECT DISTINCT s.wall_s, s.cached FROM stages s WHERE s.stage = 'calibration'")
    assert len(calibration) == 1 and calibration[0][1] is False  # computed by this flow run, the same usage everywhere
    users = sorted(label for (label,) in query(database, "SELECT r.method_label FROM runs r JOIN stages s USING (run_id) WHERE s.stage = 'calibration'"))
    assert users == ["shortgpt 25%", "wanda 30%", "wanda 50%"]


@pytest.mark.e2e
def test_branches_run_concurrently_never_beyond_the_limit(thread_sweep):
    database, _ = thread_sweep
    spans = query(database, "SELECT started_at, finished_at FROM runs")
    overlapping = max(sum(start <= moment < end for start, end in spans) for moment, _ in spans)
    assert overlapping == 2


@pytest.mark.e2e
def test_dask_sweep_on_a_local_cluster_records_the_same_results(thread_sweep, dask_sweep):
    database, output = dask_sweep
    assert "LocalCluster" in output
    labels = sorted(label for (label,) in query(database, "SELECT method_label FROM runs"))
    assert labels == SWEPT
    thread_values, dask_values = _values(thread_sweep[0]), _values(database)
    assert thread_values.keys() == dask_values.keys()
    for key, value in thread_values.items():
        assert dask_values[key] == pytest.approx(value, rel=1e-4), key
    assert finished_task_runs(output, "calibration") == ["Completed"]  # in the flow's process, before the fan-out
    assert sorted(finished_task_runs(output, "run")) == ["Completed"] * len(SWEPT)  # logged by the workers
