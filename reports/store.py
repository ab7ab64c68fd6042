"""The results database: one DuckDB file, opened for each operation and closed straight after.

A DuckDB file opened read-write by one process is locked against every other process, readers
included (STACK.md). So no connection outlives an operation: each one opens the file, does its work
in one transaction, and closes; an open that meets another process's lock is retried with backoff
for a bounded time. The store never deletes, truncates or rewrites a file it cannot read.
"""

from __future__ import annotations

import math
import os
import re
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

import duckdb
from tenacity import Retrying, retry_if_exception, stop_before_delay, wait_exponential_jitter

from pruning.errors import StoreError, first_line
from reports import schema
from reports.records import AllocationRow, ItemScore, Record, RedundancyRow, ResultRow, RunBundle, RunRecord, StageRecord

DEFAULT_LOCK_TIMEOUT_S = 30.0
LOCK_TIMEOUT_ENV = "PRUNEBENCH_DB_LOCK_TIMEOUT_S"  # how long to wait for another process's lock, when set

# table -> (record it holds, order rows are listed in); names are ours, never user input
_TABLES: dict[str, tuple[type[Record], str]] = {
    "runs": (RunRecord, "finished_at, run_id"),
    "results": (ResultRow, "run_id, suite, metric"),
    "item_scores": (ItemScore, "run_id, suite, metric, item"),
    "stages": (StageRecord, "run_id, stage"),
    "allocations": (AllocationRow, "run_id, modality, block, layer"),
    "redundancy": (RedundancyRow, "run_id, method, kind, i, j"),
}

# timestamps go in (naive ones taken as UTC) and come back in UTC, whatever the host's zone
_SESSION_SETUP = "SET TimeZone = 'UTC'"

T = TypeVar("T")
Params = Sequence[Any] | Mapping[str, Any] | None


class ResultStore:
    """Benchmark results in one DuckDB file; safe to share between processes and threads, in turn."""

    def __init__(self, path: str | os.PathLike[str], *, lock_timeout_s: float | None = None):
        self.path = Path(path)
        self.lock_timeout_s = lock_timeout_s if lock_timeout_s is not None else default_lock_timeout_s()

    def __repr__(self) -> str:
        return f"ResultStore({str(self.path)!r})"

    # -- writing -------------------------------------------------------------------------------

    def record(self, bundle: RunBundle) -> None:
        """Write a run and all its rows, replacing whatever was recorded under its run_id before.

        Delete-then-insert in one transaction (rather than a per-row upsert) means a re-recorded run
        keeps no stale row its new bundle no longer has, and recording twice changes nothing.
        """
        run_id = bundle.run.run_id
        tables = {
            "results": bundle.results,
            "item_scores": bundle.items,
            "stages": bundle.stages,
            "allocations": bundle.allocations,
            "redundancy": bundle.redundancy,
        }
        strays = {row.run_id for rows in tables.values() for row in rows}
        if strays - {run_id}:
            raise ValueError(f"bundle of run {run_id} holds rows of other runs: {sorted(strays - {run_id})}")

        def write(connection: duckdb.DuckDBPyConnection) -> None:
            for table in _TABLES:
                connection.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])
            _insert(connection, "runs", [bundle.run])
            for table, rows in tables.items():
                _insert(connection, table, rows)

        self._write(f"recording run {run_id} ({bundle.run.model}, {bundle.run.method_label})", write)

    def delete_run(self, run_id: str) -> bool:
        """Remove a run and every row of it, in one transaction; False when there was no such run."""

        def delete(connection: duckdb.DuckDBPyConnection) -> bool:
            found = connection.execute("SELECT count(*) FROM runs WHERE run_id = ?", [run_id]).fetchone()[0] > 0
            for table in _TABLES:
                connection.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])
            return found

        return self._write(f"deleting run {run_id}", delete)

    # -- reading -------------------------------------------------------------------------------

    def runs(self, *, model: str | None = None, experiment: str | None = None) -> list[RunRecord]:
        """Runs, oldest first, optionally only those of one model and/or experiment."""
        return self._read(lambda connection: _select(connection, "runs", model=model, experiment=experiment))

    def results(self, run_id: str | None = None) -> list[ResultRow]:
        return self._read(lambda connection: _select(connection, "results", run_id=run_id))

    def items(self, run_id: str, suite: str | None = None) -> list[ItemScore]:
        """One run's per-item scores (of one suite, or all), by suite, metric and item; none for a run
        recorded before schema 6."""
        return self._read(lambda connection: _select(connection, "item_scores", run_id=run_id, suite=suite))

    def item_values(self, run_ids: Collection[str]) -> dict[tuple[str, str, str], dict[str, tuple[float, float | None]]]:
        """Per-item scores of several runs in one read, for statistics: (run_id, suite, metric) ->
        {item: (value, weight)}. Plain tuples, not records: a leaderboard reads hundreds of thousands."""
        if not run_ids:
            return {}

        def read(connection: duckdb.DuckDBPyConnection) -> dict[tuple[str, str, str], dict[str, tuple[float, float | None]]]:
            rows = connection.execute(
                "SELECT run_id, suite, metric, item, value, weight FROM item_scores WHERE run_id IN (SELECT unnest($ids))",
                {"ids": sorted(run_ids)},
            ).fetchall()
            by_key: dict[tuple[str, str, str], dict[str, tuple[float, float | None]]] = {}
            for run_id, suite, metric, item, value, weight in rows:
                by_key.setdefault((run_id, suite, metric), {})[item] = (value, weight)
            return by_key

        return self._read(read)

    def stages(self, run_id: str | None = None) -> list[StageRecord]:
        return self._read(lambda connection: _select(connection, "stages", run_id=run_id))

    def allocations(self, run_id: str | None = None) -> list[AllocationRow]:
        return self._read(lambda connection: _select(connection, "allocations", run_id=run_id))

    def redundancy(self, run_id: str | None = None) -> list[RedundancyRow]:
        return self._read(lambda connection: _select(connection, "redundancy", run_id=run_id))

    def bundle(self, run_id: str) -> RunBundle | None:
        """Everything recorded for one run, read in one transaction; None if there is no such run."""

        def read(connection: duckdb.DuckDBPyConnection) -> RunBundle | None:
            runs = _select(connection, "runs", run_id=run_id)
            if not runs:
                return None
            return RunBundle(
                run=runs[0],
                results=_select(connection, "results", run_id=run_id),
                items=_select(connection, "item_scores", run_id=run_id),
                stages=_select(connection, "stages", run_id=run_id),
                allocations=_select(connection, "allocations", run_id=run_id),
                redundancy=_select(connection, "redundancy", run_id=run_id),
            )

        return self._read(read)

    def schema_version(self) -> int:
        return self._read(schema.current_version)

    def check_writable(self) -> None:
        """Fail now, naming the problem, where recording would fail later: a folder that cannot be made,
        a file that is not a DuckDB database or is locked, a schema newer than this code. Creates the
        file (with the current schema) when there is none; changes nothing in one that exists."""
        self._write("checking that it can be written", lambda connection: connection.execute("SELECT count(*) FROM runs").fetchall())

    def query(self, sql: str, params: Params = None) -> list[dict[str, Any]]:
        """Rows of a read-only query as dicts (column name -> value), for reports.

        Pass values as `?` or `$name` parameters, never formatted into `sql`. With no file yet, the
        query runs against an empty database of the current schema, so it sees no rows.
        """
        return self._read(lambda connection: _dicts(connection.execute(sql, params)))

    # -- transactions --------------------------------------------------------------------------

    def _write(self, doing: str, work: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Run `work` after any pending migration, all in one read-write transaction."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreError(f"{self.path}: cannot create its folder: {error}") from None
        try:
            with self._transaction(read_only=False) as connection:
                schema.migrate(connection)
                return work(connection)
        except duckdb.Error as error:
            raise StoreError(f"{self.path}: {doing} failed and was rolled back: {first_line(error)}") from error

    def _read(self, work: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Run `work` in a read-only transaction on a database of the current schema; a file that
        fails while being read (corrupt past its header) is a StoreError naming it."""
        try:
            return self._read_unchecked(work)
        except duckdb.Error as error:
            raise StoreError(f"{self.path}: reading failed: {first_line(error)} (the file may be damaged; it was left as it is)") from error

    def _read_unchecked(self, work: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        if not self.path.exists():  # nothing recorded yet; reading must not create the file
            with closing(duckdb.connect(":memory:")) as connection:
                connection.execute(_SESSION_SETUP)
                schema.migrate(connection)
                return work(connection)
        with self._transaction(read_only=True) as connection:
            if not schema.pending_migrations(connection):
                return work(connection)
        self._write("migrating the schema", lambda connection: None)
        with self._transaction(read_only=True) as connection:
            return work(connection)

    @contextmanager
    def _transaction(self, *, read_only: bool) -> Iterator[duckdb.DuckDBPyConnection]:
        # DuckDB's file lock excludes other processes only; in this one, a read-only open beside an
        # open read-write connection fails outright, so threads (Prefect's task runner) take turns.
        turn = _thread_lock(self.path)
        if not turn.acquire(timeout=self.lock_timeout_s):
            raise StoreError(f"{self.path} is busy: another thread of this process held it for {self.lock_timeout_s:g} s")
        try:
            connection = self._connect(read_only)
            try:
                connection.execute(_SESSION_SETUP)
                connection.begin()
                yield connection
                connection.commit()
            except BaseException as error:
                with suppress(duckdb.Error):  # already rolled back if the commit itself failed
                    connection.rollback()
                if isinstance(error, StoreError):  # from schema checks: name the file
                    raise StoreError(f"{self.path}: {error}") from None
                raise
            finally:
                connection.close()
        finally:
            turn.release()

    def _connect(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        """Open the file, waiting (exponential backoff with jitter) while another process holds it."""
        retrying = Retrying(
            retry=retry_if_exception(_is_lock_conflict),
            wait=wait_exponential_jitter(initial=0.05, max=2.0, jitter=0.05),
            stop=stop_before_delay(self.lock_timeout_s),
            reraise=True,
        )
        try:
            return retrying(duckdb.connect, str(self.path), read_only=read_only)
        except duckdb.Error as error:
            message = str(error)
            if _is_lock_conflict(error):
                holder = re.search(r"held in (.*) \(PID (\d+)\)", message)
                who = f" (PID {holder[2]}, {Path(holder[1]).name})" if holder else ""
                raise StoreError(
                    f"{self.path} is locked: another process{who} holds it; "
                    f"gave up after {self.lock_timeout_s:g} s, try again when it has finished"
                ) from None
            if "not a valid DuckDB database" in message:
                raise StoreError(
                    f"{self.path} is not a DuckDB database (corrupt, or another format); it was left as it is"
                ) from None
            raise StoreError(f"{self.path} cannot be opened as a DuckDB database: {first_line(error)}") from None


def default_lock_timeout_s() -> float:
    """$PRUNEBENCH_DB_LOCK_TIMEOUT_S (seconds, a finite number ≥ 0), else 30 s."""
    text = os.environ.get(LOCK_TIMEOUT_ENV)
    if text is None:
        return DEFAULT_LOCK_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise StoreError(f"{LOCK_TIMEOUT_ENV}={text!r}: expected a finite number of seconds ≥ 0")
    return value


_THREAD_LOCKS: dict[str, threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()


def _thread_lock(path: Path) -> threading.Lock:
    with _THREAD_LOCKS_GUARD:
        return _THREAD_LOCKS.setdefault(os.path.realpath(path), threading.Lock())


def _is_lock_conflict(error: BaseException) -> bool:
    # DuckDB: 'IO Error: Could not set lock on file "...": Conflicting lock is held in ... (PID n)'
    return isinstance(error, duckdb.IOException) and "Could not set lock on file" in str(error)


def _insert(connection: duckdb.DuckDBPyConnection, table: str, records: Sequence[Record]) -> None:
    """One INSERT per table: each column goes in as one list parameter, and `unnest` zips the lists back
    into rows. 10,000 item scores go in in 0.04 s this way, in 0.6 s as multi-row VALUES of 200 rows (2 cores)."""
    if not records:
        return
    columns = list(_TABLES[table][0].model_fields)
    connection.execute(
        f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(f'unnest(${column})' for column in columns)}",
        {column: [getattr(record, column) for record in records] for column in columns},
    )


def _select(connection: duckdb.DuckDBPyConnection, table: str, **equal_to: Any) -> list[Any]:
    """Rows of one of our tables as records; filters (column = value) with value None are skipped."""
    record_type, order = _TABLES[table]
    filters = {column: value for column, value in equal_to.items() if value is not None}
    where = f" WHERE {' AND '.join(f'{column} = ?' for column in filters)}" if filters else ""
    cursor = connection.execute(
        f"SELECT {', '.join(record_type.model_fields)} FROM {table}{where} ORDER BY {order}", list(filters.values())
    )
    return [record_type.model_validate(row) for row in _dicts(cursor)]


def _dicts(cursor: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    columns = [description[0] for description in cursor.description or ()]
    return [dict(zip(columns, row)) for row in cursor.fetchall()]
