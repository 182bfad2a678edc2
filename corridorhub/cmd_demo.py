"""``corridorhub demo``: broker, simulated corridor fleet, ingest and the open-data catalog in one command.

Starts an embedded broker (mosquitto when installed, else amqtt, announced as demo-only) unless
``--broker`` names one, publishes the simulated fleet in real time, ingests it into the lake, and
prints what has landed every few seconds until Ctrl-C (or ``--duration``).  The HTTP service runs
alongside (``--port``) with the catalog page at ``/``; after ``--publish-after`` seconds (or at the end,
if the demo stops sooner) the demo publishes a first release of the open datasets for today's JST date
(``corridorhub.demo_catalog``), so that the page has something to show.
"""

from __future__ import annotations

import itertools
import logging
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType

import click

from corridorhub._options import broker_option, lake_option, settings_from
from corridorhub.broker import AMQTT_KIND, EmbeddedBroker
from corridorhub.demo_catalog import CatalogServer, publish_first_release
from corridorhub.simulator import DEFAULT_FAULTS, SimConfig, SimMessage, generate
from corridorhub.simulator.publish import publish
from ingest import Ingestor
from store.errors import CorridorHubError
from store.lake import Lake
from store.settings import BrokerAddress, Settings

log = logging.getLogger("corridorhub.demo")

MAX_DEMO_S = 30 * 86_400


def lake_summary(lake: Lake) -> str:
    """A few lines on what the lake holds: rows per stream, quarantine by reason, devices."""
    con = lake.connect()
    try:
        counts = {
            s: con.execute(f"SELECT count(*) FROM {s}").fetchall()[0][0]
            for s in ("state", "event", "network")
        }
        devices = con.execute(
            "SELECT count(DISTINCT (operator, device_id)) FROM (SELECT operator, device_id FROM state "
            "UNION ALL SELECT operator, device_id FROM network)"
        ).fetchall()[0][0]
        reasons = con.execute(
            "SELECT reason, count(*) AS n FROM quarantine GROUP BY reason ORDER BY n DESC, reason"
        ).fetchall()
        autonomous = con.execute(
            "SELECT round(100 * avg(CASE WHEN mode = 'autonomous' THEN 1 ELSE 0 END), 1) FROM state"
        ).fetchall()[0][0]
    finally:
        con.close()
    quarantined = sum(n for _, n in reasons)
    detail = ", ".join(f"{r} {n}" for r, n in reasons)
    lines = [
        f"  state {counts['state']:,} rows · event {counts['event']:,} · network {counts['network']:,}"
        f" · {devices} devices · autonomous {autonomous or 0}% of state samples",
        f"  quarantine {quarantined:,}" + (f" ({detail})" if detail else ""),
    ]
    return "\n".join(lines)


def _until(stop: threading.Event, messages: Iterator[SimMessage]) -> Iterator[SimMessage]:
    return itertools.takewhile(lambda _m: not stop.is_set(), messages)


@click.command("demo")
@broker_option
@lake_option
@click.option(
    "--devices", type=click.IntRange(1, 1000), default=60, show_default=True, help="Simulated devices."
)
@click.option(
    "--rate",
    type=click.FloatRange(0, 50, min_open=True),
    default=1.0,
    show_default=True,
    help="State samples per second per device.",
)
@click.option(
    "--history",
    type=click.FloatRange(0, 24 * 60),
    default=30.0,
    show_default=True,
    help="Minutes of the fleet's recent past sent at full speed before it goes live, so that the first "
    "release has cells seen by enough devices to publish (0: live only).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Simulator seed.")
@click.option(
    "--duration",
    type=click.FloatRange(0, MAX_DEMO_S, min_open=True),
    default=None,
    help="Stop after this many seconds [default: run until Ctrl-C].",
)
@click.option(
    "--embedded-broker",
    type=click.Choice(["auto", "mosquitto", "amqtt"]),
    default="auto",
    show_default=True,
    help="Without --broker: which broker to start (auto: mosquitto when installed, else amqtt, demo only).",
)
@click.option(
    "--summary-every",
    type=click.FloatRange(1, 3600),
    default=10.0,
    show_default=True,
    help="Seconds between summaries.",
)
@click.option(
    "--releases",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder of published releases [default: ./data/releases].",
)
@click.option(
    "--publish-after",
    type=click.FloatRange(0, MAX_DEMO_S),
    default=60.0,
    show_default=True,
    help="Seconds of capture before the first open-data release (made at the end if the demo stops sooner).",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65_535),
    default=None,
    help="Port of the catalog page and API on 127.0.0.1 (0: any free port) [default: 8080, or a free port "
    "when 8080 is taken].",
)
@click.pass_context
def command(
    ctx: click.Context,
    /,
    broker: str | None,
    lake: str | None,
    devices: int,
    rate: float,
    history: float,
    seed: int,
    duration: float | None,
    embedded_broker: str,
    summary_every: float,
    releases: str | None,
    publish_after: float,
    port: int | None,
) -> None:
    """Run the whole capture path on this machine: broker, simulated fleet, ingest, lake.

    The fleet (buses, shuttles, delivery robots on Haneda-Kamata routes, with a light mix of
    faults: malformed payloads, redeliveries, gaps) publishes in real time; ingest commits it to
    the lake; a summary of what landed is printed every few seconds.  The catalog page of the open
    datasets is served at http://127.0.0.1:PORT/, and after --publish-after seconds a first release
    (today, JST, ordinary privacy rules) appears on it.  Ctrl-C stops it cleanly.
    """
    embedded: EmbeddedBroker | None = None
    if not (ctx.find_root().obj or {}).get("log_level"):
        # The summaries say what matters; ingest's periodic counters would drown them.
        logging.getLogger("corridorhub.ingest").setLevel(logging.WARNING)
    settings = settings_from(ctx, lake=lake, broker=broker, client_id="corridorhub-demo", releases=releases)
    if broker is None:
        lake_root = Path(settings.lake)
        embedded = EmbeddedBroker(
            lake_root.parent / "broker",
            allow_fallback=embedded_broker == "auto",
            force_amqtt=embedded_broker == "amqtt",
        ).start()
        if embedded.kind == AMQTT_KIND:
            click.secho(
                "mosquitto is not installed: using amqtt, an in-process Python broker, FOR THE DEMO ONLY "
                "(install mosquitto for anything else: sudo apt-get install mosquitto)",
                fg="yellow",
                err=True,
            )
        # amqtt answers an MQTT 5 CONNECT with silence: talk 3.1.1 to it.
        version = "5" if embedded.supports_mqtt5 else "3.1.1"
        settings = settings_from(
            ctx,
            lake=lake,
            broker=embedded.url,
            client_id="corridorhub-demo",
            mqtt_version=version,
            releases=releases,
        )
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        with CatalogServer(settings, port=port) as catalog:
            click.echo(f"open {catalog.url} to see the catalog (the open datasets, in Japanese and English)")
            fleet = _Fleet(devices, rate, seed, history * 60)
            _run(settings, embedded, fleet, duration, summary_every, stop, publish_after)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if embedded is not None:
            embedded.stop()


@dataclass(frozen=True)
class _Fleet:
    devices: int
    rate: float
    seed: int
    history_s: float  # the part of the run sent at full speed before going live


def _replay_then_live(
    settings: Settings, fleet: _Fleet, duration: float | None, stop: threading.Event
) -> None:
    """Send the fleet's recent past as fast as the broker takes it, then go on in real time.

    One simulation throughout (seq goes on increasing), so the live part is no redelivery of the past.
    """
    config = SimConfig(
        devices=fleet.devices,
        rate_hz=fleet.rate,
        duration_s=fleet.history_s + (duration or MAX_DEMO_S),
        seed=fleet.seed,
        start=datetime.now(UTC) - timedelta(seconds=fleet.history_s),
        faults=DEFAULT_FAULTS,
    )
    messages = _until(stop, generate(config))
    first_live: list[SimMessage] = []

    def past() -> Iterator[SimMessage]:
        for message in messages:
            if message.send_at >= fleet.history_s:
                first_live.append(message)
                return
            yield message

    def live() -> Iterator[SimMessage]:
        for message in itertools.chain(first_live, messages):
            yield replace(message, send_at=message.send_at - fleet.history_s)

    address = BrokerAddress.parse(settings.broker)
    client_id, protocol = "corridorhub-demo-fleet", settings.mqtt_version
    if fleet.history_s > 0:
        report = publish(past(), address, realtime=False, client_id=client_id, protocol=protocol)
        minutes = f"{fleet.history_s / 60:g}"
        click.echo(f"  sent the fleet's last {minutes} minutes at full speed: {report.messages:,} messages")
    publish(live(), address, realtime=True, client_id=client_id, protocol=protocol)


def _run(
    settings: Settings,
    embedded: EmbeddedBroker | None,
    fleet: _Fleet,
    duration: float | None,
    summary_every: float,
    stop: threading.Event,
    publish_after: float,
) -> None:
    where = f"{embedded.kind} at {embedded.url}" if embedded else str(settings.broker_address)
    click.echo(f"corridorhub demo: broker {where}, lake {settings.lake}")
    click.echo(f"  simulating {fleet.devices} devices at {fleet.rate:g} Hz; Ctrl-C to stop")
    ingestor = Ingestor(settings)
    ingest_errors: list[BaseException] = []
    ingest_stop = threading.Event()

    def _ingest() -> None:
        try:
            ingestor.run(ingest_stop)
        except BaseException as exc:  # noqa: BLE001 - reported below, in the main thread
            ingest_errors.append(exc)
            stop.set()

    ingest_thread = threading.Thread(target=_ingest, name="ingest", daemon=True)
    ingest_thread.start()
    if not ingestor.ready.wait(60):
        stop.set()
    publish_errors: list[BaseException] = []

    def _publish() -> None:
        try:
            _replay_then_live(settings, fleet, duration, stop)
        except CorridorHubError as exc:
            publish_errors.append(exc)
            stop.set()

    publisher = threading.Thread(target=_publish, name="fleet", daemon=True)
    publisher.start()
    started = time.monotonic()
    lake = Lake(settings.lake)
    next_summary = started + min(5.0, summary_every)
    published = False
    while not stop.is_set():
        if duration is not None and time.monotonic() - started >= duration:
            break
        if not publisher.is_alive():
            break
        if not published and time.monotonic() - started >= publish_after:
            publish_first_release(lake, settings, click.echo)
            published = True
            click.echo("reload the catalog page to see it")
        if time.monotonic() >= next_summary:
            click.echo(f"after {time.monotonic() - started:.0f} s:\n{lake_summary(lake)}")
            next_summary += summary_every
        stop.wait(0.2)
    stop.set()
    publisher.join(30)
    # Give ingest one flush to take what the fleet sent last, then stop it cleanly.
    time.sleep(settings.flush_interval_s * 2 + 0.5)
    ingest_stop.set()
    ingest_thread.join(60)
    for exc in ingest_errors + publish_errors:
        raise click.ClickException(f"demo stopped: {exc}")
    counters = ingestor.counters
    elapsed = time.monotonic() - started
    click.echo(
        f"stopped after {elapsed:.0f} s: {counters.messages_acked:,} messages acknowledged, "
        f"{counters.duplicates_dropped:,} redeliveries dropped"
    )
    click.echo(f"the lake now holds:\n{lake_summary(lake)}")
    if not published:
        publish_first_release(lake, settings, click.echo)
        click.echo(f"see it with: corridorhub serve --lake {settings.lake} --releases {settings.releases}")
    click.echo(
        f'try: corridorhub sql --lake {settings.lake} "SELECT device_id, count(*) FROM state GROUP BY 1"'
    )
