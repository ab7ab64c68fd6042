"""The schema matches the records, and migrations bring older databases forward without loss."""

from __future__ import annotations

import json

import duckdb
import pytest

from pruning.errors import StoreError
from reports import schema
from pruning.specs import WandaSpec, method_identity
from reports.records import AllocationRow, ItemScore, RedundancyRow, ResultRow, RunRecord, StageRecord
from reports.store import ResultStore

TABLES = {
    "runs": RunRecord,
    "results": ResultRow,
    "item_scores": ItemScore,
    "stages": StageRecord,
    "allocations": AllocationRow,
    "redundancy": RedundancyRow,
}
PRIMARY_KEYS = {
    "runs": ["run_id"],
    "results": ["run_id", "suite", "metric"],
    "item_scores": ["run_id", "suite", "metric", "item"],
    "stages": ["run_id", "stage"],
    "allocations": ["run_id", "modality", "block", "layer"],
    "redundancy": ["run_id", "method", "kind", "i", "j"],
    "schema_version": ["version"],
}


@pytest.fixture
def connection():
    with duckdb.connect(":memory:") as connection:
        yield connection


def v1_with_one_result(connection) -> None:
    """A version-1 database built by hand, holding one result row."""
    connection.execute("BEGIN")
    schema.migrate(connection, schema.MIGRATIONS[:1])
    connection.execute("INSERT INTO results VALUES ('run-1', 'jargon_ppl', 'word_perplexity', 18.31, NULL, false, 64)")
    connection.execute("COMMIT")


def add_notes_column(connection) -> None:  # a plausible v2: a new column with a default
    connection.execute("ALTER TABLE results ADD COLUMN notes VARCHAR DEFAULT ''")


def test_version_constant_counts_the_migrations():
    assert schema.SCHEMA_VERSION == len(schema.MIGRATIONS) == 9


def test_tables_have_the_record_fields_in_order(connection):
    schema.migrate(connection)
    for table, record in TABLES.items():
        columns = [row[0] for row in connection.execute(f"DESCRIBE {table}").fetchall()]
        assert columns == list(record.model_fields), table


def test_primary_keys(connection):
    schema.migrate(connection)
    keys = dict(
        connection.execute(
            "SELECT table_name, constraint_column_names FROM duckdb_constraints() WHERE constraint_type = 'PRIMARY KEY'"
        ).fetchall()
    )
    assert keys == PRIMARY_KEYS


def test_migrate_creates_then_is_a_no_op(connection):
    assert schema.current_version(connection) == 0
    assert schema.migrate(connection) == schema.SCHEMA_VERSION
    assert schema.migrate(connection) == schema.SCHEMA_VERSION
    assert connection.execute("SELECT version FROM schema_version ORDER BY 1").fetchall() == [(1,), (2,), (3,), (4,), (5,), (6,), (7,), (8,), (9,)]


def test_older_database_is_migrated_with_rows_intact(connection):
    v1_with_one_result(connection)
    later = schema.SCHEMA_VERSION + 1
    assert schema.pending_migrations(connection, [*schema.MIGRATIONS, add_notes_column])[-1] == (later, add_notes_column)
    connection.execute("BEGIN")
    assert schema.migrate(connection, [*schema.MIGRATIONS, add_notes_column]) == later
    connection.execute("COMMIT")
    rows = connection.execute("SELECT run_id, value, n_samples, notes FROM results").fetchall()
    assert rows == [("run-1", 18.31, 64, "")]
    assert [v for (v,) in connection.execute("SELECT version FROM schema_version ORDER BY 1").fetchall()] == list(range(1, later + 1))


def test_v1_allocations_gain_an_empty_block_score():
    with duckdb.connect(":memory:") as connection:
        connection.execute("BEGIN")
        schema.migrate(connection, schema.MIGRATIONS[:1])
        connection.execute("INSERT INTO allocations VALUES ('run-1', 'language', 0, 'mlp.up_proj', 4096, 0.5, 0.5)")
        connection.execute("COMMIT")
        assert schema.migrate(connection) == schema.SCHEMA_VERSION
        assert connection.execute("SELECT layer, target_sparsity, block_score FROM allocations").fetchall() == [("mlp.up_proj", 0.5, None)]


V2_ROWS = {
    "runs": "('run-1', 'flow-1', 'smoke', 'hash', 'smollm2-135m', 'packaged:smollm2-135m', 'wanda', 'wanda 50%', "
    "'{}', 0.5, 0.49, 1000, 490, 0, 'abc', '{}', 'box', 'cpu', TIMESTAMPTZ '2025-03-01 12:00:00+00', "
    "TIMESTAMPTZ '2025-03-01 12:05:00+00')",
    "results": "('run-1', 'jargon_ppl', 'word_perplexity', 18.31, NULL, false, 64)",
    "stages": "('run-1', 'prune', 1.5, 0.8, NULL, false)",
    "allocations": "('run-1', 'language', 0, 'mlp.up_proj', 4096, 0.5, 0.49, 0.25)",
}


def older_database(path, version: int) -> dict[str, list[tuple]]:
    """A file as `version` of prunebench wrote it, one row in each table of version 2; returns those rows."""
    with duckdb.connect(str(path)) as connection:
        connection.execute("BEGIN")
        schema.migrate(connection, schema.MIGRATIONS[:version])
        for table, row in V2_ROWS.items():
            connection.execute(f"INSERT INTO {table} VALUES {row}")
        connection.execute("COMMIT")
        return {table: connection.execute(f"SELECT * FROM {table}").fetchall() for table in V2_ROWS}


def test_a_v2_database_gains_the_redundancy_table_and_loses_nothing(tmp_path):
    path = tmp_path / "v2.duckdb"
    before = older_database(path, 2)
    with duckdb.connect(str(path)) as connection:
        connection.execute("BEGIN")
        assert [version for version, _ in schema.pending_migrations(connection, schema.MIGRATIONS[:3])] == [3]
        assert schema.migrate(connection, schema.MIGRATIONS[:3]) == 3
        connection.execute("COMMIT")
        assert {table: connection.execute(f"SELECT * FROM {table}").fetchall() for table in V2_ROWS} == before
        assert connection.execute("SELECT count(*) FROM redundancy").fetchone() == (0,)
        connection.execute("INSERT INTO redundancy VALUES ('run-1', 'interlace', 'cos_mean', 0, 3, 0.91)")
        with pytest.raises(duckdb.ConstraintException):  # the key: one value per (run, method, kind, i, j)
            connection.execute("INSERT INTO redundancy VALUES ('run-1', 'interlace', 'cos_mean', 0, 3, 0.5)")


def test_a_v3_database_gains_empty_environment_digests_and_loses_nothing(tmp_path):
    path = tmp_path / "v3.duckdb"
    before = older_database(path, 3)
    with duckdb.connect(str(path)) as connection:
        connection.execute("BEGIN")
        assert [version for version, _ in schema.pending_migrations(connection, schema.MIGRATIONS[:4])] == [4]
        assert schema.migrate(connection, schema.MIGRATIONS[:4]) == 4
        connection.execute("COMMIT")
        after = {table: connection.execute(f"SELECT * FROM {table}").fetchall() for table in V2_ROWS}
    assert after["runs"] == [row + (None, None) for row in before["runs"]]  # older runs: digests unknown
    assert {table: rows for table, rows in after.items() if table != "runs"} == {
        table: rows for table, rows in before.items() if table != "runs"
    }


# Three runs as versions 3 and 4 recorded them: `target_sparsity` a weight share for wanda, the drop
# ratio for shortgpt (which dropped 1 of 4 layers, its allocations say); method_params the spec dump.
V4_RUNS = {
    "dense": ("dense", "dense", '{"name":"dense"}', 0.0, 0.0, 0),
    "wanda": ("wanda", "wanda 50%", '{"sparsity":0.5,"n_m":null,"finetune":null,"name":"wanda"}', 0.5, 0.49, 490),
    "shortgpt": ("shortgpt", "shortgpt 25%", '{"drop_ratio":0.25,"finetune":null,"name":"shortgpt"}', 0.25, 0.24, 260),
}
V4_RESULTS = [
    ("jargon_ppl", "word_perplexity", False), ("jargon_ppl", "byte_perplexity", False), ("jargon_ppl", "bits_per_byte", False),
    ("jargon_mc", "acc", True), ("jargon_mc", "acc_norm", True), ("hellaswag", "acc", True), ("hellaswag", "acc_norm", True),
]  # fmt: skip


V3_TABLES = [table for table in TABLES if table != "item_scores"]  # the tables of versions 3 to 5


def v4_history(path, version: int) -> dict[str, list[tuple]]:
    """A file as `version` (3 or 4) of prunebench wrote it, with V4_RUNS, their results, a layer-drop
    allocation and a pruned layer's; returns every table's rows."""
    with duckdb.connect(str(path)) as connection:
        connection.execute("BEGIN")
        schema.migrate(connection, schema.MIGRATIONS[:version])
        for index, (run_id, (method, label, params, target, achieved, pruned)) in enumerate(V4_RUNS.items()):
            connection.execute(
                "INSERT INTO runs (run_id, flow_run_id, experiment, config_hash, model, model_source, method, method_label, "
                "method_params, target_sparsity, achieved_sparsity, params_total, params_pruned, seed, git_commit, "
                "package_versions, host, device, started_at, finished_at) VALUES (?, 'flow-1', 'main', ?, 'smollm2-135m', "
                "'packaged:smollm2-135m', ?, ?, ?, ?, ?, 1000, ?, 0, 'abc', '{}', 'box', 'cpu', "
                "TIMESTAMPTZ '2025-03-01 12:00:00+00' + to_minutes(?), TIMESTAMPTZ '2025-03-01 12:05:00+00' + to_minutes(?))",
                [run_id, f"hash-{run_id}", method, label, params, target, achieved, pruned, index, index],
            )
            for number, (suite, metric, higher) in enumerate(V4_RESULTS):
                connection.execute("INSERT INTO results VALUES (?, ?, ?, ?, NULL, ?, 50)", [run_id, suite, metric, 1.0 + number, higher])
        for block in range(4):
            dropped = float(block == 2)
            connection.execute("INSERT INTO allocations VALUES ('shortgpt', 'language', ?, '(whole layer)', 65, ?, ?, ?)",
                               [block, dropped, dropped, 0.1 * block])  # fmt: skip
        connection.execute("INSERT INTO allocations VALUES ('wanda', 'language', 0, 'mlp.up_proj', 4096, 0.5, 0.49, NULL)")
        connection.execute("INSERT INTO stages VALUES ('wanda', 'prune', 1.5, 0.8, NULL, false)")
        connection.execute("COMMIT")
        return {table: connection.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall() for table in V3_TABLES}


KEPT = ("run_id", "flow_run_id", "experiment", "config_hash", "model", "model_source", "method", "method_label",
        "method_params", "params_total", "params_pruned", "seed", "git_commit", "package_versions", "host", "device",
        "started_at", "finished_at")  # fmt: skip


@pytest.mark.parametrize("version", [3, 4])
def test_an_older_database_gets_one_meaning_per_column_and_loses_nothing(tmp_path, version):
    path = tmp_path / f"v{version}.duckdb"
    before = v4_history(path, version)
    with duckdb.connect(str(path)) as connection:
        old_runs = {row[0]: dict(zip([c for (c, *_) in connection.execute("DESCRIBE runs").fetchall()], row)) for row in before["runs"]}
        connection.execute("BEGIN")
        assert schema.migrate(connection) == schema.SCHEMA_VERSION
        connection.execute("COMMIT")
        columns = [column for (column, *_) in connection.execute("DESCRIBE runs").fetchall()]
        assert columns == list(RunRecord.model_fields)  # the rebuilt table is the one a new file gets
        assert "target_sparsity" not in columns and "achieved_sparsity" not in columns
        runs = {row[0]: dict(zip(columns, row)) for row in connection.execute("SELECT * FROM runs").fetchall()}
        assert {run_id: {c: run[c] for c in KEPT} for run_id, run in runs.items()} == {
            run_id: {c: run[c] for c in KEPT} for run_id, run in old_runs.items()
        }
        assert [(runs[run_id]["environment_digest"], runs[run_id]["lock_digest"]) for run_id in V4_RUNS] == [(None, None)] * 3
        moved = ("target_weight_sparsity", "achieved_weight_sparsity", "target_drop_ratio", "layers_dropped", "layers_total",
                 "params_pruned_share")  # fmt: skip
        assert {run_id: tuple(run[c] for c in moved) for run_id, run in runs.items()} == {
            "dense": (0.0, 0.0, None, None, None, 0.0),
            "wanda": (0.5, 0.49, None, None, None, 0.49),
            "shortgpt": (None, None, 0.25, 1, 4, 0.26),
        }
        assert {run_id: run["method_id"] for run_id, run in runs.items()} == {
            run_id: method_identity(json.loads(params)) for run_id, (_, _, params, *_) in V4_RUNS.items()
        }
        # as a new run of the same behaviour records: Wanda then selected per row in vision blocks too (the
        # default is now layer-wide there, a different method, so a new default run gets a new identity)
        assert runs["wanda"]["method_id"] == WandaSpec(name="wanda", sparsity=0.5, vision_selection="per_row").method_id
        assert runs["wanda"]["method_id"] != WandaSpec(name="wanda", sparsity=0.5).method_id
        primary = connection.execute("SELECT DISTINCT suite, metric FROM results WHERE is_primary ORDER BY ALL").fetchall()
        assert primary == [("hellaswag", "acc_norm"), ("jargon_mc", "acc"), ("jargon_ppl", "word_perplexity")]
        assert connection.execute("SELECT count(*) FROM results WHERE is_primary").fetchone() == (9,)  # 3 per run
        results = connection.execute("SELECT * EXCLUDE (is_primary) FROM results ORDER BY ALL").fetchall()
        after = {table: connection.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall() for table in ("stages", "allocations", "redundancy")}
    assert results == before["results"]
    assert after == {table: before[table] for table in after}


def test_the_rebuilt_runs_table_keeps_its_key_and_checks(tmp_path):
    path = tmp_path / "v4.duckdb"
    v4_history(path, 4)
    with duckdb.connect(str(path)) as connection:
        schema.migrate(connection)
        with pytest.raises(duckdb.ConstraintException):  # one row per run_id
            connection.execute("INSERT INTO runs SELECT * FROM runs WHERE run_id = 'wanda'")
        with pytest.raises(duckdb.ConstraintException):  # a sparsity is a fraction
            connection.execute("UPDATE runs SET achieved_weight_sparsity = 1.5 WHERE run_id = 'wanda'")
    store = ResultStore(path)  # and the records read it
    assert {run.run_id: run.layers_dropped for run in store.runs()} == {"dense": None, "wanda": None, "shortgpt": 1}


def test_a_run_whose_method_params_are_not_json_stops_the_migration_and_leaves_the_file(tmp_path):
    path = tmp_path / "v4.duckdb"
    v4_history(path, 4)
    with duckdb.connect(str(path)) as connection:
        connection.execute("UPDATE runs SET method_params = 'oops' WHERE run_id = 'dense'")
        connection.execute("BEGIN")
        with pytest.raises(StoreError, match="run dense: method_params is not a JSON object"):
            schema.migrate(connection)
        connection.execute("ROLLBACK")
        assert schema.current_version(connection) == 4
        assert "target_sparsity" in [column for (column, *_) in connection.execute("DESCRIBE runs").fetchall()]


def test_a_v5_database_gains_an_empty_item_scores_table_and_loses_nothing(tmp_path):
    path = tmp_path / "v5.duckdb"
    v4_history(path, 4)
    with duckdb.connect(str(path)) as connection:
        schema.migrate(connection, schema.MIGRATIONS[:5])
        before = {table: connection.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall() for table in V3_TABLES}
        connection.execute("BEGIN")
        assert [version for version, _ in schema.pending_migrations(connection, schema.MIGRATIONS[:6])] == [6]
        assert schema.migrate(connection, schema.MIGRATIONS[:6]) == 6
        connection.execute("COMMIT")
        assert {table: connection.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall() for table in V3_TABLES} == before
        assert connection.execute("SELECT count(*) FROM item_scores").fetchone() == (0,)  # older runs have no items
        connection.execute("INSERT INTO item_scores VALUES ('wanda', 'jargon_ppl', '0', 'word_perplexity', -120.5, 30)")
        connection.execute("INSERT INTO item_scores VALUES ('wanda', 'jargon_mc', '0', 'acc', 1, NULL)")
        with pytest.raises(duckdb.ConstraintException):  # the key: one value per (run, suite, metric, item)
            connection.execute("INSERT INTO item_scores VALUES ('wanda', 'jargon_mc', '0', 'acc', 0, NULL)")
    assert [(row.run_id, row.metric, row.weight) for row in ResultStore(path).items("wanda")] == [
        ("wanda", "acc", None), ("wanda", "word_perplexity", 30.0)
    ]  # fmt: skip
    assert ResultStore(path).items("dense") == []


def test_a_v6_database_gains_model_identity_and_checkpoint_columns_null_for_its_runs_and_loses_nothing(tmp_path):
    path = tmp_path / "v6.duckdb"
    v4_history(path, 4)
    with duckdb.connect(str(path)) as connection:
        schema.migrate(connection, schema.MIGRATIONS[:6])
        before = connection.execute("SELECT * FROM runs ORDER BY run_id").fetchall()
        connection.execute("BEGIN")
        assert [version for version, _ in schema.pending_migrations(connection)] == [7, 8, 9]
        assert schema.migrate(connection) == 9
        connection.execute("COMMIT")
        added = "model_id, model_dtype, model_device, checkpoint, checkpoint_bytes, checkpoint_kept"
        assert connection.execute(f"SELECT * EXCLUDE ({added}) FROM runs ORDER BY run_id").fetchall() == before
        assert set(connection.execute(f"SELECT {added} FROM runs").fetchall()) == {(None,) * 6}
    assert {run.model_id for run in ResultStore(path).runs()} == {None}


def test_a_v1_database_reaches_the_current_version_with_its_result(connection):
    v1_with_one_result(connection)
    connection.execute("BEGIN")
    assert schema.migrate(connection) == schema.SCHEMA_VERSION
    connection.execute("COMMIT")
    assert connection.execute("SELECT * EXCLUDE (is_primary) FROM results").fetchall() == [
        ("run-1", "jargon_ppl", "word_perplexity", 18.31, None, False, 64)
    ]
    assert connection.execute("SELECT count(*) FROM item_scores").fetchone() == (0,)


PROVENANCE = ("git_commit", "package_versions", "config_hash", "seed", "host", "device", "started_at", "finished_at")


def test_every_run_carries_its_provenance(connection):
    schema.migrate(connection)
    nullable = dict(connection.execute(
        "SELECT column_name, is_nullable FROM information_schema.columns WHERE table_name = 'runs'"
    ).fetchall())  # fmt: skip
    assert {column: nullable.get(column) for column in PROVENANCE} == dict.fromkeys(PROVENANCE, "NO")


def test_failing_migration_rolls_back_every_step(connection):
    v1_with_one_result(connection)

    def add_table_then_fail(connection) -> None:
        connection.execute("CREATE TABLE plots (run_id VARCHAR)")
        raise RuntimeError("disk full, say")

    connection.execute("BEGIN")
    with pytest.raises(RuntimeError):
        schema.migrate(connection, [*schema.MIGRATIONS, add_notes_column, add_table_then_fail])
    connection.execute("ROLLBACK")
    assert schema.current_version(connection) == 1  # every step rolled back with the failing one, none left half-way
    assert "plots" not in {name for (name,) in connection.execute("SHOW TABLES").fetchall()}
    assert connection.execute("SELECT * FROM results").fetchall() == [
        ("run-1", "jargon_ppl", "word_perplexity", 18.31, None, False, 64)
    ]


def test_newer_database_is_refused(connection):
    schema.migrate(connection)
    later = schema.SCHEMA_VERSION + 1
    connection.execute(f"INSERT INTO schema_version VALUES ({later}, now())")
    with pytest.raises(StoreError, match=f"schema version {later}, newer"):
        schema.migrate(connection)


def test_someone_elses_database_is_refused(connection):
    connection.execute("CREATE TABLE invoices (id INTEGER)")
    with pytest.raises(StoreError, match=r"has tables \(invoices\).*not a prunebench results database"):
        schema.migrate(connection)
    assert [name for (name,) in connection.execute("SHOW TABLES").fetchall()] == ["invoices"]
