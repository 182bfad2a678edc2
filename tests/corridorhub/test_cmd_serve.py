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
