"""A data file torn by a power loss: every reader says what is wrong without host paths, ingest still
starts, and ``corridorhub compact --repair`` sets the file aside so that the lake works again."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from lake_rows import state_rows

from api import create_app
from corridorhub.cli import cli
from ingest import Ingestor
from store.compaction import compact
from store.errors import LakeError
from store.keys import KeyStore
from store.lake import Lake
from store.repair import DAMAGED_DIR, repair, unreadable_files
from store.settings import Settings


@pytest.fixture
def torn_lake(tmp_path: Path) -> tuple[Lake, Path]:
    """A lake whose state table holds two files, the second cut in half (its rows: device car-9)."""
    lake = Lake(tmp_path / "lake")
    lake.ensure_tables()
    lake.append("state", state_rows([1, 2, 3]))
    before = set((tmp_path / "lake" / "state").rglob("*.parquet"))
    lake.append("state", state_rows([4, 5], device="car-9", received_at=datetime.now(UTC)))
    (torn,) = set((tmp_path / "lake" / "state").rglob("*.parquet")) - before
    data = torn.read_bytes()
    torn.write_bytes(data[: len(data) // 2])
    return lake, torn


def test_compaction_names_the_damage_and_the_remedy_without_the_host_path(torn_lake) -> None:
    lake, _ = torn_lake
    with pytest.raises(LakeError) as caught:
        compact(lake)
    message = str(caught.value)
    assert "cannot be read" in message and "compact --repair" in message
    assert lake.root not in message and "<lake>/state/" in message


def test_repair_moves_the_torn_file_aside_and_the_lake_reads_again(torn_lake) -> None:
    lake, torn = torn_lake
    assert [d.table for d in unreadable_files(lake)] == ["state"]
    moved = repair(lake)
    assert [Path(m.path).name for m in moved] == [torn.name]
    assert (Path(lake.root) / DAMAGED_DIR / "state" / moved[0].path).is_file()  # kept, not deleted
    assert not torn.exists()
    con = lake.connect()
    assert con.execute("SELECT seq FROM state ORDER BY seq").fetchall() == [(1,), (2,), (3,)]
    assert compact(lake).files_after >= 1
    assert repair(lake) == []  # nothing left to repair


def test_the_cli_says_what_to_do_then_repairs(torn_lake) -> None:
    lake, _ = torn_lake
    runner = CliRunner()
    failed = runner.invoke(cli, ["compact", "--lake", lake.root])
    assert failed.exit_code == 1
    assert "compact --repair" in failed.output and lake.root not in failed.output
    assert "Traceback" not in failed.output
    repaired = runner.invoke(cli, ["compact", "--lake", lake.root, "--repair"])
    assert repaired.exit_code == 0, repaired.output
    assert "repair: 1 unreadable file(s) set aside" in repaired.output
    assert runner.invoke(cli, ["sql", "--lake", lake.root, "SELECT count(*) AS n FROM state"]).exit_code == 0


def test_sql_over_http_answers_503_with_the_remedy_not_a_path(torn_lake, tmp_path: Path) -> None:
    lake, _ = torn_lake
    settings = Settings(lake=lake.root, releases=tmp_path / "releases")
    key = KeyStore(settings.keys_path).create("analyst", "a")
    with TestClient(create_app(settings)) as client:
        response = client.post(
            "/v1/sql", json={"sql": "SELECT 1"}, headers={"Authorization": f"Bearer {key}"}
        )
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "lake_unavailable" and "compact --repair" in error["message"]
    assert str(tmp_path) not in response.text


def test_ingest_starts_on_a_torn_lake_and_says_its_dedup_memory_is_incomplete(
    torn_lake, caplog: pytest.LogCaptureFixture
) -> None:
    lake, _ = torn_lake
    # The torn file's rows were received just now, so ingest's seed window reads it.
    ingestor = Ingestor(Settings(lake=lake.root, broker="mqtt://127.0.0.1:1"), lake)
    with caplog.at_level(logging.WARNING, logger="corridorhub.ingest"):
        ingestor._seed_dedup()
    assert any("cannot read the recent commits of state" in r.getMessage() for r in caplog.records)
    assert all(lake.root not in r.getMessage() for r in caplog.records)
