"""The lake: one Delta table per stream plus quarantine, read through DuckDB.

``{root}/state``, ``{root}/event``, ``{root}/network`` and ``{root}/quarantine`` are Delta tables
(``deltalake``) partitioned by ``date``, holding zstd Parquet with microsecond UTC timestamps.  The root is a
local folder (the embedded default) or an S3-compatible URI with ``storage_options``.

Writers (ingest, compaction) call :meth:`Lake.append`: one atomic Delta commit per call.  On local disk the
commit is *durable* when ``append`` returns: the new Parquet files, the new ``_delta_log`` entry and their
folders are fsynced, because ingest acknowledges MQTT messages right after.  (Between the write and the fsync
a power loss can leave the commit referring to a torn file; nothing was acknowledged then, so the broker
redelivers, but the file must be removed from the log by hand.  A SIGKILL cannot cause this: the page cache
survives the process.)

Readers see committed snapshots only: :meth:`Lake.open_views` builds DuckDB views from the file list of each
table's current version and reads them with DuckDB's own Parquet reader.  Never ``to_pyarrow_table()`` or
``to_pyarrow_dataset()``: they abort the interpreter at exit (delta-rs issue 2184).
"""

from __future__ import annotations

import json
import os
import threading
import uuid
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import duckdb
import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, WriterProperties, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

from store.errors import CommitError, LakeError, TableNotFound
from store.schema import PARTITION_COLUMN, SCHEMAS, TABLES, TIMESTAMP

#: How often one append retries a commit that lost a race (another writer changed the table's metadata,
#: e.g. a schema merge, in between).  Plain concurrent appends never conflict; delta-rs retries those itself.
_APPEND_ATTEMPTS = 8
_MAX_COMMIT_RETRIES = 100
#: How the lake's Parquet is written (by appends and compaction alike): zstd, and row groups of 122,880
#: rows (DuckDB's own size) rather than delta-rs's ~1 M, so that readers can split a file across threads.
WRITER_PROPERTIES = WriterProperties(compression="ZSTD", max_row_group_size=122_880)
#: WriteSerializable (Delta's own default; delta-rs defaults to Serializable): a transaction that read and
#: rewrote a partition does not conflict with *blind appends* to it made meanwhile, since it does not remove
#: their files.  ``append`` marks its commits ``isBlindAppend``; compaction relies on both.
TABLE_CONFIGURATION = {"delta.isolationLevel": "WriteSerializable"}
#: What to do about a missing lake (said after "No lake at <root>: ").
NO_LAKE_HINT = (
    "`corridorhub ingest` creates the lake when it starts (so does `corridorhub demo`); "
    "or point --lake at an existing lake"
)
_DUCKDB_ARROW_COPY = r"Arrow output on a DB-API result makes an extra copy"


@dataclass(frozen=True)
class Snapshot:
    """One committed version of a table: its Parquet file URIs and its schema."""

    table: str
    version: int
    files: tuple[str, ...]
    schema: pa.Schema

    @property
    def view_schema(self) -> pa.Schema:
        """The table's schema plus columns declared in store.schema since the table was created:
        readers see them as NULL in older files instead of failing on a missing column."""
        declared = SCHEMAS[self.table].arrow
        missing = [f for f in declared if f.name not in self.schema.names]
        return pa.schema([*self.schema, *missing]) if missing else self.schema


class Lake:
    """The Delta tables under one root, with cached per-table handles updated incrementally."""

    def __init__(
        self, root: str | os.PathLike[str], storage_options: Mapping[str, str] | None = None
    ) -> None:
        text = os.fspath(root)
        scheme = urlsplit(text).scheme
        self.is_local = scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt")
        if self.is_local:
            path = Path(unquote(urlsplit(text).path) if scheme == "file" else text)
            self.root = str(path.absolute())
        else:
            self.root = text.rstrip("/")
        self.storage_options: dict[str, str] = dict(storage_options or {})
        self._tables: dict[str, DeltaTable] = {}
        self._locks = {name: threading.Lock() for name in TABLES}

    def __repr__(self) -> str:
        return f"Lake({self.root!r})"

    # -- tables ---------------------------------------------------------------------------------------------

    def table_uri(self, name: str) -> str:
        _check_name(name)
        return f"{self.root}/{name}"

    def exists(self) -> bool:
        """Whether the lake root exists (always true for object storage: buckets have no folders)."""
        return not self.is_local or Path(self.root).is_dir()

    def require(self) -> None:
        """Raise :class:`LakeError` saying how a lake comes to be when there is none at the root."""
        if not self.exists():
            raise LakeError(f"No lake at {self.root}: {NO_LAKE_HINT}")

    def has_table(self, name: str) -> bool:
        return DeltaTable.is_deltatable(self.table_uri(name), self.storage_options or None)

    def ensure_tables(self) -> None:
        """Create each missing table with its schema from ``store.schema``; safe to race with others."""
        for name in TABLES:
            uri = self.table_uri(name)
            if self.has_table(name):
                continue
            try:
                created = DeltaTable.create(
                    uri,
                    SCHEMAS[name].arrow,
                    mode="error",
                    partition_by=[PARTITION_COLUMN],
                    name=name,
                    description=SCHEMAS[name].description,
                    configuration=TABLE_CONFIGURATION,
                    storage_options=self.storage_options or None,
                )
            except (DeltaError, OSError) as exc:
                if not self.has_table(name):  # lost the race to another process: fine; anything else is not
                    raise LakeError(f"Cannot create table {name!r} in {self.root}: {_cause(exc)}") from exc
                continue
            if self.is_local and created.version() == 0:
                _fsync_paths(
                    [Path(uri, "_delta_log", f"{0:020d}.json")], [Path(uri, "_delta_log"), Path(uri)]
                )

    def delta_table(self, name: str, *, refresh: bool = True) -> DeltaTable:
        """This process's handle on a table, brought up to the latest committed version when ``refresh``."""
        with self._locks[name]:
            return self._delta_table(name, refresh=refresh)

    def _delta_table(self, name: str, *, refresh: bool) -> DeltaTable:
        table = self._tables.get(name)
        try:
            if table is None:
                table = DeltaTable(self.table_uri(name), storage_options=self.storage_options or None)
                self._tables[name] = table
            elif refresh:
                table.update_incremental()
        except TableNotFoundError:
            raise TableNotFound(f"Table {name!r} does not exist in the lake {self.root}") from None
        except (DeltaError, OSError) as exc:
            raise LakeError(f"Cannot read table {name!r} in {self.root}: {_cause(exc)}") from exc
        return table

    def moved_since(self, versions: Mapping[str, int]) -> bool:
        """Whether any table has a commit after ``versions`` (-1: the table did not exist).

        On local disk this is one ``stat`` per table: Delta numbers commits one by one, so the next
        commit's log file exists exactly when the table has moved on.  Elsewhere it asks delta-rs.
        """
        if not self.is_local:
            return any(v > versions.get(name, -1) for name, v in self.versions().items())
        for name in TABLES:
            next_commit = Path(self.table_uri(name), "_delta_log", f"{versions.get(name, -1) + 1:020d}.json")
            if next_commit.exists():
                return True
        return False

    def versions(self) -> dict[str, int]:
        """The latest committed version of each existing table."""
        return {name: self.delta_table(name).version() for name in TABLES if self.has_table(name)}

    # -- writing --------------------------------------------------------------------------------------------

    def append(self, name: str, data: pa.Table) -> int:
        """Append ``data`` to table ``name`` in one atomic Delta commit; return the commit's version.

        New columns merge into the table schema.  On local disk the data is durable when this returns.
        Raises :class:`CommitError` (cause in the message) when the commit fails; nothing was committed then,
        or at worst the commit exists but is not yet durable: the caller retries, and dedup handles the copy.
        """
        _check_name(name)
        data = conform(data, SCHEMAS[name].arrow)
        token = uuid.uuid4().hex
        properties = CommitProperties(
            custom_metadata={"corridorhub.commit": token, "isBlindAppend": True},
            max_commit_retries=_MAX_COMMIT_RETRIES,
        )
        with self._locks[name]:
            try:
                table = self._delta_table(name, refresh=False)
            except LakeError as exc:
                raise CommitError(f"Commit to {name!r} failed: {exc}") from exc
            read_version = table.version()
            for attempt in range(_APPEND_ATTEMPTS):
                try:
                    write_deltalake(
                        table,
                        data,
                        mode="append",
                        partition_by=[PARTITION_COLUMN],
                        schema_mode="merge",
                        writer_properties=WRITER_PROPERTIES,
                        commit_properties=properties,
                    )
                    break
                except CommitFailedError as exc:  # lost a race with a metadata change: catch up and retry
                    if attempt == _APPEND_ATTEMPTS - 1:
                        raise CommitError(f"Commit to {name!r} failed: {_cause(exc)}") from exc
                    self._reload(name)
                    table = self._tables[name]
                except (DeltaError, OSError, pa.ArrowException) as exc:
                    self._tables.pop(name, None)  # its state is unknown now: reopen on the next call
                    raise CommitError(f"Commit to {name!r} failed: {_cause(exc)}") from exc
            version = table.version()
            if self.is_local:
                try:
                    version = self._make_durable(name, version, read_version, token)
                except OSError as exc:
                    raise CommitError(f"Commit to {name!r} could not be made durable: {_cause(exc)}") from exc
            return version

    def _reload(self, name: str) -> None:
        self._tables.pop(name, None)
        self._delta_table(name, refresh=False)

    def _make_durable(self, name: str, version: int, read_version: int, token: str) -> int:
        """fsync the commit holding ``token`` (normally ``version``), its data files and their folders."""
        table_dir = Path(self.table_uri(name))
        log_dir = table_dir / "_delta_log"
        candidates = [version, *range(version - 1, read_version, -1), *range(version + 1, version + 64)]
        for candidate in candidates:
            entry = log_dir / f"{candidate:020d}.json"
            try:
                lines = entry.read_text(encoding="utf-8").splitlines()
            except FileNotFoundError:
                continue
            actions = [json.loads(line) for line in lines if line.strip()]
            info: dict[str, Any] = next((a["commitInfo"] for a in actions if "commitInfo" in a), {})
            if info.get("corridorhub.commit") != token:
                continue
            files = [table_dir / unquote(a["add"]["path"]) for a in actions if "add" in a]
            folders = {f.parent for f in files} | {table_dir, log_dir}
            folders |= {p for f in files for p in f.parents if table_dir in p.parents}
            _fsync_paths([*files, entry], sorted(folders, key=lambda p: -len(p.parts)))
            return int(candidate)
        raise OSError(f"the log entry of commit {token} was not found after version {read_version}")

    # -- reading --------------------------------------------------------------------------------------------

    def snapshot(self, name: str) -> Snapshot:
        """The current committed version of ``name``: version, Parquet file URIs and schema."""
        with self._locks[name]:
            table = self._delta_table(name, refresh=True)
            try:
                return Snapshot(
                    name, table.version(), tuple(table.file_uris()), pa.schema(table.schema().to_arrow())
                )
            except (DeltaError, OSError) as exc:
                raise LakeError(f"Cannot list the files of {name!r}: {_cause(exc)}") from exc

    def snapshot_files(self, name: str) -> list[str]:
        """Parquet file URIs of the current committed snapshot of ``name``."""
        return list(self.snapshot(name).files)

    def connect(self, *, views: bool = True) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB connection (UTC session) with the four views when ``views``."""
        self.require()
        con = duckdb.connect(":memory:")
        con.execute("SET TimeZone = 'UTC'")
        if not self.is_local:
            _configure_object_store(con, self.storage_options)
        if views:
            self.open_views(con)
        return con

    def open_views(self, con: duckdb.DuckDBPyConnection) -> dict[str, int]:
        """(Re)create the views ``state``, ``event``, ``network``, ``quarantine``; return the versions used.

        A table without files (or not created yet) still gives a view with the right columns and types.
        """
        used: dict[str, int] = {}
        for name in TABLES:
            if self.has_table(name):
                snap = self.snapshot(name)
                used[name] = snap.version
                files, schema = snap.files, snap.view_schema
            else:
                files, schema = (), SCHEMAS[name].arrow
            con.execute(f"CREATE OR REPLACE VIEW {name} AS {select_files(files, schema)}")
        return used

    def recent_rows(self, name: str, columns: Sequence[str], since: datetime) -> pa.Table:
        """``columns`` of the rows of ``name`` received at or after ``since`` (``received_at``).

        Ingest seeds its dedup memory with this at start-up: after a crash between commit and ack, the
        broker redelivers what the last commits hold.  Only files written since then are read, and of
        those only the ones whose statistics say they hold such rows: a partition that compaction
        rewrote a minute ago is not read whole.
        """
        if since.tzinfo is None:
            raise ValueError("since must be timezone-aware")
        since_ms = int(since.timestamp() * 1000)
        with self._locks[name]:
            table = self._delta_table(name, refresh=True)
            try:
                actions = pa.table(table.get_add_actions(flatten=True))
            except (DeltaError, OSError) as exc:
                raise LakeError(f"Cannot list the files of {name!r}: {_cause(exc)}") from exc
        newest = (
            actions.column("max.received_at").cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64()).to_pylist()
            if "max.received_at" in actions.column_names
            else [None] * actions.num_rows
        )
        uri = self.table_uri(name)
        files = [
            f"{uri}/{path}"
            for path, mtime, received in zip(
                actions.column("path").to_pylist(),
                actions.column("modification_time").cast(pa.int64()).to_pylist(),
                newest,
                strict=True,
            )
            if mtime >= since_ms and (received is None or received >= since_ms)
        ]
        read = list(dict.fromkeys([*columns, "received_at"]))
        schema = pa.schema([SCHEMAS[name].arrow.field(c) for c in read])
        con = self.connect(views=False)
        try:
            return fetch_arrow(
                con,
                f"SELECT {_column_list(columns)} FROM ({select_files(files, schema)}) "
                f"WHERE received_at >= make_timestamp({since_ms * 1000})::TIMESTAMPTZ",
            )
        finally:
            con.close()


# -- helpers shared with compaction and query ---------------------------------------------------------------


def conform(data: pa.Table, schema: pa.Schema) -> pa.Table:
    """``data`` with the table's types for known columns, and microsecond UTC for every timestamp."""
    columns = []
    changed = False
    for field in data.schema:
        column = data.column(field.name)
        target: pa.DataType | None = None
        if field.name in schema.names:
            target = schema.field(field.name).type
        elif pa.types.is_timestamp(field.type):
            target = TIMESTAMP
        if target is not None and field.type != target:
            try:
                column = column.cast(target, safe=not pa.types.is_timestamp(target))
            except pa.ArrowException as exc:
                raise CommitError(f"Column {field.name!r} is {field.type}, expected {target}: {exc}") from exc
            changed = True
        columns.append(column)
    if not changed:
        return data
    return pa.table(columns, names=data.column_names)


def select_files(files: Iterable[str], schema: pa.Schema) -> str:
    """A SELECT over Parquet ``files`` (hive-partitioned by ``date``) with at least ``schema``'s columns.

    With no files, a typed empty SELECT derived from the Arrow schema.
    """
    listed = list(files)
    typed_empty = "SELECT " + ", ".join(
        f"CAST(NULL AS {duckdb_type(f.type)}) AS {_quote(f.name)}" for f in schema
    )
    typed_empty += " WHERE false"
    if not listed:
        return typed_empty
    paths = ", ".join(_literal(f) for f in listed)
    source = (
        f"SELECT * FROM read_parquet([{paths}], hive_partitioning = true, "
        f"hive_types = {{'{PARTITION_COLUMN}': DATE}}, union_by_name = true)"
    )
    # The typed empty branch first fixes column order and types; UNION BY NAME adds columns only files have.
    return f"{typed_empty} UNION ALL BY NAME {source}"


def fetch_arrow(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] | None = None) -> pa.Table:
    """Run one statement with ``con.execute`` and return its rows as an Arrow table."""
    result = con.execute(sql, params) if params is not None else con.execute(sql)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_DUCKDB_ARROW_COPY, category=UserWarning)
        table: pa.Table = result.to_arrow_table()
    return table


def duckdb_type(arrow: pa.DataType) -> str:
    """The DuckDB SQL type of an Arrow type (the ones the lake uses, and their close relatives)."""
    if pa.types.is_string(arrow) or pa.types.is_large_string(arrow) or pa.types.is_string_view(arrow):
        return "VARCHAR"
    if pa.types.is_binary(arrow) or pa.types.is_large_binary(arrow) or pa.types.is_binary_view(arrow):
        return "BLOB"
    if pa.types.is_timestamp(arrow):
        return "TIMESTAMPTZ" if arrow.tz else "TIMESTAMP"
    if pa.types.is_decimal(arrow):
        return f"DECIMAL({arrow.precision}, {arrow.scale})"
    simple = {
        pa.bool_(): "BOOLEAN",
        pa.int8(): "TINYINT",
        pa.int16(): "SMALLINT",
        pa.int32(): "INTEGER",
        pa.int64(): "BIGINT",
        pa.uint8(): "UTINYINT",
        pa.uint16(): "USMALLINT",
        pa.uint32(): "UINTEGER",
        pa.uint64(): "UBIGINT",
        pa.float16(): "FLOAT",
        pa.float32(): "FLOAT",
        pa.float64(): "DOUBLE",
        pa.date32(): "DATE",
        pa.date64(): "DATE",
    }
    if arrow in simple:
        return simple[arrow]
    raise LakeError(f"No DuckDB type for the Arrow type {arrow}")


def _configure_object_store(con: duckdb.DuckDBPyConnection, options: Mapping[str, str]) -> None:
    """Give DuckDB's httpfs the S3 credentials and endpoint that ``storage_options`` gives delta-rs."""
    lowered = {k.lower(): v for k, v in options.items()}
    settings: dict[str, str] = {"TYPE": "S3"}
    for key, name in (
        ("aws_access_key_id", "KEY_ID"),
        ("aws_secret_access_key", "SECRET"),
        ("aws_session_token", "SESSION_TOKEN"),
        ("aws_region", "REGION"),
    ):
        if key in lowered:
            settings[name] = lowered[key]
    endpoint = lowered.get("aws_endpoint_url") or lowered.get("aws_endpoint")
    if endpoint:
        parts = urlsplit(endpoint)
        settings["ENDPOINT"] = parts.netloc or endpoint
        settings["USE_SSL"] = "false" if parts.scheme == "http" else "true"
        settings["URL_STYLE"] = "path"
    body = ", ".join(f"{k} {v if k == 'TYPE' else _literal(v)}" for k, v in settings.items())
    # LOAD only: nothing is downloaded at run time.  Install the extension beforehand where object
    # storage is used (python -c "import duckdb; duckdb.install_extension('httpfs')").
    try:
        con.execute("LOAD httpfs")
    except duckdb.Error as exc:
        raise LakeError(
            "Reading a lake on object storage needs DuckDB's httpfs extension, which is not installed "
            f"(corridorhub does not download it at run time): {exc}"
        ) from exc
    try:
        con.execute(f"CREATE OR REPLACE SECRET corridorhub_lake ({body})")
    except duckdb.Error as exc:
        raise LakeError(f"DuckDB cannot reach the object store: {exc}") from exc


def _fsync_paths(files: Iterable[Path], folders: Iterable[Path]) -> None:
    for path in [*files, *folders]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _check_name(name: str) -> None:
    if name not in TABLES:
        raise TableNotFound(f"No table {name!r}: the lake has {', '.join(TABLES)}")


def _cause(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _column_list(columns: Sequence[str]) -> str:
    return ", ".join(_quote(c) for c in columns)
