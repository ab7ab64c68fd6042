"""ResultStore: idempotent upserts, all-or-nothing writes, migrations on open, corrupt files left
alone, and a lock held by another process waited for, then reported."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pytest

from pruning.errors import StoreError
from reports import schema, store as store_module
from reports.records import AllocationRow, ItemScore, RedundancyRow, ResultRow, RunBundle, RunRecord, StageRecord
from reports.store import ResultStore

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)


def bundle(run_id: str = "run-1", ppl: float = 18.31, acc: float = 0.5, target: float = 0.5) -> RunBundle:
    run = RunRecord(
        run_id=run_id, flow_run_id="flow-1", experiment="smoke", config_hash=f"hash-{run_id}",
        model="smollm2-135m", model_source="packaged:smollm2-135m", method="wanda", method_label="wanda 50%",
        method_id="0123456789abcdef", method_params='{"name": "wanda", "sparsity": 0.5}', target_weight_sparsity=0.5,
        achieved_weight_sparsity=0.5, params_total=1000, params_pruned=500, params_pruned_share=0.5, seed=0, git_commit="abc123", package_versions='{"torch": "2.13.0"}',
        host="box", device="cpu", started_at=T0, finished_at=T0 + timedelta(minutes=3),
    )  # fmt: skip
    return RunBundle(
        run=run,
        results=[
            ResultRow(run_id=run_id, suite="jargon_ppl", metric="word_perplexity", value=ppl, higher_is_better=False),
            ResultRow(run_id=run_id, suite="jargon_mc", metric="acc", value=acc, stderr=0.02, higher_is_better=True,
                      n_samples=50),
        ],
        items=[
            ItemScore(run_id=run_id, suite="jargon_ppl", item=str(item), metric="word_perplexity", value=-120.5 - item, weight=30.0 + item)
            for item in range(3)
        ] + [ItemScore(run_id=run_id, suite="jargon_mc", item=str(item), metric="acc", value=float(item % 2)) for item in range(4)],
        stages=[StageRecord(run_id=run_id, stage="prune", wall_s=1.5, peak_rss_gb=0.8)],
        allocations=[
            AllocationRow(run_id=run_id, modality="language", block=block, layer=layer, n_params=100,
                          target_sparsity=target, achieved_sparsity=0.5)
            for block in range(3) for layer in ("mlp.up_proj", "self_attn.q_proj")
        ],  # fmt: skip
        redundancy=[
            RedundancyRow(run_id=run_id, method="interlace", kind=kind, i=i, j=j, value=1.0 - 0.1 * (j - i))
            for kind in ("cos_mean", "cos_last") for i in range(3) for j in range(i + 1, 4)
        ],  # fmt: skip
    )


def counts(store: ResultStore) -> dict[str, int]:
    tables = ("runs", "results", "item_scores", "stages", "allocations", "redundancy")
    return {table: store.query(f"SELECT count(*) AS n FROM {table}")[0]["n"] for table in tables}


def sorted_results(store: ResultStore, run_id: str) -> list[ResultRow]:
    return sorted(store.results(run_id), key=lambda row: (row.suite, row.metric))


@pytest.fixture
def store(tmp_path: Path) -> ResultStore:
    return ResultStore(tmp_path / "results" / "prunebench.duckdb", lock_timeout_s=2)


def test_a_recorded_bundle_reads_back_equal(store):
    original = bundle()
    store.record(original)
    read = store.bundle("run-1")
    assert read.run == original.run and read.stages == original.stages and read.allocations == original.allocations
    in_item_order = sorted(original.items, key=lambda row: (row.suite, row.metric, row.item))
    assert read.items == store.items("run-1") == in_item_order
    in_key_order = sorted(original.redundancy, key=lambda row: (row.method, row.kind, row.i, row.j))
    assert read.redundancy == store.redundancy("run-1") == in_key_order
    assert sorted_results(store, "run-1") == sorted(original.results, key=lambda row: (row.suite, row.metric))
    assert read.run.finished_at == T0 + timedelta(minutes=3) and read.run.finished_at.utcoffset() == timedelta(0)
    assert store.bundle("no-such-run") is None
    assert store.schema_version() == schema.SCHEMA_VERSION


def test_recording_twice_adds_no_rows(store):
    store.record(bundle())
    once = counts(store)
    store.record(bundle())
    assert counts(store) == once == {"runs": 1, "results": 2, "item_scores": 7, "stages": 1, "allocations": 6, "redundancy": 12}


def test_rerecording_a_run_replaces_its_rows(store):
    store.record(bundle("run-1"))
    store.record(bundle("run-2"))
    changed = bundle("run-1", ppl=25.0)
    store.record(changed.model_copy(update={"results": changed.results[:1]}))  # acc no longer recorded
    assert [(row.metric, row.value) for row in store.results("run-1")] == [("word_perplexity", 25.0)]
    assert len(store.results("run-2")) == 2  # the other run untouched
    store.record(changed.model_copy(update={"redundancy": changed.redundancy[:2]}))
    assert len(store.redundancy("run-1")) == 2 and len(store.redundancy("run-2")) == 12


def test_a_failing_write_leaves_nothing_and_keeps_earlier_rows(store):
    store.record(bundle("run-1"))
    before = counts(store)
    # the last allocation violates a CHECK constraint: runs and results were already inserted
    bad = bundle("run-2", target=1.5)
    with pytest.raises(StoreError, match=rf"{store.path}.*recording run run-2.*rolled back"):
        store.record(bad)
    # re-recording run-1 with a bad row must not lose the run-1 rows deleted before the failure
    with pytest.raises(StoreError):
        store.record(bundle("run-1", ppl=99.0, target=1.5))
    assert counts(store) == before
    assert [row.value for row in sorted_results(store, "run-1")] == [0.5, 18.31]


def test_an_exception_mid_transaction_rolls_back(store, monkeypatch):
    store.record(bundle("run-1"))
    before = counts(store)
    real_insert = store_module._insert

    def insert_then_crash(connection, table, records):
        real_insert(connection, table, records)
        if table == "results":
            raise KeyboardInterrupt  # not a database error: still rolled back, and re-raised as is

    monkeypatch.setattr(store_module, "_insert", insert_then_crash)
    with pytest.raises(KeyboardInterrupt):
        store.record(bundle("run-1", ppl=50.0))
    with pytest.raises(KeyboardInterrupt):
        store.record(bundle("run-2"))
    monkeypatch.undo()
    assert counts(store) == before and [row.value for row in sorted_results(store, "run-1")] == [0.5, 18.31]


def test_duplicate_keys_in_one_bundle_are_refused_whole(store):
    twice = bundle()
    with pytest.raises(StoreError, match="(?i)duplicate key"):
        store.record(twice.model_copy(update={"results": twice.results * 2}))
    assert counts(store) == {"runs": 0, "results": 0, "item_scores": 0, "stages": 0, "allocations": 0, "redundancy": 0}


def test_rows_of_another_run_are_refused_before_opening(store):
    mixed = bundle("run-1")
    with pytest.raises(ValueError, match="run-2"):
        store.record(mixed.model_copy(update={"stages": [*mixed.stages, *bundle("run-2").stages]}))
    assert not store.path.exists()


def test_reading_a_missing_database_is_empty_and_creates_nothing(store):
    assert store.runs() == [] and store.results() == [] and store.allocations("x") == [] and store.items("x") == []
    assert store.query("SELECT count(*) AS n FROM runs") == [{"n": 0}]
    assert not store.path.exists() and not store.path.parent.exists()


def test_read_helpers_filter(store):
    store.record(bundle("run-1"))
    store.record(bundle("run-2"))
    assert [run.run_id for run in store.runs(model="smollm2-135m")] == ["run-1", "run-2"]
    assert store.runs(experiment="other") == []
    assert {row.run_id for row in store.stages("run-2")} == {"run-2"}
    assert store.query("SELECT run_id FROM results WHERE value > $v ORDER BY run_id", {"v": 1.0}) == [
        {"run_id": "run-1"}, {"run_id": "run-2"}
    ]  # fmt: skip


def test_items_of_one_run_and_suite(store):
    store.record(bundle("run-1"))
    store.record(bundle("run-2"))
    assert [(row.item, row.value) for row in store.items("run-2", suite="jargon_mc")] == [("0", 0.0), ("1", 1.0), ("2", 0.0), ("3", 1.0)]
    assert {row.run_id for row in store.items("run-2")} == {"run-2"} and len(store.items("run-2")) == 7
    store.record(bundle("run-1").model_copy(update={"items": []}))  # re-recorded without items: none left behind
    assert store.items("run-1") == [] and len(store.items("run-2")) == 7


def test_ten_thousand_items_round_trip(store):
    """A large evaluation's items go in as one statement (`_insert`: columns as lists, unnested)."""
    items = [
        ItemScore(run_id="run-1", suite=f"suite_{index % 4}", item=str(index // 4), metric="acc", value=float(index % 3 == 0))
        for index in range(10_000)
    ]
    store.record(bundle("run-1").model_copy(update={"items": items}))
    assert store.items("run-1") == sorted(items, key=lambda row: (row.suite, row.metric, row.item))


def test_an_older_database_is_migrated_on_open_with_rows_intact(store, monkeypatch):
    store.record(bundle("run-1"))  # a file of the current version
    later = schema.SCHEMA_VERSION + 1
    newer = [*schema.MIGRATIONS, lambda connection: connection.execute("ALTER TABLE runs ADD COLUMN notes VARCHAR")]
    monkeypatch.setattr(schema, "MIGRATIONS", newer)
    assert store.runs() == [bundle("run-1").run]  # a read opens, migrates, reads
    assert store.schema_version() == later
    assert store.query("SELECT version FROM schema_version ORDER BY version") == [{"version": v} for v in range(1, later + 1)]
    assert store.query("SELECT run_id, notes FROM runs") == [{"run_id": "run-1", "notes": None}]
    store.record(bundle("run-2"))  # and the current code still writes to it
    assert counts(store)["results"] == 4


def test_a_newer_database_is_refused_with_its_name(store, monkeypatch):
    store.record(bundle())
    monkeypatch.setattr(schema, "MIGRATIONS", [])  # as if this code were older than the file
    with pytest.raises(StoreError, match=rf"^{store.path}: has schema version {schema.SCHEMA_VERSION}, newer"):
        store.runs()
    with pytest.raises(StoreError, match="newer"):
        store.record(bundle("run-2"))


def test_a_corrupt_file_is_named_and_left_untouched(tmp_path):
    path = tmp_path / "results.duckdb"
    path.write_bytes(bytes(range(256)) * 64)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    store = ResultStore(path, lock_timeout_s=1)
    with pytest.raises(StoreError, match=rf"{path} is not a DuckDB database") as error:
        store.record(bundle())
    assert "\n" not in str(error.value)
    with pytest.raises(StoreError, match=str(path)):
        store.runs()
    with pytest.raises(StoreError, match=rf"{path} is not a DuckDB database"):
        store.check_writable()  # what the preflight asks, before any compute
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.duckdb"]


def test_check_writable_creates_a_new_database_and_changes_an_old_one_not_at_all(store):
    store.check_writable()
    assert store.path.is_file() and store.runs() == []
    store.record(bundle())
    before = store.runs()
    store.check_writable()
    assert store.runs() == before


def test_a_folder_that_cannot_be_made_is_named(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreError, match="cannot create its folder"):
        ResultStore(tmp_path / "file" / "results.duckdb").check_writable()


@pytest.mark.parametrize("value", ["-1", "inf", "soon"])
def test_a_bad_lock_timeout_in_the_environment_is_named(monkeypatch, tmp_path, value):
    monkeypatch.setenv("PRUNEBENCH_DB_LOCK_TIMEOUT_S", value)
    with pytest.raises(StoreError, match=f"PRUNEBENCH_DB_LOCK_TIMEOUT_S='{value}': expected a finite number of seconds"):
        ResultStore(tmp_path / "x.duckdb")
    monkeypatch.setenv("PRUNEBENCH_DB_LOCK_TIMEOUT_S", "2.5")
    assert ResultStore(tmp_path / "x.duckdb").lock_timeout_s == 2.5


def test_someone_elses_duckdb_file_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "other.duckdb"
    with duckdb.connect(str(path)) as connection:
        connection.execute("CREATE TABLE invoices AS SELECT 1 AS id")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(StoreError, match=rf"{path}: has tables \(invoices\)"):
        ResultStore(path).record(bundle())
    with pytest.raises(StoreError, match="not a prunebench results database"):
        ResultStore(path).runs()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


# -- a lock held by another process ------------------------------------------------------------

HOLDER = """
import sys, time, pathlib, duckdb
database, locked, release = sys.argv[1:]
connection = duckdb.connect(database)  # read-write: locks the file against every other process
pathlib.Path(locked).touch()
deadline = time.monotonic() + 20
while not pathlib.Path(release).exists() and time.monotonic() < deadline:
    time.sleep(0.02)
connection.close()
"""


def wait_for(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


@pytest.fixture
def lock_holder(store, tmp_path):
    """Another process holding the database open read-write until `release` is touched."""
    store.record(bundle("run-1"))
    locked, release = tmp_path / "locked", tmp_path / "release"
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(store.path), str(locked), str(release)])
    try:
        wait_for(lambda: locked.exists() or process.poll() is not None)
        assert process.poll() is None, "the lock holder died"
        yield release
    finally:
        release.touch()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_a_lock_held_too_long_is_reported_with_the_file_name(store, lock_holder):
    impatient = ResultStore(store.path, lock_timeout_s=0.3)
    started = time.monotonic()
    with pytest.raises(StoreError) as error:
        impatient.record(bundle("run-2"))
    message = str(error.value)
    assert message.startswith(f"{store.path} is locked: another process (PID ") and "holds it" in message
    assert "\n" not in message
    assert time.monotonic() - started < 3
    with pytest.raises(StoreError, match="another process .* holds it"):
        impatient.runs()  # read-only opens conflict with a writer too


def test_a_write_waits_for_the_lock_and_then_succeeds(store, lock_holder, monkeypatch):
    refused = []
    real_connect = duckdb.connect

    def connect(*args, **kwargs):
        try:
            return real_connect(*args, **kwargs)
        except duckdb.IOException as error:
            refused.append(error)
            raise

    monkeypatch.setattr(duckdb, "connect", connect)
    patient = ResultStore(store.path, lock_timeout_s=15)
    failures = []
    writer = threading.Thread(target=lambda: _capture(failures, patient.record, bundle("run-2")))
    writer.start()
    wait_for(lambda: refused or not writer.is_alive())
    lock_holder.touch()  # the other process closes the file; the next retry gets it
    writer.join(timeout=20)
    assert not writer.is_alive() and failures == []
    assert refused and "Could not set lock" in str(refused[0])
    assert [run.run_id for run in patient.runs()] == ["run-1", "run-2"]


def _capture(failures: list, function, *args) -> None:
    try:
        function(*args)
    except Exception as error:  # noqa: BLE001 - handed to the test thread
        failures.append(error)


def test_threads_of_one_process_take_turns(store):
    # in one process DuckDB refuses a read-only open beside a read-write one instead of waiting
    failures: list = []

    def work(index: int) -> None:
        for attempt in range(3):
            store.record(bundle(f"run-{index}-{attempt}"))
            store.runs()

    threads = [threading.Thread(target=_capture, args=(failures, work, index)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert failures == [] and counts(store)["runs"] == 12


WRITER = """
import sys
sys.path.insert(0, sys.argv[1])
from test_store import bundle
from reports.store import ResultStore
store = ResultStore(sys.argv[2], lock_timeout_s=60)
prefix, count = sys.argv[3], int(sys.argv[4])
print("ready", flush=True)
sys.stdin.readline()  # start together
for index in range(count):
    store.record(bundle(f"{prefix}-{index}"))
"""


def test_two_processes_writing_at_once_lose_no_rows(store):
    runs_each = 15
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(Path(__file__).parent), str(store.path), name, str(runs_each)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name in ("first", "second")
    ]  # fmt: skip
    try:
        for writer in writers:  # both have imported everything; release them at the same moment
            assert writer.stdout.readline().strip() == "ready", writer.stderr.read()
        for writer in writers:
            writer.stdin.write("go\n")
            writer.stdin.flush()
        outcomes = [writer.communicate(timeout=120) for writer in writers]
    finally:
        for writer in writers:
            if writer.poll() is None:
                writer.kill()
                writer.wait()
    assert [writer.returncode for writer in writers] == [0, 0], [err for _, err in outcomes]
    one = bundle()
    assert counts(store) == {
        "runs": 2 * runs_each,
        "results": 2 * runs_each * len(one.results),
        "item_scores": 2 * runs_each * len(one.items),
        "stages": 2 * runs_each * len(one.stages),
        "allocations": 2 * runs_each * len(one.allocations),
        "redundancy": 2 * runs_each * len(one.redundancy),
    }
    assert {run.run_id for run in store.runs()} == {f"{name}-{i}" for name in ("first", "second") for i in range(runs_each)}
