"""The SQL sandbox on a real lake: an escape battery, the limits, streaming, parameters and concurrency.

Every escape attempt must be refused with the right error type *and* leave the lake exactly as it was: same
Delta versions, same files (names, sizes, mtimes) anywhere under the lake's parent folder, same row counts.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from lake_rows import BASE, quarantine_rows, state_rows

from store.errors import QueryError, QueryRefused
from store.lake import Lake
from store.sandbox import Sandbox, SandboxLimits

LIMITS = SandboxLimits(memory_limit="256MB", threads=2, timeout_s=3.0, max_rows=1000, max_temp_size="64MB")


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    lake = Lake(tmp_path / "data" / "lake")
    lake.ensure_tables()
    lake.append("state", state_rows([1, 2, 3], device="shuttle-01"))
    lake.append("state", state_rows([1, 2], device="robot-07", start=BASE + timedelta(days=1)))
    lake.append("quarantine", quarantine_rows(2))
    return lake


@pytest.fixture
def sandbox(lake: Lake, tmp_path: Path) -> Iterator[Sandbox]:
    with Sandbox(lake, replace(LIMITS, temp_dir=tmp_path / "sandbox-tmp")) as box:
        yield box


def rows(sandbox: Sandbox, sql: str, params: Any = None) -> list[dict[str, Any]]:
    with sandbox.query(sql, params) as result:
        table: pa.Table = result.fetch_all()
    return table.to_pylist()


def fingerprint(lake: Lake) -> tuple[dict[str, int], dict[str, tuple[int, int]], dict[str, int]]:
    """Versions, every file under the lake's parent (size, mtime), and row counts read with pyarrow."""
    parent = Path(lake.root).parent
    files = {
        str(p.relative_to(parent)): (p.lstat().st_size, p.lstat().st_mtime_ns)
        for p in parent.rglob("*")
        if not p.is_dir()
    }
    counts = {
        name: sum(
            pq.ParquetFile(f.removeprefix("file://")).metadata.num_rows for f in lake.snapshot_files(name)
        )
        for name in ("state", "event", "network", "quarantine")
    }
    return lake.versions(), files, counts


# -- the escape battery -------------------------------------------------------------------------------------

R, E = QueryRefused, QueryError
PART = "state/date=2025-03-14"
#: (label, SQL with {lake} and {parent} placeholders, expected error type, text the message must hold)
ESCAPES = [
    ("read_csv", "SELECT * FROM read_csv('/etc/passwd')", R, "read_csv()"),
    ("read_csv_auto", "SELECT * FROM read_csv_auto('/etc/hosts')", R, "read_csv_auto()"),
    (
        "read_parquet lake file",
        "SELECT * FROM read_parquet('{lake}/" + PART + "/*.parquet')",
        R,
        "read_parquet()",
    ),
    ("parquet_scan", "SELECT * FROM parquet_scan('{lake}/state/**/*.parquet')", R, "parquet_scan()"),
    (
        "read_json",
        "SELECT * FROM read_json('{lake}/state/_delta_log/00000000000000000000.json')",
        R,
        "read_json",
    ),
    ("read_ndjson", "SELECT * FROM read_ndjson_objects('/etc/passwd')", R, "read_ndjson_objects()"),
    ("read_text", "SELECT content FROM read_text('/etc/passwd')", R, "read_text()"),
    ("read_blob", "SELECT content FROM read_blob('{lake}/state/_delta_log/*.json')", R, "read_blob()"),
    ("glob", "FROM glob('/**')", R, "glob()"),
    ("sniff_csv", "FROM sniff_csv('/etc/passwd')", R, "sniff_csv()"),
    ("parquet_metadata", "FROM parquet_metadata('{lake}/" + PART + "/*.parquet')", R, "parquet_metadata()"),
    ("query() runs SQL text", "FROM query('COPY state TO ''{parent}/q.csv''')", R, "query()"),
    ("query_table", "FROM query_table('/etc/passwd')", R, "query_table()"),
    ("duckdb_settings", "SELECT name, value FROM duckdb_settings()", R, "duckdb_settings()"),
    ("pragma_ table function", "FROM pragma_database_list()", R, "pragma_database_list()"),
    (
        "json_execute_serialized_sql",
        "FROM json_execute_serialized_sql(json_serialize_sql('SELECT 1'))",
        R,
        "json",
    ),
    (
        "read_parquet in a CTE",
        "WITH x AS (FROM read_parquet('/tmp/x.parquet')) FROM state, x",
        R,
        "read_parquet",
    ),
    ("glob in a scalar subquery", "SELECT (SELECT count(*) FROM glob('/etc/*')) AS n", R, "glob()"),
    ("lateral table function", "FROM state, LATERAL read_text(state.device_id)", R, "read_text()"),
    (
        "table function in a lambda",
        "SELECT list_transform([1], x -> (FROM read_text('/etc/passwd')))",
        R,
        "read_text",
    ),
    ("path traversal", "FROM read_text('{lake}/../../../../etc/passwd')", R, "read_text()"),
    ("symlink out of the lake", "FROM read_parquet('{lake}/" + PART + "/link.parquet')", R, "read_parquet()"),
    ("replacement scan of a file", "SELECT * FROM '/etc/passwd.csv'", R, "Reading files by name"),
    (
        "replacement scan in a subquery",
        "SELECT * FROM (FROM '{lake}/" + PART + "/x.parquet')",
        R,
        "files by name",
    ),
    ("python variable", "SELECT * FROM secret_frame", E, "Unknown table 'secret_frame'"),
    (
        "COPY TO inside the lake",
        "COPY (FROM state) TO '{lake}/" + PART + "/inj.parquet' (FORMAT parquet)",
        R,
        "COPY",
    ),
    ("COPY TO outside the lake", "COPY state TO '{parent}/out.csv'", R, "COPY statements are not allowed"),
    ("COPY FROM", "COPY state FROM '/etc/passwd'", R, "read-only"),
    ("EXPORT DATABASE", "EXPORT DATABASE '{parent}/export'", R, "EXPORT"),
    ("IMPORT DATABASE", "IMPORT DATABASE '{parent}/export'", R, "IMPORT"),
    ("ATTACH a file", "ATTACH '{lake}/x.duckdb' AS f", R, "ATTACH"),
    ("ATTACH memory", "ATTACH ':memory:' AS m", R, "ATTACH"),
    ("DETACH", "DETACH memory", R, "DETACH"),
    ("SET", "SET enable_external_access = true", R, "settings are fixed"),
    ("SET threads", "SET threads = 64", R, "SET"),
    ("RESET", "RESET memory_limit", R, "RESET"),
    ("SET VARIABLE", "SET VARIABLE x = 1", R, "SET"),
    ("INSTALL", "INSTALL httpfs", R, "INSTALL"),
    ("LOAD", "LOAD httpfs", R, "LOAD"),
    ("PRAGMA", "PRAGMA enable_profiling", R, "PRAGMA"),
    ("CALL", "CALL pragma_version()", R, "CALL"),
    ("CHECKPOINT", "CHECKPOINT", R, "CHECKPOINT"),
    ("CREATE TABLE", "CREATE TABLE t AS SELECT 1", R, "CREATE"),
    ("CREATE VIEW", "CREATE OR REPLACE VIEW state AS SELECT 1", R, "CREATE"),
    ("CREATE MACRO", "CREATE MACRO current_setting(x) AS x", R, "CREATE"),
    ("INSERT", "INSERT INTO state SELECT * FROM state", R, "INSERT"),
    ("DELETE", "DELETE FROM state", R, "DELETE"),
    ("DROP VIEW", "DROP VIEW state", R, "DROP"),
    ("two statements", "SELECT 1; DROP VIEW state", R, "Only one statement"),
    ("comment hides a COPY", "/* SELECT */ COPY state TO '{parent}/c.csv'", R, "COPY"),
    ("comment hides a 2nd statement", "SELECT 1 -- x\n; DROP VIEW state", R, "Only one statement"),
    ("getenv", "SELECT getenv('HOME')", R, "getenv()"),
    ("current_setting", "SELECT current_setting('temp_directory')", R, "current_setting()"),
    ("SHOW a setting", "SHOW memory_limit", R, "SHOW"),
    ("transaction", "BEGIN TRANSACTION", R, "BEGIN"),
    ("PREPARE", "PREPARE p AS SELECT 1", R, "PREPARE"),
    ("VACUUM", "VACUUM", R, "VACUUM"),
    ("UPDATE EXTENSIONS", "UPDATE EXTENSIONS", R, "UPDATE"),
    ("information_schema", "SELECT * FROM information_schema.tables", E, "tables you can use"),
]


@pytest.mark.parametrize(("sql", "expected", "needle"), [e[1:] for e in ESCAPES], ids=[e[0] for e in ESCAPES])
def test_escape_attempt_is_refused_and_the_lake_unchanged(sandbox, lake, tmp_path, sql, expected, needle):
    parent = tmp_path / "data"
    outside = tmp_path / "outside.parquet"
    pq.write_table(pa.table({"secret": ["outside the lake"]}), outside)
    os.symlink(outside, Path(lake.root, PART, "link.parquet"))
    before = fingerprint(lake)
    secret_frame = pa.table({"secret": ["python variable"]})  # a replacement scan would read it
    with pytest.raises(expected) as caught:
        rows(sandbox, sql.format(lake=lake.root, parent=parent))
    assert type(caught.value) is expected
    assert needle in str(caught.value)
    assert "\n" not in str(caught.value)
    assert fingerprint(lake) == before
    assert rows(sandbox, "SELECT count(*) AS n FROM state") == [{"n": 5}]  # still serving, same data
    del secret_frame


def test_the_battery_is_big_enough():
    assert len({label for label, *_ in ESCAPES}) >= 30


# -- the second line of defence: the locked connection on its own --------------------------------------------


@pytest.fixture
def raw_cursor(sandbox):
    """A cursor of the locked database *without* the statement guard (what a guard bug would give)."""
    generation = sandbox._acquire()
    cursor = generation.con.cursor()
    yield cursor
    cursor.close()
    sandbox._release(generation)


@pytest.mark.parametrize(
    "sql",
    [
        "FROM read_text('/etc/passwd')",
        "FROM read_text('{lake}/../../../../etc/passwd')",
        "FROM read_parquet('{lake}/" + PART + "/link.parquet')",
        "FROM read_blob('{lake}/state/_delta_log/00000000000000000000.json')",
        "FROM glob('{lake}/**')",
        "COPY (FROM state) TO '{lake}/" + PART + "/inj.parquet' (FORMAT parquet)",
        "COPY (SELECT 1) TO '{parent}/out.csv'",
        "ATTACH '{lake}/x.duckdb' AS f",
        "SET threads = 64",
        "SET enable_external_access = true",
        "LOAD httpfs",
        "SELECT * FROM secret_frame",
    ],
)
def test_locked_connection_alone_reads_only_snapshot_files(raw_cursor, lake, tmp_path, sql):
    import duckdb

    outside = tmp_path / "outside.parquet"
    pq.write_table(pa.table({"secret": ["outside the lake"]}), outside)
    os.symlink(outside, Path(lake.root, PART, "link.parquet"))
    before = fingerprint(lake)
    secret_frame = pa.table({"secret": ["python variable"]})
    with pytest.raises(duckdb.Error):
        raw_cursor.execute(sql.format(lake=lake.root, parent=tmp_path / "data")).fetchall()
    assert fingerprint(lake) == before
    del secret_frame


def test_replacement_scans_are_off(sandbox):
    state_copy = pa.table({"x": [1]})
    with pytest.raises(QueryError, match="Unknown table 'state_copy'"):
        rows(sandbox, "SELECT * FROM state_copy")
    del state_copy


# -- bombs: stopped by the time or memory limit, with a clear error, and the sandbox goes on -----------------


@pytest.mark.parametrize(
    ("sql", "limit"),
    [
        ("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r", "time"),
        ("SELECT sum(a.range * b.range) FROM range(1000000) a, range(1000000) b", "time"),
        ("SELECT count(*) FROM state a, state b, range(1000000000) c", "time"),
        ("SELECT length(string_agg(repeat('x', 1000000), '')) FROM range(1000)", "memory"),
        (
            "WITH RECURSIVE r(n, s) AS (SELECT 1, 'x' UNION ALL SELECT n + 1, s || s FROM r WHERE n < 64) "
            "SELECT max(length(s)) FROM r",
            "memory",
        ),
    ],
    ids=["recursive CTE", "cross join", "cross join over views", "string_agg", "doubling string"],
)
def test_bomb_is_stopped_with_a_clear_error(sandbox, lake, sql, limit):
    before = fingerprint(lake)
    with pytest.raises(QueryError) as caught:
        rows(sandbox, sql)
    message = str(caught.value)
    if limit == "time":
        assert message == "The query exceeded the 3 s time limit and was stopped"
    else:
        assert message.startswith("The query exceeded the sandbox's memory limit (256MB)")
    assert fingerprint(lake) == before
    assert rows(sandbox, "SELECT count(*) AS n FROM state") == [{"n": 5}]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT length(repeat('x', 10000000000)) AS n",
        "SELECT len(range(400000000)) AS n",
        "SELECT length(lpad('x', 2000000000, 'y')) AS n",
        "SELECT length(repeat('x', seq)) FROM state",
        "SELECT len(list_resize([1], ?)) AS n",
    ],
)
def test_one_huge_value_is_refused_before_it_runs(sandbox, sql):
    """DuckDB 2.0.1 neither counts one huge value against memory_limit nor interrupts the call building it."""
    with pytest.raises(QueryRefused, match="may build at most 1,000,000"):
        rows(sandbox, sql, [10**9] if "?" in sql else None)


def test_timed_out_sandbox_answers_the_next_query(sandbox):
    with pytest.raises(QueryError, match="time limit"):
        rows(sandbox, "SELECT sum(a.range * b.range) FROM range(1000000) a, range(1000000) b")
    assert rows(sandbox, "SELECT device_id, count(*) AS n FROM state GROUP BY 1 ORDER BY 1") == [
        {"device_id": "robot-07", "n": 2},
        {"device_id": "shuttle-01", "n": 3},
    ]


def test_two_queries_answer_while_a_third_is_being_stopped(sandbox):
    bad_started = threading.Event()
    outcomes: dict[str, Any] = {}

    def bad() -> None:
        try:
            result = sandbox.query("SELECT sum(a.range * b.range) FROM range(1000000) a, range(1000000) b")
        except QueryError as exc:  # the first batch is read inside query(): the whole run happens here
            outcomes["bad"] = str(exc)
        else:
            result.close()

    def good(name: str, sql: str) -> None:
        bad_started.wait()
        outcomes[name] = rows(sandbox, sql)
        outcomes[f"{name} done while bad ran"] = "bad" not in outcomes

    threads = [
        threading.Thread(target=bad),
        threading.Thread(target=good, args=("count", "SELECT count(*) AS n FROM state")),
        threading.Thread(
            target=good, args=("max", "SELECT max(seq) AS m FROM state WHERE device_id = 'robot-07'")
        ),
    ]
    threads[0].start()
    bad_started.set()
    for t in threads[1:]:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert outcomes["count"] == [{"n": 5}] and outcomes["max"] == [{"m": 2}]
    assert outcomes["count done while bad ran"] and outcomes["max done while bad ran"]
    assert outcomes["bad"] == "The query exceeded the 3 s time limit and was stopped"


# -- what analysts can do -----------------------------------------------------------------------------------


def test_aggregates_ctes_windows_and_parameters(sandbox):
    assert rows(
        sandbox, "SELECT count(*) AS n, count(DISTINCT device_id) AS d, sum(seq) AS s FROM state"
    ) == [{"n": 5, "d": 2, "s": 9}]
    assert rows(
        sandbox,
        "WITH per AS (SELECT device_id, seq, "
        "row_number() OVER (PARTITION BY device_id ORDER BY seq DESC) AS rn FROM state) "
        "SELECT device_id, seq FROM per WHERE rn = 1 ORDER BY device_id",
    ) == [{"device_id": "robot-07", "seq": 2}, {"device_id": "shuttle-01", "seq": 3}]
    assert rows(
        sandbox, "SELECT count(*) AS n FROM state WHERE device_id = ? AND seq >= ?", ["shuttle-01", 2]
    ) == [{"n": 2}]
    assert rows(sandbox, "SELECT count(*) AS n FROM state WHERE device_id = $d", {"d": "robot-07"}) == [
        {"n": 2}
    ]
    injected = "x' OR '1'='1"
    assert rows(sandbox, "SELECT count(*) AS n FROM state WHERE device_id = ?", [injected]) == [{"n": 0}]
    assert rows(sandbox, "SELECT reason, count(*) AS n FROM quarantine GROUP BY 1") == [
        {"reason": "invalid_json", "n": 2}
    ]
    assert rows(sandbox, "SELECT count(*) AS n FROM event") == [{"n": 0}]
    assert {r["column_name"] for r in rows(sandbox, "DESCRIBE state")} >= {"device_id", "ts", "lat", "lon"}
    assert {r["name"] for r in rows(sandbox, "SHOW TABLES")} == {"state", "event", "network", "quarantine"}
    assert rows(sandbox, "SELECT count(*) AS n FROM range(10) JOIN state ON range = seq") == [{"n": 5}]


@pytest.mark.parametrize(
    ("sql", "params", "needle"),
    [
        ("SELEC 1", None, "Parser Error"),
        ("   ", None, "Empty SQL statement"),
        ("-- just a comment", None, "Empty SQL statement"),
        (
            "SELECT * FROM trips",
            None,
            "Unknown table 'trips'; tables you can use: event, network, quarantine, state",
        ),
        ("SELECT no_such_column FROM state", None, "no_such_column"),
        ("SELECT * FROM state WHERE seq = ?", None, "parameter"),
        ("SELECT * FROM state WHERE seq = ?", [1, 2], "arameter"),
        ("SELECT 1 / 'x'", None, "Conversion Error"),
    ],
)
def test_user_errors_are_query_errors_that_say_what_went_wrong_first(sandbox, sql, params, needle):
    with pytest.raises(QueryError) as caught:
        rows(sandbox, sql, params)
    assert type(caught.value) is QueryError
    assert needle in str(caught.value).splitlines()[0]


def _caret_under(message: str, word: str) -> bool:
    """The ``LINE n: ...`` line of ``message`` and, below it, carets that start under ``word``."""
    lines = message.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("LINE "))
    return lines[at + 1].index("^") == lines[at].index(word)


@pytest.mark.parametrize(
    ("sql", "hint", "culprit"),
    [
        ("SELECT speed FROM state", 'Candidate bindings: "speed_mps"', "speed"),
        ("SELEC 1", "syntax error", "SELEC"),
        (
            "SELECT device_id, count(*) FROM state",
            "Either add it to the GROUP BY list",
            "device_id",
        ),
        ("SELECT lenght(device_id) FROM state", 'Did you mean "length"', "lenght"),
    ],
)
def test_duckdbs_hints_and_the_caret_are_kept(sandbox, sql, hint, culprit):
    with pytest.raises(QueryError) as caught:
        rows(sandbox, sql)
    message = str(caught.value)
    assert hint in message
    assert f"LINE 1: {sql}" in message.splitlines()
    assert _caret_under(message, culprit), message


def test_a_long_list_of_candidates_is_cut(sandbox):
    with pytest.raises(QueryError) as caught:
        rows(sandbox, "SELECT list_value(1) + 1")
    lines = str(caught.value).splitlines()
    assert "Candidate functions:" in lines[1]
    assert lines[-3].startswith("  ... and ") and lines[-3].endswith(" more")
    assert len(lines) <= 14 and lines[-2].startswith("LINE 1: ")


def test_errors_never_show_host_paths(sandbox, lake):
    """A file the snapshot lists is gone (say, vacuumed under a running query's feet): the error names it
    relative to ``<lake>``, never by its path on the host."""
    rows(sandbox, "SELECT count(*) AS n FROM state")
    victim = lake.snapshot_files("state")[0].removeprefix("file://")
    os.remove(victim)
    with pytest.raises(QueryError) as caught:
        rows(sandbox, "SELECT * FROM state")
    message = str(caught.value)
    assert "<lake>/state/" in message, message
    assert lake.root not in message and str(Path(lake.root).parent) not in message


def test_truncation_is_flagged_and_batches_stream(sandbox):
    # a billion rows: materializing them would break the 256MB memory limit and the 3 s time limit
    with sandbox.query("SELECT range AS i, repeat('x', 100) AS pad FROM range(1000000000)") as result:
        sizes = [b.num_rows for b in result.batches(rows_per_batch=300)]
        assert sizes == [300, 300, 300, 100]
        assert result.rows == 1000 and result.truncated
    with sandbox.query("SELECT range AS i FROM range(1000)") as exact:
        assert exact.fetch_all().num_rows == 1000 and not exact.truncated
    with sandbox.query("SELECT range AS i FROM range(1001)") as over:
        assert over.fetch_all().num_rows == 1000 and over.truncated
    with sandbox.query("SELECT * FROM state WHERE false") as empty:
        table = empty.fetch_all()
        assert table.num_rows == 0 and not empty.truncated and "device_id" in table.schema.names


def test_a_result_closed_early_frees_its_cursor(sandbox):
    for _ in range(50):
        result = sandbox.query("SELECT range FROM range(100000000)")
        next(iter(result.batches(10)))
        result.close()
    assert rows(sandbox, "SELECT 1 AS one") == [{"one": 1}]


def test_new_commits_are_seen_and_running_results_finish_on_their_snapshot(sandbox, lake):
    running = sandbox.query("SELECT seq FROM state ORDER BY seq")
    lake.append("state", state_rows([9], device="bus-02"))
    assert rows(sandbox, "SELECT count(*) AS n FROM state") == [{"n": 6}]
    assert [r["seq"] for r in running.fetch_all().to_pylist()] == [1, 1, 2, 2, 3]


def test_setup_adds_macros_and_views_that_analysts_cannot_change(lake, tmp_path):
    def setup(con):
        con.execute("CREATE MACRO speed_kmh(mps) AS mps * 3.6")
        con.execute("CREATE VIEW fast AS SELECT device_id, speed_kmh(speed_mps) AS kmh FROM state")
        con.execute("CREATE MACRO of_device(d) AS TABLE SELECT * FROM state WHERE device_id = d")

    with Sandbox(lake, replace(LIMITS, temp_dir=tmp_path / "t"), setup=setup) as box:
        assert box.relations == {"state", "event", "network", "quarantine", "fast"}
        assert rows(box, "SELECT max(kmh) AS k FROM fast") == [{"k": pytest.approx(16.2)}]
        assert rows(box, "SELECT count(*) AS n FROM of_device('robot-07')") == [{"n": 2}]
        with pytest.raises(QueryRefused, match="DROP"):
            rows(box, "DROP VIEW fast")
        with pytest.raises(QueryRefused, match="CREATE"):
            rows(box, "CREATE OR REPLACE MACRO speed_kmh(mps) AS 0")


def test_missing_lake_is_a_lake_error(tmp_path):
    from store.errors import LakeError

    with Sandbox(Lake(tmp_path / "nowhere")) as box, pytest.raises(LakeError, match="No lake at"):
        box.query("SELECT 1")


def test_own_temp_folder_is_removed_on_close(lake):
    box = Sandbox(lake, replace(LIMITS, temp_dir=None))
    assert rows(box, "SELECT 1 AS one") == [{"one": 1}]
    folder = box.temp_dir
    assert folder.is_dir()
    box.close()
    assert not folder.exists()
