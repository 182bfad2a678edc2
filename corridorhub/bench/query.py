"""``bench query``: the standard analyst queries through the sandbox and on plain sorted Parquet, same run.

Each query of :data:`QUERIES` runs ``repeats`` times on each side in alternation (sandbox, plain, sandbox,
plain, ...), so that a drift in the machine's load hits both; a query under half a second runs more often (its
runs add up to about 2 s, at most 25).  There is no separate warm-up: the files were
just written or read (page cache), the sandbox's database is built before timing (``open_sandbox``), and the
**median** of the runs is the figure, which leaves out one cold run.  A run is the whole statement with every
row fetched as Arrow: ``SqlPool.query(sql).fetch_all()`` as an analyst's CLI or HTTP call does it (a worker
process of ``store.sql_pool``: snapshot check, SQL guard, cursor, Arrow IPC over its pipe), against
``con.execute(sql).to_arrow_table()`` on a plain connection with the same ``memory_limit``, ``threads`` and
spill space.  Both sides must return the same row counts.  CPU time (the bench process's and the SQL
worker's) is kept beside wall-clock time: on a shared machine it moves far less with other load.
"""

from __future__ import annotations

import contextlib
import resource
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from urllib.parse import unquote, urlsplit

import duckdb
import psutil
import pyarrow as pa

from corridorhub.bench.plain import PLAIN_TABLES, plain_file
from store.lake import Lake
from store.sandbox import SandboxLimits
from store.sql_pool import START_TIMEOUT_S, SqlPool

#: 08:00-09:00 JST on the generated day, across the UTC date boundary (two ``date`` partitions).
_RUSH_HOUR = "ts >= TIMESTAMPTZ '2025-03-14 08:00:00+09' AND ts < TIMESTAMPTZ '2025-03-14 09:00:00+09'"


@dataclass(frozen=True)
class StandardQuery:
    name: str
    description: str
    sql: str


QUERIES: tuple[StandardQuery, ...] = (
    StandardQuery(
        "network_mesh_hour",
        "network quality by 250 m mesh x hour (quantiles)",
        "SELECT * FROM network_mesh_hour ORDER BY mesh250, hour_jst",
    ),
    StandardQuery(
        "speed_mesh_15min",
        "speed by 250 m mesh x 15 min (mean, p85)",
        "SELECT * FROM speed_mesh_15min ORDER BY mesh250, slot_jst",
    ),
    StandardQuery(
        "events_zone_day",
        "events by zone x day x kind",
        "SELECT * FROM events_zone_day ORDER BY zone, day_jst, kind",
    ),
    StandardQuery(
        "device_day",
        "per device and day: distance, active time (window functions)",
        "SELECT * FROM device_day ORDER BY operator, device_id, day_jst",
    ),
    StandardQuery(
        "time_range_scan",
        "one hour of state per device (filter on ts)",
        "SELECT operator, device_id, count(*) AS samples, avg(speed_mps) AS mean_speed_mps, "
        "max(speed_mps) AS max_speed_mps, min(battery_pct) AS min_battery_pct "
        f"FROM state WHERE {_RUSH_HOUR} GROUP BY ALL ORDER BY operator, device_id",
    ),
    StandardQuery(
        "top_n",
        "20 hardest decelerations of the day (ORDER BY ... LIMIT)",
        "SELECT operator, device_id, ts, lat, lon, speed_mps, accel_mps2 FROM state "
        "ORDER BY accel_mps2, ts, operator, device_id LIMIT 20",
    ),
)


#: A query faster than this is repeated more often than ``repeats`` (up to ``_MAX_REPEATS``), so that its
#: median spans about this long: a few milliseconds of noise are a large share of a 10 ms query.
_SHORT_QUERY_BUDGET_S = 2.0
_MAX_REPEATS = 25


@dataclass(frozen=True)
class QueryTiming:
    """Wall-clock and process CPU seconds of each run on each side."""

    query: StandardQuery
    sandbox_s: tuple[float, ...]
    plain_s: tuple[float, ...]
    sandbox_cpu_s: tuple[float, ...]
    plain_cpu_s: tuple[float, ...]
    rows: int

    @property
    def sandbox_median_s(self) -> float:
        return statistics.median(self.sandbox_s)

    @property
    def plain_median_s(self) -> float:
        return statistics.median(self.plain_s)

    @property
    def ratio(self) -> float:
        return self.sandbox_median_s / self.plain_median_s

    @property
    def sandbox_cpu_median_s(self) -> float:
        return statistics.median(self.sandbox_cpu_s)

    @property
    def plain_cpu_median_s(self) -> float:
        return statistics.median(self.plain_cpu_s)


class BenchQueryError(RuntimeError):
    """The two sides disagree, or a query failed: the figures would be meaningless."""


def bench_limits(memory_limit: str, threads: int, max_rows: int) -> SandboxLimits:
    """The sandbox's limits for timing: the service's memory and threads, a time limit that never hits."""
    return SandboxLimits(memory_limit=memory_limit, threads=threads, timeout_s=3600.0, max_rows=max_rows)


def open_sandbox(lake: Lake, limits: SandboxLimits) -> tuple[SqlPool, float]:
    """The analyst's sandbox as the CLI and the API run it: one worker process of ``store.sql_pool`` (its
    locked database over the current snapshot built when it starts), and the time until it is ready."""
    pool = SqlPool(lake.root, limits, size=1)
    started = time.perf_counter()
    pool.start()
    if not pool.wait_ready(START_TIMEOUT_S):
        pool.close()
        raise BenchQueryError("the SQL worker did not start")
    return pool, time.perf_counter() - started


def table_rows(lake: Lake) -> dict[str, int]:
    """Rows of each table in the lake's current snapshot."""
    con = lake.connect()
    try:
        return {t: int(con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0]) for t in PLAIN_TABLES}
    finally:
        con.close()


def time_queries(
    sandbox: SqlPool,
    plain: duckdb.DuckDBPyConnection,
    repeats: int,
    echo: Callable[[str], None],
    queries: tuple[StandardQuery, ...] = QUERIES,
) -> list[QueryTiming]:
    """Time each query ``repeats`` times per side (more for short queries, see ``_SHORT_QUERY_BUDGET_S``)."""
    out = []
    for query in queries:
        runs: dict[str, list[tuple[float, float]]] = {"sandbox": [], "plain": []}
        rows: set[tuple[int, int]] = set()
        planned = repeats
        while len(runs["plain"]) < planned:
            wall, cpu, sandbox_rows = _timed(partial(_run_sandbox, sandbox, query), partial(_cpu_of, sandbox))
            runs["sandbox"].append((wall, cpu))
            wall, cpu, plain_rows = _timed(partial(_run_plain, plain, query))
            runs["plain"].append((wall, cpu))
            rows.add((sandbox_rows, plain_rows))
            if len(runs["plain"]) == 1:
                planned = max(repeats, min(_MAX_REPEATS, int(_SHORT_QUERY_BUDGET_S / max(wall, 1e-3))))
        if len(rows) != 1 or len({n for pair in rows for n in pair}) != 1:
            raise BenchQueryError(f"{query.name}: row counts (sandbox, plain) differ: {sorted(rows)}")
        timing = QueryTiming(
            query,
            sandbox_s=tuple(w for w, _ in runs["sandbox"]),
            plain_s=tuple(w for w, _ in runs["plain"]),
            sandbox_cpu_s=tuple(c for _, c in runs["sandbox"]),
            plain_cpu_s=tuple(c for _, c in runs["plain"]),
            rows=rows.pop()[0],
        )
        echo(
            f"  {query.name:<18} sandbox {timing.sandbox_median_s:8.3f} s   "
            f"plain {timing.plain_median_s:8.3f} s   ratio {timing.ratio:5.2f}   "
            f"({len(timing.plain_s)} runs, {timing.rows:,} rows)"
        )
        out.append(timing)
    return out


def _timed(
    run: Callable[[], pa.Table], other_cpu: Callable[[], float] = lambda: 0.0
) -> tuple[float, float, int]:
    """Wall-clock seconds, CPU seconds (all threads: DuckDB's and ours, and ``other_cpu``'s: the SQL
    worker's) and rows of one run.

    CPU time is what the query cost whatever else the machine ran; wall-clock time is what the analyst
    waited, and it moves with the other processes' load.
    """
    started, cpu, other = time.perf_counter(), time.process_time(), other_cpu()
    table = run()
    spent = time.process_time() - cpu + other_cpu() - other
    return time.perf_counter() - started, spent, table.num_rows


def _cpu_of(pool: SqlPool) -> float:
    """CPU seconds the pool's worker processes have used (user and system, all threads), those replaced
    since (reaped children, ``RUSAGE_CHILDREN``) included."""
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = reaped.ru_utime + reaped.ru_stime
    for pid in pool.pids():
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
    return total


def _run_sandbox(sandbox: SqlPool, query: StandardQuery) -> pa.Table:
    with sandbox.query(query.sql) as result:
        table = result.fetch_all()
        if result.truncated:
            raise BenchQueryError(f"{query.name}: the result was truncated at the sandbox's row cap")
    return table


def _run_plain(con: duckdb.DuckDBPyConnection, query: StandardQuery) -> pa.Table:
    cursor = con.cursor()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Arrow output on a DB-API result", category=UserWarning)
            table: pa.Table = cursor.execute(query.sql).to_arrow_table()
        return table
    finally:
        cursor.close()


def file_stats(lake: Lake, plain_folder: Path) -> dict[str, dict[str, float]]:
    """Per table: files and MiB in the lake's snapshot and in the plain file (the layout each side reads)."""
    out: dict[str, dict[str, float]] = {}
    for table in PLAIN_TABLES:
        files = [Path(unquote(urlsplit(f).path)) for f in lake.snapshot_files(table)]
        out[table] = {
            "lake_files": len(files),
            "lake_mib": round(sum(f.stat().st_size for f in files) / 2**20, 1),
            "plain_mib": round(plain_file(plain_folder, table).stat().st_size / 2**20, 1),
        }
    return out
