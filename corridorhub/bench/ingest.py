"""``corridorhub bench ingest``: ingest against the ceiling of one Python MQTT client, on one broker.

Three phases, each with its own lake and its own ingest process, on one embedded mosquitto:

1. **single**: N single-sample messages (the simulator's ~220-byte state and network samples);
2. **batch**: M messages of 100 samples each (JSON arrays, ~22 KB);
3. **freshness**: the fleet publishing in real time while an analyst-like poller queries the lake.

For 1 and 2 the load is generated first, then queued at the broker for two persistent sessions (the
ceiling client's and ingest's) by one publisher, which is done before either consumer is timed.  Then
the ceiling client (``ceiling.py``: auto-ack, discard) drains its queue, then ingest drains the same
load into the lake; each is timed from its first message to its last acknowledgement.  Afterwards the
lake is counted: every row must be there.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from corridorhub.bench._measure import Drain
from corridorhub.bench.ceiling import drain_ceiling
from corridorhub.bench.freshness import Freshness, measure_freshness
from corridorhub.bench.ingest_process import IngestProcess, IngestRun
from corridorhub.bench.preload import MAX_QUEUED_MESSAGES, preload
from corridorhub.bench.workload import workload
from corridorhub.broker import EmbeddedBroker
from store.errors import CorridorHubError
from store.lake import Lake
from store.schema import STREAMS
from store.settings import BrokerAddress, Settings

Echo = Callable[[str], None]


@dataclass(frozen=True)
class IngestBenchConfig:
    """Sizes of the three phases.  ``seconds`` scales all of them (see ``cmd_bench``)."""

    seconds: float = 10.0
    single_messages: int | None = None  # default: 20,000 per second of ``seconds``
    batch_messages: int | None = None  # default: 1,000 per second of ``seconds``
    batch: int = 100
    freshness_samples_per_s: float = 2_000.0
    poll_interval_s: float = 0.05
    seed: int = 0

    @property
    def single_count(self) -> int:
        return self.single_messages or min(MAX_QUEUED_MESSAGES, max(100, round(20_000 * self.seconds)))

    @property
    def batch_count(self) -> int:
        return self.batch_messages or min(MAX_QUEUED_MESSAGES, max(10, round(1_000 * self.seconds)))


@dataclass(frozen=True)
class Throughput:
    """One load drained by the ceiling client and by ingest."""

    name: str
    messages: int
    samples_per_message: float
    mean_payload_bytes: float
    ceiling: Drain
    ingest: Drain
    ingest_run: IngestRun

    @property
    def ratio(self) -> float:
        return self.ingest.msgs_per_s / self.ceiling.msgs_per_s


@dataclass(frozen=True)
class IngestBenchResult:
    config: IngestBenchConfig
    settings: Settings
    single: Throughput
    batch: Throughput
    freshness: Freshness
    freshness_peak_rss_mb: float

    @property
    def peak_rss_mb(self) -> float:
        return max(
            self.single.ingest_run.peak_rss_mb, self.batch.ingest_run.peak_rss_mb, self.freshness_peak_rss_mb
        )


def run_ingest_bench(
    config: IngestBenchConfig, settings: Settings, workdir: Path, echo: Echo
) -> IngestBenchResult:
    """Run the three phases in ``workdir`` (broker data, lakes); ``settings`` tune the ingest under test."""
    with EmbeddedBroker(workdir / "broker") as broker:
        echo(f"mosquitto on {broker.url} (data in {workdir})")
        address = BrokerAddress.parse(broker.url)

        def ingest_settings(phase: str) -> Settings:
            return replace(
                settings, lake=workdir / f"lake-{phase}", broker=broker.url, client_id=f"bench-ingest-{phase}"
            )

        single = _throughput("single", config.single_count, 1, address, ingest_settings("single"), workdir,
                             config.seed, echo)  # fmt: skip
        batch = _throughput("batch", config.batch_count, config.batch, address, ingest_settings("batch"),
                            workdir, config.seed, echo)  # fmt: skip
        freshness, rss = _freshness(config, address, ingest_settings("freshness"), workdir, echo)
    return IngestBenchResult(config, settings, single, batch, freshness, rss)


def _throughput(
    name: str,
    messages: int,
    batch: int,
    broker: BrokerAddress,
    settings: Settings,
    workdir: Path,
    seed: int,
    echo: Echo,
) -> Throughput:
    echo(f"[{name}] generating {messages:,} messages of {batch} sample(s)")
    load = workload(name, messages, batch=batch, seed=seed)
    rows, mean_bytes = load.rows, load.mean_payload_bytes
    ceiling_id = f"bench-ceiling-{name}"
    echo(f"[{name}] queueing them at the broker for the ceiling client and for ingest")
    with _bar(messages, f"{name}: publish") as bar:
        preload(broker, load.messages, [ceiling_id, settings.client_id], settings.topic,
                progress=lambda _m: bar.update())  # fmt: skip
    del load
    gc.collect()

    echo(f"[{name}] (a) ceiling: paho MQTT 5 client, auto-ack, discard")
    with _bar(messages, f"{name}: ceiling") as bar:
        ceiling = drain_ceiling(broker, ceiling_id, messages, rows, progress=_updater(bar))

    echo(f"[{name}] (b) ingest into {settings.lake}")
    with (
        IngestProcess(settings, workdir, expect_messages=messages) as process,
        _bar(messages, f"{name}: ingest") as bar,
    ):
        process.wait_ready()
        update = _updater(bar)
        run = None
        while run is None:
            run = process.poll_done(0.25)
            update(int(process.progress.get("acked", 0)))
        update(run.acked)
    if run.drain_s is None or run.acked < messages:
        raise CorridorHubError(f"bench: ingest acknowledged {run.acked:,} of {messages:,} messages")
    in_lake = _lake_rows(Lake(settings.lake))
    if in_lake != rows or run.rows != rows:
        raise CorridorHubError(
            f"bench: the lake holds {in_lake:,} rows (ingest counted {run.rows:,}), expected {rows:,}"
        )
    return Throughput(
        name, messages, rows / messages, mean_bytes, ceiling, Drain(messages, rows, run.drain_s), run
    )


def _freshness(
    config: IngestBenchConfig, broker: BrokerAddress, settings: Settings, workdir: Path, echo: Echo
) -> tuple[Freshness, float]:
    echo(
        f"[freshness] {config.freshness_samples_per_s:,.0f} samples/s in real time for {config.seconds:g} s;"
        f" polling the lake every {config.poll_interval_s * 1000:.0f} ms"
    )
    expected = round(config.freshness_samples_per_s * config.seconds)
    with IngestProcess(settings, workdir) as process, _bar(expected, "freshness: publish") as bar:
        process.wait_ready()
        freshness = measure_freshness(
            broker,
            Lake(settings.lake),
            seconds=config.seconds,
            samples_per_s=config.freshness_samples_per_s,
            poll_interval_s=config.poll_interval_s,
            seed=config.seed,
            progress=_updater(bar),
        )
        run = process.stop()
    if freshness.seen < freshness.samples:
        raise CorridorHubError(
            f"bench: only {freshness.seen:,} of {freshness.samples:,} published samples became queryable"
        )
    return freshness, run.peak_rss_mb


def _lake_rows(lake: Lake) -> int:
    con = lake.connect()
    try:
        return sum(int(con.execute(f"SELECT count(*) FROM {s}").fetchall()[0][0]) for s in STREAMS)
    finally:
        con.close()


def _bar(total: int, desc: str) -> Any:
    """A progress bar on a terminal (stderr); nothing when stderr is not one."""
    return tqdm(
        total=total, desc=desc, unit="msg", unit_scale=True, file=sys.stderr, disable=None, leave=False
    )


def _updater(bar: Any) -> Callable[[int], None]:
    """A callback that moves ``bar`` to an absolute count."""

    def update(count: int) -> None:
        if count > bar.n:
            bar.update(count - bar.n)

    return update
