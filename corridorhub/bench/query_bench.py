"""``bench query`` from start to end: the corridor day (made or reused), the query timings, the HTTP latency.

Steps: (1) the generated lake of ``{workdir}/day-{rows}-seed{seed}-v{generator}/``, made through
``Lake.append`` with a progress bar unless a complete one is there; (2) the plain sorted Parquet files beside
it, written once from the lake; (3) the standard queries through the sandbox and on the plain files
(``corridorhub.bench.query``); (4) ``corridorhub serve`` over the lake and the small query's latency under
concurrent clients (``corridorhub.bench.query_http``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from corridorhub.bench.corridor_day import CachedDay, DayPlan, cached_day
from corridorhub.bench.plain import PLAIN_TABLES, connect_plain, plain_file, write_plain_files
from corridorhub.bench.query import bench_limits, file_stats, open_sandbox, table_rows, time_queries
from corridorhub.bench.query_http import analyst_key, measure_latency, running_service
from corridorhub.bench.query_report import QueryBenchResult
from store.lake import Lake
from store.settings import Settings


@dataclass(frozen=True)
class QueryBenchConfig:
    rows: int = 20_000_000
    seed: int = 0
    repeats: int = 3
    memory_limit: str = "4GB"
    threads: int = 2
    http_requests: int = 400
    http_clients: int = 8
    regenerate: bool = False


def run_query_bench(
    config: QueryBenchConfig,
    settings: Settings,
    workdir: Path,
    echo: Callable[[str], None],
    config_file: str | None = None,
) -> QueryBenchResult:
    day = cached_day(workdir, DayPlan.for_rows(config.rows, config.seed))
    generated_s, plain_write_s = _prepare(day, config.regenerate, echo)
    lake = Lake(day.lake_path)
    rows = table_rows(lake)
    layout = file_stats(lake, day.plain_path)

    limits = bench_limits(config.memory_limit, config.threads, settings.sql_max_rows)
    temp = day.folder / "tmp"
    sandbox, setup_s = open_sandbox(lake, limits)
    plain = connect_plain(day.plain_path, config.memory_limit, config.threads, temp / "plain")
    echo(f"timing {config.repeats} runs per query and side (median), memory_limit {config.memory_limit}, "
         f"threads {config.threads}:")  # fmt: skip
    try:
        timings = time_queries(sandbox, plain, config.repeats, echo)
    finally:
        sandbox.close()
        plain.close()

    echo(
        f"HTTP: corridorhub serve on loopback, {config.http_clients} clients, {config.http_requests} requests"
    )
    keys_file = day.folder / "keys.json"
    with running_service(day.lake_path, keys_file, day.folder / "serve.log", config_file) as port:
        key = analyst_key(keys_file)
        http = measure_latency(port, key, config.http_requests, config.http_clients)
        # One client alone: the service time of a request, without queueing behind the others.
        http_alone = measure_latency(port, key, max(10, config.http_requests // 8), 1)
    return QueryBenchResult(
        rows=rows,
        devices=day.plan.devices,
        interval_s=day.plan.interval_s,
        generated_s=generated_s,
        plain_write_s=plain_write_s,
        layout=layout,
        sandbox_setup_s=setup_s,
        timings=timings,
        http=http,
        http_alone=http_alone,
        memory_limit=config.memory_limit,
        threads=config.threads,
        repeats=config.repeats,
    )


def _prepare(
    day: CachedDay, regenerate: bool, echo: Callable[[str], None]
) -> tuple[float | None, float | None]:
    """Make the lake and the plain files unless a complete set is cached; the seconds each took, or None."""
    plain_ready = all(plain_file(day.plain_path, t).exists() for t in PLAIN_TABLES)
    if not regenerate and day.manifest() is not None and plain_ready:
        echo(f"reusing the generated day in {day.folder} (--regenerate to make it again)")
        return None, None
    counts, generated_s = day.generate(echo)
    started = time.perf_counter()
    write_plain_files(Lake(day.lake_path), day.plain_path)
    plain_write_s = time.perf_counter() - started
    echo(f"  plain sorted Parquet written in {plain_write_s:.1f} s")
    day.write_manifest(counts, generated_s)  # last: marks the cached day complete
    return generated_s, plain_write_s
