"""The baseline of ``bench query``: each table as one plain Parquet file, sorted, read by plain DuckDB.

The files are written once from the lake's committed snapshot (the same rows, the ``date`` partition column
included as an ordinary column), sorted by ``ts``, the column the standard queries filter on and bucket by
(so row-group statistics prune a time range), in zstd with DuckDB's default row groups.  A connection over
them has the same ``memory_limit`` and ``threads`` as the sandbox and the same analyst views, created by the
same ``store.views.create_analyst_views``: the two sides run the very same SQL.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from store.lake import Lake
from store.views import create_analyst_views

PLAIN_TABLES = ("state", "network", "event")
SORT_KEY = "ts"
#: Memory for writing the sorted files (a one-off step, not a measured one).
_WRITE_MEMORY = "4GB"


def plain_file(folder: Path, table: str) -> Path:
    return folder / f"{table}.parquet"


def write_plain_files(lake: Lake, folder: Path) -> dict[str, int]:
    """Write ``{folder}/{table}.parquet`` for each table, sorted by ``ts``; return the rows of each."""
    folder.mkdir(parents=True, exist_ok=True)
    con = lake.connect()
    rows: dict[str, int] = {}
    try:
        con.execute(f"SET temp_directory = '{folder / 'tmp'}'")
        con.execute(f"SET memory_limit = '{_WRITE_MEMORY}'")
        con.execute("SET preserve_insertion_order = true")
        con.execute("SET enable_progress_bar = false")
        for table in PLAIN_TABLES:
            target = plain_file(folder, table)
            partial = target.with_suffix(".parquet.partial")
            con.execute(
                f"COPY (SELECT * FROM {table} ORDER BY {SORT_KEY}) TO '{partial}' "
                "(FORMAT parquet, COMPRESSION zstd)"
            )
            partial.replace(target)
            found = con.execute(f"SELECT count(*) FROM read_parquet('{target}')").fetchone()
            rows[table] = int(found[0]) if found else 0
    finally:
        con.close()
    return rows


def connect_plain(
    folder: Path, memory_limit: str, threads: int, temp_dir: Path, max_temp_size: str = "2GB"
) -> duckdb.DuckDBPyConnection:
    """A plain in-memory DuckDB connection (UTC) with views over the sorted files and the analyst views.

    Memory, threads and spill space as the sandbox has them (``temp_dir`` of its own, capped the same).
    """
    config: dict[str, str | bool | int | float | list[str]] = {
        "memory_limit": memory_limit,
        "threads": threads,
        "temp_directory": str(temp_dir),
        "max_temp_directory_size": max_temp_size,
    }
    con = duckdb.connect(":memory:", config=config)
    con.execute("SET TimeZone = 'UTC'")
    for table in PLAIN_TABLES:
        con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{plain_file(folder, table)}')")
    create_analyst_views(con)
    return con
