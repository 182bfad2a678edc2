"""``corridorhub bench``: benchmarks that print readable figures and end with one JSON line.

Each benchmark is a subcommand of the ``bench`` group (``ingest``, ``query``, ``publish``): a
``@command.command(...)`` function here, its code in ``corridorhub/bench/``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import click

from corridorhub._options import settings_from
from corridorhub.bench.ingest import IngestBenchConfig, run_ingest_bench
from corridorhub.bench.machine import describe_machine, load_average
from corridorhub.bench.publish import PublishBenchConfig, run_publish_bench
from corridorhub.bench.publish_report import publish_figures, render_publish
from corridorhub.bench.query_bench import QueryBenchConfig, run_query_bench
from corridorhub.bench.query_report import query_figures, render_query
from corridorhub.bench.report import figures, render


@click.group("bench")
def command() -> None:
    """Benchmarks: readable figures, then one JSON line holding them (for scripts and CI)."""


def _echo(text: str) -> None:
    click.echo(text, err=True)


class _Machine:
    """The machine a benchmark runs on, said at the start, and how busy it was, stamped on the figures:
    other processes skew every figure."""

    def __init__(self) -> None:
        self.description = describe_machine()
        self.load_before = load_average()
        _echo("machine: " + ", ".join(f"{k} {v}" for k, v in self.description.items()))

    def stamp(self, figs: dict[str, Any]) -> None:
        figs["machine"] = self.description
        figs["load_average_start"], figs["load_average_end"] = self.load_before, load_average()
        _echo(f"1-minute load average: {self.load_before:g} at the start, {figs['load_average_end']:g} at "
              f"the end ({self.description['cpus']} CPUs)")  # fmt: skip


@command.command("ingest")
@click.option(
    "--seconds",
    type=click.FloatRange(1, 600),
    default=10.0,
    show_default=True,
    help="Scale of the run: loads of 20,000 single and 1,000 batch messages per second of it, and a "
    "real-time freshness phase this long.  The default takes about 1-2 minutes.",
)
@click.option("--single-messages", type=click.IntRange(10, 1_000_000), default=None,
              help="Single-sample messages to queue (overrides --seconds).")  # fmt: skip
@click.option("--batch-messages", type=click.IntRange(10, 1_000_000), default=None,
              help="100-sample messages to queue (overrides --seconds).")  # fmt: skip
@click.option(
    "--rate",
    "freshness_rate",
    type=click.FloatRange(10, 50_000),
    default=2_000.0,
    show_default=True,
    help="Samples per second published in the freshness phase.",
)
@click.option(
    "--poll-interval",
    type=click.FloatRange(0.001, 5),
    default=0.05,
    show_default=True,
    help="Seconds between the freshness poller's queries.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Simulator seed.")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False),
    default=None,
    help="Keep the broker data, lakes and ingest logs here [default: a temporary folder, removed after].",
)
@click.pass_context
def ingest(
    ctx: click.Context,
    seconds: float,
    single_messages: int | None,
    batch_messages: int | None,
    freshness_rate: float,
    poll_interval: float,
    seed: int,
    workdir: str | None,
) -> None:
    """Ingest throughput against the ceiling of one Python MQTT client, peak RSS, and freshness.

    Starts its own mosquitto (deploy/mosquitto.conf).  For single-sample and 100-sample messages it
    queues one load at the broker, then times (a) a paho MQTT 5 client that acknowledges each message
    at once and discards it, and (b) ingest into a temporary lake, in its own process.  Then it
    publishes in real time while polling the lake, for publish-to-queryable latency.  Ingest runs with
    your settings (flags of the top command, CORRIDORHUB_* variables, corridorhub.toml), lake and
    broker aside.

    Targets (2-core machine): single_ratio >= 0.8, batch_rows_per_s >= 300,000, peak_rss_mb <= 400,
    p99_freshness_s <= 2.
    """
    root = ctx.find_root().obj or {}
    settings = settings_from(ctx, log_level=None if root.get("log_level") else "WARNING")
    config = IngestBenchConfig(
        seconds=seconds,
        single_messages=single_messages,
        batch_messages=batch_messages,
        freshness_samples_per_s=freshness_rate,
        poll_interval_s=poll_interval,
        seed=seed,
    )
    machine = _Machine()
    if workdir is not None:
        folder = Path(workdir)
        folder.mkdir(parents=True, exist_ok=True)
        result = run_ingest_bench(config, settings, folder.resolve(), _echo)
    else:
        with tempfile.TemporaryDirectory(prefix="corridorhub-bench-") as tmp:
            result = run_ingest_bench(config, settings, Path(tmp), _echo)
    figs = figures(result)
    machine.stamp(figs)
    for line in render(result, figs):
        click.echo(line)


@command.command("query")
@click.option(
    "--rows",
    type=click.IntRange(1_000, 500_000_000),
    default=20_000_000,
    show_default=True,
    help="State rows of the generated corridor day (network: 1 per 5; events: 1 per 6,000).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the generated day.")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False),
    default="data/bench-query",
    show_default=True,
    help="Cache of generated days (lake and plain files, per rows and seed), reused by later runs.",
)
@click.option("--regenerate", is_flag=True, help="Make the day again even when the cache has it.")
@click.option("--repeats", type=click.IntRange(1, 50), default=3, show_default=True,
              help="Timed runs per query and side; the median is reported.")  # fmt: skip
@click.option(
    "--memory-limit",
    default="4GB",
    show_default=True,
    help="DuckDB memory_limit of both sides (device_day over 20 M rows needs over 1GB).",
)
@click.option("--threads", type=click.IntRange(1, 256), default=None,
              help="DuckDB threads of both sides [default: the sql_threads setting].")  # fmt: skip
@click.option("--http-requests", type=click.IntRange(10, 100_000), default=400, show_default=True,
              help="POST /v1/sql requests sent in all by the concurrent clients.")  # fmt: skip
@click.option("--http-clients", type=click.IntRange(1, 256), default=8, show_default=True,
              help="Concurrent HTTP clients, one keep-alive connection each.")  # fmt: skip
@click.pass_context
def query(
    ctx: click.Context,
    rows: int,
    seed: int,
    workdir: str,
    regenerate: bool,
    repeats: int,
    memory_limit: str,
    threads: int | None,
    http_requests: int,
    http_clients: int,
) -> None:
    """Standard analyst queries through the SQL sandbox against plain sorted Parquet, and HTTP latency.

    Generates a corridor day (numpy, written through the lake's own append) or reuses it from --workdir,
    writes each table once more as one Parquet file sorted by ts, then times each standard query both
    ways in the same run: through the sandbox with the analyst views, as an analyst's query runs, and the
    same SQL on a plain DuckDB connection over the sorted files.  Then it starts "corridorhub serve" over
    the lake and measures POST /v1/sql of a small aggregate from concurrent clients.  The default run
    takes about 5-8 minutes on 2 cores, generation included; --rows 20000 is a smoke run.

    Target (2-core machine): worst_query_ratio <= 1.3 (sandbox time / plain time, the worst query).
    """
    root = ctx.find_root().obj or {}
    settings = settings_from(ctx, log_level=None if root.get("log_level") else "WARNING")
    config = QueryBenchConfig(
        rows=rows,
        seed=seed,
        repeats=repeats,
        memory_limit=memory_limit,
        threads=threads if threads is not None else settings.sql_threads,
        http_requests=http_requests,
        http_clients=http_clients,
        regenerate=regenerate,
    )
    machine = _Machine()
    folder = Path(workdir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    result = run_query_bench(config, settings, folder, _echo, root.get("config_file"))
    figs = query_figures(result)
    machine.stamp(figs)
    for line in render_query(result, figs):
        click.echo(line)


@command.command("publish")
@click.option(
    "--rows",
    type=click.IntRange(1_000, 500_000_000),
    default=20_000_000,
    show_default=True,
    help="State rows of the generated corridor day, one sample per device and second "
    "(network: 1 per 5; events: 1 per 6,000).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the generated day.")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False),
    default="data/bench-publish",
    show_default=True,
    help="Cache of generated days (per rows, devices and seed), reused by later runs.",
)
@click.option("--regenerate", is_flag=True, help="Make the day again even when the cache has it.")
@click.option("--repeats", type=click.IntRange(1, 20), default=1, show_default=True,
              help="Timed runs per dataset and side; the median is reported.")  # fmt: skip
@click.pass_context
def publish(ctx: click.Context, rows: int, seed: int, workdir: str, regenerate: bool, repeats: int) -> None:
    """The full publish of the four aggregate datasets against the bare DuckDB aggregation of their cells.

    Generates a corridor day (the generator of "bench query", with one sample per device and second so
    that k = 10 leaves most cells published) or reuses it from --workdir.  Then, per dataset of the
    default release, in the same run: publish_release into a temporary releases folder (build,
    suppression, privacy gate, every file and its metadata, manifest, atomic rename), and the same cells'
    bare aggregation written by one DuckDB COPY ... TO parquet.  Publishing uses your settings (k,
    dominance, privacy zones...), the releases folder aside.  --rows 20000 is a smoke run.

    Target (2-core machine): publish_ratio <= 1.5 (total publish time / total COPY time).
    """
    root = ctx.find_root().obj or {}
    settings = settings_from(ctx, log_level=None if root.get("log_level") else "WARNING")
    config = PublishBenchConfig(rows=rows, seed=seed, repeats=repeats, regenerate=regenerate)
    machine = _Machine()
    folder = Path(workdir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    result = run_publish_bench(config, settings, folder, _echo)
    figs = publish_figures(result)
    machine.stamp(figs)
    for line in render_publish(result, figs):
        click.echo(line)
