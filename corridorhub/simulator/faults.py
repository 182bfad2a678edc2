"""Fault injection: how often each fault happens, and the malformed payloads the hub must quarantine.

Faults and what ingest must make of them:

``malformed``  (per message) an extra bad message, or in batch mode possibly one bad sample added to a
               good batch.  Each bad thing has exactly one defect, so its quarantine reason is certain.
``duplicate``  (per message) the same topic and payload sent again 1-30 s later: a redelivery the lake
               must hold once.
``reorder``    (per message) the message is held back and sent right after the next message of the
               same device and stream.
``late``       (per message) the message is sent 60-300 s after its samples were taken (or at the end
               of the run, if that comes first).
``skew``       (per sample) ``ts`` is shifted by 5-180 s either way: a device clock that is off, still a
               valid sample.
``gap``        (per sample) the sample is never sent; its ``seq`` is skipped, which the hub's loss
               accounting must see.
``restart``    (per device and state tick) the device reboots: every ``seq`` counter starts again from 0
               while its clock goes on, so seq values repeat with new timestamps.  The hub must keep
               every sample and count the restart, not a gap or a pile of duplicates.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields
from typing import Any

import orjson

from store.errors import ConfigError
from store.schema import MAX_BATCH_SAMPLES, MAX_DETAIL_BYTES

FAULT_NAMES: tuple[str, ...] = ("malformed", "duplicate", "reorder", "late", "skew", "gap", "restart")

# Oversized payloads exceed the default size limit (1 MiB) by 4 KiB.
OVERSIZED_BYTES = 2**20 + 4096


@dataclass(frozen=True)
class FaultRates:
    """Probability of each fault; see the module docstring for what each does."""

    malformed: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    late: float = 0.0
    skew: float = 0.0
    gap: float = 0.0
    restart: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ConfigError(f"Fault '{f.name}' probability must be between 0 and 1, got {value!r}")

    @classmethod
    def parse(cls, spec: str | None) -> FaultRates:
        """``none``, ``default``, or ``name=p,...`` (``default,gap=0.05`` starts from the default mix)."""
        if spec is None or not spec.strip() or spec.strip().lower() == "none":
            return cls()
        values: dict[str, float] = {}
        for part in spec.split(","):
            part = part.strip()
            if not part:
                continue
            if part.lower() == "default":
                values.update(_as_dict(DEFAULT_FAULTS))
                continue
            name, sep, raw = part.partition("=")
            name = name.strip().lower()
            if name not in FAULT_NAMES:
                raise ConfigError(f"Unknown fault {name!r} (known: {', '.join(FAULT_NAMES)}, or 'default')")
            if not sep:
                raise ConfigError(f"Fault {name!r} needs a probability, e.g. {name}=0.01")
            try:
                values[name] = float(raw)
            except ValueError:
                raise ConfigError(f"Fault {name!r} probability is not a number: {raw.strip()!r}") from None
        return cls(**values)

    @property
    def any(self) -> bool:
        return any(_as_dict(self).values())

    def __str__(self) -> str:
        active = [f"{k}={v:g}" for k, v in _as_dict(self).items() if v]
        return ",".join(active) or "none"


def _as_dict(rates: FaultRates) -> dict[str, float]:
    return {f.name: getattr(rates, f.name) for f in fields(rates)}


DEFAULT_FAULTS = FaultRates(
    malformed=0.005, duplicate=0.01, reorder=0.01, late=0.002, skew=0.01, gap=0.005, restart=0.0005
)

# Malformed kinds and the quarantine reason each must get.  Sample-level kinds are one bad sample: a
# message of its own in single mode, or (batch mode) an extra element of a good batch, quarantined alone.
MESSAGE_KINDS: dict[str, str] = {
    "empty": "empty_payload",
    "not_utf8": "not_utf8",
    "invalid_json": "invalid_json",
    "non_finite": "non_finite_number",
    "empty_batch": "empty_batch",
    "batch_too_large": "batch_too_large",
    "oversized": "payload_too_large",
    "bad_topic": "bad_topic",
    "unknown_stream": "unknown_stream",
}
SAMPLE_KINDS: dict[str, str] = {
    "not_an_object": "not_an_object",
    "missing_ts": "missing_field",
    "missing_field": "missing_field",
    "wrong_type": "wrong_type",
    "out_of_range": "out_of_range",
    "invalid_value": "invalid_value",
    "invalid_ts": "invalid_ts",
    "ts_out_of_range": "ts_out_of_range",
}
MALFORMED_KINDS: dict[str, str] = {**MESSAGE_KINDS, **SAMPLE_KINDS}

# Per stream, (field, bad value) pairs with exactly one defect each.
_WRONG_TYPE: dict[str, list[tuple[str, Any]]] = {
    "state": [("lat", "35.5512"), ("speed_mps", True), ("battery_pct", [80]), ("mode", 3)],
    "event": [("kind", ["door"]), ("lat", {"deg": 35.55})],
    "network": [("rsrp_dbm", "-95"), ("cell_id", 12.5), ("dl_mbps", False)],
}
_OUT_OF_RANGE: dict[str, list[tuple[str, Any]]] = {
    "state": [("battery_pct", 130.5), ("heading_deg", 360.0), ("speed_mps", -1.2), ("lat", 95.0)],
    "event": [("lon", 181.5)],
    "network": [("rsrp_dbm", -20.0), ("sinr_db", 45.0), ("rtt_ms", -3.0), ("rsrq_db", -50.0)],
}
_INVALID_VALUE: dict[str, list[tuple[str, Any]]] = {
    "state": [("mode", "flying")],
    "event": [("kind", "teleport"), ("severity", "apocalyptic"), ("detail", "x" * (MAX_DETAIL_BYTES + 500))],
    "network": [("rat", "6G")],
}
_REQUIRED: dict[str, tuple[str, ...]] = {"state": ("lat", "lon"), "event": ("kind",), "network": ()}


@dataclass(frozen=True)
class Malformed:
    kind: str
    reason: str
    topic: str
    payload: bytes


def _without_seq(base: dict[str, Any]) -> dict[str, Any]:
    # Bad samples carry no seq: they are extra, so they never open or close a seq gap.
    return {k: v for k, v in base.items() if k != "seq"}


def bad_sample(kind: str, base: dict[str, Any], stream: str, rng: random.Random) -> Any:
    """A copy of the valid sample ``base`` with exactly one defect of ``kind``."""
    sample = _without_seq(base)
    if kind == "not_an_object":
        return rng.choice((42, "ok", None, True))
    if kind == "missing_ts":
        del sample["ts"]
        return sample
    if kind == "missing_field":
        options = [*(("drop", f) for f in _REQUIRED[stream]), ("null", "ts")]
        how, name = rng.choice(options)
        if how == "drop":
            sample.pop(name, None)
        else:
            sample[name] = None
        return sample
    if kind in ("wrong_type", "out_of_range", "invalid_value"):
        table = {"wrong_type": _WRONG_TYPE, "out_of_range": _OUT_OF_RANGE, "invalid_value": _INVALID_VALUE}
        name, value = rng.choice(table[kind][stream])
        sample[name] = value
        return sample
    if kind == "invalid_ts":
        ts = sample["ts"]
        # RFC 3339 without its offset, or epoch milliseconds as text
        sample["ts"] = rng.choice((ts[:19] if isinstance(ts, str) else str(ts), "yesterday"))
        return sample
    if kind == "ts_out_of_range":
        ts = sample["ts"]
        if isinstance(ts, int):
            sample["ts"] = rng.choice((ts // 1000, 4_102_444_800_000))  # seconds, not ms; or year 2100
        else:
            sample["ts"] = rng.choice(("1999-12-31T23:59:59+09:00", "2100-01-01T09:00:00+09:00"))
        return sample
    raise ValueError(f"not a sample-level kind: {kind}")  # pragma: no cover


def bad_message(kind: str, base: dict[str, Any], topic: str, rng: random.Random) -> Malformed:
    """A whole message with exactly one defect of ``kind``, built from the valid sample ``base``."""
    reason = MALFORMED_KINDS[kind]
    if kind in SAMPLE_KINDS:
        sample = bad_sample(kind, base, topic.rsplit("/", 1)[1], rng)
        return Malformed(kind, reason, topic, orjson.dumps(sample))
    sample = _without_seq(base)
    good = orjson.dumps(sample)
    if kind == "empty":
        payload = b""
    elif kind == "not_utf8":
        payload = good[:-1] + b',"note":"caf\xe9 \xff"}'
    elif kind == "invalid_json":
        payload = rng.choice(
            (
                good[: rng.randrange(len(good) // 2, len(good) - 1)],  # truncated
                good.replace(b'"', b"'"),  # single quotes
                good[:-1] + b",}",  # trailing comma
            )
        )
    elif kind == "non_finite":
        name = {"state": "speed_mps", "event": "lat", "network": "sinr_db"}[topic.rsplit("/", 1)[1]]
        sample.pop(name, None)
        constant = rng.choice((b"NaN", b"Infinity", b"-Infinity"))
        payload = orjson.dumps(sample)[:-1] + b',"' + name.encode() + b'":' + constant + b"}"
    elif kind == "empty_batch":
        payload = b"[]"
    elif kind == "batch_too_large":
        # Only the required fields, so that the array stays well under the size limit.
        stream = topic.rsplit("/", 1)[1]
        minimal = {k: sample[k] for k in ("ts", *_REQUIRED.get(stream, ())) if k in sample}
        payload = orjson.dumps([minimal] * (MAX_BATCH_SAMPLES + 1))
    elif kind == "oversized":
        sample["blob"] = "A" * OVERSIZED_BYTES
        payload = orjson.dumps(sample)
    elif kind == "bad_topic":
        prefix, operator, device_id, stream = topic.split("/")
        topic = rng.choice(
            (
                f"{prefix}/{operator}/{device_id}.tmp/{stream}",  # '.' is not allowed in identifiers
                f"{prefix}/{operator}/{'x' * 65}/{stream}",  # identifier longer than 64
                f"{prefix}/{operator}//{stream}",  # empty identifier
            )
        )
        payload = good
    elif kind == "unknown_stream":
        topic = topic.rsplit("/", 1)[0] + "/" + rng.choice(("telemetry", "State", "diagnostics"))
        payload = good
    else:  # pragma: no cover
        raise ValueError(f"unknown malformed kind: {kind}")
    return Malformed(kind, reason, topic, payload)
