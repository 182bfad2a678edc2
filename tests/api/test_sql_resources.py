"""The resource battery of issue 9 against a real ``corridorhub serve`` (its own process, so its RSS is its
own), with small limits: 256 MB per query, 3 s, 3 workers.

Each huge value and each runaway query is stopped within the deadline + 2 s with a 4xx naming the limit;
throughout, ``/healthz`` and an operator route answer within 1 s and the service's RSS stays flat; afterwards
the pool is back to full size.  The time bounds are the issue's; the polls are generous for a shared
2-core machine (each answer is timed on its own, one poll at a time).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest
from api_harness import DEVICES, ROWS_PER_DEVICE, _free_port, state_table

from store.keys import KeyStore
from store.lake import Lake

RESULT_MB = 16  # what one query hands back at most (sql_max_result_mb)
TIMEOUT_S = 3.0
WORKERS = 3
ATTACKS = {
    "repeat": ("SELECT repeat(repeat('x', 1000000), 1500) AS v", "sql_memory_limit", "256MB"),
    "printf": ("SELECT printf('%*d', 1200000000, 1) AS v", "sql_memory_limit", "256MB"),
    "doubling": (
        "SELECT list_reduce(range(30), lambda acc, x: acc || acc, 'ab') AS v",
        "sql_memory_limit",
        "256MB",
    ),
    "recursive": (
        "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) SELECT count(*) FROM r",
        "sql_timeout",
        "3 s time limit",
    ),
    "cross_join": (
        "SELECT count(*) FROM range(100000000) a, range(100000000) b WHERE a.range + b.range = -1",
        "sql_timeout",
        "3 s time limit",
    ),
}


@dataclass(frozen=True)
class Service:
    url: str
    process: subprocess.Popen[bytes]
    analysts: tuple[str, ...]
    operator: str

    def headers(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    def workers(self) -> list[psutil.Process]:
        children = psutil.Process(self.process.pid).children()
        return [c for c in children if "store._sql_worker" in " ".join(_cmdline(c))]

    def rss_mb(self) -> float:
        return float(psutil.Process(self.process.pid).memory_info().rss) / 2**20

    def wait_for_full_pool(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if len(self.workers()) == WORKERS and _ok(self, "SELECT 1 AS one"):
                return
            time.sleep(0.2)
        raise AssertionError(f"the pool is not back to {WORKERS} workers: {len(self.workers())}")


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


def _ok(service: Service, sql: str) -> bool:
    response = httpx.post(
        f"{service.url}/v1/sql", json={"sql": sql}, headers=service.headers(service.analysts[0]), timeout=30
    )
    return response.status_code == 200


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    folder = tmp_path_factory.mktemp("resources")
    lake = Lake(folder / "lake")
    lake.ensure_tables()
    for device in DEVICES:
        lake.append("state", state_table(device, ROWS_PER_DEVICE))
    keys = KeyStore(folder / "lake" / "_hub" / "keys.json")
    analysts = tuple(keys.create("analyst", f"analyst-{i}") for i in range(20))
    operator = keys.create("operator", "ops")
    port = _free_port()
    env = os.environ | {
        "CORRIDORHUB_SQL_MEMORY_LIMIT": "256MB",
        "CORRIDORHUB_SQL_TIMEOUT_S": str(TIMEOUT_S),
        "CORRIDORHUB_SQL_CONCURRENCY": str(WORKERS),
        "CORRIDORHUB_SQL_THREADS": "1",
        "CORRIDORHUB_SQL_MAX_RESULT_MB": str(RESULT_MB),
    }
    command = [sys.executable, "-m", "corridorhub", "--log-level", "WARNING", "serve", "--lake",
               str(folder / "lake"), "--port", str(port), "--releases", str(folder / "releases")]  # fmt: skip
    with open(folder / "serve.log", "wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    running = Service(f"http://127.0.0.1:{port}", process, analysts, operator)
    try:
        _wait_until_healthy(running, folder / "serve.log")
        running.wait_for_full_pool()
        yield running
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_healthy(service: Service, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise AssertionError(f"corridorhub serve ended: {log.read_text()}")
        try:
            if httpx.get(f"{service.url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("corridorhub serve did not become healthy")


class Watch:
    """Polls /healthz and the operator's /v1/ingest/status and samples the service's RSS while it runs."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.slowest_s = 0.0
        self.statuses: set[int] = set()
        self.rss_mb: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        operator = self.service.headers(self.service.operator)
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                for path, headers in (("/healthz", {}), ("/v1/ingest/status", operator)):
                    started = time.monotonic()
                    response = client.get(f"{self.service.url}{path}", headers=headers)
                    self.slowest_s = max(self.slowest_s, time.monotonic() - started)
                    self.statuses.add(response.status_code)
                self.rss_mb.append(self.service.rss_mb())
                time.sleep(0.1)


def test_huge_values_and_runaway_queries_are_stopped_and_the_service_goes_on(service: Service) -> None:
    baseline_mb = service.rss_mb()
    answers: dict[str, tuple[int, dict[str, str], float]] = {}

    def attack(name: str, key: str) -> None:
        started = time.monotonic()
        response = httpx.post(
            f"{service.url}/v1/sql", json={"sql": ATTACKS[name][0]}, headers=service.headers(key), timeout=60
        )
        answers[name] = (response.status_code, response.json()["error"], time.monotonic() - started)

    with Watch(service) as watch:
        for round_of in (("repeat", "printf", "recursive"), ("doubling", "cross_join")):
            threads = [
                threading.Thread(target=attack, args=(name, service.analysts[i]))
                for i, name in enumerate(round_of)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=60)
        time.sleep(0.5)

    for name, (status, error, seconds) in answers.items():
        _, code, limit = ATTACKS[name]
        assert (status, error["code"]) == (422, code), (name, error)
        assert limit in error["message"], (name, error)
        assert seconds < TIMEOUT_S + 2, (name, seconds)
    assert len(answers) == len(ATTACKS)
    assert watch.statuses == {200} and watch.slowest_s < 1.0, (watch.statuses, watch.slowest_s)
    assert max(watch.rss_mb) - baseline_mb < 64, (baseline_mb, max(watch.rss_mb))  # flat: no query in it
    service.wait_for_full_pool()


def test_a_worker_killed_mid_query_is_a_clear_4xx_and_is_replaced(service: Service) -> None:
    """SIGKILL, as the kernel's OOM killer sends it, to every worker while one runs a query."""
    answer: list[httpx.Response] = []
    sql = ATTACKS["cross_join"][0]

    def run() -> None:
        answer.append(
            httpx.post(f"{service.url}/v1/sql", json={"sql": sql},
                       headers=service.headers(service.analysts[5]), timeout=60)
        )  # fmt: skip

    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(1.0)
    victims = service.workers()
    for worker in victims:
        worker.send_signal(signal.SIGKILL)
    thread.join(timeout=30)
    error = answer[0].json()["error"]
    assert (answer[0].status_code, error["code"]) == (422, "sql_worker_lost"), error
    assert "killed from outside" in error["message"]
    service.wait_for_full_pool()
    assert not {w.pid for w in victims} & {w.pid for w in service.workers()}


def test_a_burst_of_200_requests_from_20_keys_has_no_5xx(service: Service) -> None:
    statuses = asyncio.run(_burst(service, 200))
    assert all(status < 500 for status, _ in statuses), sorted(statuses)
    assert {status for status, _ in statuses} <= {200, 429}
    assert sum(1 for status, _ in statuses if status == 200) >= WORKERS
    assert all(retry is not None for status, retry in statuses if status == 429)
    service.wait_for_full_pool()


async def _burst(service: Service, requests: int) -> list[tuple[int, str | None]]:
    sql = "SELECT device_id, count(*) AS n FROM state GROUP BY 1"
    limits = httpx.Limits(max_connections=requests)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def one(i: int) -> tuple[int, str | None]:
            key = service.analysts[i % len(service.analysts)]
            response = await client.post(
                f"{service.url}/v1/sql", json={"sql": sql}, headers=service.headers(key)
            )
            return response.status_code, response.headers.get("Retry-After")

        return list(await asyncio.gather(*(one(i) for i in range(requests))))


def test_large_results_do_not_grow_the_service(service: Service) -> None:
    """The re-attack: four 900 MB CSV results at once took the service to 6 GB. Each is cut at
    sql_max_result_mb and flagged truncated; the service holds a few of those at most."""
    sql = "SELECT repeat('x', 9000) AS s FROM range(100000)"
    baseline_mb = service.rss_mb()
    answers: list[httpx.Response] = []

    def fetch(key: str, fmt: str) -> None:
        answers.append(
            httpx.post(f"{service.url}/v1/sql", json={"sql": sql, "format": fmt},
                       headers=service.headers(key), timeout=60)
        )  # fmt: skip

    with Watch(service) as watch:
        threads = [
            threading.Thread(target=fetch, args=(service.analysts[10 + i], fmt))
            for i, fmt in enumerate(("csv", "csv", "parquet", "json"))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    assert [a.status_code for a in answers] == [200] * 4
    for answer in answers:
        if answer.headers["content-type"].startswith("application/json"):
            assert answer.json()["truncated"] is True
        else:
            assert answer.headers["X-Corridorhub-Truncated"] == "true"
        assert len(answer.content) < 3 * RESULT_MB * 2**20
    grown = max([*watch.rss_mb, service.rss_mb()]) - baseline_mb
    assert grown < 8 * RESULT_MB + 64, f"the service grew by {grown:.0f} MB"
