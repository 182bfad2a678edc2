"""Compaction: remove duplicate samples and merge small files, per partition, while ingest keeps writing.

Ingest commits a few times per second, so a day's partition collects thousands of small files, and a crash
between a commit and its MQTT acknowledgement leaves redelivered copies.  For each ``date`` partition:

1. **Dedup** (stream tables only).  A sample's key is ``store.schema.SAMPLE_IDENTITY``
   ``(operator, device_id, seq, ts)`` (null ``seq`` values group together, so ``ts`` alone keys samples
   without seq; a reused seq with another ts is a new sample, not a copy); of the copies the one with the
   earliest ``received_at`` stays.  A partition holding duplicates is rewritten: DuckDB reads the
   partition's files *of one snapshot* and writes the kept rows back with ``write_deltalake(mode="overwrite",
   predicate="date = ...")`` on a handle at that same snapshot.  The commit's ``remove`` actions name exactly
   the files that snapshot held, so a file that ingest appends meanwhile is neither removed nor lost; it is
   deduplicated on the next run.  (A delete by predicate would not do: copies written twice by a retried
   commit are identical, ``received_at`` included.)
2. **Merge** small files with ``DeltaTable.optimize.compact`` on the partition.  Its commit marks the rewrite
   ``dataChange=false`` and removes only the files it read, so concurrent appends survive too.

Both are single Delta commits.  If another writer commits a conflicting change first (another compaction,
a schema merge), delta-rs refuses our commit and the partition is redone from a fresh snapshot.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError

from store.errors import LakeError
from store.lake import WRITER_PROPERTIES, Lake, conform, fetch_arrow, select_files
from store.repair import unreadable_lake
from store.schema import PARTITION_COLUMN, QUARANTINE, SAMPLE_IDENTITY, STREAMS

log = logging.getLogger(__name__)

#: ``progress(done, total, label)`` after each partition.
Progress = Callable[[int, int, str], None]

_ATTEMPTS = 10
_KEY = ", ".join(SAMPLE_IDENTITY)  # PARTITION BY groups NULL seq values together


@dataclass
class TableCompaction:
    """What compaction did to one table."""

    table: str
    files_before: int = 0
    files_after: int = 0
    duplicates_removed: int = 0
    partitions: int = 0
    partitions_deduplicated: int = 0
    partitions_merged: int = 0
    version_before: int = -1
    version_after: int = -1

    def describe(self) -> str:
        return (
            f"{self.table}: {self.files_before} -> {self.files_after} files in {self.partitions} partitions "
            f"({self.partitions_merged} merged), {self.duplicates_removed} duplicates removed "
            f"({self.partitions_deduplicated} partitions rewritten), "
            f"version {self.version_before} -> {self.version_after}"
        )


@dataclass
class CompactionReport:
    tables: list[TableCompaction] = field(default_factory=list)

    @property
    def duplicates_removed(self) -> int:
        return sum(t.duplicates_removed for t in self.tables)

    @property
    def files_before(self) -> int:
        return sum(t.files_before for t in self.tables)

    @property
    def files_after(self) -> int:
        return sum(t.files_after for t in self.tables)

    def __getitem__(self, table: str) -> TableCompaction:
        for entry in self.tables:
            if entry.table == table:
                return entry
        raise KeyError(table)

    def describe(self) -> str:
        lines = [entry.describe() for entry in self.tables]
        lines.append(
            f"total: {self.files_before} -> {self.files_after} files, "
            f"{self.duplicates_removed} duplicates removed"
        )
        return "\n".join(lines)


def compact(
    lake: Lake,
    tables: Iterable[str] = (*STREAMS, QUARANTINE),
    progress: Progress | None = None,
    *,
    target_size: int | None = None,
) -> CompactionReport:
    """Deduplicate (stream tables) and merge small files in every partition of ``tables``.

    ``target_size`` is the merged file size in bytes (default: the table's ``delta.targetFileSize``, 100 MiB).
    """
    plans: list[tuple[str, dict[str, int], TableCompaction]] = []
    for name in tables:
        if not lake.has_table(name):
            raise LakeError(f"Table {name!r} does not exist in the lake {lake.root}")
        table = _open(lake, name)
        files = _files_per_partition(table)
        entry = TableCompaction(
            name, files_before=sum(files.values()), partitions=len(files), version_before=table.version()
        )
        plans.append((name, files, entry))

    total = sum(len(files) for _, files, _ in plans)
    done = 0
    report = CompactionReport()
    for name, files, entry in plans:
        try:
            duplicates = _duplicates_per_partition(lake, name) if name in STREAMS else {}
            for partition in sorted(files):
                if duplicates.get(partition):
                    removed = _dedup_partition(lake, name, partition)
                    entry.duplicates_removed += removed
                    entry.partitions_deduplicated += removed > 0
                if _merge_partition(lake, name, partition, target_size):
                    entry.partitions_merged += 1
                done += 1
                if progress is not None:
                    progress(done, total, f"{name} {partition}")
        except duckdb.Error as exc:  # a data file that cannot be read (torn by a power loss)
            raise unreadable_lake(exc, lake) from None
        table = _open(lake, name)
        entry.files_after = sum(_files_per_partition(table).values())
        entry.version_after = table.version()
        log.info("compacted %s", entry.describe())
        report.tables.append(entry)
    return report


def _open(lake: Lake, name: str) -> DeltaTable:
    """A private handle at the latest version: compaction never moves the lake's cached append handle."""
    try:
        return DeltaTable(lake.table_uri(name), storage_options=lake.storage_options or None)
    except (DeltaError, OSError) as exc:
        raise LakeError(f"Cannot open table {name!r}: {exc}") from exc


def _partition_files(table: DeltaTable) -> dict[str, list[str]]:
    actions = pa.table(table.get_add_actions(flatten=True))
    base = table.table_uri.rstrip("/")
    out: dict[str, list[str]] = {}
    if actions.num_rows == 0:
        return out
    for path, value in zip(
        actions.column("path").to_pylist(),
        actions.column(f"partition.{PARTITION_COLUMN}").to_pylist(),
        strict=True,
    ):
        out.setdefault(str(value), []).append(f"{base}/{path}")
    return out


def _files_per_partition(table: DeltaTable) -> dict[str, int]:
    return {partition: len(files) for partition, files in _partition_files(table).items()}


def _duplicates_per_partition(lake: Lake, name: str) -> dict[str, int]:
    snap = lake.snapshot(name)
    con = lake.connect(views=False)
    try:
        rows = con.execute(
            f"SELECT CAST({PARTITION_COLUMN} AS VARCHAR), sum(n - 1) FROM ("
            f"SELECT {PARTITION_COLUMN}, count(*) AS n FROM ({select_files(snap.files, snap.schema)}) "
            f"GROUP BY {PARTITION_COLUMN}, {_KEY} HAVING count(*) > 1) GROUP BY 1"
        ).fetchall()
    finally:
        con.close()
    return {str(partition): int(count) for partition, count in rows}


def _dedup_partition(lake: Lake, name: str, partition: str) -> int:
    """Rewrite one partition without duplicates in one commit; return the rows removed."""
    for attempt in range(_ATTEMPTS):
        table = _open(lake, name)
        files = _partition_files(table).get(partition, [])
        schema = pa.schema(table.schema().to_arrow())
        source = select_files(files, schema)
        con = lake.connect(views=False)
        try:
            before, newest = con.execute(
                f"SELECT count(*), strftime(max(received_at), '%Y-%m-%dT%H:%M:%S.%fZ') FROM ({source}) "
                "WHERE received_at IS NOT NULL"
            ).fetchall()[0]
            kept = fetch_arrow(
                con,
                f"SELECT * FROM ({source}) WHERE received_at IS NOT NULL "
                f"QUALIFY row_number() OVER (PARTITION BY {_KEY} ORDER BY received_at NULLS LAST) = 1",
            )
        finally:
            con.close()
        removed: int = int(before) - int(kept.num_rows)
        if removed == 0:
            return 0
        kept = conform(kept.select(schema.names), schema)
        # The bound on received_at keeps the transaction's read predicate off files appended after our
        # snapshot (ingest stamps them later), so delta-rs does not refuse the commit for them; a file it
        # cannot rule out by its statistics still makes the commit conflict and the partition is redone.
        predicate = f"{PARTITION_COLUMN} = '{partition}' AND received_at <= '{newest}'"
        try:
            write_deltalake(
                table,
                kept,
                mode="overwrite",
                predicate=predicate,
                partition_by=[PARTITION_COLUMN],
                writer_properties=WRITER_PROPERTIES,
            )
        except CommitFailedError as exc:
            log.info("dedup of %s %s lost a race (%s), attempt %d", name, partition, exc, attempt + 1)
            continue
        except (DeltaError, OSError, pa.ArrowException) as exc:
            raise LakeError(f"Dedup of {name!r} partition {partition} failed: {exc}") from exc
        return removed
    raise LakeError(f"Dedup of {name!r} partition {partition} kept conflicting; try again later")


def _merge_partition(lake: Lake, name: str, partition: str, target_size: int | None) -> bool:
    """Merge the small files of one partition in one commit; return whether anything was merged."""
    for attempt in range(_ATTEMPTS):
        table = _open(lake, name)
        if len(_partition_files(table).get(partition, [])) < 2:
            return False
        try:
            metrics = table.optimize.compact(
                partition_filters=[(PARTITION_COLUMN, "=", partition)],
                target_size=target_size,
                writer_properties=WRITER_PROPERTIES,
            )
        except CommitFailedError as exc:
            log.info("merge of %s %s lost a race (%s), attempt %d", name, partition, exc, attempt + 1)
            continue
        except (DeltaError, OSError) as exc:
            raise LakeError(f"Merging files of {name!r} partition {partition} failed: {exc}") from exc
        return int(metrics.get("numFilesRemoved", 0)) > 0
    raise LakeError(f"Merging files of {name!r} partition {partition} kept conflicting; try again later")
