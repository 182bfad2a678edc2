"""Finding and setting aside data files that cannot be read (``corridorhub compact --repair``).

A power loss in the moment between delta-rs writing a commit and our fsync can leave the Delta log naming a
torn Parquet file (docs/RELIABILITY.md).  Nothing in it was acknowledged, so the broker sends its messages
again; but every reader of the table fails on it until it is out of the log.  :func:`repair` reads the
footer of every file the current snapshot names; a file whose footer cannot be read is moved to
``{lake}/_hub/damaged/{table}/...`` (kept, for whoever wants to recover bytes from it) and delta-rs's own
``DeltaTable.repair`` (FSCK) then commits a ``remove`` for each file that is no longer there.

Local lakes only: on object storage a torn object cannot exist (a put is atomic).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError

from store.errors import LakeError
from store.lake import Lake
from store.schema import TABLES

log = logging.getLogger(__name__)

DAMAGED_DIR = Path("_hub") / "damaged"
REPAIR_HINT = (
    "`corridorhub compact --repair` moves unreadable files to <lake>/_hub/damaged/ and drops them from the "
    "table (a file torn by a power loss during a commit held nothing acknowledged: the broker sends it again)"
)


def unreadable_lake(exc: BaseException, lake: Lake) -> LakeError:
    """A LakeError for a failure to read the lake's files: one line, the lake's path hidden, and the remedy
    when a data file is damaged."""
    text = str(exc).strip()
    first = (text.splitlines()[0] if text else type(exc).__name__).replace(lake.root, "<lake>")
    damaged = any(s in text.lower() for s in ("magic bytes", "parquet", "corrupt", "no such file"))
    return LakeError(f"The lake cannot be read: {first}" + (f"; {REPAIR_HINT}" if damaged else ""))


@dataclass(frozen=True)
class DamagedFile:
    table: str
    path: str  # relative to the table
    reason: str


def unreadable_files(lake: Lake, tables: Iterable[str] = TABLES) -> list[DamagedFile]:
    """Every file of the current snapshots whose Parquet footer cannot be read."""
    found = []
    for name in tables:
        if not lake.has_table(name):
            continue
        root = Path(lake.table_uri(name))
        try:
            table = DeltaTable(str(root), storage_options=lake.storage_options or None)
            paths = pa.table(table.get_add_actions(flatten=True)).column("path").to_pylist()
        except (DeltaError, OSError) as exc:
            raise LakeError(f"Cannot list the files of {name!r}: {exc}") from exc
        for relative in paths:
            try:
                pq.read_metadata(root / relative)
            except (OSError, pa.ArrowException) as exc:
                found.append(DamagedFile(name, str(relative), str(exc).splitlines()[0]))
    return found


def repair(lake: Lake, tables: Iterable[str] = TABLES) -> list[DamagedFile]:
    """Move every unreadable file aside and commit its removal; returns what was moved."""
    if lake.storage_options:
        raise LakeError("--repair works on a lake on local disk (an object store has no torn files)")
    damaged = unreadable_files(lake, tables)
    for item in damaged:
        source = Path(lake.table_uri(item.table)) / item.path
        target = Path(lake.root) / DAMAGED_DIR / item.table / item.path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(source, target)
        log.info("moved unreadable %s/%s to %s (%s)", item.table, item.path, DAMAGED_DIR, item.reason)
    for name in sorted({item.table for item in damaged}):
        try:
            DeltaTable(lake.table_uri(name)).repair()
        except (DeltaError, OSError) as exc:
            raise LakeError(f"Could not drop the damaged files from {name!r}: {exc}") from exc
    return damaged
