"""``corridorhub sql`` and ``corridorhub compact`` through click's CliRunner, on a real lake."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from click.testing import CliRunner

from corridorhub.cli import cli
from store.lake import Lake
from store.query import analyst_relations, analyst_sandbox
from store.sandbox import SandboxLimits
from store.schema import SCHEMAS

ROOT = Path(__file__).resolve().parents[2]

BASE = datetime(2025, 3, 14, 9, 26, 53, 589793, tzinfo=UTC)


def _state(seqs: list[int], device: str = "shuttle-01") -> pa.Table:
    schema = SCHEMAS["state"].arrow
    ts = [BASE + timedelta(seconds=s) for s in seqs]
    columns = {f.name: pa.nulls(len(seqs), f.type) for f in schema}
    columns.update(
        operator=pa.array(["hic"] * len(seqs)),
        device_id=pa.array([device] * len(seqs)),
        ts=pa.array(ts, schema.field("ts").type),
        seq=pa.array(seqs, pa.int64()),
        lat=pa.array([35.547] * len(seqs)),
        lon=pa.array([139.751] * len(seqs)),
        received_at=pa.array(ts, schema.field("received_at").type),
        date=pa.array([t.date() for t in ts], pa.date32()),
    )
    return pa.table(columns, schema=schema)


@pytest.fixture
def lake_path(tmp_path: Path) -> str:
    lake = Lake(tmp_path / "lake")
    lake.ensure_tables()
    lake.append("state", _state([1, 2]))
    lake.append("state", _state([2]))  # a redelivered copy
    lake.append("state", _state([7], device="robot-07"))
    return str(tmp_path / "lake")


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


QUERY = "SELECT device_id, seq, ts, date, lat FROM state ORDER BY device_id, seq"


def test_table_format_is_aligned(lake_path):
    result = run("sql", QUERY, "--lake", lake_path)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["device_id", "seq", "ts", "date", "lat"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert lines[2].split() == ["robot-07", "7", "2025-03-14T09:27:00.589793+00:00", "2025-03-14", "35.547"]
    assert len({line.index("2025") for line in lines[2:6]}) == 1  # ts column starts at the same offset
    assert lines[-1] == "(4 rows)"


def test_csv_format(lake_path):
    result = run("sql", QUERY, "--lake", lake_path, "--format", "csv")
    rows = list(csv.reader(io.StringIO(result.output)))
    assert rows[0] == ["device_id", "seq", "ts", "date", "lat"]
    assert rows[1] == ["robot-07", "7", "2025-03-14 09:27:00.589793Z", "2025-03-14", "35.547"]
    assert len(rows) == 5


def test_json_format_is_the_apis_document(lake_path):
    result = run("sql", QUERY + " LIMIT 1", "--lake", lake_path, "--format", "json")
    document = json.loads(result.output)
    assert [c["name"] for c in document["columns"]] == ["device_id", "seq", "ts", "date", "lat"]
    assert document["rows"] == [["robot-07", 7, "2025-03-14T09:27:00.589793+00:00", "2025-03-14", 35.547]]
    assert document["truncated"] is False and document["row_count"] == 1


def test_empty_table_query(lake_path):
    result = run("sql", "SELECT count(*) AS n FROM event", "--lake", lake_path, "--format", "json")
    assert json.loads(result.output)["rows"] == [[0]]


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        ("SELEC nonsense", "Parser Error"),
        ("SELECT * FROM journeys", "journeys"),
        ("SELECT no_such_column FROM state", "no_such_column"),
        ("   ", "Empty SQL"),
    ],
)
def test_errors_say_what_went_wrong_first_and_exit_1(lake_path, statement, message):
    result = CliRunner().invoke(cli, ["sql", statement, "--lake", lake_path])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and message in result.output.splitlines()[0]
    assert "Traceback" not in result.output


def test_errors_keep_duckdbs_hint_and_the_caret(lake_path):
    result = CliRunner().invoke(cli, ["sql", "SELECT device_id, speed FROM state", "--lake", lake_path])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        'Error: Binder Error: Referenced column "speed" not found in FROM clause!',
        result.output.splitlines()[1],
        "LINE 1: SELECT device_id, speed FROM state",
        "                          ^^^^^",
    ]
    assert result.output.splitlines()[1].startswith('Candidate bindings: "speed_mps"')


def test_nonexistent_lake(tmp_path):
    result = CliRunner().invoke(cli, ["sql", "SELECT 1", "--lake", str(tmp_path / "nowhere")])
    assert result.exit_code == 1
    assert "No lake at" in result.output and "Traceback" not in result.output


def test_compact_command_removes_the_duplicate(lake_path):
    result = run("compact", "--lake", lake_path, "--table", "state")
    assert result.exit_code == 0, result.output
    assert "state: 3 -> 1 files" in result.output and "1 duplicates removed" in result.output
    assert json.loads(
        run("sql", "SELECT count(*) AS n FROM state", "--lake", lake_path, "--format", "json").output
    )["rows"] == [[3]]


def test_compact_names_each_table_once(lake_path, tmp_path):
    """On a terminal stdout and the log both land on the screen: each table is reported once, not twice."""
    done = subprocess.run(
        [sys.executable, "-m", "corridorhub", "compact", "--lake", lake_path],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    screen = done.stdout + done.stderr
    for table in ("state", "event", "network", "quarantine"):
        assert len(re.findall(rf"\b{table}: \d+ -> \d+ files", screen)) == 1, screen
    assert "total: 3 -> 1 files, 1 duplicates removed" in done.stdout


def test_compact_nonexistent_lake(tmp_path):
    result = CliRunner().invoke(cli, ["compact", "--lake", str(tmp_path / "nowhere")])
    assert result.exit_code == 1 and "No lake at" in result.output


def test_help_and_docs_name_every_table_and_view_the_sandbox_serves(lake_path):
    with analyst_sandbox(Lake(lake_path), SandboxLimits()) as sandbox:
        served = sandbox.relations
    declared = {name for names in analyst_relations().values() for name in names}
    assert declared == served
    assert {"trips", "device_day", "zones", "zone_edges"} <= served
    help_words = set(re.findall(r"[a-z_0-9]+", run("sql", "--help").output))
    docs = (ROOT / "docs" / "VIEWS.md").read_text() + (ROOT / "docs" / "DATA_CONTRACT.md").read_text()
    for name in sorted(served):
        assert name in help_words, f"sql --help does not name {name}"
        assert f"`{name}`" in docs, f"no document describes {name}"


def test_help_documents_formats():
    result = run("sql", "--help")
    assert "json: the document POST /v1/sql sends" in " ".join(result.output.split())
    assert sys.modules["corridorhub.cmd_sql"].command.name == "sql"


def test_copy_to_is_refused_with_one_line_and_exit_1(lake_path, tmp_path):
    target = tmp_path / "stolen.csv"
    result = CliRunner().invoke(cli, ["sql", f"COPY state TO '{target}'", "--lake", lake_path])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: COPY statements are not allowed: the sandbox is read-only"
    assert not target.exists()


def test_truncation_note_on_stderr(lake_path):
    result = CliRunner().invoke(
        cli, ["sql", QUERY, "--lake", lake_path, "--format", "csv", "--max-rows", "2"], catch_exceptions=False
    )
    assert result.exit_code == 0
    assert len(list(csv.reader(io.StringIO(result.stdout)))) == 3  # header + 2 rows
    assert "truncated to its first 2 rows (at most 2 rows and 64 MiB" in result.stderr


def test_timeout_flag_stops_a_long_query(lake_path):
    bomb = "SELECT sum(a.range * b.range) AS s FROM range(1000000) a, range(1000000) b"
    result = CliRunner().invoke(cli, ["sql", bomb, "--lake", lake_path, "--timeout", "0.5"])
    assert result.exit_code == 1
    assert "exceeded the 0.5 s time limit" in result.output


def test_bad_memory_limit_fails_by_name(lake_path):
    result = CliRunner().invoke(cli, ["sql", "SELECT 1", "--lake", lake_path, "--memory-limit", "lots"])
    assert result.exit_code == 1
    # the flag overrides the sql_memory_limit setting and is checked as the setting is
    assert "Setting 'sql_memory_limit' must be a size" in result.output and "Traceback" not in result.output


def test_the_analyst_views_are_there_from_the_cli_too(lake_path):
    result = run("sql", "SELECT count(*) AS n FROM zones", "--lake", lake_path, "--format", "csv")
    assert result.exit_code == 0, result.output
    assert int(result.output.splitlines()[1]) > 0
    for view in ("trips", "device_day", "network_mesh_hour", "speed_mesh_15min", "events_zone_day"):
        result = run("sql", f"SELECT * FROM {view} LIMIT 1", "--lake", lake_path, "--format", "json")
        assert result.exit_code == 0, (view, result.output)


def test_the_sql_settings_apply_and_flags_override_them(lake_path, monkeypatch):
    """CORRIDORHUB_SQL_* reach `corridorhub sql` (it runs in a worker like the service's); a flag wins."""
    bomb = "SELECT sum(a.range * b.range) AS s FROM range(1000000) a, range(1000000) b"
    monkeypatch.setenv("CORRIDORHUB_SQL_TIMEOUT_S", "0.5")
    monkeypatch.setenv("CORRIDORHUB_SQL_MAX_ROWS", "2")
    timed_out = CliRunner().invoke(cli, ["sql", bomb, "--lake", lake_path])
    assert timed_out.exit_code == 1 and "exceeded the 0.5 s time limit" in timed_out.output
    capped = CliRunner().invoke(
        cli, ["sql", "SELECT * FROM range(5)", "--lake", lake_path, "--format", "csv"]
    )
    assert capped.stdout.splitlines() == ["range", "0", "1"]
    wider = CliRunner().invoke(
        cli, ["sql", "SELECT * FROM range(5)", "--lake", lake_path, "--format", "csv", "--max-rows", "3"]
    )
    assert wider.stdout.splitlines() == ["range", "0", "1", "2"]


def test_a_value_over_the_memory_cap_is_stopped(lake_path):
    result = CliRunner().invoke(
        cli, ["sql", "SELECT repeat(repeat('x', 1000000), 1500) AS v", "--lake", lake_path,
              "--memory-limit", "256MB"],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "memory cap of one query (256MB)" in result.output and "Traceback" not in result.output
