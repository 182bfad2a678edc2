"""Closed days: when a JST day may be published, what its rows are made of, and what arrives too late.

The release-differencing attack: a day published twice, the second time with late samples in it, differs
exactly where the late vehicle went.  So a day is published **once**:

* A JST day may first be published ``publish_lateness_h`` hours after it ends (default 48: late uploads of
  devices that were offline arrive meanwhile), and only while no running ingest worker is cut off from the
  broker (it would receive queued samples of the day later).  :func:`check_closed`.
* Its rows are built from the samples the hub had received when that first release was built (its
  ``received_until``, recorded in ``provenance.json``): the output is a function of those samples alone.
* Every later release covering the day repeats that first release's rows for it, byte for byte
  (``publish.previous.first_publications``); nothing received later reaches the public.  What arrived
  after a day's ``received_until`` is counted per day (:func:`late_samples`) and recorded for the hub's
  operators in ``{lake}/_hub/publish/late-data.json``, never in a release.

The rules a day was published under (k, dominance, lateness, privacy zones, differential privacy) go with
it: a release that would publish the day under other rules is refused (:func:`rules_of`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from publish.errors import DayNotClosed, PublishError
from store.ingest_status import read_statuses
from store.lake import Lake, select_files
from store.schema import STREAMS
from store.settings import Settings

JST = timedelta(hours=9)
LATE_DATA = Path("_hub") / "publish" / "late-data.json"
#: The parameters that decide a day's rows; a day keeps the ones it was first published with.
RULE_KEYS = (
    "k",
    "dominance_share",
    "lateness_h",
    "privacy_zones_sha256",
    "dp_epsilon",
    "dp_delta",
    "dp_false_cells",
    "dp_operators",
)
# rules that releases made before they were recorded lack: compared only where an earlier release has them
_RECORDED_LATER = frozenset({"lateness_h", "dp_false_cells", "dp_operators"})


def day_end(day: date) -> datetime:
    """The UTC instant at which JST ``day`` ends (midnight JST)."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1) - JST


def closes_at(day: date, lateness_h: float) -> datetime:
    return day_end(day) + timedelta(hours=lateness_h)


def days_between(date_from: date, date_to: date) -> list[date]:
    return [date_from + timedelta(days=i) for i in range((date_to - date_from).days + 1)]


def check_closed(days: Iterable[date], lake: Lake, settings: Settings, now: datetime) -> None:
    """Refuse days that may not be published for the first time yet; say when they will be."""
    open_days = [d for d in days if now < closes_at(d, settings.publish_lateness_h)]
    if open_days:
        first = open_days[0]
        when = (closes_at(first, settings.publish_lateness_h) + JST).strftime("%Y-%m-%d %H:%M JST")
        raise DayNotClosed(
            f"{first} is not closed yet: a day is published once, {settings.publish_lateness_h:g} h after it "
            f"ends (publish_lateness_h), so that late uploads are in; it closes at {when}"
            + (f" ({len(open_days)} day(s) of the range are open)" if len(open_days) > 1 else "")
        )
    stale_after = max(3 * settings.status_interval_s, 30.0)
    for status in read_statuses(Path(lake.root)):
        age = now.timestamp() - float(status.get("written_at") or 0)
        if age <= stale_after and status.get("connected") is False and not status.get("stopped"):
            raise PublishError(
                f"ingest worker {status.get('client_id')!r} is running but not connected to the broker: "
                "samples of these days may still be queued there, and a day is published only once; "
                "publish when ingest has caught up"
            )


def privacy_zones_sha256(settings: Settings) -> str | None:
    """The sha256 of the privacy zones file (its contents decide the rows; its path stays private)."""
    if settings.privacy_zones_file is None:
        return None
    try:
        return hashlib.sha256(Path(settings.privacy_zones_file).read_bytes()).hexdigest()
    except OSError as exc:
        raise PublishError(f"Cannot read the privacy zones file: {exc.strerror or exc}") from exc


def rules_of(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """The rules that decided a release's rows, from its parameters (provenance.json)."""
    return {key: parameters[key] for key in RULE_KEYS if key in parameters}


def rule_differences(earlier: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """What differs between an earlier release's rules and this one's (a release made before lateness was
    recorded is compared on the rest: ``_RECORDED_LATER``)."""
    out = []
    for key in RULE_KEYS:
        if key in _RECORDED_LATER and key not in earlier:
            continue
        if earlier.get(key) != now.get(key):
            out.append(f"{key} {earlier.get(key)!r} then, {now.get(key)!r} now")
    return out


def late_samples(lake: Lake, received_until: Mapping[date, datetime]) -> dict[date, int]:
    """Per JST day, the samples in the lake (every stream) received after the day's ``received_until``."""
    if not received_until:
        return {}
    out = dict.fromkeys(received_until, 0)
    con = lake.connect(views=False)
    try:
        con.execute("SET TimeZone = 'UTC'")
        for name in STREAMS:
            if not lake.has_table(name):
                continue
            snap = lake.snapshot(name)
            for day, until in received_until.items():
                start, end = day_end(day) - timedelta(days=1), day_end(day)
                (count,) = con.execute(
                    f"SELECT count(*) FROM ({select_files(snap.files, snap.schema)}) "
                    "WHERE date BETWEEN ? AND ? AND ts >= ? AND ts < ? AND received_at > ?",
                    [start.date(), end.date(), start, end, until],
                ).fetchone() or (0,)
                out[day] += int(count)
    except duckdb.Error as exc:
        raise PublishError(f"Cannot count late samples: {str(exc).splitlines()[0]}") from None
    finally:
        con.close()
    return out


def record_late(lake: Lake, dataset_id: str, late: Mapping[date, int], now: datetime) -> None:
    """Add the counts to ``{lake}/_hub/publish/late-data.json`` (for the hub's operators only)."""
    path = Path(lake.root) / LATE_DATA
    try:
        known = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    entry = known.setdefault(dataset_id, {})
    for day, count in late.items():
        entry[day.isoformat()] = {"late_samples": count, "counted_at": now.isoformat(timespec="seconds")}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(known, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
