"""Faults: a run killed with SIGKILL mid-run and rerun with the same command, half-written and
corrupt checkpoints on disk, and what the cached stages and DuckDB hold afterwards."""

from __future__ import annotations

import os
import re
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pruning.models.sources import checkpoint_fingerprint, checkpoint_problem, save_checkpoint
from tests.flows.test_benchmark import REPO, prunebench, query
from tests.flows.test_sweep import tiny_llama, write_config

LABELS = ["dense", "magnitude 50%", "shortgpt 25%", "wanda 50%"]
METHODS = [
    {"name": "dense"},
    {"name": "magnitude", "sparsity": 0.5},
    {"name": "wanda", "sparsity": 0.5},
    {"name": "shortgpt", "drop_ratio": 0.25},
]


# --------------------------------------------------------------------------- checkpoint integrity


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1)  # fmt: skip
    return save_checkpoint(LlamaForCausalLM(config), None, tmp_path / "ckpt")


def test_a_whole_checkpoint_has_no_problem(checkpoint):
    assert checkpoint_problem(checkpoint) is None
    assert checkpoint_problem(checkpoint, checkpoint_fingerprint(checkpoint)) is None


def test_a_truncated_weights_file_is_named(checkpoint):
    weights = checkpoint / "model.safetensors"
    size = weights.stat().st_size
    os.truncate(weights, size // 2)
    problem = checkpoint_problem(checkpoint)
    assert problem == f"{weights} is {size // 2} bytes where {size} were written (truncated or overwritten)"


def test_a_file_replaced_at_the_same_size_changes_the_fingerprint(checkpoint):
    cached = checkpoint_fingerprint(checkpoint)
    weights = checkpoint / "model.safetensors"
    stat = weights.stat()
    weights.write_bytes(b"\0" * stat.st_size)  # same size: only the recorded fingerprint tells
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # a coarse clock may not move by itself
    assert checkpoint_problem(checkpoint) is None
    assert "changed after the stage that wrote them was cached" in checkpoint_problem(checkpoint, cached)


def test_half_written_and_missing_checkpoints_are_named(checkpoint, tmp_path):
    half = tmp_path / ".ckpt.tmp-0badc0de"  # what save_checkpoint leaves when killed while writing
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"\x10\x00")
    assert "has no prunebench-checkpoint.json" in checkpoint_problem(half)
    assert checkpoint_problem(tmp_path / "gone") == f"{tmp_path / 'gone'} does not exist"
    (checkpoint / "config.json").unlink()
    assert checkpoint_problem(checkpoint) == f"{checkpoint / 'config.json'} is missing"


# --------------------------------------------------------------------------- SIGKILL, then the same command


def run_until(args: list[str], marker: str, timeout_s: float = 600) -> tuple[int, str]:
    """Start `prunebench ARGS` and SIGKILL it as soon as a line of its output contains `marker`.

    The process and what it started (Prefect's ephemeral API server) share a new session, so the
    whole group is killed, as a crashed machine would lose it. Returns its exit status and output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    process = subprocess.Popen([sys.executable, "-m", "flows.cli", *args], cwd=REPO, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    seen, deadline = [], time.monotonic() + timeout_s
    try:
        while True:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            if line is None:
                pytest.fail(f"the run ended before {marker!r}:\n{''.join(seen)[-3000:]}")
            seen.append(line)
            if marker in line:
                os.kill(process.pid, signal.SIGKILL)
                break
    except queue.Empty:
        pytest.fail(f"no {marker!r} within {timeout_s:g} s:\n{''.join(seen)[-3000:]}")
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # the rest of its group: the API server
        except ProcessLookupError:
            pass
        process.wait(timeout=60)
    return process.returncode, "".join(seen)


@pytest.fixture(scope="module")
def killed_and_rerun(module_tmp, cache_dir, smollm2_checkpoint):
    tmp = module_tmp("faults")
    model = tiny_llama(tmp / "tiny-llama", smollm2_checkpoint)
    config = write_config(tmp, "faults", model, METHODS, cache_dir)
    database = tmp / "results.duckdb"

    status, killed_output = run_until(["run", str(config)], "recorded tiny-llama / magnitude 50%")
    assert status == -signal.SIGKILL
    before = {
        "runs": query(database, "SELECT flow_run_id, method_label FROM runs"),
        "results": query(database, "SELECT r.method_label, v.suite, v.metric, v.value FROM runs r JOIN results v USING (run_id)"),
    }

    # what a crash can leave on disk, and a cached checkpoint corrupted after it was written
    checkpoints = tmp / "work" / "checkpoints" / "tiny-llama"
    (magnitude,) = [path for path in checkpoints.glob("magnitude-50pct-*")]
    half = checkpoints / f".{magnitude.name}.tmp-0badc0de"
    half.mkdir()
    (half / "config.json").write_text((magnitude / "config.json").read_text())
    (half / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    weights = magnitude / "model.safetensors"
    whole_size = weights.stat().st_size
    os.truncate(weights, whole_size // 3)

    rerun = prunebench("run", str(config))
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    # A SIGKILL can also lose the cache record of a finished stage (Prefect persists results
    # asynchronously), in which case the rerun recomputes it without reading the truncated files.
    # So corrupt the checkpoint once more after a clean exit, where its cache record surely exists.
    os.truncate(weights, whole_size // 3)
    corrupt_rerun = prunebench("run", str(config))
    assert corrupt_rerun.returncode == 0, corrupt_rerun.stderr[-4000:]
    return {"database": database, "before": before, "killed_output": killed_output, "rerun": rerun,
            "corrupt_rerun": corrupt_rerun, "magnitude": magnitude, "half": half, "whole_size": whole_size}  # fmt: skip


@pytest.mark.e2e
def test_rerun_records_every_method_and_loses_nothing_of_the_killed_run(killed_and_rerun):
    database, before = killed_and_rerun["database"], killed_and_rerun["before"]
    (killed_flow_run,) = {flow_run for flow_run, _ in before["runs"]}
    killed_labels = sorted(label for _, label in before["runs"])
    assert {"dense", "magnitude 50%"} <= set(killed_labels) < set(LABELS)
    # nothing the killed run recorded is lost or changed
    after = query(database, f"SELECT r.method_label, v.suite, v.metric, v.value FROM runs r JOIN results v USING (run_id) "
                            f"WHERE r.flow_run_id = '{killed_flow_run}'")  # fmt: skip
    assert sorted(after) == sorted(before["results"])
    # each later run (the rerun, then the run after the second corruption) recorded every method once,
    # and no result appears twice
    later = [fr for (fr,) in query(database, "SELECT DISTINCT flow_run_id FROM runs") if fr != killed_flow_run]
    assert len(later) == 2
    for flow_run_id in later:
        labels = sorted(label for (label,) in query(database, f"SELECT method_label FROM runs WHERE flow_run_id = '{flow_run_id}'"))
        assert labels == LABELS
    (n_results, n_distinct) = query(database, "SELECT count(*), count(DISTINCT (run_id, suite, metric)) FROM results")[0]
    assert n_results == n_distinct
    (n_runs,) = query(database, "SELECT count(*) FROM runs")[0]
    assert n_runs == len(killed_labels) + 2 * len(LABELS)


@pytest.mark.e2e
def test_finished_stages_come_from_the_cache(killed_and_rerun):
    database = killed_and_rerun["database"]
    latest = query(database, "SELECT flow_run_id FROM runs ORDER BY started_at DESC LIMIT 1")[0][0]
    cached = dict(query(database, "SELECT r.method_label || '/' || s.stage, s.cached FROM stages s JOIN runs r USING (run_id) "
                                  f"WHERE r.flow_run_id = '{latest}'"))  # fmt: skip
    # computed before the kill: the shared stages and dense's evaluation
    assert cached["wanda 50%/calibration"] and cached["shortgpt 25%/redundancy"] and cached["dense/evaluate"]
    # the corrupted checkpoint was rebuilt, so it and its evaluation were computed again
    assert not cached["magnitude 50%/prune"] and not cached["magnitude 50%/evaluate"]


@pytest.mark.e2e
def test_corrupt_cached_checkpoint_is_rebuilt_with_a_warning(killed_and_rerun):
    output = killed_and_rerun["corrupt_rerun"].stdout + killed_and_rerun["corrupt_rerun"].stderr
    weights = killed_and_rerun["magnitude"] / "model.safetensors"
    expected = (
        f"cached result of pruned_checkpoint is unusable: {weights} is {killed_and_rerun['whole_size'] // 3} bytes "
        f"where {killed_and_rerun['whole_size']} were written (truncated or overwritten); rebuilding it"
    )
    # Prefect's console handler wraps long lines (and folds long paths) at the terminal width
    unwrapped = re.sub(r"\s+", "", output)
    assert re.sub(r"\s+", "", expected) in unwrapped, output[-3000:]
    assert unwrapped.count("isunusable") == 1
    assert checkpoint_problem(killed_and_rerun["magnitude"]) is None  # whole again, at the same place
    assert weights.stat().st_size == killed_and_rerun["whole_size"]
    # the rebuilt checkpoint gives the numbers the intact one gave before the kill
    database = killed_and_rerun["database"]
    values = query(database, "SELECT r.flow_run_id, v.suite, v.metric, v.value FROM runs r JOIN results v USING (run_id) "
                             "WHERE r.method_label = 'magnitude 50%'")  # fmt: skip
    by_metric: dict = {}
    for _, suite, metric, value in values:
        by_metric.setdefault((suite, metric), []).append(value)
    assert all(len(runs) == 3 and runs[1:] == pytest.approx(runs[:-1], rel=1e-6) for runs in by_metric.values()), by_metric


@pytest.mark.e2e
def test_half_written_checkpoint_is_never_read(killed_and_rerun):
    half = killed_and_rerun["half"]
    # left as it was: nothing renamed it into place or loaded it (loading it fails: its header is not JSON)
    assert (half / "model.safetensors").read_bytes().endswith(b"{not json")
    output = killed_and_rerun["rerun"].stdout + killed_and_rerun["rerun"].stderr
    assert ".tmp-" not in output
    for directory in half.parent.iterdir():
        if not directory.name.startswith("."):
            assert checkpoint_problem(directory) is None, directory
