"""Generate the simulated corridor's MQTT messages, in send order, with the ground truth for each.

Every device reports ``state`` at the configured rate, ``network`` every ``network_every`` state
samples, and ``event`` whenever something happens.  Device ``i`` reports at ``k / rate + i / (N * rate)``
seconds after the start, so the fleet's messages are spread evenly over each tick.  ``seq`` counts
from 0 per device and stream (and again from 0 after a ``restart`` fault).

Same config, same bytes: devices draw from their own seeded ``random.Random`` and faults from another,
so a device's trajectory does not change when faults are switched on.  Time comes only from
``SimConfig.start``.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from functools import partial

import orjson

from corridorhub.simulator.devices import Device, Sample, build_fleet
from corridorhub.simulator.faults import MALFORMED_KINDS, SAMPLE_KINDS, FaultRates, bad_message, bad_sample
from store.errors import ConfigError
from store.schema import MAX_BATCH_SAMPLES

JST = timezone(timedelta(hours=9), "JST")
SampleKey = tuple[str, str, str, int, int]
"""(operator, device_id, stream, seq, ts in epoch milliseconds): what identifies one sample, a reused seq
after a device restart included (``store.schema.SAMPLE_IDENTITY``)."""
MAX_DURATION_S = 30 * 86_400
"""The longest run the simulator plays (30 days): ``SimConfig.duration_s`` is checked against it."""

_LATE_S = (60.0, 300.0)
_DUPLICATE_AFTER_S = (1.0, 30.0)
_SKEW_MS = (5_000, 180_000)


@dataclass(frozen=True)
class SimConfig:
    devices: int
    rate_hz: float
    duration_s: float
    seed: int
    start: datetime  # timezone-aware; the ts of the first sample
    batch: int = 1
    faults: FaultRates = field(default_factory=FaultRates)
    network_every: int = 5  # one network sample per this many state samples

    def __post_init__(self) -> None:
        if not 1 <= self.devices <= 100_000:
            raise ConfigError(f"Simulator 'devices' must be between 1 and 100000, got {self.devices}")
        if not 0 < self.rate_hz <= 1000:
            raise ConfigError(f"Simulator 'rate' must be above 0 and at most 1000 Hz, got {self.rate_hz}")
        if not 0 < self.duration_s <= MAX_DURATION_S:
            raise ConfigError(
                f"Simulator 'duration' must be above 0 and at most 30 days, got {self.duration_s}"
            )
        if not 1 <= self.batch <= MAX_BATCH_SAMPLES:
            raise ConfigError(
                f"Simulator 'batch' must be between 1 and {MAX_BATCH_SAMPLES}, got {self.batch}"
            )
        if self.network_every < 1:
            raise ConfigError(f"Simulator 'network_every' must be at least 1, got {self.network_every}")
        if self.start.tzinfo is None or self.start.utcoffset() is None:
            raise ConfigError("Simulator 'start' must carry a UTC offset, e.g. 2025-04-01T09:00:00+09:00")


@dataclass(frozen=True, slots=True)
class SimMessage:
    """One MQTT message to send, and what ingest must make of it.

    ``valid_keys``: the samples the lake must hold once, each as (operator, device_id, stream, seq).
    ``expected_reason``: the quarantine reason when the message is quarantined as one record (sample
    index null): a payload or topic that is bad, or a single-object payload whose sample is bad.
    ``sample_reasons``: for a batch array that parses, per element its quarantine reason (ingest
    quarantines that element alone, with its index) or None; empty for single-object messages.
    ``duplicate``: a redelivery of an earlier message (same topic and payload).
    ``send_at``: seconds after the start at which to send it.
    ``faults``: what was done to it (``late``, ``reorder``, ``skew``, ``duplicate``, ``malformed:<kind>``).
    """

    topic: str
    payload: bytes
    send_at: float
    valid_keys: tuple[SampleKey, ...] = ()
    expected_reason: str | None = None
    sample_reasons: tuple[str | None, ...] = ()
    duplicate: bool = False
    faults: tuple[str, ...] = ()

    @property
    def stream(self) -> str:
        return self.topic.rsplit("/", 1)[-1]

    @property
    def clean(self) -> bool:
        """Whether every sample in it is valid."""
        return self.expected_reason is None and not any(self.sample_reasons)

    @property
    def expected_quarantine(self) -> tuple[tuple[int | None, str], ...]:
        """The quarantine records ingest must write for it: (sample_index or None, reason)."""
        if self.expected_reason is not None:
            return ((None, self.expected_reason),)
        return tuple((i, r) for i, r in enumerate(self.sample_reasons) if r is not None)


@dataclass
class SimStats:
    """What a run generated; filled in as messages are yielded."""

    messages: int = 0
    payload_bytes: int = 0
    samples: Counter[str] = field(default_factory=Counter)  # valid samples, first deliveries, per stream
    quarantined: Counter[str] = field(default_factory=Counter)  # expected quarantine records by reason
    faults: Counter[str] = field(default_factory=Counter)  # injected faults by kind
    gaps: list[SampleKey] = field(default_factory=list)  # samples never sent
    restarts: list[tuple[str, str, float]] = field(default_factory=list)  # (operator, device_id, t) reboots
    # per device and stream, each run of its counter as [lowest seq sent, highest seq sent, samples sent]
    seq_runs: dict[tuple[str, str, str], list[list[int]]] = field(default_factory=dict)

    @property
    def seq_gaps(self) -> int:
        """The seq values a hub can see missing: per run of a counter, those between the lowest and the
        highest sent that were never sent."""
        return sum(high - low + 1 - n for runs in self.seq_runs.values() for low, high, n in runs)

    @property
    def valid_samples(self) -> int:
        return sum(self.samples.values())


@dataclass
class _Buffer:
    samples: list[Sample] = field(default_factory=list)
    keys: list[SampleKey] = field(default_factory=list)
    skewed: bool = False


class Simulation:
    """Iterate to get the messages in send order; ``stats`` fills in meanwhile."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.stats = SimStats()
        self._faults = random.Random(f"corridorhub-faults:{config.seed}")
        self._start_ms = int(config.start.timestamp() * 1000)
        self._start_jst = datetime.fromtimestamp(self._start_ms // 1000, JST).replace(
            microsecond=(self._start_ms % 1000) * 1000
        )
        self._kinds = list(MALFORMED_KINDS)
        self._faults.shuffle(self._kinds)
        self._next_kind = 0
        self._later: list[tuple[float, int, SimMessage]] = []  # heap of late messages and duplicates
        self._counter = 0
        self._held: dict[tuple[int, str], SimMessage] = {}  # reordered, waiting for the next one
        self._buffers: dict[tuple[int, str], _Buffer] = {}
        self._clock = 0.0

    # -- the main loop -----------------------------------------------------------------------------
    def __iter__(self) -> Iterator[SimMessage]:
        config = self.config
        dt = 1.0 / config.rate_hz
        ticks = max(1, int(config.duration_s * config.rate_hz))
        devices = build_fleet(config.devices, config.seed)
        count = len(devices)
        every = config.network_every
        for tick in range(ticks):
            for i, device in enumerate(devices):
                t = (tick + i / count) * dt
                events = device.advance(dt) if tick else []
                if tick and config.faults.restart > 0 and self._faults.random() < config.faults.restart:
                    self._restart(device, t)
                yield from self._sample(i, device, "state", t, device.state_sample)
                if (tick + i) % every == 0:
                    sample, comms = device.network_sample(0, 0)
                    events.extend(comms)
                    yield from self._sample(i, device, "network", t, partial(_stamp, sample))
                for event in events:
                    yield from self._sample(i, device, "event", t, partial(device.event_sample, event=event))
        yield from self._finish(ticks * dt, devices)

    def _sample(
        self, index: int, device: Device, stream: str, t: float, build: Callable[[int | str, int], Sample]
    ) -> Iterator[SimMessage]:
        rates = self.config.faults
        seq = device.seq[stream]
        device.seq[stream] = seq + 1
        ts_ms = self._start_ms + round(t * 1000)
        skewed = rates.skew > 0 and self._faults.random() < rates.skew
        if skewed:
            ts_ms += self._faults.choice((-1, 1)) * self._faults.randint(*_SKEW_MS)
        ts: int | str = ts_ms if device.identity.ts_format == "epoch_ms" else self._rfc3339(ts_ms)
        sample = build(ts, seq)
        extra = device.extra_fields(stream, seq)
        if extra:
            sample.update(extra)
        identity = device.identity
        key = (identity.operator, identity.device_id, stream, seq, ts_ms)
        if rates.gap > 0 and self._faults.random() < rates.gap:
            self.stats.gaps.append(key)
            self.stats.faults["gap"] += 1
            return
        if skewed:
            self.stats.faults["skew"] += 1
        runs = self.stats.seq_runs.setdefault(key[:3], [])
        if not runs or seq <= runs[-1][1]:  # the first sample sent, or the first after a restart
            runs.append([seq, seq, 0])
        runs[-1][1] = seq
        runs[-1][2] += 1
        if self.config.batch == 1:
            message = SimMessage(
                identity.topic(stream), orjson.dumps(sample), t, (key,), faults=("skew",) if skewed else ()
            )
            yield from self._dispatch(message, (index, stream), [sample], device)
            return
        buffer = self._buffers.setdefault((index, stream), _Buffer())
        buffer.samples.append(sample)
        buffer.keys.append(key)
        buffer.skewed = buffer.skewed or skewed
        if len(buffer.samples) >= self.config.batch:
            del self._buffers[(index, stream)]
            yield from self._dispatch(self._batch_message(identity.topic(stream), buffer, t), (index, stream),
                                      buffer.samples, device)  # fmt: skip

    def _restart(self, device: Device, t: float) -> None:
        """The device reboots: its counters start again from 0; its clock goes on."""
        device.seq = dict.fromkeys(device.seq, 0)
        self.stats.faults["restart"] += 1
        self.stats.restarts.append((device.identity.operator, device.identity.device_id, t))

    def _batch_message(self, topic: str, buffer: _Buffer, t: float) -> SimMessage:
        n = len(buffer.samples)
        faults = ("skew",) if buffer.skewed else ()
        return SimMessage(
            topic,
            orjson.dumps(buffer.samples),
            t,
            tuple(buffer.keys),
            sample_reasons=(None,) * n,
            faults=faults,
        )

    # -- message-level faults ----------------------------------------------------------------------
    def _dispatch(
        self, message: SimMessage, key: tuple[int, str], samples: list[Sample], device: Device
    ) -> Iterator[SimMessage]:
        rates = self.config.faults
        rng = self._faults
        extra: SimMessage | None = None
        if rates.malformed > 0 and rng.random() < rates.malformed:
            kind = self._kinds[self._next_kind % len(self._kinds)]
            self._next_kind += 1
            self.stats.faults["malformed"] += 1
            self.stats.faults[f"malformed:{kind}"] += 1
            base = samples[-1]
            if self.config.batch > 1 and kind in SAMPLE_KINDS:
                bad = bad_sample(kind, base, message.stream, rng)
                position = rng.randrange(len(samples) + 1)
                mixed = [*samples[:position], bad, *samples[position:]]
                reasons = [*message.sample_reasons]
                reasons.insert(position, SAMPLE_KINDS[kind])
                message = replace(
                    message,
                    payload=orjson.dumps(mixed),
                    sample_reasons=tuple(reasons),
                    faults=(*message.faults, f"malformed:{kind}"),
                )
            else:
                bad_msg = bad_message(kind, base, message.topic, rng)
                extra = SimMessage(
                    bad_msg.topic,
                    bad_msg.payload,
                    message.send_at,
                    expected_reason=bad_msg.reason,
                    faults=(f"malformed:{kind}",),
                )
        sent_at: float | None = None
        if rates.late > 0 and rng.random() < rates.late:
            self.stats.faults["late"] += 1
            sent_at = message.send_at + rng.uniform(*_LATE_S)
            self._push(replace(message, send_at=sent_at, faults=(*message.faults, "late")))
        elif rates.reorder > 0 and key not in self._held and rng.random() < rates.reorder:
            self.stats.faults["reorder"] += 1
            self._held[key] = replace(message, faults=(*message.faults, "reorder"))
        else:
            sent_at = message.send_at
            yield from self._emit(message)
            held = self._held.pop(key, None)
            if held is not None:
                yield self._count(replace(held, send_at=message.send_at))
        if sent_at is not None and message.clean and rates.duplicate > 0 and rng.random() < rates.duplicate:
            self.stats.faults["duplicate"] += 1
            again = sent_at + rng.uniform(*_DUPLICATE_AFTER_S)
            self._push(replace(message, send_at=again, duplicate=True, faults=(*message.faults, "duplicate")))
        if extra is not None:
            yield from self._emit(extra)

    def _push(self, message: SimMessage) -> None:
        self._counter += 1
        heapq.heappush(self._later, (message.send_at, self._counter, message))

    def _emit(self, message: SimMessage) -> Iterator[SimMessage]:
        """``message`` at its time, after whatever was scheduled before it."""
        later = self._later
        while later and later[0][0] <= message.send_at:
            yield self._count(heapq.heappop(later)[2])
        self._clock = message.send_at
        yield self._count(message)

    def _finish(self, end: float, devices: list[Device]) -> Iterator[SimMessage]:
        """Partial batches, held and scheduled messages: all sent by ``end``."""
        end = max(end, self._clock)
        later = self._later
        while later and later[0][0] <= end:
            yield self._count(heapq.heappop(later)[2])
        for (index, stream), buffer in sorted(self._buffers.items()):
            device = devices[index]
            message = self._batch_message(device.identity.topic(stream), buffer, end)
            yield from self._dispatch(message, (index, stream), buffer.samples, device)
        self._buffers.clear()
        for key in sorted(self._held):
            yield self._count(replace(self._held[key], send_at=end))
        self._held.clear()
        while later:
            yield self._count(replace(heapq.heappop(later)[2], send_at=end))

    def _count(self, message: SimMessage) -> SimMessage:
        stats = self.stats
        stats.messages += 1
        stats.payload_bytes += len(message.payload)
        if not message.duplicate and message.valid_keys:
            stats.samples[message.stream] += len(message.valid_keys)
        for _, reason in message.expected_quarantine:
            stats.quarantined[reason] += 1
        return message

    def _rfc3339(self, ts_ms: int) -> str:
        moment = self._start_jst + timedelta(milliseconds=ts_ms - self._start_ms)
        return moment.isoformat(timespec="milliseconds")


def _stamp(sample: Sample, ts: int | str, seq: int) -> Sample:
    sample["ts"] = ts
    sample["seq"] = seq
    return sample


def generate(config: SimConfig) -> Iterator[SimMessage]:
    """The messages of ``config``'s run, in send order (``Simulation`` also gives the stats)."""
    return iter(Simulation(config))


def expected_rows(messages: list[SimMessage]) -> set[SampleKey]:
    """The samples the lake must hold exactly once, from a generated run."""
    return {key for m in messages if not m.duplicate for key in m.valid_keys}
