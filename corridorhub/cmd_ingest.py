"""``corridorhub ingest``: run one ingest worker until SIGTERM or Ctrl-C."""

from __future__ import annotations

import signal
import threading
from types import FrameType

import click

from corridorhub._options import broker_option, lake_option, settings_from
from ingest import Ingestor


@click.command("ingest")
@broker_option
@lake_option
@click.option("--topic", default=None, help="Topic filter [default: corridor/+/+/+].")
@click.option("--group", default=None, help="Shared-subscription group: workers in one group split the load.")
@click.option(
    "--client-id",
    default=None,
    help="MQTT client id, stable across restarts (the persistent session hangs on it) "
    "[default: corridorhub-ingest].",
)
@click.option(
    "--ca-file", type=click.Path(dir_okay=False, exists=True), default=None, help="CA file for mqtts://."
)
@click.option("--username", "mqtt_username", default=None, help="MQTT user name (overrides the URL's).")
@click.option(
    "--password",
    "mqtt_password",
    default=None,
    help="MQTT password (overrides the URL's; prefer CORRIDORHUB_MQTT_PASSWORD).",
)
@click.option(
    "--mqtt-version", type=click.Choice(["5", "3.1.1"]), default=None, help="MQTT protocol [default: 5]."
)
@click.option(
    "--flush-interval", "flush_interval_s", type=float, default=None, help="Seconds between commits [0.5]."
)
@click.option(
    "--status-interval",
    "status_interval_s",
    type=float,
    default=None,
    help="Seconds between status logs [10].",
)
@click.pass_context
def command(ctx: click.Context, /, **flags: object) -> None:
    """Capture MQTT telemetry into the lake, acknowledging each message only after its commit.

    Subscribes with QoS 1 and a persistent session; bad payloads go to the quarantine table with a
    reason; redeliveries are dropped.  A broker that cannot be reached is retried with backoff (1 to
    30 s); the log says why (connection refused, unknown host, TLS, credentials) when a reason first
    comes up and once a minute while it lasts.  Counters are logged every --status-interval seconds.
    SIGTERM or Ctrl-C flushes, acknowledges, disconnects and logs the final counters.
    """
    settings = settings_from(ctx, **flags)
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        click.echo(f"ingest: {settings.broker_address} -> {settings.lake} (Ctrl-C to stop)", err=True)
        Ingestor(settings).run(stop)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
