"""The demo's simulated fleet: the end of yesterday replayed at full speed, then live until the demo stops.

A day is published once, after it has closed (``publish.closure``), so the demo's first release needs a
day that is over: :func:`replay_then_live` first sends the fleet's last ``--history`` minutes of *yesterday*
(JST) as fast as the broker takes them, then plays the same fleet live from now, in a second simulation
(the devices' ``seq`` counters start again overnight, as a reboot would make them; ingest keeps both).
Without a ``--duration`` the demo runs until Ctrl-C: the live simulation is then as long as the simulator
plays (:data:`MAX_DURATION_S`, 30 days), and the demo says so if it ever gets there.

:class:`History` is what the first open-data release waits on: how many messages the fleet sent for the
replayed past (each acknowledged by the broker), to compare with how many ingest has acknowledged, which
it does only after committing them to the lake.  On a slow machine the history may still be arriving
when ``--publish-after`` has passed; a release made then would miss part of it.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import click

from corridorhub.simulator import DEFAULT_FAULTS, MAX_DURATION_S, SimConfig, SimMessage, generate
from corridorhub.simulator.publish import publish
from store.errors import ConfigError
from store.settings import BrokerAddress, Settings

JST_OFFSET = timedelta(hours=9)


@dataclass(frozen=True)
class DemoFleet:
    devices: int
    rate: float
    seed: int
    history_s: float  # the part of the run sent at full speed before going live
    live_s: float | None  # None: until the demo stops (as long as the simulator plays)

    def __post_init__(self) -> None:
        if self.live_s is not None and self.live_s > MAX_DURATION_S:
            raise ConfigError(
                f"--duration must be at most {MAX_DURATION_S // 86_400} days (the simulator's longest run), "
                f"got {self.live_s:g} s"
            )
        if self.history_s > 86_400:
            raise ConfigError(
                f"--history must be at most a day (it is yesterday's), got {self.history_s / 60:g} min"
            )

    @property
    def simulated_s(self) -> float:
        """Seconds of the live simulation (as long as the simulator plays without --duration)."""
        return self.live_s if self.live_s is not None else float(MAX_DURATION_S)


class History:
    """How many messages the fleet sent for its replayed past, once it has sent them all."""

    def __init__(self, fleet: DemoFleet) -> None:
        self.minutes = f"{fleet.history_s / 60:g}"
        self._sent: int | None = 0 if fleet.history_s <= 0 else None
        self._lock = threading.Lock()

    def sent(self, messages: int) -> None:
        with self._lock:
            self._sent = messages

    @property
    def messages(self) -> int | None:
        """Messages sent for the history (each acknowledged by the broker); None while still sending."""
        with self._lock:
            return self._sent

    def landed(self, committed: int) -> bool:
        """Whether ingest has committed (and so acknowledged) as many messages as were sent for it."""
        sent = self.messages
        return sent is not None and committed >= sent

    def waiting(self, committed: int) -> str:
        """What the first release waits for, and how far it has got."""
        sent = self.messages
        if sent is None:
            return (
                f"the first release waits for yesterday's last {self.minutes} minutes: still sending them; "
                f"ingest has committed {committed:,} messages so far"
            )
        return (
            f"the first release waits for ingest to commit yesterday's last {self.minutes} minutes: "
            f"{min(committed, sent):,} of {sent:,} messages committed"
        )


def yesterday_jst() -> date:
    return (datetime.now(UTC) + JST_OFFSET).date() - timedelta(days=1)


def replay_then_live(settings: Settings, fleet: DemoFleet, history: History, stop: threading.Event) -> None:
    """Send the end of yesterday as fast as the broker takes it, then go on live from now until ``stop``."""

    def run(start: datetime, duration_s: float) -> Iterator[SimMessage]:
        config = SimConfig(
            devices=fleet.devices,
            rate_hz=fleet.rate,
            duration_s=duration_s,
            seed=fleet.seed,
            start=start,
            faults=DEFAULT_FAULTS,
        )
        return itertools.takewhile(lambda _m: not stop.is_set(), generate(config))

    address = BrokerAddress.parse(settings.broker)
    client_id, protocol = "corridorhub-demo-fleet", settings.mqtt_version
    if fleet.history_s > 0:
        midnight = datetime.combine(yesterday_jst() + timedelta(days=1), time(), tzinfo=UTC) - JST_OFFSET
        past = run(midnight - timedelta(seconds=fleet.history_s), fleet.history_s)
        report = publish(past, address, realtime=False, client_id=client_id, protocol=protocol)
        history.sent(report.messages)
        click.echo(
            f"  sent the fleet's last {history.minutes} minutes of yesterday ({yesterday_jst()} JST) at full "
            f"speed: {report.messages:,} messages"
        )
    publish(
        run(datetime.now(UTC), fleet.simulated_s),
        address,
        realtime=True,
        client_id=client_id,
        protocol=protocol,
    )
