"""Operator routes: ingest status per worker and per device, the device list, compaction on demand.

Everything about ingest comes from the status files the workers write beside the lake
(``store.ingest_status``); compaction runs ``store.compaction.compact`` in a thread, one at a time.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel

from api.auth import Role, requires
from api.errors import ApiError, documented
from api.services import services
from store.compaction import CompactionReport, compact
from store.ingest_status import read_statuses
from store.schema import TABLES

router = APIRouter(tags=["operator"], dependencies=[requires(Role.OPERATOR)], responses=documented(401, 403))


class WorkerStatus(BaseModel):
    client_id: str
    pid: int | None
    connected: bool
    subscribed: bool
    protocol: str
    started_at: str | None
    status_written_at: str | None
    status_age_s: float
    stale: bool
    messages_received: int
    messages_acked: int
    messages_per_s: float
    rows_per_s: float
    rate_basis: str
    rate_window_s: float
    rows: dict[str, int]
    quarantined: dict[str, int]
    duplicates_dropped: int
    commits: int
    commit_failures: int
    last_commit_at: str | None
    last_commit_s: float | None
    buffer_messages: int
    buffer_bytes: int
    seq_missing_total: int


class DeviceStream(BaseModel):
    operator: str
    device_id: str
    stream: str
    last_seen_at: str | None
    samples: int
    seq_missing: int
    seq_restarts: int
    workers: list[str]


class IngestStatus(BaseModel):
    generated_at: str
    workers: list[WorkerStatus]
    devices: list[DeviceStream]


class Device(BaseModel):
    operator: str
    device_id: str
    last_seen_at: str | None
    samples: int
    seq_missing: int
    streams: dict[str, DeviceStream]


class DeviceList(BaseModel):
    generated_at: str
    devices: list[Device]


class CompactedTable(BaseModel):
    table: str
    files_before: int
    files_after: int
    duplicates_removed: int
    partitions: int
    partitions_deduplicated: int
    partitions_merged: int
    version_before: int
    version_after: int


class CompactionResult(BaseModel):
    seconds: float
    files_before: int
    files_after: int
    duplicates_removed: int
    tables: list[CompactedTable]


@router.get("/v1/ingest/status", response_model=IngestStatus, summary="Ingest workers and devices")
def ingest_status(request: Request) -> IngestStatus:
    """Per worker: rates, last commit, buffer depth, connection; per device and stream: last seen,
    samples and ``seq`` values missing.  A worker is ``stale`` when its status file is older than three
    status intervals (it stopped or hangs)."""
    hub = services(request)
    statuses = _statuses(Path(hub.lake.root))
    now = time.time()
    stale_after = max(3 * hub.settings.status_interval_s, 30.0)
    workers = []
    for status in statuses:
        rates = hub.rates.observe(status)
        age = max(0.0, now - _float(status.get("written_at")))
        workers.append(
            WorkerStatus(
                client_id=status["client_id"],
                pid=_int_or_none(status.get("pid")),
                connected=bool(status.get("connected")),
                subscribed=bool(status.get("subscribed")),
                protocol=str(status.get("protocol") or ""),
                started_at=_time(status.get("started_at")),
                status_written_at=_time(status.get("written_at")),
                status_age_s=round(age, 3),
                stale=age > stale_after,
                messages_received=_int(status.get("messages_received")),
                messages_acked=_int(status.get("messages_acked")),
                messages_per_s=round(rates.messages_per_s, 3),
                rows_per_s=round(rates.rows_per_s, 3),
                rate_basis=rates.basis,
                rate_window_s=round(rates.window_s, 3),
                rows=_counts(status.get("rows")),
                quarantined=_counts(status.get("quarantined")),
                duplicates_dropped=_int(status.get("duplicates_dropped")),
                commits=_int(status.get("commits")),
                commit_failures=_int(status.get("commit_failures")),
                last_commit_at=_time(status.get("last_commit_at")),
                last_commit_s=_float_or_none(status.get("last_commit_s")),
                buffer_messages=_int(status.get("buffer_messages")),
                buffer_bytes=_int(status.get("buffer_bytes")),
                seq_missing_total=_int(status.get("seq_missing_total")),
            )
        )
    return IngestStatus(generated_at=_time(now) or "", workers=workers, devices=_device_streams(statuses))


@router.get("/v1/devices", response_model=DeviceList, summary="Devices seen by ingest")
def devices(request: Request) -> DeviceList:
    """One entry per device seen by the running ingest workers (since each started), with its streams."""
    streams = _device_streams(_statuses(Path(services(request).lake.root)))
    by_device: dict[tuple[str, str], list[DeviceStream]] = {}
    for entry in streams:
        by_device.setdefault((entry.operator, entry.device_id), []).append(entry)
    out = []
    for (operator, device_id), entries in sorted(by_device.items()):
        seen = [e.last_seen_at for e in entries if e.last_seen_at]
        out.append(
            Device(
                operator=operator,
                device_id=device_id,
                last_seen_at=max(seen) if seen else None,
                samples=sum(e.samples for e in entries),
                seq_missing=sum(e.seq_missing for e in entries),
                streams={e.stream: e for e in entries},
            )
        )
    return DeviceList(generated_at=_time(time.time()) or "", devices=out)


@router.post(
    "/v1/compact",
    response_model=CompactionResult,
    summary="Compact the lake",
    responses=documented(409, 503),
)
async def run_compaction(request: Request) -> CompactionResult:
    """Deduplicate samples and merge small files in every table (ingest may keep writing).  One
    compaction at a time: 409 while one runs."""
    hub = services(request)
    if not hub.lake.exists():
        raise ApiError(503, "lake_unavailable", f"No lake at {hub.lake.root}")
    if not hub.compaction.acquire(blocking=False):
        raise ApiError(409, "compaction_running", "A compaction is running already; try again when it ends")
    done: Future[tuple[CompactionReport, float]] = Future()

    def run() -> None:  # its own thread: it ends and unlocks even when the client goes away
        try:
            started = time.perf_counter()
            report = compact(hub.lake, [name for name in TABLES if hub.lake.has_table(name)])
            done.set_result((report, time.perf_counter() - started))
        except BaseException as exc:  # noqa: BLE001 - handed to the request that waits on it
            done.set_exception(exc)
        finally:
            hub.compaction.release()

    threading.Thread(target=run, name="corridorhub-compaction", daemon=True).start()
    report, seconds = await asyncio.wrap_future(done)
    return CompactionResult(
        seconds=round(seconds, 3),
        files_before=report.files_before,
        files_after=report.files_after,
        duplicates_removed=report.duplicates_removed,
        tables=[CompactedTable(**vars(t)) for t in report.tables],
    )


def _statuses(lake_root: Path) -> list[dict[str, Any]]:
    return [
        s for s in read_statuses(lake_root) if isinstance(s, dict) and isinstance(s.get("client_id"), str)
    ]


def _device_streams(statuses: list[dict[str, Any]]) -> list[DeviceStream]:
    """Per (operator, device, stream), merged over workers (a shared subscription splits a device's load)."""
    merged: dict[tuple[str, str, str], dict[str, Any]] = {}
    for status in statuses:
        for row in status.get("devices") or []:
            if not isinstance(row, dict):
                continue
            key = (str(row.get("operator")), str(row.get("device_id")), str(row.get("stream")))
            entry = merged.setdefault(
                key, {"last_seen": None, "samples": 0, "missing": 0, "restarts": 0, "workers": []}
            )
            seen = _float_or_none(row.get("last_seen_at"))
            if seen is not None and (entry["last_seen"] is None or seen > entry["last_seen"]):
                entry["last_seen"] = seen
            entry["samples"] += _int(row.get("samples"))
            entry["missing"] += _int(row.get("seq_missing"))
            entry["restarts"] += _int(row.get("seq_restarts"))
            entry["workers"].append(status["client_id"])
    return [
        DeviceStream(
            operator=operator,
            device_id=device_id,
            stream=stream,
            last_seen_at=_time(entry["last_seen"]),
            samples=entry["samples"],
            seq_missing=entry["missing"],
            seq_restarts=entry["restarts"],
            workers=sorted(entry["workers"]),
        )
        for (operator, device_id, stream), entry in sorted(merged.items())
    ]


def _time(epoch_s: Any) -> str | None:
    """RFC 3339 UTC text of an epoch time in seconds, or None."""
    value = _float_or_none(epoch_s)
    if value is None:
        return None
    try:
        return datetime.fromtimestamp(value, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        return None


def _float_or_none(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _float(value: Any) -> float:
    return _float_or_none(value) or 0.0


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def _counts(value: Any) -> dict[str, int]:
    return {str(k): _int(v) for k, v in value.items()} if isinstance(value, dict) else {}
