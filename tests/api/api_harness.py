"""Helpers of the API tests: rows for a real lake, keys per role, uvicorn on a free port."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import uvicorn
from fastapi import FastAPI

from store.schema import SCHEMAS
from store.settings import Settings

START = datetime(2025, 3, 14, 0, 0, 0, tzinfo=UTC)
DEVICES = ("shuttle-01", "robot-07")
ROWS_PER_DEVICE = 30


def state_table(device: str, rows: int, *, operator: str = "hic", start: datetime = START) -> pa.Table:
    """``rows`` state samples of one device, 1 s apart, seq 0..rows-1, speed = seq / 10."""
    schema = SCHEMAS["state"].arrow
    ts = [start + timedelta(seconds=i) for i in range(rows)]
    columns = {f.name: pa.nulls(rows, f.type) for f in schema}
    columns.update(
        operator=pa.array([operator] * rows),
        device_id=pa.array([device] * rows),
        ts=pa.array(ts, schema.field("ts").type),
        seq=pa.array(range(rows), pa.int64()),
        device_type=pa.array(["shuttle"] * rows),
        lat=pa.array([35.547 + i * 1e-5 for i in range(rows)]),
        lon=pa.array([139.751] * rows),
        speed_mps=pa.array([i / 10 for i in range(rows)]),
        mode=pa.array(["autonomous"] * rows),
        received_at=pa.array([t + timedelta(milliseconds=250) for t in ts], schema.field("received_at").type),
        date=pa.array([t.date() for t in ts], pa.date32()),
    )
    return pa.table(columns, schema=schema)


#: The small hand-made release every ``hub`` holds (``write_release_folder``), for the role matrix.
SMALL_DATASET, SMALL_VERSION = "demo-counts", "2025-03-14_2025-03-14-r1"


def write_release_folder(
    releases: Path,
    dataset: str,
    version: str,
    files: dict[str, bytes],
    *,
    package: dict[str, Any] | None = None,
    unlisted: dict[str, bytes] | None = None,
) -> Path:
    """A release folder in publish's layout, written by hand: ``files`` listed in ``manifest.json`` with
    their sha256 and size, a ``provenance.json``, an optional ``datapackage.json`` (listed too),
    ``unlisted`` files left out of the manifest, and the ``latest`` pointer."""
    folder = releases / dataset / version
    folder.mkdir(parents=True)
    listed = dict(files)
    listed["provenance.json"] = json.dumps(
        {"dataset": dataset, "version": version, "date_from": "2025-03-14", "date_to": "2025-03-14",
         "rows": 2, "built_at": "2025-03-15T00:00:00+00:00",
         "privacy": {"k": 10, "cells_before": 3, "cells_published": 2}}
    ).encode()  # fmt: skip
    if package is not None:
        listed["datapackage.json"] = json.dumps(package, ensure_ascii=False).encode()
    for name, content in {**listed, **(unlisted or {})}.items():
        (folder / name).write_bytes(content)
    entries = [
        {"path": name, "bytes": len(content), "sha256": hashlib.sha256(content).hexdigest(), "mediatype": "x"}
        for name, content in sorted(listed.items())
    ]
    manifest = {"dataset": dataset, "version": version, "algorithm": "sha256", "files": entries}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (releases / dataset / "latest").write_text(json.dumps({"dataset": dataset, "version": version}))
    return folder


@dataclass(frozen=True)
class Hub:
    settings: Settings
    analyst: str
    operator: str
    revoked: str

    def headers(self, who: str) -> dict[str, str]:
        """Request headers for ``who``: none, analyst, operator, revoked, garbage."""
        keys = {"analyst": self.analyst, "operator": self.operator, "revoked": self.revoked}
        if who == "none":
            return {}
        if who == "garbage":
            return {"Authorization": "Basic dXNlcjpwYXNz"}
        return {"Authorization": f"Bearer {keys[who]}"}


def with_settings(hub: Hub, **changes: object) -> Hub:
    return replace(hub, settings=replace(hub.settings, **changes))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Run ``app`` under uvicorn on a free loopback port in a thread; yield its base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=_free_port(), log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
