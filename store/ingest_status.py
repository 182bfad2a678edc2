"""Where ingest workers leave their status for the API: ``{lake}/_hub/ingest/{client_id}.json``.

Written atomically (write, fsync, rename) by each worker every few seconds and at shutdown; read by
the API and the demo.  This is the only state ingest shares with anything, besides the lake itself.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger("corridorhub.store")

STATUS_DIR = Path("_hub") / "ingest"


def write_status(lake_root: Path, snapshot: dict[str, Any]) -> Path:
    """Write the worker's status file atomically; returns its path."""
    folder = lake_root / STATUS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    safe_id = "".join(c if c.isalnum() or c in "-_." else "_" for c in snapshot["client_id"])
    path = folder / f"{safe_id}.json"
    tmp = path.with_suffix(f".json.tmp{os.getpid()}")
    with tmp.open("w", encoding="utf-8") as fh:
        json.dump(snapshot, fh, separators=(",", ":"))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def read_statuses(lake_root: Path) -> list[dict[str, Any]]:
    """Every worker's last status (for the API and the demo summary); unreadable files are skipped."""
    out: list[dict[str, Any]] = []
    folder = lake_root / STATUS_DIR
    if not folder.is_dir():
        return out
    for path in sorted(folder.glob("*.json")):
        try:
            out.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            log.warning("status file %s unreadable: %s", path, exc)
    return out
