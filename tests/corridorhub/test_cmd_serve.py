"""``corridorhub serve`` starts the API on the given port, with keys from ``corridorhub keys create``."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from store.keys import KeyStore
from store.lake import Lake


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_serve_answers_healthz_and_sql_with_a_key(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    Lake(lake).ensure_tables()
    key = KeyStore(lake / "_hub" / "keys.json").create("analyst", "ward")
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "corridorhub", "serve", "--lake", str(lake), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                health = httpx.get(f"{base}/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
                assert time.monotonic() < deadline, "serve did not answer within 30 s"
                time.sleep(0.1)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        answer = httpx.post(
            f"{base}/v1/sql",
            json={"sql": "SELECT count(*) AS n FROM state"},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert answer.json()["rows"] == [[0]]
        assert httpx.post(f"{base}/v1/sql", json={"sql": "SELECT 1"}).status_code == 401
    finally:
        process.terminate()
        process.wait(timeout=20)


def _wait_for_health(base: str, process: subprocess.Popen[bytes]) -> httpx.Response:
    deadline = time.monotonic() + 30
    while True:
        try:
            return httpx.get(f"{base}/healthz", timeout=2)
        except httpx.TransportError:
            assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
            assert time.monotonic() < deadline, "serve did not answer within 30 s"
            time.sleep(0.1)


def test_serve_before_the_lake_exists_says_so_and_recovers_without_a_restart(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "corridorhub", "serve", "--lake", str(lake), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        health = _wait_for_health(base, process)
        assert health.status_code == 503 and health.json()["error"]["code"] == "lake_unavailable"
        Lake(lake).ensure_tables()  # ingest starts and creates it
        assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
    finally:
        process.terminate()
        output = process.communicate(timeout=20)[0].decode()
    [warning] = [line for line in output.splitlines() if "No lake at" in line]
    assert f"WARNING corridorhub.serve: No lake at {lake} yet: /healthz" in warning
    assert "`corridorhub ingest` creates the lake when it starts" in warning
