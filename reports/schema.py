"""The results database's tables, and the forward migrations that bring an older file up to date.

Version 0 is an empty database. `MIGRATIONS[i]` takes a database from version i to i + 1, so a file
at any older version is brought forward by running the tail of the list in order; each applied
step is logged in `schema_version`. Migrations only ever add (tables, columns, indexes) or rewrite
in place: a results file holds benchmark history that cannot be recomputed cheaply, so none of them
drops data. Callers run `migrate` inside their own transaction, so a step that fails leaves the file
exactly as it was (DuckDB's DDL is transactional).

To change the schema: append a migration, bump `SCHEMA_VERSION`, and change the record in
`reports/records.py` to match (tests/reports/test_schema.py checks tables against records).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import duckdb

from pruning.errors import StoreError

SCHEMA_VERSION = 4

Migration = Callable[[duckdb.DuckDBPyConnection], None]

# Column order follows the record fields; sparsities are fractions of weights removed.
_V1_TABLES = (
    """
    CREATE TABLE schema_version (
        version INTEGER PRIMARY KEY,
        applied_at TIMESTAMPTZ NOT NULL
    )
    """,
    """
    CREATE TABLE runs (
        run_id VARCHAR PRIMARY KEY,
        flow_run_id VARCHAR NOT NULL,
        experiment VARCHAR NOT NULL,
        config_hash VARCHAR NOT NULL,
        model VARCHAR NOT NULL,
        model_source VARCHAR NOT NULL,
        method VARCHAR NOT NULL,
        method_label VARCHAR NOT NULL,
        method_params VARCHAR NOT NULL,
        target_sparsity DOUBLE NOT NULL CHECK (target_sparsity BETWEEN 0 AND 1),
        achieved_sparsity DOUBLE NOT NULL CHECK (achieved_sparsity BETWEEN 0 AND 1),
        params_total BIGINT NOT NULL CHECK (params_total >= 0),
        params_pruned BIGINT NOT NULL CHECK (params_pruned >= 0),
        seed BIGINT NOT NULL,
        git_commit VARCHAR NOT NULL,
        package_versions VARCHAR NOT NULL,
        host VARCHAR NOT NULL,
        device VARCHAR NOT NULL,
        started_at TIMESTAMPTZ NOT NULL,
        finished_at TIMESTAMPTZ NOT NULL
    )
    """,
    """
    CREATE TABLE results (
        run_id VARCHAR NOT NULL,
        suite VARCHAR NOT NULL,
        metric VARCHAR NOT NULL,
        value DOUBLE NOT NULL,
        stderr DOUBLE,
        higher_is_better BOOLEAN NOT NULL,
        n_samples BIGINT CHECK (n_samples >= 0),
        PRIMARY KEY (run_id, suite, metric)
    )
    """,
    """
    CREATE TABLE stages (
        run_id VARCHAR NOT NULL,
        stage VARCHAR NOT NULL,
        wall_s DOUBLE NOT NULL CHECK (wall_s >= 0),
        peak_rss_gb DOUBLE,
        peak_gpu_gb DOUBLE,
        cached BOOLEAN NOT NULL,
        PRIMARY KEY (run_id, stage)
    )
    """,
    """
    CREATE TABLE allocations (
        run_id VARCHAR NOT NULL,
        modality VARCHAR NOT NULL,
        block INTEGER NOT NULL,
        layer VARCHAR NOT NULL,
        n_params BIGINT NOT NULL CHECK (n_params >= 0),
        target_sparsity DOUBLE NOT NULL CHECK (target_sparsity BETWEEN 0 AND 1),
        achieved_sparsity DOUBLE NOT NULL CHECK (achieved_sparsity BETWEEN 0 AND 1),
        PRIMARY KEY (run_id, modality, block, layer)
    )
    """,
)
# No foreign keys: DuckDB forbids altering a table that others reference, which would make every
# later migration of `runs` a copy-and-rename; `ResultStore.record` keeps the rows consistent.


def _v1_initial_tables(connection: duckdb.DuckDBPyConnection) -> None:
    for ddl in _V1_TABLES:
        connection.execute(ddl)


def _v2_block_scores(connection: duckdb.DuckDBPyConnection) -> None:
    """The global score of each layer's block (ECoFLaP score, OWL outlier ratio) beside its sparsity;
    NULL for uniform methods and for rows recorded before version 2."""
    connection.execute("ALTER TABLE allocations ADD COLUMN block_score DOUBLE")


def _v3_layer_redundancy(connection: duckdb.DuckDBPyConnection) -> None:
    """Layer-redundancy matrices (cosine similarity of the hidden states entering layers i and j),
    for the report's heatmaps. `kind` is checked by the record, not by a CHECK constraint: DuckDB
    cannot drop a constraint, so a later kind would otherwise need the table rebuilt."""
    connection.execute(
        """
        CREATE TABLE redundancy (
            run_id VARCHAR NOT NULL,
            method VARCHAR NOT NULL,
            kind VARCHAR NOT NULL,
            i INTEGER NOT NULL CHECK (i >= 0),
            j INTEGER NOT NULL CHECK (j >= 0),
            value DOUBLE NOT NULL,
            PRIMARY KEY (run_id, method, kind, i, j)
        )
        """
    )


def _v4_environment(connection: duckdb.DuckDBPyConnection) -> None:
    """Which environment computed a run: SHA-256 of every installed package version (with the Python and
    platform) and of requirements.lock. NULL for rows recorded before version 4, and the lock's for a
    checkout without one."""
    connection.execute("ALTER TABLE runs ADD COLUMN environment_digest VARCHAR")
    connection.execute("ALTER TABLE runs ADD COLUMN lock_digest VARCHAR")


MIGRATIONS: Sequence[Migration] = (_v1_initial_tables, _v2_block_scores, _v3_layer_redundancy, _v4_environment)


def current_version(connection: duckdb.DuckDBPyConnection) -> int:
    """The schema version of the open database: 0 when it is empty.

    A database that has tables but no `schema_version` is someone else's DuckDB file: we refuse it
    rather than add our tables to it.
    """
    tables = {
        name
        for (name,) in connection.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_catalog = current_database()"
        ).fetchall()
    }
    if "schema_version" not in tables:
        if tables:
            raise StoreError(
                f"has tables ({', '.join(sorted(tables))}) but no schema_version table: "
                "not a prunebench results database"
            )
        return 0
    (version,) = connection.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
    return version


def pending_migrations(
    connection: duckdb.DuckDBPyConnection, migrations: Sequence[Migration] | None = None
) -> list[tuple[int, Migration]]:
    """The (version reached, migration) steps the open database lacks, in order.

    Raises StoreError for a database newer than this code: reading it with older code could
    silently drop what the newer version records.
    """
    migrations = MIGRATIONS if migrations is None else migrations
    version = current_version(connection)
    if version > len(migrations):
        raise StoreError(
            f"has schema version {version}, newer than this prunebench understands "
            f"({len(migrations)}); upgrade prunebench to read it"
        )
    return [(index + 1, migrations[index]) for index in range(version, len(migrations))]


def migrate(connection: duckdb.DuckDBPyConnection, migrations: Sequence[Migration] | None = None) -> int:
    """Apply the migrations the database lacks, in order, inside the caller's transaction.

    Returns the version reached. `migrations` defaults to `MIGRATIONS`, read at call time.
    """
    steps = pending_migrations(connection, migrations)
    for version, step in steps:
        step(connection)
        connection.execute("INSERT INTO schema_version VALUES (?, now())", [version])
    return current_version(connection)
