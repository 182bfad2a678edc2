"""Compaction on real Delta tables: exact dedup, fewer files, and no loss while another process appends."""

from __future__ import annotations

import multiprocessing
from datetime import timedelta

import pytest
from lake_rows import BASE, append_worker, quarantine_rows, state_rows

from store.compaction import compact
from store.lake import Lake
from store.schema import TABLES


@pytest.fixture
def lake(tmp_path):
    lake = Lake(tmp_path / "lake")
    lake.ensure_tables()
    return lake


def _state(lake: Lake, sql: str) -> list[tuple]:
    return lake.connect().execute(sql).fetchall()


def test_removes_exactly_the_duplicates_keeping_earliest_received_at(lake):
    first = BASE + timedelta(minutes=1)
    lake.append("state", state_rows([1, 2, 3], received_at=first))
    lake.append(
        "state", state_rows([2, 3], start=BASE + timedelta(seconds=1), received_at=first + timedelta(hours=1))
    )
    lake.append(
        "state", state_rows([3], start=BASE + timedelta(seconds=2), received_at=first - timedelta(hours=1))
    )
    # Same seq on another device, and rows without seq keyed by ts: not duplicates of the above.
    lake.append("state", state_rows([1, 2, 3], device="robot-07", received_at=first))
    lake.append("state", state_rows([None, None], device="car-9", received_at=first))
    lake.append(
        "state", state_rows([None], device="car-9", received_at=first + timedelta(hours=2))
    )  # dup by ts
    # An exact copy (a retried commit): identical received_at too.
    lake.append(
        "state", state_rows([None], device="car-9", start=BASE + timedelta(seconds=1), received_at=first)
    )
    before = _state(lake, "SELECT count(*) FROM state")[0][0]

    report = compact(lake)

    assert report["state"].duplicates_removed == 5
    assert _state(lake, "SELECT count(*) FROM state")[0][0] == before - 5
    rows = _state(lake, "SELECT device_id, seq, ts, received_at FROM state ORDER BY device_id, seq, ts")
    assert rows == [
        ("car-9", None, BASE, first),
        ("car-9", None, BASE + timedelta(seconds=1), first),
        ("robot-07", 1, BASE, first),
        ("robot-07", 2, BASE + timedelta(seconds=1), first),
        ("robot-07", 3, BASE + timedelta(seconds=2), first),
        ("shuttle-01", 1, BASE, first),
        ("shuttle-01", 2, BASE + timedelta(seconds=1), first),
        ("shuttle-01", 3, BASE + timedelta(seconds=2), first - timedelta(hours=1)),
    ]
    assert compact(lake).duplicates_removed == 0  # idempotent


def test_a_reused_seq_with_another_ts_is_a_new_sample_not_a_duplicate(lake):
    """A device whose counter restarted sends seq 1, 2, 3 again, later: compaction keeps both runs."""
    lake.append("state", state_rows([1, 2, 3]))
    lake.append("state", state_rows([1, 2, 3], start=BASE + timedelta(minutes=30)))
    lake.append("state", state_rows([2], start=BASE + timedelta(minutes=30, seconds=1)))  # a real copy

    assert compact(lake).duplicates_removed == 1
    rows = _state(lake, "SELECT seq, ts FROM state ORDER BY ts")
    assert rows == [
        (1, BASE),
        (2, BASE + timedelta(seconds=1)),
        (3, BASE + timedelta(seconds=2)),
        (1, BASE + timedelta(minutes=30)),
        (2, BASE + timedelta(minutes=30, seconds=1)),
        (3, BASE + timedelta(minutes=30, seconds=2)),
    ]


def test_duplicates_in_different_partitions_are_left_alone(lake):
    lake.append("state", state_rows([1]))
    lake.append("state", state_rows([1], start=BASE + timedelta(days=1)))  # seq reset on another day
    assert compact(lake)["state"].duplicates_removed == 0
    assert _state(lake, "SELECT count(*) FROM state")[0][0] == 2


def test_merges_small_files_per_partition_and_keeps_every_row(lake):
    for i in range(12):
        day = BASE + timedelta(days=i % 2)
        lake.append(
            "state", state_rows(list(range(i * 10, i * 10 + 10)), start=day + timedelta(seconds=i * 10))
        )
        lake.append("quarantine", quarantine_rows(3))
    snapshot_before = sorted(_state(lake, "SELECT * FROM state ORDER BY seq"))
    steps: list[tuple[int, int, str]] = []

    report = compact(lake, progress=lambda done, total, label: steps.append((done, total, label)))

    assert (report["state"].files_before, report["state"].files_after) == (12, 2)
    assert (report["quarantine"].files_before, report["quarantine"].files_after) == (12, 1)
    assert report["state"].duplicates_removed == 0
    assert sorted(_state(lake, "SELECT * FROM state ORDER BY seq")) == snapshot_before
    assert _state(lake, "SELECT count(*) FROM quarantine") == [(36,)]
    assert steps[-1][:2] == (3, 3) and [s[0] for s in steps] == [1, 2, 3]
    assert "state: 12 -> 2 files" in report.describe()


def test_empty_lake_compacts_to_nothing(lake):
    report = compact(lake)
    assert [t.table for t in report.tables] == list(TABLES)
    assert report.files_before == report.files_after == 0


@pytest.mark.parametrize("round_", range(3))
def test_compaction_while_another_process_appends_loses_nothing(lake, round_):
    # Some duplicates already in place, then a writer appends (and redelivers every 3rd batch) meanwhile.
    for _ in range(3):
        lake.append("state", state_rows(list(range(40)), device="seeded"))
    ctx = multiprocessing.get_context("spawn")
    rounds = removed_meanwhile = 0
    with ctx.Pool(1) as pool:
        job = pool.apply_async(append_worker, (lake.root, "live", 120, 25, 3))
        while not job.ready() or rounds < 2:
            removed_meanwhile += compact(lake, ["state"]).duplicates_removed
            rounds += 1
        job.get(timeout=120)
    assert removed_meanwhile >= 80  # partitions were rewritten while the writer was committing
    compact(lake, ["state"])
    rows = _state(
        lake,
        "SELECT device_id, count(*), count(DISTINCT seq), min(seq), max(seq) FROM state "
        "GROUP BY 1 ORDER BY 1",
    )
    assert rows == [("live", 3000, 3000, 0, 2999), ("seeded", 40, 40, 0, 39)]
    assert len(lake.snapshot_files("state")) == 1
