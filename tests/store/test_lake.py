"""The lake on real Delta tables in tmp_path, read back through real DuckDB."""

from __future__ import annotations

import glob
import multiprocessing
import os
from datetime import UTC, date, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from lake_rows import BASE, append_worker, quarantine_rows, state_rows

from store.errors import CommitError, LakeError, TableNotFound
from store.lake import Lake
from store.schema import SCHEMAS, TABLES


@pytest.fixture
def lake(tmp_path):
    lake = Lake(tmp_path / "lake")
    lake.ensure_tables()
    return lake


def test_ensure_tables_creates_every_table_once(tmp_path):
    lake = Lake(tmp_path / "lake")
    lake.ensure_tables()
    lake.ensure_tables()
    assert lake.versions() == dict.fromkeys(TABLES, 0)
    for name in TABLES:
        assert lake.delta_table(name).metadata().partition_columns == ["date"]


def test_append_reads_back_exact_values_and_types(lake):
    version = lake.append("state", state_rows([7, 8]))
    assert version == 1
    con = lake.connect()
    rows = con.execute("SELECT device_id, seq, ts, received_at, date, lat FROM state ORDER BY seq").fetchall()
    assert rows == [
        ("shuttle-01", 7, BASE, BASE + timedelta(milliseconds=250), date(2025, 3, 14), 35.547),
        (
            "shuttle-01",
            8,
            BASE + timedelta(seconds=1),
            BASE + timedelta(seconds=1, milliseconds=250),
            date(2025, 3, 14),
            35.547 + 1e-5,
        ),
    ]
    assert rows[0][2].microsecond == 589793 and rows[0][2].tzinfo is not None
    types = dict(
        con.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'state'"
        ).fetchall()
    )
    assert types["ts"] == "TIMESTAMP WITH TIME ZONE"
    assert types["date"] == "DATE"
    assert types["seq"] == "BIGINT"


def test_parquet_files_are_zstd_with_microsecond_utc_timestamps(lake):
    lake.append("state", state_rows([1, 2, 3]))
    files = lake.snapshot_files("state")
    assert len(files) == 1 and "date=2025-03-14" in files[0]
    parquet = pq.ParquetFile(files[0])
    meta = parquet.metadata.row_group(0)
    assert {meta.column(i).compression for i in range(meta.num_columns)} == {"ZSTD"}
    assert parquet.schema_arrow.field("ts").type == pa.timestamp("us", tz="UTC")
    assert pq.read_table(files[0]).column("seq").to_pylist() == [1, 2, 3]


def test_nanosecond_input_is_stored_as_microseconds(lake):
    rows = state_rows([1])
    rows = rows.set_column(
        rows.schema.get_field_index("ts"), "ts", rows.column("ts").cast(pa.timestamp("ns", "UTC"))
    )
    lake.append("state", rows)
    assert pq.read_schema(lake.snapshot_files("state")[0]).field("ts").type == pa.timestamp("us", tz="UTC")


def test_empty_tables_give_typed_empty_views(lake):
    con = lake.connect()
    for name in TABLES:
        assert con.execute(f"SELECT count(*) FROM {name}").fetchall() == [(0,)]
        described = con.execute(f"DESCRIBE {name}").fetchall()
        assert [row[0] for row in described] == SCHEMAS[name].arrow.names
    types = dict((row[0], row[1]) for row in con.execute("DESCRIBE quarantine").fetchall())
    assert types == {
        "received_at": "TIMESTAMP WITH TIME ZONE",
        "topic": "VARCHAR",
        "operator": "VARCHAR",
        "device_id": "VARCHAR",
        "stream": "VARCHAR",
        "payload": "BLOB",
        "sample_index": "INTEGER",
        "reason": "VARCHAR",
        "message": "VARCHAR",
        "date": "DATE",
    }


def test_quarantine_round_trip(lake):
    lake.append("quarantine", quarantine_rows(2))
    rows = lake.connect().execute("SELECT payload, reason, date FROM quarantine").fetchall()
    assert rows == [(b"{nope", "invalid_json", date(2025, 3, 14))] * 2


def test_schema_merge_adds_a_column(lake):
    lake.append("state", state_rows([1]))
    later = state_rows([2], start=BASE + timedelta(days=1))
    later = later.append_column("mesh250", pa.array([5339452311], pa.int64()))
    lake.append("state", later)
    con = lake.connect()
    assert con.execute("SELECT seq, mesh250, date FROM state ORDER BY seq").fetchall() == [
        (1, None, date(2025, 3, 14)),
        (2, 5339452311, date(2025, 3, 15)),
    ]
    assert "mesh250" in lake.snapshot("state").schema.names


def test_snapshot_version_and_views_follow_new_commits(lake):
    con = lake.connect()
    assert con.execute("SELECT count(*) FROM state").fetchall() == [(0,)]
    lake.append("state", state_rows([1, 2]))
    assert lake.open_views(con)["state"] == 1
    assert con.execute("SELECT count(*) FROM state").fetchall() == [(2,)]
    assert lake.versions()["state"] == 1


def test_append_fsyncs_new_files_and_log_entry(lake, monkeypatch):
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    version = lake.append("state", state_rows([1]))
    table_dir = os.path.join(lake.root, "state")
    assert os.path.join(table_dir, "_delta_log", f"{version:020d}.json") in synced
    assert set(lake.snapshot_files("state")) <= set(synced)
    assert {
        table_dir,
        os.path.join(table_dir, "_delta_log"),
        os.path.join(table_dir, "date=2025-03-14"),
    } <= set(synced)


def test_recent_rows_returns_rows_received_since(lake):
    now = datetime.now(UTC)
    lake.append("state", state_rows([1, 2], received_at=now - timedelta(hours=1)))
    lake.append("state", state_rows([3], device="robot-07", received_at=now))
    # rows received long ago in a file written just now (what a compaction's rewrite looks like)
    lake.append("state", state_rows([4], device="car-9", received_at=now - timedelta(days=2)))
    recent = lake.recent_rows("state", ["device_id", "seq", "ts"], since=now - timedelta(minutes=15))
    assert recent.to_pylist() == [{"device_id": "robot-07", "seq": 3, "ts": BASE}]
    with_received = lake.recent_rows("state", ["seq", "received_at"], since=now - timedelta(minutes=15))
    assert with_received.column("seq").to_pylist() == [3]
    everything = lake.recent_rows("state", ["seq"], since=now - timedelta(hours=2))
    assert sorted(everything.column("seq").to_pylist()) == [1, 2, 3]
    assert lake.recent_rows("event", ["seq"], since=now).num_rows == 0


def test_commit_failure_raises_commit_error_with_cause(lake):
    # A file where the partition folder must go: the write fails as it would on a broken disk, even as root.
    blocker = os.path.join(lake.root, "state", "date=2025-03-20")
    with open(blocker, "w") as fh:
        fh.write("not a folder")
    with pytest.raises(CommitError, match="Commit to 'state' failed: .+"):
        lake.append("state", state_rows([1], start=datetime(2025, 3, 20, tzinfo=UTC)))
    assert lake.versions()["state"] == 0
    assert lake.append("state", state_rows([2])) == 1  # the table is still usable


def test_append_of_wrong_types_raises_commit_error(lake):
    bad = state_rows([1]).set_column(2, "ts", pa.array(["yesterday"]))
    with pytest.raises(CommitError, match="ts"):
        lake.append("state", bad)


def test_unknown_table_and_missing_lake(tmp_path):
    lake = Lake(tmp_path / "nowhere")
    with pytest.raises(TableNotFound):
        lake.append("trips", state_rows([1]))
    with pytest.raises(LakeError, match="No lake"):
        lake.connect()


def test_concurrent_appends_from_two_processes_lose_nothing(lake):
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        jobs = [pool.apply_async(append_worker, (lake.root, device, 30, 50)) for device in ("bus-1", "bus-2")]
        versions = [v for job in jobs for v in job.get(timeout=120)]
    assert len(set(versions)) == 60  # every commit got its own version
    rows = (
        lake.connect()
        .execute(
            "SELECT device_id, count(*), count(DISTINCT seq), min(seq), max(seq) FROM state "
            "GROUP BY 1 ORDER BY 1"
        )
        .fetchall()
    )
    assert rows == [("bus-1", 1500, 1500, 0, 1499), ("bus-2", 1500, 1500, 0, 1499)]
    for path in glob.glob(os.path.join(lake.root, "state", "*", "*.parquet")):
        pq.read_metadata(path)


def test_a_table_created_before_a_column_was_declared_reads_it_as_null(tmp_path):
    from deltalake import write_deltalake

    from store.sandbox import Sandbox

    old = state_rows([1, 2]).drop_columns(["zone"])  # what ingest wrote before `zone` existed
    write_deltalake(str(tmp_path / "lake" / "state"), old, partition_by=["date"])
    lake = Lake(tmp_path / "lake")
    assert "zone" not in lake.snapshot("state").schema.names
    con = lake.connect()
    assert con.execute("SELECT seq, zone FROM state ORDER BY seq").fetchall() == [(1, None), (2, None)]
    with (
        Sandbox(lake) as sandbox,
        sandbox.query("SELECT count(zone) AS z, count(*) AS n FROM state") as result,
    ):
        assert result.fetch_all().to_pylist() == [{"z": 0, "n": 2}]


def test_moved_since_sees_each_new_commit_and_a_new_table(tmp_path):
    lake = Lake(tmp_path / "lake")
    assert not lake.moved_since({})  # nothing there yet
    lake.ensure_tables()
    assert lake.moved_since({})  # the tables' first commits
    seen = lake.versions()
    assert not lake.moved_since(seen)
    lake.append("state", state_rows([1]))
    assert lake.moved_since(seen)
    assert not lake.moved_since(lake.versions())


def test_parquet_row_groups_are_small_enough_for_parallel_readers(lake):
    rows = state_rows(list(range(86_000)))  # one day at 1 Hz: one file
    lake.append(
        "state", pa.concat_tables([rows, rows.set_column(3, "seq", pa.array(range(86_000, 172_000)))])
    )
    sizes = [
        pq.ParquetFile(f).metadata.row_group(i).num_rows
        for f in glob.glob(os.path.join(lake.root, "state", "**", "*.parquet"), recursive=True)
        for i in range(pq.ParquetFile(f).metadata.num_row_groups)
    ]
    assert sum(sizes) == 172_000
    assert max(sizes) <= 122_880 and len(sizes) >= 2
