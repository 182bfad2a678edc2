"""``corridorhub simulate``: the corridor fleet publishing telemetry to a broker."""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from types import TracebackType

import click
from tqdm import tqdm

from corridorhub._options import broker_option, settings_from
from corridorhub.simulator import JST, MAX_DURATION_S, FaultRates, SimConfig, SimMessage, Simulation
from corridorhub.simulator.publish import publish
from store.errors import CorridorHubError

PROGRESS_LINE_EVERY_S = 10.0
"""Without a terminal (a log, a pipe): seconds between progress lines on stderr."""


class SendProgress:
    """How far a run has got, for the person waiting on it: a bar on a terminal, otherwise one line on
    stderr every ``every_s`` seconds (none at all for a shorter run).  Call it with each message sent."""

    def __init__(
        self,
        duration_s: float,
        *,
        terminal: bool,
        every_s: float = PROGRESS_LINE_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = round(duration_s)
        self.messages = 0
        self._done = 0
        self._clock = clock
        self._every_s = every_s
        self._next_line = clock() + every_s
        self._bar: tqdm[None] | None = None
        if terminal:
            # A terminal that reports no size (a pty opened without one) would get no bar at all.
            columns, rows = shutil.get_terminal_size()
            self._bar = tqdm(
                total=self.total,
                desc="simulate",
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} simulated s "
                "[{elapsed}<{remaining}]",
                file=sys.stderr,
                ncols=min(columns, 100),
                nrows=rows,
                leave=False,
            )

    def __call__(self, message: SimMessage) -> None:
        self.messages += 1
        done = min(int(message.send_at), self.total)
        if self._bar is not None:
            if done > self._bar.n:
                self._bar.update(done - self._bar.n)
            return
        self._done = done
        if self._clock() >= self._next_line:
            click.echo(self.line(), err=True)
            self._next_line = self._clock() + self._every_s

    def line(self) -> str:
        """``simulate: 578 of 1800 simulated s sent (32%), 56,123 messages``."""
        share = 100 * self._done / self.total if self.total else 100.0
        return (
            f"simulate: {self._done} of {self.total} simulated s sent ({share:.0f}%), "
            f"{self.messages:,} messages"
        )

    def __enter__(self) -> SendProgress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.close()


def _faults(_ctx: click.Context, _param: click.Parameter, value: str) -> FaultRates:
    try:
        return FaultRates.parse(value)
    except CorridorHubError as exc:
        raise click.BadParameter(str(exc)) from None


def _start(_ctx: click.Context, _param: click.Parameter, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        start = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"not an ISO 8601 time: {value!r}") from None
    if start.tzinfo is None:
        raise click.BadParameter(f"needs a UTC offset, e.g. {value}+09:00")
    return start


@click.command("simulate")
@broker_option
@click.option("--devices", type=click.IntRange(1, 100_000), default=20, show_default=True, help="Devices.")
@click.option(
    "--rate",
    type=click.FloatRange(0, 1000, min_open=True),
    default=1.0,
    show_default=True,
    help="State samples per second per device (network comes at a fifth of it, events when they happen).",
)
@click.option(
    "--duration",
    type=click.FloatRange(0, MAX_DURATION_S, min_open=True),
    default=60.0,
    show_default=True,
    help="Simulated seconds.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed and options, same messages.")
@click.option(
    "--batch",
    type=click.IntRange(1, 10_000),
    default=1,
    show_default=True,
    help="Samples per message (a JSON array of one device and stream when above 1).",
)
@click.option(
    "--faults",
    default="none",
    show_default=True,
    callback=_faults,
    help="Fault probabilities, e.g. malformed=0.01,duplicate=0.02,reorder=0.01,late=0.005,skew=0.01,gap=0.01;"
    " 'default' for a sensible mix (combinable: default,gap=0.05).",
)
@click.option("--qos", type=click.IntRange(0, 2), default=1, show_default=True, help="MQTT QoS.")
@click.option(
    "--start",
    callback=_start,
    default=None,
    help="ts of the first sample, ISO 8601 with offset [default: now; with --fast, now minus --duration].",
)
@click.option("--fast", is_flag=True, help="Send as fast as the broker takes them (load generator).")
@click.option("--dry-run", is_flag=True, help="Generate without sending; report generation speed.")
@click.option("--client-id", default=None, help="MQTT client id [default: corridorhub-simulate-<pid>].")
@click.pass_context
def command(
    ctx: click.Context,
    broker: str | None,
    devices: int,
    rate: float,
    duration: float,
    seed: int,
    batch: int,
    faults: FaultRates,
    qos: int,
    start: datetime | None,
    fast: bool,
    dry_run: bool,
    client_id: str | None,
) -> None:
    """Simulate the corridor fleet: buses, shuttles, robots and cars publishing telemetry.

    Devices follow real Haneda-Kamata routes (HIC loop, airport terminal shuttle, Kamata-Haneda bus,
    delivery robots at Kamata station) and publish state, network and event samples to
    corridor/{operator}/{device_id}/{stream}.  Deterministic for a given --seed and --start.
    """
    try:
        if start is None:
            now = datetime.now(JST).replace(microsecond=0)
            start = now - timedelta(seconds=duration) if fast or dry_run else now
        config = SimConfig(
            devices=devices,
            rate_hz=rate,
            duration_s=duration,
            seed=seed,
            start=start,
            batch=batch,
            faults=faults,
        )
        simulation = Simulation(config)
        began = time.monotonic()
        if dry_run:
            for _ in simulation:
                pass
            elapsed = time.monotonic() - began
            target = "nowhere (dry run)"
        else:
            settings = settings_from(ctx, broker=broker)
            with SendProgress(duration, terminal=sys.stderr.isatty()) as progress:
                report = publish(
                    simulation,
                    settings.broker_address,
                    qos=qos,
                    realtime=not fast,
                    client_id=client_id or f"corridorhub-simulate-{os.getpid()}",
                    protocol=settings.mqtt_version,
                    ca_file=settings.ca_file,
                    progress=progress,
                )
            elapsed = time.monotonic() - began
            target = str(settings.broker_address)
            if report.rejected or report.skipped_too_large:
                click.echo(
                    f"warning: {report.rejected} message(s) rejected by the broker, "
                    f"{report.skipped_too_large} above its packet size limit and not sent",
                    err=True,
                )
    except CorridorHubError as exc:
        raise click.ClickException(str(exc)) from None
    _summary(simulation, target, elapsed)


def _summary(simulation: Simulation, target: str, elapsed: float) -> None:
    stats = simulation.stats
    samples = stats.valid_samples
    per_s = samples / elapsed if elapsed > 0 else 0.0
    click.echo(
        f"{stats.messages} messages ({stats.payload_bytes / 1e6:.1f} MB) to {target} in {elapsed:.1f} s"
        f" ({stats.messages / max(elapsed, 1e-9):,.0f} msg/s, {per_s:,.0f} samples/s)"
    )
    per_stream = ", ".join(f"{s} {stats.samples[s]}" for s in ("state", "network", "event"))
    click.echo(f"valid samples: {samples} ({per_stream}); start {simulation.config.start.isoformat()}")
    faults = ", ".join(f"{k} {v}" for k, v in sorted(stats.faults.items())) or "none"
    click.echo(f"faults: {faults}")
    if stats.quarantined:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(stats.quarantined.items()))
        click.echo(f"expected quarantine: {sum(stats.quarantined.values())} ({reasons})")
