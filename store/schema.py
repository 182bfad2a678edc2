"""The lake's schema, declared once.

Every column of every table is a :class:`Column`: its Arrow type, unit, where its value comes from,
the contract's constraints (required, range, allowed values), how sensitive it is, and how publishing
must treat it.  The ingest decoder, the DuckDB views, the SQL docs and the anonymizer all derive from
this table, so adding a column forces a decision about how it is published.

Conventions: timestamps are microsecond UTC (``timestamp[us, tz=UTC]``: readable by DuckDB, Spark and
Trino; never nanoseconds); ``date`` is the UTC date of ``ts`` and the Delta partition column.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

import pyarrow as pa

TIMESTAMP = pa.timestamp("us", tz="UTC")
STREAMS: tuple[str, ...] = ("state", "event", "network")
QUARANTINE = "quarantine"
TABLES: tuple[str, ...] = (*STREAMS, QUARANTINE)
PARTITION_COLUMN = "date"
MAX_BATCH_SAMPLES = 10_000
MAX_DETAIL_BYTES = 1024
IDENTIFIER_PATTERN = r"[A-Za-z0-9_-]{1,64}"
#: What identifies one sample in a stream table.  Two rows with the same values here are copies of one
#: sample (a redelivery); a reused ``seq`` with another ``ts`` is a new sample (a restarted counter).
#: ``seq`` may be null: then ``ts`` alone identifies the sample.  Ingest's dedup and compaction both
#: follow this rule (``ingest/dedup.py``, ``store/compaction.py``).
SAMPLE_IDENTITY: tuple[str, ...] = ("operator", "device_id", "seq", "ts")


class Source(enum.Enum):
    """Where a column's value comes from."""

    PAYLOAD = "payload"  # a field of the JSON sample
    TOPIC = "topic"  # parsed from corridor/{operator}/{device_id}/{stream}
    HUB = "hub"  # added by the hub at ingest


class Sensitivity(enum.Enum):
    """What harm publishing the raw value could do."""

    NONE = "none"
    IDENTIFYING = "identifying"  # names or singles out a device (and so its passengers)
    LOCATION = "location"  # a precise position or time: quasi-identifying in sequence
    COMMERCIAL = "commercial"  # an operator's commercially sensitive detail
    FREE_TEXT = "free_text"  # may hold anything, personal data included


class Publish(enum.Enum):
    """How the publish step treats a column.  A column without a rule cannot be published."""

    DROP = "drop"  # never leaves the hub
    DIMENSION = "dimension"  # a group-by key as it is (an enum with few values)
    COARSEN_TIME = "coarsen_time"  # a group-by key after rounding down (hour, 15 min, day)
    COARSEN_SPACE = "coarsen_space"  # only as a JIS mesh cell or zone, never as a point
    AGGREGATE = "aggregate"  # only as a statistic over cells that pass the privacy gate
    COUNT_DISTINCT = "count_distinct"  # only as a count of distinct values (k-anonymity)
    DOMINANCE_ONLY = "dominance_only"  # used for the dominance check, never published
    PSEUDONYMIZE = "pseudonymize"  # keyed HMAC rotated per day (trajectories-sample only)


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    unit: str
    description: str
    source: Source
    publish: Publish
    sensitivity: Sensitivity = Sensitivity.NONE
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None
    maximum_exclusive: bool = False
    allowed: tuple[str, ...] = ()

    @property
    def nullable(self) -> bool:
        return not self.required

    def arrow_field(self) -> pa.Field:
        return pa.field(self.name, self.type, nullable=self.nullable)


def _payload(name: str, type_: pa.DataType, unit: str, description: str, **kw: object) -> Column:
    kw.setdefault("publish", Publish.AGGREGATE)
    return Column(name, type_, unit, description, Source.PAYLOAD, **kw)  # type: ignore[arg-type]


DEVICE_TYPES = ("bus", "shuttle", "car", "robot", "drone", "other")
MODES = ("autonomous", "manual", "remote", "stopped")
EVENT_KINDS = (
    "disengagement",
    "takeover_request",
    "emergency_stop",
    "obstacle",
    "near_miss",
    "comms_lost",
    "comms_restored",
    "delivery_start",
    "delivery_done",
    "door",
    "other",
)
SEVERITIES = ("info", "warning", "critical")
RATS = ("NR_SA", "NR_NSA", "LTE", "other")

# Columns every stream has, in table order.  `operator` and `device_id` come from the topic.
_HEAD: tuple[Column, ...] = (
    Column(
        "operator",
        pa.string(),
        "",
        "Operator running the device (from the topic).",
        Source.TOPIC,
        Publish.DOMINANCE_ONLY,
        Sensitivity.COMMERCIAL,
        required=True,
    ),
    Column(
        "device_id",
        pa.string(),
        "",
        "Device identifier within its operator (from the topic).",
        Source.TOPIC,
        Publish.COUNT_DISTINCT,
        Sensitivity.IDENTIFYING,
        required=True,
    ),
    _payload(
        "ts",
        TIMESTAMP,
        "UTC",
        "Sample time: RFC 3339 with offset or epoch milliseconds in the payload.",
        publish=Publish.COARSEN_TIME,
        sensitivity=Sensitivity.LOCATION,
        required=True,
    ),
    _payload(
        "seq",
        pa.int64(),
        "",
        "Sequence number, increasing per device and stream (may start again after a reboot); with ts, "
        "what tells a redelivered sample from a new one.",
        publish=Publish.DROP,
        sensitivity=Sensitivity.IDENTIFYING,
        minimum=0,
    ),
    _payload(
        "device_type",
        pa.string(),
        "",
        "Kind of device.",
        publish=Publish.DIMENSION,
        allowed=DEVICE_TYPES,
    ),
)


def _lat(required: bool) -> Column:
    return _payload(
        "lat",
        pa.float64(),
        "deg",
        "Latitude, WGS84.",
        publish=Publish.COARSEN_SPACE,
        sensitivity=Sensitivity.LOCATION,
        required=required,
        minimum=-90,
        maximum=90,
    )


def _lon(required: bool) -> Column:
    return _payload(
        "lon",
        pa.float64(),
        "deg",
        "Longitude, WGS84.",
        publish=Publish.COARSEN_SPACE,
        sensitivity=Sensitivity.LOCATION,
        required=required,
        minimum=-180,
        maximum=180,
    )


_STATE_FIELDS: tuple[Column, ...] = (
    _lat(True),
    _lon(True),
    _payload("alt_m", pa.float64(), "m", "Altitude above the WGS84 ellipsoid."),
    _payload("speed_mps", pa.float64(), "m/s", "Ground speed.", minimum=0),
    _payload(
        "heading_deg",
        pa.float64(),
        "deg",
        "Heading clockwise from true north.",
        minimum=0,
        maximum=360,
        maximum_exclusive=True,
    ),
    _payload("accel_mps2", pa.float64(), "m/s²", "Longitudinal acceleration."),
    _payload("mode", pa.string(), "", "Driving mode.", publish=Publish.DIMENSION, allowed=MODES),
    _payload(
        "battery_pct",
        pa.float64(),
        "%",
        "State of charge.",
        sensitivity=Sensitivity.COMMERCIAL,
        minimum=0,
        maximum=100,
    ),
    _payload(
        "odometer_m",
        pa.float64(),
        "m",
        "Odometer reading.",
        sensitivity=Sensitivity.COMMERCIAL,
        publish=Publish.DROP,
        minimum=0,
    ),
)

_EVENT_FIELDS: tuple[Column, ...] = (
    _payload(
        "kind", pa.string(), "", "Event kind.", publish=Publish.DIMENSION, required=True, allowed=EVENT_KINDS
    ),
    _payload("severity", pa.string(), "", "Severity.", publish=Publish.DIMENSION, allowed=SEVERITIES),
    _lat(False),
    _lon(False),
    _payload(
        "detail",
        pa.string(),
        "",
        f"Free text, at most {MAX_DETAIL_BYTES} bytes of UTF-8.",
        publish=Publish.DROP,
        sensitivity=Sensitivity.FREE_TEXT,
    ),
)

_NETWORK_FIELDS: tuple[Column, ...] = (
    _lat(False),
    _lon(False),
    _payload("rat", pa.string(), "", "Radio access technology.", publish=Publish.DIMENSION, allowed=RATS),
    _payload(
        "cell_id",
        pa.string(),
        "",
        "Serving cell identifier (a JSON integer is stored as its decimal text).",
        publish=Publish.DROP,
        sensitivity=Sensitivity.COMMERCIAL,
    ),
    _payload("rsrp_dbm", pa.float64(), "dBm", "Reference signal received power.", minimum=-156, maximum=-31),
    _payload("rsrq_db", pa.float64(), "dB", "Reference signal received quality.", minimum=-43, maximum=20),
    _payload(
        "sinr_db", pa.float64(), "dB", "Signal to interference plus noise ratio.", minimum=-23, maximum=40
    ),
    _payload("rtt_ms", pa.float64(), "ms", "Round-trip time.", minimum=0),
    _payload("dl_mbps", pa.float64(), "Mbit/s", "Downlink throughput.", minimum=0),
    _payload("ul_mbps", pa.float64(), "Mbit/s", "Uplink throughput.", minimum=0),
)

_TAIL: tuple[Column, ...] = (
    Column(
        "zone",
        pa.string(),
        "",
        "Corridor zone holding lat/lon (store/geo/data/corridor_zones.geojson); null outside every zone.",
        Source.HUB,
        Publish.DIMENSION,
    ),
    Column(
        "extra",
        pa.string(),
        "",
        "Fields outside the contract, as a JSON object text (null when there are none).",
        Source.HUB,
        Publish.DROP,
        Sensitivity.FREE_TEXT,
    ),
    Column(
        "received_at",
        TIMESTAMP,
        "UTC",
        "When the hub received the MQTT message.",
        Source.HUB,
        Publish.DROP,
    ),
    Column(
        PARTITION_COLUMN,
        pa.date32(),
        "UTC date",
        "UTC date of ts; the Delta partition column.",
        Source.HUB,
        Publish.COARSEN_TIME,
        required=True,
    ),
)

QUARANTINE_REASONS: Mapping[str, str] = {
    "bad_topic": "topic is not corridor/{operator}/{device_id}/{stream} with valid identifiers",
    "unknown_stream": "stream is not state, event or network",
    "empty_payload": "payload has no bytes",
    "payload_too_large": "payload exceeds the size limit",
    "not_utf8": "payload is not valid UTF-8",
    "invalid_json": "payload is not valid JSON",
    "non_finite_number": "payload holds NaN or Infinity, which JSON does not allow",
    "not_an_object": "sample is not a JSON object",
    "empty_batch": "batch array holds no samples",
    "batch_too_large": f"batch array holds more than {MAX_BATCH_SAMPLES} samples",
    "missing_field": "a required field is missing or null",
    "wrong_type": "a field has the wrong JSON type",
    "out_of_range": "a numeric field is outside its allowed range",
    "invalid_value": "a text field is not one of its allowed values, or is too long",
    "invalid_ts": "ts is neither RFC 3339 with an offset nor integer epoch milliseconds",
    "ts_out_of_range": "ts is before 2000-01-01 or more than one day after receipt",
    "internal_error": "the hub failed to decode this message (a bug: the log has the traceback)",
}

_QUARANTINE_COLUMNS: tuple[Column, ...] = (
    Column(
        "received_at",
        TIMESTAMP,
        "UTC",
        "When the hub received the message.",
        Source.HUB,
        Publish.DROP,
        required=True,
    ),
    Column(
        "topic",
        pa.string(),
        "",
        "The MQTT topic as received.",
        Source.TOPIC,
        Publish.DROP,
        Sensitivity.IDENTIFYING,
        required=True,
    ),
    Column(
        "operator",
        pa.string(),
        "",
        "Operator, when the topic parses.",
        Source.TOPIC,
        Publish.DROP,
        Sensitivity.COMMERCIAL,
    ),
    Column(
        "device_id",
        pa.string(),
        "",
        "Device, when the topic parses.",
        Source.TOPIC,
        Publish.DROP,
        Sensitivity.IDENTIFYING,
    ),
    Column("stream", pa.string(), "", "Stream, when the topic parses.", Source.TOPIC, Publish.DROP),
    Column(
        "payload",
        pa.binary(),
        "bytes",
        "The offending bytes: the whole message, or one sample of a batch (re-serialized).",
        Source.PAYLOAD,
        Publish.DROP,
        Sensitivity.FREE_TEXT,
        required=True,
    ),
    Column(
        "sample_index",
        pa.int32(),
        "",
        "Index of the sample within a batch array, else null.",
        Source.HUB,
        Publish.DROP,
    ),
    Column(
        "reason",
        pa.string(),
        "",
        "Reason code.",
        Source.HUB,
        Publish.DROP,
        required=True,
        allowed=tuple(QUARANTINE_REASONS),
    ),
    Column(
        "message",
        pa.string(),
        "",
        "Human-readable detail of the reason.",
        Source.HUB,
        Publish.DROP,
        required=True,
    ),
    Column(
        PARTITION_COLUMN,
        pa.date32(),
        "UTC date",
        "UTC date of received_at; the partition column.",
        Source.HUB,
        Publish.DROP,
        required=True,
    ),
)


@dataclass(frozen=True)
class TableSchema:
    name: str
    columns: tuple[Column, ...]
    description: str
    by_name: Mapping[str, Column] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {c.name: c for c in self.columns})

    @property
    def arrow(self) -> pa.Schema:
        return pa.schema([c.arrow_field() for c in self.columns])

    @property
    def payload_columns(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.source is Source.PAYLOAD)

    def __getitem__(self, name: str) -> Column:
        return self.by_name[name]


SCHEMAS: Mapping[str, TableSchema] = {
    "state": TableSchema(
        "state", (*_HEAD, *_STATE_FIELDS, *_TAIL), "Position, motion and mode of each device."
    ),
    "event": TableSchema(
        "event", (*_HEAD, *_EVENT_FIELDS, *_TAIL), "Discrete events: disengagements, stops, deliveries..."
    ),
    "network": TableSchema(
        "network", (*_HEAD, *_NETWORK_FIELDS, *_TAIL), "Radio and network quality measured on the device."
    ),
    QUARANTINE: TableSchema(
        QUARANTINE, _QUARANTINE_COLUMNS, "Payloads and samples the hub could not accept, with the reason."
    ),
}

# The dedup key of a sample: (operator, device_id, stream, seq) or, when seq is absent, ts.
DEDUP_KEY: tuple[str, ...] = ("operator", "device_id", "seq", "ts")
