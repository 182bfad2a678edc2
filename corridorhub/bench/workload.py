"""Pre-generated benchmark loads: the simulator's messages, made long cheaply.

The simulator writes about 60,000 samples a second, too slow to build a load of millions of rows in a
benchmark that should take a minute or two.  So ``workload`` simulates a base run once and then lets the
same fleet drive its routes again: each repeat is the base run with every ``seq`` moved on by the
span of the base run (per device and stream), so the samples stay distinct keys, ``seq`` stays gap-free
per device and stream, and dedup has nothing to drop.  Only ``seq`` is rewritten (``ts`` repeats, which
ingest does not mind), and only the repeats are re-encoded, with orjson.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson

from corridorhub.simulator import SimConfig, SimMessage, generate

BASE_DEVICES = 50
BASE_RATE_HZ = 10.0
NETWORK_EVERY = 5
#: Samples per simulated second of the base fleet: state at the rate, network at a fifth of it.
_SAMPLES_PER_S = BASE_DEVICES * BASE_RATE_HZ * (1 + 1 / NETWORK_EVERY)
_KeyBase = tuple[str, str, str]  # (operator, device_id, stream)


@dataclass
class Workload:
    """Messages to pre-load into the broker, in send order, and the rows they hold."""

    name: str
    batch: int
    messages: list[SimMessage] = field(default_factory=list)
    rows: int = 0
    payload_bytes: int = 0

    def add(self, message: SimMessage) -> None:
        self.messages.append(message)
        self.rows += len(message.valid_keys)
        self.payload_bytes += len(message.payload)

    @property
    def mean_payload_bytes(self) -> float:
        return self.payload_bytes / len(self.messages) if self.messages else 0.0


def workload(
    name: str, messages: int, *, batch: int = 1, seed: int = 0, base_samples: int = 30_000
) -> Workload:
    """``messages`` messages of ``batch`` samples each (a JSON object when 1, else an array).

    The base run has about ``base_samples`` samples (fewer when fewer are asked for); the rest are
    repeats of it with ``seq`` moved on.  With ``batch`` above 1 only full batches are kept: the
    simulator's events (a few per device and minute) and its end-of-run remainders would make short
    arrays.
    """
    if messages < 1:
        raise ValueError("a workload needs at least one message")
    duration_s = max(1.0, min(messages * batch, base_samples) / _SAMPLES_PER_S)
    if batch > 1:
        # Whole batches only: a run of this length fills each device's state and network batches
        # exactly (the simulator sends what is left at the end as short batches).
        unit = batch * NETWORK_EVERY / BASE_RATE_HZ
        duration_s = unit * max(1, round(duration_s / unit))
    config = SimConfig(
        devices=BASE_DEVICES,
        rate_hz=BASE_RATE_HZ,
        duration_s=duration_s,
        seed=seed,
        start=datetime.now(UTC).replace(microsecond=0),
        batch=batch,
        network_every=NETWORK_EVERY,
    )
    base = [m for m in generate(config) if batch == 1 or len(m.valid_keys) == batch]
    span = _seq_span(base)
    load = Workload(name, batch)
    repeat = 0
    while True:
        for message in base if repeat == 0 else _repeat(base, span, repeat):
            load.add(message)
            if len(load.messages) == messages:
                return load
        repeat += 1


def _seq_span(base: list[SimMessage]) -> dict[_KeyBase, int]:
    """Per device and stream, one more than the highest seq of the base run."""
    span: dict[_KeyBase, int] = {}
    for message in base:
        for operator, device, stream, seq, _ts in message.valid_keys:
            key = (operator, device, stream)
            span[key] = max(span.get(key, 0), seq + 1)
    return span


def _repeat(base: list[SimMessage], span: dict[_KeyBase, int], repeat: int) -> Iterator[SimMessage]:
    for message in base:
        if not message.valid_keys:
            yield message
            continue
        operator, device, stream, _, _ = message.valid_keys[0]
        shift = span[(operator, device, stream)] * repeat
        decoded = orjson.loads(message.payload)
        for sample in decoded if isinstance(decoded, list) else (decoded,):
            sample["seq"] += shift
        keys = tuple((o, d, s, seq + shift, ts) for o, d, s, seq, ts in message.valid_keys)
        yield SimMessage(
            message.topic,
            orjson.dumps(decoded),
            message.send_at,
            keys,
            sample_reasons=message.sample_reasons,
        )
