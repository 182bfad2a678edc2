"""The settings object every part of corridorhub is handed.

It is built in one place (``corridorhub.config.load_settings``: flag > ``CORRIDORHUB_<NAME>`` >
``corridorhub.toml`` > default) and passed in; nothing else reads the environment.  Each field's
metadata holds its help text, which the CLI and the docs show.  Secrets print as ``***``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from store.errors import ConfigError

_DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _check_topic_filter(topic: str) -> None:
    """An MQTT topic filter: ``+`` and ``#`` fill a whole level, ``#`` only the last; no ``$share``."""
    levels = topic.split("/")
    if (
        not topic
        or len(topic.encode()) > 65_535
        or not topic.isprintable()
        or any(("+" in level or "#" in level) and len(level) > 1 for level in levels)
        or "#" in levels[:-1]
        or topic.startswith("$share/")
    ):
        raise ConfigError(
            "Setting 'topic' must be an MQTT topic filter such as corridor/+/+/+ ('+' and '#' fill a "
            f"whole level, '#' only the last; use 'group' for shared subscriptions), got {topic!r}"
        )


@dataclass(frozen=True)
class BrokerAddress:
    """``mqtt://[user:pass@]host:port`` or ``mqtts://...`` (TLS)."""

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        shown = _mask_url(url)  # error messages must not echo a password
        if any(ch.isspace() or not ch.isprintable() for ch in url):
            raise ConfigError(f"Setting 'broker' must not contain spaces or control characters: {shown!r}")
        parts = urlsplit(url)
        if parts.scheme not in _DEFAULT_PORTS:
            raise ConfigError(
                f"Setting 'broker' must look like mqtt://[user:pass@]host:port or mqtts://..., got {shown!r}"
            )
        if not parts.hostname:
            raise ConfigError(f"Setting 'broker' has no host: {shown!r}")
        try:
            port = parts.port if parts.port is not None else _DEFAULT_PORTS[parts.scheme]
        except ValueError as exc:
            raise ConfigError(f"Setting 'broker' has an invalid port: {exc}") from None
        if not 1 <= port <= 65_535:
            raise ConfigError(f"Setting 'broker' has an invalid port: {port} (1 to 65535)")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ConfigError(f"Setting 'broker' must not have a path, query or fragment: {shown!r}")
        return cls(
            host=parts.hostname,
            port=port,
            tls=parts.scheme == "mqtts",
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )

    def __str__(self) -> str:
        scheme = "mqtts" if self.tls else "mqtt"
        auth = f"{self.username}:***@" if self.username else ""
        return f"{scheme}://{auth}{self.host}:{self.port}"


def _mask_url(url: str) -> str:
    """``url`` with the password of ``user:pass@`` replaced by ``***``."""
    scheme, sep, rest = url.rpartition("://")
    userinfo, at, host = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return f"{scheme}{sep}{userinfo.split(':', 1)[0]}:***@{host}"


@dataclass(frozen=True)
class _Bounds:
    """The allowed range of a numeric setting (``open_low``: the low end itself is not allowed)."""

    low: float
    high: float
    open_low: bool = False
    open_high: bool = False

    def check(self, name: str, value: float | None) -> None:
        if value is None:
            return
        above = value > self.low if self.open_low else value >= self.low
        below = value < self.high if self.open_high else value <= self.high
        if not (above and below):  # written so that NaN fails too
            low = f"above {self.low:g}" if self.open_low else f"at least {self.low:g}"
            high = f"below {self.high:g}" if self.open_high else f"at most {self.high:g}"
            raise ConfigError(f"Setting '{name}' must be {low} and {high}, got {value}")


_BOUNDS: dict[str, _Bounds] = {
    "session_expiry_s": _Bounds(1, 2**32 - 1),
    "receive_maximum": _Bounds(1, 65_535),
    "flush_interval_s": _Bounds(0.01, 60),
    "flush_messages": _Bounds(1, 10_000_000),
    "flush_bytes": _Bounds(1024, 2**34),
    "buffer_bytes": _Bounds(2**20, 2**36),
    "max_payload_bytes": _Bounds(64, 256 * 2**20),
    "status_interval_s": _Bounds(0.1, 3600),
    "port": _Bounds(1, 65_535),
    "sql_timeout_s": _Bounds(0.1, 3600),
    "sql_max_rows": _Bounds(1, 100_000_000),
    "sql_max_result_mb": _Bounds(1, 1_000_000),
    "sql_threads": _Bounds(1, 256),
    "sql_concurrency": _Bounds(1, 256),
    "sql_key_concurrency": _Bounds(1, 256),
    "sql_queue_wait_s": _Bounds(0, 600),
    "max_request_bytes": _Bounds(1024, 2**30),
    "http_header_timeout_s": _Bounds(0.1, 3600),
    "http_body_timeout_s": _Bounds(0.1, 3600),
    "http_keep_alive_s": _Bounds(0.1, 3600),
    "http_max_connections": _Bounds(1, 100_000),
    "publish_k": _Bounds(2, 10_000),
    "publish_dominance": _Bounds(0, 1, open_low=True),
    "publish_lateness_h": _Bounds(0, 24 * 31),
    "dp_epsilon": _Bounds(0, 100, open_low=True),
    "dp_delta": _Bounds(0, 0.01, open_high=True),
    "dp_budget_epsilon": _Bounds(0, 1000, open_low=True),
    "dp_false_cells": _Bounds(0, 1_000_000, open_low=True),
}


def _help(text: str, *, secret: bool = False) -> dict[str, Any]:
    return {"help": text, "secret": secret}


@dataclass(frozen=True)
class Settings:
    lake: Path = field(default=Path("data/lake"), metadata=_help("Lake folder (Delta tables)."))
    releases: Path = field(default=Path("data/releases"), metadata=_help("Folder of published releases."))
    broker: str = field(
        default="mqtt://127.0.0.1:1883", metadata=_help("mqtt://[user:pass@]host:port, or mqtts:// for TLS.")
    )
    ca_file: Path | None = field(default=None, metadata=_help("CA certificate file for mqtts://."))
    mqtt_username: str | None = field(default=None, metadata=_help("MQTT user name (overrides the URL's)."))
    mqtt_password: str | None = field(
        default=None, repr=False, metadata=_help("MQTT password (overrides the URL's).", secret=True)
    )
    mqtt_version: str = field(
        default="5", metadata=_help("MQTT protocol: 5, or 3.1.1 (also used when the broker refuses 5).")
    )
    topic: str = field(default="corridor/+/+/+", metadata=_help("Topic filter to subscribe to."))
    group: str | None = field(
        default=None, metadata=_help("Shared-subscription group: workers in one group split the load.")
    )
    client_id: str = field(
        default="corridorhub-ingest",
        metadata=_help("MQTT client id; keep it stable, the persistent session hangs on it."),
    )
    session_expiry_s: int = field(
        default=86_400, metadata=_help("How long the broker keeps our session while we are away.")
    )
    receive_maximum: int = field(
        default=65_535, metadata=_help("Unacknowledged messages the broker may send us (MQTT 5).")
    )
    flush_interval_s: float = field(
        default=0.5, metadata=_help("Commit at least this often while messages wait.")
    )
    flush_messages: int = field(
        default=50_000, metadata=_help("Commit once this many messages wait (and take no more).")
    )
    flush_bytes: int = field(
        default=8 * 2**20, metadata=_help("Commit once this many payload bytes wait (and take no more).")
    )
    buffer_bytes: int = field(
        default=32 * 2**20,
        metadata=_help("Stop taking messages while this many payload bytes wait for a commit."),
    )
    max_payload_bytes: int = field(default=2**20, metadata=_help("Payloads above this are quarantined."))
    status_interval_s: float = field(
        default=10.0, metadata=_help("How often ingest logs its counters and writes its status file.")
    )
    log_level: str = field(
        default="INFO", metadata=_help("Logging level: DEBUG, INFO, WARNING, ERROR or CRITICAL.")
    )
    # -- the analyst SQL sandbox and the HTTP service ----------------------------------------------
    host: str = field(default="127.0.0.1", metadata=_help("Address the HTTP service listens on."))
    port: int = field(default=8080, metadata=_help("Port the HTTP service listens on."))
    keys_file: Path | None = field(
        default=None,
        metadata=_help("API keys (hashed) [default: {lake}/_hub/keys.json]."),
    )
    sql_timeout_s: float = field(
        default=30.0,
        metadata=_help(
            "Time limit of one SQL query; its worker process is killed 1 s later (docs/SANDBOX.md)."
        ),
    )
    sql_max_rows: int = field(
        default=100_000, metadata=_help("Rows returned at most; beyond, flagged truncated.")
    )
    sql_max_result_mb: int = field(
        default=64,
        metadata=_help(
            "MiB of result (Arrow) one query returns at most; beyond, flagged truncated. The service holds "
            "up to this much per running query (docs/SANDBOX.md)."
        ),
    )
    sql_memory_limit: str = field(
        default="1GB",
        metadata=_help(
            "Memory one SQL query may use: DuckDB's limit, and the kernel's cap (RLIMIT_DATA) on its worker "
            "process beyond what an idle worker holds."
        ),
    )
    sql_threads: int = field(default=2, metadata=_help("DuckDB threads of one SQL query."))
    sql_max_temp_size: str = field(default="2GB", metadata=_help("Spill space one SQL query may use."))
    sql_concurrency: int = field(
        default=4, metadata=_help("SQL worker processes the service keeps: queries it runs at once.")
    )
    sql_key_concurrency: int | None = field(
        default=None,
        metadata=_help(
            "SQL queries one API key runs at once; its further queries wait in the queue "
            "[default: sql_concurrency - 1, at least 1]."
        ),
    )
    sql_queue_wait_s: float = field(
        default=10.0,
        metadata=_help("How long an SQL query waits for a free worker before it is answered 429."),
    )
    max_request_bytes: int = field(default=1_048_576, metadata=_help("Largest HTTP request body accepted."))
    # HTTP connections (issue 9: slow clients must not hold the service's connections open)
    http_header_timeout_s: float = field(
        default=10.0,
        metadata=_help("Seconds a client has to send a request's headers; then closed."),
    )
    http_body_timeout_s: float = field(
        default=30.0, metadata=_help("Seconds a whole request body may take after its headers; then 408.")
    )
    http_keep_alive_s: float = field(default=5.0, metadata=_help("Seconds an idle connection stays open."))
    http_max_connections: int = field(
        default=500, metadata=_help("Connections served at once; beyond, new requests get 503.")
    )
    # -- publishing open data ------------------------------------------------------------------------
    publish_k: int = field(
        default=10, metadata=_help("A published cell needs at least this many distinct devices.")
    )
    publish_dominance: float = field(
        default=0.8,
        metadata=_help("A published cell is suppressed when one operator contributes more than this share."),
    )
    publish_lateness_h: float = field(
        default=48.0,
        metadata=_help(
            "Hours after a JST day ends before it may be published (late uploads arrive meanwhile); a day is "
            "published once, from what the hub had received by then."
        ),
    )
    privacy_zones_file: Path | None = field(
        default=None,
        metadata=_help("GeoJSON of privacy zones (depots, homes, hospitals) publishing removes."),
    )
    dp_epsilon: float | None = field(
        default=None,
        metadata=_help(
            "Differential privacy: epsilon per device-day of the four aggregate datasets together "
            "(each spends its share on the days it publishes first; off when unset)."
        ),
    )
    dp_delta: float = field(
        default=1e-6, metadata=_help("Differential privacy: delta per device-day, shared like epsilon.")
    )
    dp_budget_epsilon: float = field(
        default=10.0,
        metadata=_help(
            "Differential privacy: total epsilon a device-day may be charged over all datasets and "
            "releases (the ledger <releases>/privacy-ledger.json refuses more)."
        ),
    )
    dp_operators: str | None = field(
        default=None,
        metadata=_help(
            "Differential privacy: the public list of operators (comma-separated) whose device counts are "
            "noised per operator; devices of others count nowhere.  Unset: the operators with data in "
            "the release's days, taken as public."
        ),
    )
    dp_false_cells: float = field(
        default=1.0,
        metadata=_help(
            "Differential privacy: expected cells without any device published per dataset and day; the "
            "threshold on the noisy device count is raised above k until noise alone publishes no more."
        ),
    )
    ckan_url: str | None = field(default=None, metadata=_help("CKAN portal to push releases to (optional)."))
    ckan_api_key: str | None = field(
        default=None, repr=False, metadata=_help("CKAN API token for the push.", secret=True)
    )

    def __post_init__(self) -> None:
        BrokerAddress.parse(self.broker)
        if self.mqtt_version not in ("5", "3.1.1"):
            raise ConfigError(f"Setting 'mqtt_version' must be 5 or 3.1.1, got {self.mqtt_version!r}")
        if self.group is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", self.group):
            raise ConfigError(f"Setting 'group' must match [A-Za-z0-9_-]{{1,64}}, got {self.group!r}")
        if not self.client_id or len(self.client_id) > 128 or not self.client_id.isprintable():
            raise ConfigError("Setting 'client_id' must be 1 to 128 printable characters")
        _check_topic_filter(self.topic)
        if self.log_level.upper() not in _LOG_LEVELS:
            raise ConfigError(
                f"Setting 'log_level' must be one of {', '.join(_LOG_LEVELS)}, got {self.log_level!r}"
            )
        for name, bounds in _BOUNDS.items():
            bounds.check(name, getattr(self, name))
        if self.buffer_bytes < self.max_payload_bytes:
            raise ConfigError("Setting 'buffer_bytes' must be at least 'max_payload_bytes'")
        for name in ("sql_memory_limit", "sql_max_temp_size"):
            if not re.fullmatch(r"\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)", getattr(self, name)):
                raise ConfigError(
                    f"Setting '{name}' must be a size such as 512MB or 2GB, got {getattr(self, name)!r}"
                )

    @property
    def sql_key_share(self) -> int:
        """``sql_key_concurrency``, or its default: every slot but one, so one key never holds them all."""
        if self.sql_key_concurrency is not None:
            return min(self.sql_key_concurrency, self.sql_concurrency)
        return max(1, self.sql_concurrency - 1)

    @property
    def keys_path(self) -> Path:
        return self.keys_file if self.keys_file is not None else Path(self.lake) / "_hub" / "keys.json"

    @property
    def broker_address(self) -> BrokerAddress:
        address = BrokerAddress.parse(self.broker)
        if self.mqtt_username is not None or self.mqtt_password is not None:
            address = BrokerAddress(
                address.host,
                address.port,
                address.tls,
                self.mqtt_username if self.mqtt_username is not None else address.username,
                self.mqtt_password if self.mqtt_password is not None else address.password,
            )
        return address

    def describe(self) -> dict[str, str]:
        """Every setting as printable text, secrets masked."""
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("secret") and value is not None:
                out[f.name] = "***"
            elif f.name == "broker":
                out[f.name] = str(self.broker_address)
            else:
                out[f.name] = "" if value is None else str(value)
        return out

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.describe().items())
        return f"Settings({inner})"
