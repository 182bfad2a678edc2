"""The SQL worker pool (``store.sql_pool``): real worker processes over a real lake, a 256 MB cap, 3 s.

What an analyst would notice: results as the sandbox gives them, a huge value stopped at once with the cap
named, a stuck or killed worker answered with a clear error and replaced, a new commit seen by the next query.
Time bounds are the issue's (deadline + 2 s), generous for a shared 2-core machine.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import psutil
import pyarrow as pa
import pytest
from lake_rows import state_rows

from store.errors import QueryError, QueryRefused, QueryTimeout
from store.lake import Lake
from store.sandbox import SandboxLimits
from store.sql_pool import QueryMemoryExceeded, QueryWorkerLost, SqlPool

DEVICES = ("shuttle-01", "robot-07")

TIMEOUT_S = 3.0
LIMITS = SandboxLimits(memory_limit="256MB", threads=1, timeout_s=TIMEOUT_S, max_rows=1000)
#: Values built from small constants: DuckDB's memory_limit does not see them, the kernel's cap does.
HUGE_VALUES = {
    "repeat": "SELECT repeat(repeat('x', 1000000), 1500) AS v",
    "printf": "SELECT printf('%*d', 1200000000, 1) AS v",
    "doubling": "SELECT list_reduce(range(30), lambda acc, x: acc || acc, 'ab') AS v",
}
LONG = "SELECT count(*) FROM range(100000000) a, range(100000000) b WHERE a.range + b.range = -1"


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    lake = Lake(tmp_path_factory.mktemp("pool") / "lake")
    lake.ensure_tables()
    for device in DEVICES:
        lake.append("state", state_rows(list(range(30)), device=device))
    return lake


@pytest.fixture(scope="module")
def pool(lake: Lake) -> Iterator[SqlPool]:
    with SqlPool(lake.root, LIMITS, size=2) as pool:
        pool.start()
        assert pool.wait_ready(), "the workers did not start"
        yield pool


def _rows(pool: SqlPool, sql: str) -> list[dict[str, object]]:
    with pool.query(sql) as result:
        rows: list[dict[str, object]] = result.fetch_all().to_pylist()
        return rows


def _back_to_full_size(pool: SqlPool) -> None:
    assert pool.wait_ready(30), f"the pool did not come back to full size: {pool.stats()}"
    assert _rows(pool, "SELECT 42 AS answer") == [{"answer": 42}]


def test_results_come_back_as_the_sandbox_gives_them(pool: SqlPool) -> None:
    with pool.query("SELECT device_id, count(*) AS n FROM state GROUP BY 1 ORDER BY 1") as result:
        assert result.fetch_all().to_pylist() == [{"device_id": d, "n": 30} for d in sorted(DEVICES)]
        assert result.truncated is False
    with pool.query("SELECT 'b'::ENUM('a', 'b') AS e, [1, 2] AS l, {'k': 1} AS s") as result:
        table = result.fetch_all()
    assert pa.types.is_dictionary(table.schema.field("e").type)
    assert table.to_pylist() == [{"e": "b", "l": [1, 2], "s": {"k": 1}}]


def test_the_row_cap_and_batch_sizes_hold(pool: SqlPool) -> None:
    with pool.query("SELECT range AS i FROM range(5000)") as result:
        sizes = [batch.num_rows for batch in result.batches(300)]
        assert result.truncated is True and result.rows == 1000
    assert sizes == [300, 300, 300, 100]


def test_refused_and_bad_sql_keep_their_errors(pool: SqlPool) -> None:
    with pytest.raises(QueryRefused, match="read_csv"):
        _rows(pool, "SELECT * FROM read_csv('/etc/passwd')")
    with pytest.raises(QueryError, match="Referenced column"):
        _rows(pool, "SELECT nope FROM state")
    assert pool.stats().started == 2  # errors do not cost a worker


@pytest.mark.parametrize("name", sorted(HUGE_VALUES))
def test_a_value_over_the_cap_is_stopped_and_the_worker_stays_under_it(pool: SqlPool, name: str) -> None:
    started = time.monotonic()
    with pytest.raises(QueryMemoryExceeded, match=r"memory cap of one query \(256MB\)"):
        _rows(pool, HUGE_VALUES[name])
    assert time.monotonic() - started < TIMEOUT_S + 2
    for pid in pool.pids():  # the kernel's cap held: no worker's peak went far past idle + 256 MB
        peak_kib = int(_status(pid)["VmHWM"].split()[0])
        assert peak_kib * 1024 < 256e6 + 400 * 2**20, (pid, peak_kib)
    _back_to_full_size(pool)


def test_a_value_just_under_the_cap_is_answered_just_over_is_stopped(pool: SqlPool) -> None:
    """The cap is the idle size + 1.5 x 256 MB = 384 MB: a 200 MB value fits, a 450 MB one does not."""
    under = "SELECT length(repeat(repeat('x', 1000000), 200)) AS n"
    assert _rows(pool, under) == [{"n": 200_000_000}]
    with pytest.raises(QueryMemoryExceeded, match="256MB"):
        _rows(pool, "SELECT length(repeat(repeat('x', 1000000), 450)) AS n")
    assert _rows(pool, under) == [{"n": 200_000_000}]  # and the worker it ran in has its room again
    _back_to_full_size(pool)


def test_a_killed_worker_is_a_clear_error_and_is_replaced(pool: SqlPool) -> None:
    """SIGKILL from outside, as the kernel's OOM killer sends it."""
    failure: list[BaseException] = []
    thread = threading.Thread(target=_run_expecting_failure, args=(pool, LONG, failure))
    thread.start()
    victim = _busy_worker(pool)
    os.kill(victim, signal.SIGKILL)
    thread.join(timeout=10)
    assert isinstance(failure[0], QueryWorkerLost)
    assert "killed from outside" in str(failure[0]) and "256MB" in str(failure[0])
    assert victim not in pool.pids()
    _back_to_full_size(pool)


def test_a_worker_that_does_not_stop_is_killed_at_the_deadline(pool: SqlPool) -> None:
    """A stopped process hears no interrupt, like one stuck in C code: the parent's SIGKILL still ends it."""
    failure: list[BaseException] = []
    thread = threading.Thread(target=_run_expecting_failure, args=(pool, LONG, failure))
    started = time.monotonic()
    thread.start()
    victim = _busy_worker(pool)
    os.kill(victim, signal.SIGSTOP)
    thread.join(timeout=30)
    assert time.monotonic() - started < TIMEOUT_S + 2
    assert isinstance(failure[0], QueryTimeout)
    assert "3 s time limit and its worker process was killed" in str(failure[0])
    assert not psutil.pid_exists(victim) or psutil.Process(victim).status() == psutil.STATUS_ZOMBIE
    _back_to_full_size(pool)


def test_a_result_left_half_read_does_not_leave_a_worker_behind(pool: SqlPool) -> None:
    result = pool.query("SELECT range AS i FROM range(1000)")
    next(result.batches(10))
    result.close()
    _back_to_full_size(pool)
    assert pool.stats().busy == 0


def test_a_new_commit_is_seen_by_the_next_query(pool: SqlPool, lake: Lake) -> None:
    before = _rows(pool, "SELECT count(*) AS n FROM state")[0]["n"]
    lake.append("state", state_rows(list(range(5)), device="late-device"))
    assert [_rows(pool, "SELECT count(*) AS n FROM state")[0]["n"] for _ in range(2)] == [before + 5] * 2


def _run_expecting_failure(pool: SqlPool, sql: str, failure: list[BaseException]) -> None:
    try:
        _rows(pool, sql)
    except QueryError as exc:
        failure.append(exc)


def _busy_worker(pool: SqlPool) -> int:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        stats = pool.stats()
        if stats.busy:
            with pool._lock:  # the test needs to know which worker runs the query
                busy = [w.pid for w in pool._busy]
            time.sleep(0.3)  # let it get into the query
            return busy[0]
        time.sleep(0.01)
    raise AssertionError("no worker took the query")


def _status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        return dict(line.rstrip("\n").split(":\t", 1) for line in status if ":\t" in line)


def test_an_idle_worker_killed_from_outside_is_replaced_before_anyone_needs_it(pool: SqlPool) -> None:
    victims = pool.pids()
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while not (pool.stats().idle == 2 and not set(victims) & set(pool.pids())):
        assert time.monotonic() < deadline, pool.stats()
        time.sleep(0.1)
    assert _rows(pool, "SELECT 1 AS one") == [{"one": 1}]  # no query met a dead worker


def test_a_result_larger_than_its_byte_budget_is_cut_and_flagged_truncated(lake: Lake) -> None:
    """The re-attack's 900 MB CSV: what a worker hands back (and the service or CLI holds) stays within
    ``max_result_bytes``, flagged truncated like the row cap."""
    limits = SandboxLimits(
        memory_limit="256MB", threads=1, timeout_s=30, max_rows=100_000, max_result_bytes=2**22
    )
    with SqlPool(lake.root, limits, size=1) as small:
        small.start()
        assert small.wait_ready(), "the worker did not start"
        with small.query("SELECT repeat('x', 9000) AS s FROM range(20000)") as result:
            table = result.fetch_all()
            assert result.truncated is True
        assert 0 < table.num_rows < 20_000
        assert table.nbytes <= 2**22
        assert set(table.column("s").to_pylist()) == {"x" * 9000}
        with small.query("SELECT 1 AS one FROM range(10)") as result:  # small results are whole
            assert result.fetch_all().num_rows == 10
            assert result.truncated is False
