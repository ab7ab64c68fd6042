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

import duckdb
import pytest

from pruning.calibration import load_calibration
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


def run_watching(args: list[str], markers: list[str], action: str, database: Path | None = None,
                 env: dict | None = None, timeout_s: float = 600) -> tuple[int, str]:
    """Start `prunebench ARGS` and, once lines containing each of `markers` have appeared in that order,
    `kill` it (SIGKILL), `term`inate it (SIGTERM) or `lock` `database` (a read-write DuckDB connection of
    this process, held until the run has ended). Returns its exit status and output, once the processes
    it started have gone too (asserted: they must not outlive it).

    Only the run's own process is signalled; its session is killed afterwards, so that nothing a
    failing test leaves behind lingers."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}, **(env or {})}
    process = subprocess.Popen([sys.executable, "-m", "flows.cli", *args], cwd=REPO, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    seen, waiting, held, children, deadline = [], list(markers), None, [], time.monotonic() + timeout_s
    try:
        while True:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            if line is None:
                if waiting:
                    pytest.fail(f"the run ended before {waiting[0]!r}:\n{''.join(seen)[-3000:]}")
                break
            seen.append(line)
            if waiting and waiting[0] in line:
                waiting.pop(0)
                if not waiting and action in ("kill", "term"):
                    children = children_of(process.pid)
                    os.kill(process.pid, signal.SIGKILL if action == "kill" else signal.SIGTERM)
                    if action == "kill":
                        break
                if not waiting and action == "lock":
                    held = duckdb.connect(str(database))
    except queue.Empty:
        pytest.fail(f"no {waiting[0] if waiting else 'end'!r} within {timeout_s:g} s:\n{''.join(seen)[-3000:]}")
    finally:
        if held is not None:
            held.close()
        if waiting:  # failed before acting: stop it all now
            _kill_session(process.pid)
        process.wait(timeout=60)
        # what it started (Prefect's API server) goes with it, SIGKILL or not
        deadline = time.monotonic() + 15
        while children and time.monotonic() < deadline:
            children = [child for child in children if _running(child)]
            time.sleep(0.2)
        _kill_session(process.pid)
    assert not children, f"processes {children} outlived the run they belong to"
    return process.returncode, "".join(seen)


def _kill_session(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def children_of(pid: int) -> list[int]:
    """The processes `pid` started that are alive now (Linux /proc)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):  # a thread that ended since the listing
            continue
    return found


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting for its parent to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


class _Payload:
    """A pickle that creates `path` when it is loaded: what a crafted cache record would carry."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def plant_pickle(results: Path, kind: str, created: Path) -> None:
    """Replace the cache record of the stage whose result is a `kind` (its metadata under `records/`,
    its value beside it) by one naming Prefect's pickle serializer, whose value creates `created`."""
    import base64
    import json
    import pickle

    from prefect._internal.result_records import ResultRecordMetadata

    (metadata,) = [path for path in (results / "records").iterdir()
                   if json.loads(Path(json.loads(path.read_bytes())["storage_key"]).read_bytes())["kind"] == kind]  # fmt: skip
    value = Path(json.loads(metadata.read_bytes())["storage_key"])
    planted = {**json.loads(metadata.read_bytes()), "serializer": {"type": "pickle", "picklelib": "pickle"}}
    payload = base64.encodebytes(pickle.dumps(_Payload(created)))
    # the payload works: Prefect's own reading of such a record runs it
    ResultRecordMetadata.load_bytes(json.dumps(planted).encode()).serializer.loads(payload)
    assert created.exists()
    created.unlink()
    metadata.write_text(json.dumps(planted))
    value.write_bytes(payload)


WANDA_PRUNED = "Task run 'prune[wanda, 50%]' - Finished"


@pytest.fixture(scope="module")
def killed_and_rerun(module_tmp, cache_dir, smollm2_checkpoint):
    tmp = module_tmp("faults")
    model = tiny_llama(tmp / "tiny-llama", smollm2_checkpoint)
    config = write_config(tmp, "faults", model, METHODS, cache_dir)
    database = tmp / "results.duckdb"

    # 1. SIGKILL while wanda's checkpoint is being evaluated (its prune finished: the weights are loading)
    status, killed_output = run_watching(["run", str(config)], [WANDA_PRUNED, "Loading weights"], "kill")
    assert status == -signal.SIGKILL
    before = {
        "runs": query(database, "SELECT flow_run_id, method_label FROM runs"),
        "results": query(database, "SELECT r.method_label, v.suite, v.metric, v.value FROM runs r JOIN results v USING (run_id)"),
    }

    # what a crash can leave on disk, a cached checkpoint corrupted after it was written, and a crafted
    # pickle in place of the calibration set's cache record
    checkpoints = tmp / "work" / "checkpoints" / "tiny-llama"
    (magnitude,) = [path for path in checkpoints.glob("magnitude-50pct-*")]
    half = checkpoints / f".{magnitude.name}.tmp-0badc0de"
    half.mkdir()
    (half / "config.json").write_text((magnitude / "config.json").read_text())
    (half / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    weights = magnitude / "model.safetensors"
    whole_size = weights.stat().st_size
    os.truncate(weights, whole_size // 3)
    pwned = tmp / "pwned"
    plant_pickle(tmp / "work" / "prefect" / "results", "CalibrationSet", pwned)

    # 2. the same command; another process locks the database while wanda is evaluated, so recording it fails
    status, locked_output = run_watching(["run", str(config)], [WANDA_PRUNED], "lock", database,
                                         env={"PRUNEBENCH_DB_LOCK_TIMEOUT_S": "1"})  # fmt: skip
    assert status != 0, locked_output[-3000:]
    # 3. the same command again, undisturbed
    rerun = prunebench("run", str(config), own_server=True)  # the default path: a temporary server of its own
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    # 4. the checkpoint corrupted once more after a clean exit, and the calibration set truncated
    os.truncate(weights, whole_size // 3)
    (calibration,) = (tmp / "work" / "calibration").glob("*.safetensors")
    os.truncate(calibration, 100)
    corrupt_rerun = prunebench("run", str(config))
    assert corrupt_rerun.returncode == 0, corrupt_rerun.stderr[-4000:]
    return {"database": database, "before": before, "killed_output": killed_output, "locked_output": locked_output,
            "rerun": rerun, "corrupt_rerun": corrupt_rerun, "magnitude": magnitude, "half": half,
            "whole_size": whole_size, "pwned": pwned, "calibration": calibration}  # fmt: skip


def state_of(output: str, task_run: str) -> str | None:
    """The final state Prefect logged for the task run named `task_run` (None: it never finished)."""
    found = re.findall(rf"Task run '{re.escape(task_run)}' - Finished in state (\w+)", output)
    assert len(found) <= 1, found
    return found[0] if found else None


@pytest.mark.e2e
def test_rerun_records_every_method_and_loses_nothing_of_the_killed_run(killed_and_rerun):
    database, before = killed_and_rerun["database"], killed_and_rerun["before"]
    (killed_flow_run,) = {flow_run for flow_run, _ in before["runs"]}
    killed_labels = sorted(label for _, label in before["runs"])
    assert killed_labels == ["dense", "magnitude 50%"]  # killed during the third method
    # nothing the killed run recorded is lost or changed
    after = query(database, f"SELECT r.method_label, v.suite, v.metric, v.value FROM runs r JOIN results v USING (run_id) "
                            f"WHERE r.flow_run_id = '{killed_flow_run}'")  # fmt: skip
    assert sorted(after) == sorted(before["results"])
    # the run whose recording failed kept what it recorded before; each later run (the undisturbed rerun,
    # then the run after the second corruption) recorded every method once; no result appears twice
    later = [fr for (fr,) in query(database, "SELECT flow_run_id FROM runs GROUP BY flow_run_id ORDER BY min(started_at)")
             if fr != killed_flow_run]  # fmt: skip
    labels = [sorted(label for (label,) in query(database, f"SELECT method_label FROM runs WHERE flow_run_id = '{fr}'")) for fr in later]
    assert labels == [["dense", "magnitude 50%"], LABELS, LABELS]
    (n_results, n_distinct) = query(database, "SELECT count(*), count(DISTINCT (run_id, suite, metric)) FROM results")[0]
    assert n_results == n_distinct
    (n_runs,) = query(database, "SELECT count(*) FROM runs")[0]
    assert n_runs == 2 + 2 + 2 * len(LABELS)


@pytest.mark.e2e
def test_a_run_stopped_with_sigterm_crashes_its_flow_run_and_stops_its_server(module_tmp, cache_dir, smollm2_checkpoint):
    """SIGTERM is what `timeout`, systemd and `docker stop` send: handled like Ctrl-C."""
    tmp = module_tmp("sigterm")
    config = write_config(tmp, "sigterm", tiny_llama(tmp / "tiny-llama", smollm2_checkpoint), [{"name": "dense"}], cache_dir)
    # during the evaluation (the weights are loading), where a long run spends its time
    status, output = run_watching(["run", str(config)], ["Task run 'model[", "Loading weights"], "term", timeout_s=300)
    assert status == 128 + signal.SIGTERM
    assert re.search(r"Flow run 'benchmark\[[^']*\]' - Finished in state Crashed\('Execution was aborted by a termination signal", output)
    assert output.rstrip().endswith("prunebench: stopped by SIGTERM; finished stages are cached and will be reused")


@pytest.mark.e2e
def test_a_flow_run_left_running_by_a_killed_process_is_marked_crashed(killed_and_rerun):
    locked = re.sub(r"\s+", " ", killed_and_rerun["locked_output"])
    assert re.search(r"flow run benchmark\[\S+\] was left Running by process \d+, which is gone: marked Crashed", locked), locked[-2000:]
    rerun = killed_and_rerun["rerun"].stdout + killed_and_rerun["rerun"].stderr
    assert "marked Crashed" not in rerun  # the run whose recording failed ended Failed, not Running


@pytest.mark.e2e
def test_a_stage_finished_before_the_kill_comes_from_the_cache(killed_and_rerun):
    """The branch (study, method) is a task of its own; its stages are committed as each finishes,
    not when the branch does: wanda's prune survives the kill during wanda's evaluation."""
    killed, after = killed_and_rerun["killed_output"], killed_and_rerun["locked_output"]
    assert state_of(killed, "prune[wanda, 50%]") == "Completed"
    assert state_of(killed, "evaluate[tiny-llama, wanda 50%]") is None  # killed while it ran
    assert state_of(after, "prune[wanda, 50%]") == "Cached"
    assert state_of(after, "evaluate[tiny-llama, dense]") == "Cached"


@pytest.mark.e2e
def test_an_evaluation_whose_recording_failed_comes_from_the_cache(killed_and_rerun):
    locked, rerun = killed_and_rerun["locked_output"], killed_and_rerun["rerun"].stdout + killed_and_rerun["rerun"].stderr
    assert state_of(locked, "evaluate[tiny-llama, wanda 50%]") == "Completed"
    assert state_of(locked, "record[tiny-llama, wanda 50%]") == "Failed"
    assert "is locked: another process" in re.sub(r"\s+", " ", locked)
    assert state_of(rerun, "evaluate[tiny-llama, wanda 50%]") == "Cached"
    assert state_of(rerun, "record[tiny-llama, wanda 50%]") == "Completed"


@pytest.mark.e2e
def test_a_planted_pickle_is_never_loaded_and_its_stage_is_recomputed(killed_and_rerun):
    locked, rerun = killed_and_rerun["locked_output"], killed_and_rerun["rerun"].stdout + killed_and_rerun["rerun"].stderr
    assert not killed_and_rerun["pwned"].exists()
    unwrapped = re.sub(r"\s+", "", locked)
    assert unwrapped.count("ignoringthecachedresult") == 1, locked[-3000:]
    assert "itsserializeris'pickle';onlyprunebench'sJSONrecordsareread,sothestageisrecomputed" in unwrapped
    assert state_of(locked, "calibration[jargon, 4x32]") == "Completed"
    # the recomputed record replaced the planted one
    assert state_of(rerun, "calibration[jargon, 4x32]") == "Cached"
    assert "ignoring the cached result" not in rerun


@pytest.mark.e2e
def test_finished_stages_come_from_the_cache(killed_and_rerun):
    database = killed_and_rerun["database"]
    latest = query(database, "SELECT flow_run_id FROM runs ORDER BY started_at DESC LIMIT 1")[0][0]
    cached = dict(query(database, "SELECT r.method_label || '/' || s.stage, s.cached FROM stages s JOIN runs r USING (run_id) "
                                  f"WHERE r.flow_run_id = '{latest}'"))  # fmt: skip
    # computed before: the layer redundancy, dense's evaluation, wanda's prune (its calibration set was
    # truncated, so rebuilt, to the same bytes)
    assert cached["shortgpt 25%/redundancy"] and cached["dense/evaluate"] and cached["wanda 50%/prune"]
    assert not cached["wanda 50%/calibration"]
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
    calibration = killed_and_rerun["calibration"]
    expected = f"cached result of calibration_set is unusable: {calibration} changed after the stage that wrote it was cached"
    assert re.sub(r"\s+", "", expected) in unwrapped, output[-3000:]
    assert unwrapped.count("isunusable") == 2
    assert load_calibration(calibration).shape == (4, 32)  # rewritten whole
    assert checkpoint_problem(killed_and_rerun["magnitude"]) is None  # whole again, at the same place
    assert weights.stat().st_size == killed_and_rerun["whole_size"]
    # the rebuilt checkpoint gives the numbers the intact one gave before the kill
    database = killed_and_rerun["database"]
    values = query(database, "SELECT r.flow_run_id, v.suite, v.metric, v.value FROM runs r JOIN results v USING (run_id) "
                             "WHERE r.method_label = 'magnitude 50%'")  # fmt: skip
    by_metric: dict = {}
    for _, suite, metric, value in values:
        by_metric.setdefault((suite, metric), []).append(value)
    assert all(len(runs) == 4 and runs[1:] == pytest.approx(runs[:-1], rel=1e-6) for runs in by_metric.values()), by_metric


@pytest.mark.e2e
def test_half_written_checkpoint_is_never_read_and_is_removed_when_its_checkpoint_is_written(killed_and_rerun):
    half = killed_and_rerun["half"]
    # nothing renamed it into place or loaded it (loading it fails: its header is not JSON); the rebuild
    # of its checkpoint (the truncated magnitude one) removed it
    assert not half.exists()
    for output in (killed_and_rerun["locked_output"], killed_and_rerun["rerun"].stdout + killed_and_rerun["rerun"].stderr):
        assert ".tmp-" not in output and "not json" not in output
    for directory in half.parent.iterdir():
        if not directory.name.startswith("."):
            assert checkpoint_problem(directory) is None, directory
