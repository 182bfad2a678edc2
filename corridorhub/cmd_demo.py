"""``corridorhub demo``: broker, simulated corridor fleet, ingest and the open-data catalog in one command.

Starts an embedded broker (mosquitto when installed, else amqtt, announced as demo-only) unless
``--broker`` names one, replays the simulated fleet's recent past at full speed and then publishes it
in real time (``corridorhub.demo_fleet``), ingests it into the lake, and prints what has landed every
few seconds until Ctrl-C (or ``--duration``).  The HTTP service runs alongside (``--port``) with the
catalog page at ``/``; after ``--publish-after`` seconds, once ingest has committed the replayed history,
(or at the end, if the demo stops sooner) the demo publishes a first release of the open datasets for
today's JST date (``corridorhub.demo_catalog``), so that the page has something to show.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path
from types import FrameType

import click

from corridorhub._options import lake_option, settings_from
from corridorhub.broker import AMQTT_KIND, EmbeddedBroker
from corridorhub.demo_catalog import CatalogServer, publish_first_release
from corridorhub.demo_fleet import DemoFleet, History, replay_then_live
from corridorhub.simulator import MAX_DURATION_S
from ingest import Ingestor
from store.errors import CorridorHubError
from store.lake import Lake
from store.settings import Settings

log = logging.getLogger("corridorhub.demo")

SHOWN_REASONS = 3
"""Quarantine reasons named in a summary line (the most frequent); the others are counted."""


def lake_summary(lake: Lake) -> str:
    """A few lines on what the lake holds: rows per stream, devices, quarantine by reason."""
    con = lake.connect()
    try:
        counts = {
            s: con.execute(f"SELECT count(*) FROM {s}").fetchall()[0][0]
            for s in ("state", "event", "network")
        }
        # The same count as the query the demo suggests at the end (devices per operator in state).
        devices = con.execute("SELECT count(DISTINCT (operator, device_id)) FROM state").fetchall()[0][0]
        reasons = con.execute(
            "SELECT reason, count(*) AS n FROM quarantine GROUP BY reason ORDER BY n DESC, reason"
        ).fetchall()
        autonomous = con.execute(
            "SELECT round(100 * avg(CASE WHEN mode = 'autonomous' THEN 1 ELSE 0 END), 1) FROM state"
        ).fetchall()[0][0]
    finally:
        con.close()
    return "\n".join(
        [
            f"  {devices} devices · state {counts['state']:,} rows · event {counts['event']:,}"
            f" · network {counts['network']:,}",
            f"  autonomous mode in {autonomous or 0}% of state samples (stops included)",
            f"  quarantine {_reasons(reasons)}",
        ]
    )


def _reasons(reasons: list[tuple[str, int]]) -> str:
    """The total and the most frequent few: ``1,234 (invalid_json 120, missing_field 98, bad_topic 80, 13 more
    reasons)``."""
    total = f"{sum(n for _, n in reasons):,}"
    if not reasons:
        return total
    shown = [f"{reason} {n:,}" for reason, n in reasons[:SHOWN_REASONS]]
    more = len(reasons) - SHOWN_REASONS
    if more > 0:
        shown.append(f"{more} more reason{'s' if more > 1 else ''}")
    return f"{total} ({', '.join(shown)})"


def _sql_hint(lake: str | Path) -> str:
    """A first query to try, counting devices the way the summary does."""
    return (
        f'try: corridorhub sql --lake {lake} "SELECT operator, count(DISTINCT device_id) AS devices, '
        'count(*) AS state_rows FROM state GROUP BY operator ORDER BY operator"'
    )


@click.command("demo")
@click.option(
    "--broker",
    default=None,
    help="An MQTT broker to use instead of the embedded one, mqtt://[user:pass@]host:port or mqtts://... "
    "[default: none: the demo starts an embedded broker, see --embedded-broker].",
)
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
    type=click.FloatRange(0, MAX_DURATION_S, min_open=True),
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
    type=click.FloatRange(0, MAX_DURATION_S),
    default=60.0,
    show_default=True,
    help="Seconds of capture before the first open-data release, and not before ingest has committed the "
    "replayed --history (made at the end if the demo stops sooner).",
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
    datasets is served at http://127.0.0.1:PORT/, and after --publish-after seconds (once the replayed
    history is in the lake) a first release (today, JST, ordinary privacy rules) appears on it.
    Without --broker it starts its own broker.  Ctrl-C stops it cleanly.
    """
    try:
        fleet = DemoFleet(devices, rate, seed, history * 60, duration)
    except CorridorHubError as exc:
        raise click.UsageError(str(exc)) from None
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        if not stop.is_set():
            name = signal.Signals(signum).name
            click.echo(f"{name}: stopping (ingest commits what it has first)", err=True)
        stop.set()

    # From the start: a Ctrl-C while the broker or the catalog starts must stop the demo cleanly too.
    # SIGHUP too: a closed terminal must stop the demo and its broker as Ctrl-C does.
    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        _demo(ctx, fleet, stop, broker, lake, embedded_broker, summary_every, releases, publish_after, port)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _demo(
    ctx: click.Context,
    fleet: DemoFleet,
    stop: threading.Event,
    broker: str | None,
    lake: str | None,
    embedded_broker: str,
    summary_every: float,
    releases: str | None,
    publish_after: float,
    port: int | None,
) -> None:
    embedded: EmbeddedBroker | None = None
    if not (ctx.find_root().obj or {}).get("log_level"):
        # The summaries say what matters; ingest's periodic counters would drown them.
        logging.getLogger("corridorhub.ingest").setLevel(logging.WARNING)
    settings = settings_from(ctx, lake=lake, broker=broker, client_id="corridorhub-demo", releases=releases)
    try:
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
        if stop.is_set():
            return
        with CatalogServer(settings, port=port) as catalog:
            click.echo(f"open {catalog.url} to see the catalog (the open datasets, in Japanese and English)")
            _run(settings, embedded, fleet, summary_every, stop, publish_after)
    finally:
        if embedded is not None:
            embedded.stop()


def _run(
    settings: Settings,
    embedded: EmbeddedBroker | None,
    fleet: DemoFleet,
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
    history = History(fleet)

    def _publish() -> None:
        try:
            replay_then_live(settings, fleet, history, stop)
        except CorridorHubError as exc:
            publish_errors.append(exc)
            stop.set()

    def committed() -> int:
        with ingestor.counters.lock:
            return ingestor.counters.messages_acked

    publisher = threading.Thread(target=_publish, name="fleet", daemon=True)
    publisher.start()
    started = time.monotonic()
    lake = Lake(settings.lake)
    next_summary = started + min(5.0, summary_every)
    next_wait_line = started + publish_after
    published = False
    while not stop.is_set():
        now = time.monotonic()
        if fleet.live_s is not None and now - started >= fleet.live_s:
            break
        if not publisher.is_alive():
            if fleet.live_s is None:
                click.echo(f"the simulated fleet has played its {MAX_DURATION_S // 86_400} days: stopping")
            break
        if not published and now - started >= publish_after:
            if history.landed(committed()):
                publish_first_release(lake, settings, click.echo)
                published = True
                click.echo("reload the catalog page to see it")
            elif now >= next_wait_line:
                click.echo(history.waiting(committed()))
                next_wait_line = now + summary_every
        if time.monotonic() >= next_summary:
            click.echo(f"after {time.monotonic() - started:.0f} s:\n{lake_summary(lake)}")
            next_summary = max(next_summary + summary_every, time.monotonic() + summary_every / 2)
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
    click.echo(_sql_hint(settings.lake))
