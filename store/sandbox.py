"""The SQL sandbox: analysts' SQL reads the lake's committed Parquet files and nothing else, within limits.

Two lines of defence, because DuckDB's own settings alone do not make it read-only (measured on 2.0.1, see
``docs/SANDBOX.md``: with external access off and the lake allow-listed, ``COPY ... TO`` into the lake and
``ATTACH`` of a new file in it still succeed, and the temp folder stays readable and writable):

1. ``store._sql_guard`` lets through exactly one SELECT, checked by DuckDB's parser: no file-reading table
   functions, no names but the views, no settings or environment functions.
2. The connection itself: ``enable_external_access=false`` with ``allowed_paths`` set to exactly the Parquet
   files of the current snapshots (not the folders: no ``_delta_log``, no files compaction removed, no
   symlinks), Python replacement scans and extension autoloading off, ``memory_limit``, ``threads``,
   ``max_execution_time``, a temp folder of its own capped by ``max_temp_directory_size``, and then
   ``lock_configuration=true``.

Concurrency: one :class:`Sandbox` per process.  It keeps one locked in-memory DuckDB database (a
*generation*) per set of snapshot versions; each query runs on a cursor of it, in any thread.  When the lake
moves on, the next query builds a new generation; the old one closes when its last query ends.  So
``memory_limit`` and ``threads`` bound all the queries of a generation together, not each one.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import duckdb

from store._query_result import QueryResult
from store._sql_guard import SAFE_TABLE_FUNCTIONS, check_statement, one_line
from store.errors import LakeError, QueryError
from store.lake import Lake, Snapshot, select_files
from store.repair import unreadable_lake
from store.schema import SCHEMAS, TABLES
from store.settings import Settings

__all__ = ["QueryResult", "Sandbox", "SandboxLimits"]

Setup = Callable[[duckdb.DuckDBPyConnection], None]


@dataclass(frozen=True)
class SandboxLimits:
    """What one sandbox may use.  ``memory_limit`` and ``threads`` are shared by its concurrent queries."""

    memory_limit: str = "1GB"
    threads: int = 2
    timeout_s: float = 30.0
    max_rows: int = 100_000
    #: A folder of the sandbox's own for spilling; a fresh temporary folder (removed on close) when None.
    temp_dir: Path | None = None
    max_temp_size: str = "2GB"
    #: Bytes of result (Arrow buffers) handed back at most; the rest is cut and the result flagged truncated.
    max_result_bytes: int = 64 * 2**20

    @classmethod
    def from_settings(cls, settings: Settings) -> SandboxLimits:
        """The ``sql_*`` settings (the service and ``corridorhub sql`` both use them)."""
        return cls(
            memory_limit=settings.sql_memory_limit,
            threads=settings.sql_threads,
            timeout_s=settings.sql_timeout_s,
            max_rows=settings.sql_max_rows,
            max_temp_size=settings.sql_max_temp_size,
            max_result_bytes=settings.sql_max_result_mb * 2**20,
        )

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise ValueError("threads must be at least 1")
        if not self.timeout_s > 0:
            raise ValueError("timeout_s must be positive")
        if self.max_rows < 0:
            raise ValueError("max_rows must be >= 0")


class _Generation:
    """One locked database over one set of snapshots, with a count of the queries using it."""

    def __init__(self, con: duckdb.DuckDBPyConnection, key: tuple[int, ...], relations: frozenset[str],
                 table_functions: frozenset[str], temp_dir: Path) -> None:  # fmt: skip
        self.con = con
        self.key = key
        self.relations = relations
        self.table_functions = table_functions
        self.temp_dir = temp_dir
        self.active = 0
        self.retired = False

    def close(self) -> None:
        self.con.close()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


class Sandbox:
    """Runs analysts' SQL over a lake's committed snapshots; safe to share between threads."""

    def __init__(
        self, lake: Lake, limits: SandboxLimits = SandboxLimits(), setup: Setup | None = None
    ) -> None:
        self.lake = lake
        self.limits = limits
        self._setup = setup
        self._lock = threading.RLock()
        self._current: _Generation | None = None
        self._counter = itertools.count()
        own = limits.temp_dir is None
        self.temp_dir = (
            Path(tempfile.mkdtemp(prefix="corridorhub-sandbox-")) if own else Path(str(limits.temp_dir))
        )
        self._cleanup = weakref.finalize(self, _remove if own else _keep, self.temp_dir)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the current database (queries still running keep theirs) and remove an own temp folder."""
        with self._lock:
            generation, self._current = self._current, None
            if generation is not None:
                generation.retired = True
                if generation.active == 0:
                    generation.close()
        self._cleanup()

    @property
    def relations(self) -> frozenset[str]:
        """The names analysts can query: the lake's views and whatever ``setup`` added."""
        generation = self._acquire()
        try:
            return generation.relations
        finally:
            self._release(generation)

    def query(self, sql: str, params: list[Any] | dict[str, Any] | None = None) -> QueryResult:
        """Check ``sql`` and start it; raise :class:`QueryRefused` or :class:`QueryError` when it cannot run.

        ``params`` are bound as prepared parameters (``?`` or ``$name``), never formatted into the text.
        The result streams; close it (or use it as a context manager) when done.
        """
        generation = self._acquire()
        try:
            cursor = generation.con.cursor()
        except duckdb.Error as exc:
            self._release(generation)
            raise QueryError(f"The sandbox cannot open a connection: {exc}") from None
        try:
            statement = check_statement(sql, cursor, generation.relations, generation.table_functions)
        except BaseException:
            cursor.close()
            self._release(generation)
            raise
        return QueryResult(
            cursor,
            statement,
            params,
            limits=self.limits,
            hide={self.lake.root: "<lake>", str(self.temp_dir): "<temp>"},
            on_close=lambda: self._release(generation),
        )

    # -- generations ----------------------------------------------------------------------------------------

    def _acquire(self) -> _Generation:
        with self._lock:
            current = self._current
            if current is not None and not self.lake.moved_since(dict(zip(TABLES, current.key, strict=True))):
                current.active += 1
                return current
        versions = self.lake.versions() if self.lake.exists() else {}
        key = tuple(versions.get(name, -1) for name in TABLES)
        with self._lock:
            current = self._current
            if current is None or any(new > old for new, old in zip(key, current.key, strict=True)):
                current = self._build()
                old, self._current = self._current, current
                if old is not None:
                    old.retired = True
                    if old.active == 0:
                        old.close()
            current.active += 1
            return current

    def _release(self, generation: _Generation) -> None:
        with self._lock:
            generation.active -= 1
            if generation.retired and generation.active == 0:
                generation.close()

    def _build(self) -> _Generation:
        if not self.lake.is_local:
            raise LakeError("The SQL sandbox reads local lakes only (object storage is not supported yet)")
        self.lake.require()
        snapshots = {name: self.lake.snapshot(name) for name in TABLES if self.lake.has_table(name)}
        temp_dir = self.temp_dir / f"db-{next(self._counter)}"
        try:
            con = duckdb.connect(":memory:", config=_config(self.limits, temp_dir))
        except duckdb.Error as exc:
            raise QueryError(f"The sandbox's limits are not valid: {one_line(str(exc))}") from None
        try:
            files = [f for snap in snapshots.values() for f in snap.files]
            con.execute("SET allowed_paths = [" + ", ".join(_literal(_local_path(f)) for f in files) + "]")
            con.execute("SET GLOBAL TimeZone = 'UTC'")
            _create_views(con, snapshots)
            if self._setup is not None:
                self._setup(con)
            relations, table_functions = _catalog(con)
            con.execute("SET enable_external_access = false")
            con.execute("SET lock_configuration = true")
        except duckdb.Error as exc:  # reading the lake's files failed: not the analyst's doing
            con.close()
            raise unreadable_lake(exc, self.lake) from None
        except BaseException:
            con.close()
            raise
        key = tuple(snapshots[name].version if name in snapshots else -1 for name in TABLES)
        return _Generation(con, key, relations, table_functions | SAFE_TABLE_FUNCTIONS, temp_dir)


def _config(limits: SandboxLimits, temp_dir: Path) -> dict[str, str | bool | int | float | list[str]]:
    """Settings DuckDB takes at start-up (``allowed_paths`` it refuses before start: set right after)."""
    return {
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "allow_community_extensions": False,
        "allow_unsigned_extensions": False,
        "allow_persistent_secrets": False,
        "python_enable_replacements": False,
        "memory_limit": limits.memory_limit,
        "threads": limits.threads,
        "temp_directory": str(temp_dir),
        "max_temp_directory_size": limits.max_temp_size,
        "max_execution_time": max(1, round(limits.timeout_s * 1000)),
    }


def _create_views(con: duckdb.DuckDBPyConnection, snapshots: dict[str, Snapshot]) -> None:
    """The four lake views, each over exactly the files its snapshot lists (the ones allow-listed)."""
    for name in TABLES:
        snap = snapshots.get(name)
        files, schema = (snap.files, snap.view_schema) if snap else ((), SCHEMAS[name].arrow)
        local = [_local_path(f) for f in files]
        con.execute(f"CREATE OR REPLACE VIEW {name} AS {select_files(local, schema)}")


def _catalog(con: duckdb.DuckDBPyConnection) -> tuple[frozenset[str], frozenset[str]]:
    """The relations and table macros defined before the lock (by the views and by ``setup``)."""
    relations = con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE NOT internal AND schema_name = 'main' "
        "UNION SELECT view_name FROM duckdb_views() WHERE NOT internal AND schema_name = 'main'"
    ).fetchall()
    macros = con.execute(
        "SELECT DISTINCT function_name FROM duckdb_functions() "
        "WHERE function_type = 'table_macro' AND NOT internal"
    ).fetchall()
    return frozenset(str(r[0]) for r in relations), frozenset(str(r[0]).lower() for r in macros)


def _local_path(uri: str) -> str:
    """A file path for a ``file://`` URI (DuckDB compares allow-listed paths as text)."""
    return unquote(urlsplit(uri).path) if uri.startswith("file://") else uri


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _keep(folder: Path) -> None:
    """A temp folder the caller gave is theirs: only its per-database subfolders are removed."""


def _remove(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
