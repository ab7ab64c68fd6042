"""The results database's tables, and the forward migrations that bring an older file up to date.

Version 0 is an empty database. `MIGRATIONS[i]` takes a database from version i to i + 1, so a file
at any older version is brought forward by running the tail of the list in order; each applied
step is logged in `schema_version`. Migrations add (tables, columns, indexes) or rewrite in place: a
results file holds benchmark history that cannot be recomputed cheaply, so a column is dropped only
once its values live on in others (version 5 says which). Callers run `migrate` inside their own
transaction, so a step that fails leaves the file exactly as it was (DuckDB's DDL is transactional).

To change the schema: append a migration, bump `SCHEMA_VERSION`, and change the record in
`reports/records.py` to match (tests/reports/test_schema.py checks tables against records).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

import duckdb

from pruning.errors import StoreError

SCHEMA_VERSION = 9

Migration = Callable[[duckdb.DuckDBPyConnection], None]

# Column order follows the record fields; sparsities are fractions of weights removed. Version 5
# rebuilds `runs` (`_V5_RUNS`).
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


# Version 5 columns of `runs`, in record order. DuckDB cannot add a column with a CHECK constraint,
# so the table is rebuilt (copy, drop, rename; no foreign keys point at it).
_V5_RUNS = """
    CREATE TABLE runs_v5 (
        run_id VARCHAR PRIMARY KEY,
        flow_run_id VARCHAR NOT NULL,
        experiment VARCHAR NOT NULL,
        config_hash VARCHAR NOT NULL,
        model VARCHAR NOT NULL,
        model_source VARCHAR NOT NULL,
        method VARCHAR NOT NULL,
        method_id VARCHAR NOT NULL,
        method_label VARCHAR NOT NULL,
        method_params VARCHAR NOT NULL,
        target_weight_sparsity DOUBLE CHECK (target_weight_sparsity BETWEEN 0 AND 1),
        achieved_weight_sparsity DOUBLE CHECK (achieved_weight_sparsity BETWEEN 0 AND 1),
        target_drop_ratio DOUBLE CHECK (target_drop_ratio BETWEEN 0 AND 1),
        layers_dropped INTEGER CHECK (layers_dropped >= 0),
        layers_total INTEGER CHECK (layers_total >= 0),
        params_total BIGINT NOT NULL CHECK (params_total >= 0),
        params_pruned BIGINT NOT NULL CHECK (params_pruned >= 0),
        params_pruned_share DOUBLE CHECK (params_pruned_share BETWEEN 0 AND 1),
        seed BIGINT NOT NULL,
        git_commit VARCHAR NOT NULL,
        package_versions VARCHAR NOT NULL,
        host VARCHAR NOT NULL,
        device VARCHAR NOT NULL,
        started_at TIMESTAMPTZ NOT NULL,
        finished_at TIMESTAMPTZ NOT NULL,
        environment_digest VARCHAR,
        lock_digest VARCHAR
    )
"""
# The layer-drop methods of version 4 (what `target_sparsity` meant depended on them), frozen here:
# a migration reads the files of its time, whatever later versions call their methods.
_V4_LAYER_DROP_METHODS = ["shortgpt", "angular", "sleb", "interlace"]
_V4_WHOLE_LAYER = "(whole layer)"  # the `allocations.layer` of a layer-drop run's rows, one per decoder layer


def _v5_one_meaning_per_column(connection: duckdb.DuckDBPyConnection) -> None:
    """`runs.target_sparsity` held a weight share for pruning and a drop ratio for layer dropping, and
    `achieved_sparsity` a share of weights zeroed or removed with their layers. Each meaning gets its
    own column: weight sparsity (target, achieved; NULL for layer dropping, 0 for dense), layers
    dropped (target ratio, count, of how many; NULL otherwise), the share of all parameters pruned,
    and `method_id`, the identity of the method's parameters. Old rows' layer counts come from their
    allocations (one '(whole layer)' row per decoder layer, sparsity 1 where dropped). The mixed columns
    are dropped: every value moves to its column except a layer-drop run's achieved share of
    prunable-linear weights, which `layers_dropped / layers_total` and `params_pruned_share` replace.

    `results.is_primary` marks the one metric per suite that mean retention averages
    (`evals.suites.primary`), set for old rows by the default rule."""
    from evals.suites.primary import primary_results
    from pruning.specs import method_identity

    runs = connection.execute("SELECT run_id, method_params FROM runs ORDER BY run_id").fetchall()
    identities = {"run_ids": [run_id for run_id, _ in runs],
                  "method_ids": [method_identity(_params(run_id, params)) for run_id, params in runs]}  # fmt: skip
    connection.execute(_V5_RUNS)
    connection.execute(
        """
        INSERT INTO runs_v5
        SELECT r.run_id, r.flow_run_id, r.experiment, r.config_hash, r.model, r.model_source, r.method, i.method_id,
               r.method_label, r.method_params,
               CASE WHEN dropping THEN NULL ELSE r.target_sparsity END,
               CASE WHEN dropping THEN NULL ELSE r.achieved_sparsity END,
               CASE WHEN dropping THEN r.target_sparsity END,
               CASE WHEN dropping THEN a.layers_dropped END,
               CASE WHEN dropping THEN a.layers_total END,
               r.params_total, r.params_pruned, r.params_pruned / nullif(r.params_total, 0),
               r.seed, r.git_commit, r.package_versions, r.host, r.device, r.started_at, r.finished_at,
               r.environment_digest, r.lock_digest
        FROM (SELECT *, method IN (SELECT unnest($drop_methods)) AS dropping FROM runs) r
        JOIN (SELECT unnest($run_ids) AS run_id, unnest($method_ids) AS method_id) i USING (run_id)
        LEFT JOIN (
            SELECT run_id, count(*) AS layers_total, count(*) FILTER (WHERE target_sparsity = 1) AS layers_dropped
            FROM allocations WHERE layer = $whole_layer GROUP BY run_id
        ) a USING (run_id)
        """,
        {**identities, "drop_methods": _V4_LAYER_DROP_METHODS, "whole_layer": _V4_WHOLE_LAYER},
    )
    connection.execute("DROP TABLE runs")
    connection.execute("ALTER TABLE runs_v5 RENAME TO runs")

    connection.execute("ALTER TABLE results ADD COLUMN is_primary BOOLEAN NOT NULL DEFAULT false")
    reported: dict[str, list[tuple[str, str]]] = {}
    for run_id, suite, metric in connection.execute("SELECT run_id, suite, metric FROM results").fetchall():
        reported.setdefault(run_id, []).append((suite, metric))
    primary = [(run_id, suite, metric) for run_id, pairs in reported.items() for suite, metric in primary_results(pairs)]
    if primary:
        run_ids, suites, metrics = map(list, zip(*primary))
        connection.execute(
            """
            UPDATE results SET is_primary = true
            FROM (SELECT unnest($run_ids) AS run_id, unnest($suites) AS suite, unnest($metrics) AS metric) p
            WHERE results.run_id = p.run_id AND results.suite = p.suite AND results.metric = p.metric
            """,
            {"run_ids": run_ids, "suites": suites, "metrics": metrics},
        )


def _v6_item_scores(connection: duckdb.DuckDBPyConnection) -> None:
    """Each item's value of each metric (the harness's per-sample outputs), for paired comparisons of
    runs on the same items. A new table only: runs recorded before version 6 have no items."""
    connection.execute(
        """
        CREATE TABLE item_scores (
            run_id VARCHAR NOT NULL,
            suite VARCHAR NOT NULL,
            item VARCHAR NOT NULL,
            metric VARCHAR NOT NULL,
            value DOUBLE NOT NULL,
            weight DOUBLE,
            PRIMARY KEY (run_id, suite, metric, item)
        )
        """
    )


def _v7_model_identity(connection: duckdb.DuckDBPyConnection) -> None:
    """`runs.model_id`: the model's identity (its files' contents, dtype and device; `pruning.specs.model_identity`),
    `model_dtype` and `model_device`. Reports told models apart by their label, so two models sharing one (two
    checkpoints called llama-7b, a float32 and a bfloat16 study) were merged. Runs recorded before
    version 7 keep NULL: their files and dtype were not recorded, and reports group them by source."""
    connection.execute("ALTER TABLE runs ADD COLUMN model_id VARCHAR")
    connection.execute("ALTER TABLE runs ADD COLUMN model_dtype VARCHAR")
    connection.execute("ALTER TABLE runs ADD COLUMN model_device VARCHAR")


def _v8_checkpoint(connection: duckdb.DuckDBPyConnection) -> None:
    """`runs.checkpoint`: where the checkpoint the run evaluated is (`prunebench runs` lists it), and
    `checkpoint_bytes`, its size. NULL for runs recorded before version 8."""
    connection.execute("ALTER TABLE runs ADD COLUMN checkpoint VARCHAR")
    connection.execute("ALTER TABLE runs ADD COLUMN checkpoint_bytes BIGINT")


def _v9_checkpoint_kept(connection: duckdb.DuckDBPyConnection) -> None:
    """`runs.checkpoint_kept`: whether the run left its checkpoint on disk (`output.keep_checkpoints`); false
    where it was removed once the scores were recorded (`checkpoint` still says where it was). NULL for
    runs recorded before version 9, which kept every checkpoint."""
    connection.execute("ALTER TABLE runs ADD COLUMN checkpoint_kept BOOLEAN")


def _params(run_id: str, method_params: str) -> dict:
    try:
        params = json.loads(method_params)
    except ValueError:
        params = None
    if not isinstance(params, dict):
        raise StoreError(f"run {run_id}: method_params is not a JSON object ({method_params[:80]!r}), so it has no method_id")
    return params


MIGRATIONS: Sequence[Migration] = (
    _v1_initial_tables, _v2_block_scores, _v3_layer_redundancy, _v4_environment, _v5_one_meaning_per_column,
    _v6_item_scores, _v7_model_identity, _v8_checkpoint, _v9_checkpoint_kept,
)


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
