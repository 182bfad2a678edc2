"""Rows for lake tests, and the bodies of the writer processes the concurrency tests start.

The process bodies live here (not in a test module) so that a ``spawn`` child can import them.  Spawn, not
fork: a forked child inherits delta-rs's runtime threads in an unknown state.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pyarrow as pa

from store.lake import Lake
from store.schema import SCHEMAS

BASE = datetime(2025, 3, 14, 9, 26, 53, 589793, tzinfo=UTC)


def state_rows(
    seqs: list[int | None],
    *,
    device: str = "shuttle-01",
    operator: str = "hic",
    start: datetime = BASE,
    received_at: datetime | None = None,
) -> pa.Table:
    """State samples, one per ``seq``, 1 s apart from ``start``; ``date`` is the UTC date of ``ts``."""
    ts = [start + timedelta(seconds=i) for i in range(len(seqs))]
    received = [received_at or t + timedelta(milliseconds=250) for t in ts]
    schema = SCHEMAS["state"].arrow
    columns = {f.name: pa.nulls(len(seqs), f.type) for f in schema}
    columns.update(
        operator=pa.array([operator] * len(seqs)),
        device_id=pa.array([device] * len(seqs)),
        ts=pa.array(ts, schema.field("ts").type),
        seq=pa.array(seqs, pa.int64()),
        device_type=pa.array(["shuttle"] * len(seqs)),
        lat=pa.array([35.547 + i * 1e-5 for i in range(len(seqs))]),
        lon=pa.array([139.751] * len(seqs)),
        speed_mps=pa.array([4.5] * len(seqs)),
        mode=pa.array(["autonomous"] * len(seqs)),
        received_at=pa.array(received, schema.field("received_at").type),
        date=pa.array([t.date() for t in ts], pa.date32()),
    )
    return pa.table(columns, schema=schema)


def quarantine_rows(n: int, *, day: date | None = None) -> pa.Table:
    day = day or BASE.date()
    when = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
    schema = SCHEMAS["quarantine"].arrow
    return pa.table(
        {
            "received_at": pa.array([when] * n, schema.field("received_at").type),
            "topic": ["corridor/hic/x/state"] * n,
            "operator": ["hic"] * n,
            "device_id": ["x"] * n,
            "stream": ["state"] * n,
            "payload": pa.array([b"{nope"] * n, pa.binary()),
            "sample_index": pa.array([None] * n, pa.int32()),
            "reason": ["invalid_json"] * n,
            "message": ["Expecting property name"] * n,
            "date": pa.array([day] * n, pa.date32()),
        },
        schema=schema,
    )


def append_worker(
    root: str, device: str, commits: int, rows_per_commit: int, redeliver_every: int = 0
) -> list[int]:
    """Append ``commits`` batches of state rows for ``device`` (seq 0, 1, 2, ...); return the versions.

    With ``redeliver_every`` = k, every k-th commit is followed by a copy of the same batch (same samples,
    ``received_at`` stamped at append time, as ingest does), as a broker redelivery after a crash would give.
    """
    lake = Lake(root)
    versions = []
    for i in range(commits):
        seqs: list[int | None] = list(range(i * rows_per_commit, (i + 1) * rows_per_commit))
        start = BASE + timedelta(seconds=i * rows_per_commit)
        batch = state_rows(seqs, device=device, start=start, received_at=datetime.now(UTC))
        versions.append(lake.append("state", batch))
        if redeliver_every and i % redeliver_every == 0:
            copy = state_rows(seqs, device=device, start=start, received_at=datetime.now(UTC))
            versions.append(lake.append("state", copy))
    return versions
