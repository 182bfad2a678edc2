"""Run one analyst SQL statement over the lake's committed snapshots, through the SQL sandbox.

The simple seam for callers that want a whole (small) result: ``corridorhub sql`` and tests.  Services that
stream keep one :class:`store.sql_pool.SqlPool` and call :meth:`~store.sql_pool.SqlPool.query` themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa

from store.geo.zones import ZONE_TABLES
from store.lake import Lake
from store.sandbox import Sandbox, SandboxLimits
from store.schema import TABLES
from store.sql_pool import START_TIMEOUT_S, SqlPool
from store.views import VIEWS, create_analyst_views


@dataclass(frozen=True)
class SqlResult:
    """The rows of one statement, at most ``max_rows`` of them; ``truncated`` when more were left over."""

    table: pa.Table
    truncated: bool


def run_sql(
    lake: Lake,
    sql: str,
    params: list[Any] | dict[str, Any] | None = None,
    limits: SandboxLimits | None = None,
) -> SqlResult:
    """Execute ``sql`` (one read-only statement) against the lake's tables ``state``, ``event``,
    ``network``, ``quarantine`` and the analyst views (``trips``, ``device_day``, ... and ``zones``);
    raise ``QueryRefused`` or ``QueryError`` (one line each) when it cannot run.

    The statement runs in a worker process of its own, as in the service (``store.sql_pool``): under the
    same memory cap and kill deadline."""
    with SqlPool(lake.root, limits or SandboxLimits(), size=1) as pool:
        pool.start()
        with pool.query(sql, params, wait_s=START_TIMEOUT_S) as result:
            table = result.fetch_all()
            return SqlResult(table, result.truncated)


def analyst_relations() -> dict[str, tuple[str, ...]]:
    """The names analyst SQL can read, by kind: the lake's ``tables``, the analyst ``views`` and the ``zones``
    tables - what :func:`analyst_sandbox` sets up (a test holds the two together), for help texts."""
    return {"tables": TABLES, "views": tuple(view.name for view in VIEWS), "zones": ZONE_TABLES}


def analyst_sandbox(lake: Lake, limits: SandboxLimits) -> Sandbox:
    """The sandbox analysts get everywhere (CLI and HTTP): the lake's tables plus the analyst views."""

    def setup(con: duckdb.DuckDBPyConnection) -> None:
        create_analyst_views(con)

    return Sandbox(lake, limits, setup=setup)
