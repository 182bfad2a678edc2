"""Run one analyst SQL statement over the lake's committed snapshots.

For now a plain helper for ``corridorhub sql``; the sandboxed analyst service (another issue) replaces
:func:`run_sql` behind the same seam: open the views, execute one statement, return an Arrow table.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

from store.errors import QueryError
from store.lake import Lake, fetch_arrow


def run_sql(lake: Lake, sql: str) -> pa.Table:
    """Execute ``sql`` (one statement) against views ``state``, ``event``, ``network``, ``quarantine``."""
    if not sql.strip():
        raise QueryError("Empty SQL statement")
    con = lake.connect()
    try:
        return fetch_arrow(con, sql)
    except duckdb.Error as exc:
        raise QueryError(_one_line(exc)) from None
    finally:
        con.close()


def _one_line(exc: duckdb.Error) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " ".join(lines[:2]) if lines else type(exc).__name__
