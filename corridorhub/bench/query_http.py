"""``bench query``, HTTP part: latency of a small ``POST /v1/sql`` under concurrent clients.

The service runs as ``corridorhub serve`` (``api.create_app(settings)`` under uvicorn) in a process of its
own on a free loopback port, with the bench's settings (config file, ``CORRIDORHUB_*``), the generated lake
and an analyst key made for the run, so that its CPU time is not shared with the clients' interpreter.
``clients`` threads each keep one HTTP/1.1 connection (``http.client``: a thin client, so that the clients
take as little of the 2 cores as possible) and send requests back to back until ``requests`` have been
sent in all.  A latency is from just before the request is written to the last byte of the response read.
A first round of one request per client is not counted (connections, the sandbox's first database).
"""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from corridorhub.bench._measure import percentile
from store.keys import KeyStore

SMALL_QUERY = "SELECT kind, count(*) AS events FROM event GROUP BY kind ORDER BY kind"
_START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class HttpLatency:
    requests: int
    clients: int
    latencies_s: tuple[float, ...]
    seconds: float
    errors: int

    @property
    def p50_ms(self) -> float:
        return percentile(self.latencies_s, 50) * 1000

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies_s, 99) * 1000

    @property
    def max_ms(self) -> float:
        return max(self.latencies_s) * 1000

    @property
    def requests_per_s(self) -> float:
        return len(self.latencies_s) / self.seconds if self.seconds > 0 else 0.0


class ServiceError(RuntimeError):
    """The service did not start, or answered a request with an error."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def running_service(lake: Path, keys_file: Path, log: Path, config_file: str | None) -> Iterator[int]:
    """``corridorhub serve`` on a free loopback port until the block ends; yields the port."""
    port = free_port()
    command = [sys.executable, "-m", "corridorhub", "--log-level", "WARNING"]
    if config_file:
        command += ["--config", config_file]
    command += ["serve", "--lake", str(lake), "--host", "127.0.0.1", "--port", str(port)]
    command += ["--keys-file", str(keys_file)]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_until_healthy(port, process, log)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def analyst_key(keys_file: Path) -> str:
    return KeyStore(keys_file).create("analyst", f"bench-query-{int(time.time())}")


def measure_latency(port: int, key: str, requests: int, clients: int, sql: str = SMALL_QUERY) -> HttpLatency:
    """Send ``requests`` POST /v1/sql of ``sql`` from ``clients`` threads; the latency of each."""
    body = json.dumps({"sql": sql, "format": "json"}).encode()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    left = [requests]
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    start = threading.Barrier(clients)

    def client() -> None:
        con = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        try:
            _post(con, body, headers)  # warm-up, not counted
            start.wait()
            while True:
                with lock:
                    if left[0] <= 0:
                        return
                    left[0] -= 1
                began = time.perf_counter()
                status = _post(con, body, headers)
                elapsed = time.perf_counter() - began
                with lock:
                    latencies.append(elapsed)
                    if status != 200:
                        errors.append(str(status))
        except (OSError, http.client.HTTPException) as exc:
            with lock:
                errors.append(repr(exc))
        finally:
            con.close()

    threads = [threading.Thread(target=client, name=f"bench-client-{i}") for i in range(clients)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - began
    if errors and not latencies:
        raise ServiceError(f"every request failed: {errors[0]}")
    return HttpLatency(requests, clients, tuple(latencies), seconds, len(errors))


def _post(con: http.client.HTTPConnection, body: bytes, headers: dict[str, str]) -> int:
    con.request("POST", "/v1/sql", body=body, headers=headers)
    response = con.getresponse()
    payload = response.read()
    if response.status != 200:
        raise ServiceError(f"POST /v1/sql answered {response.status}: {payload[:300]!r}")
    return response.status


def _wait_until_healthy(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(encoding="utf-8", errors="replace")[-2000:]
            raise ServiceError(f"corridorhub serve exited with {process.returncode}: {tail}")
        try:
            con = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            con.request("GET", "/healthz")
            if con.getresponse().status == 200:
                con.close()
                return
            con.close()
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.1)
    raise ServiceError(f"corridorhub serve did not answer /healthz within {_START_TIMEOUT_S:g} s")
