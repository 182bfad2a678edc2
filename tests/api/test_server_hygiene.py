"""The service towards slow, odd or curious clients: real sockets against the real uvicorn configuration of
``corridorhub serve`` (``corridorhub.cmd_serve.server_config``), and the app through ``TestClient``.

The timeouts here are the ones the settings state (1-2 s in these tests); the waits allow several times
that, since the machine is shared.
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import uvicorn
from api_harness import SMALL_DATASET, SMALL_VERSION, Hub, _free_port, write_release_folder
from fastapi.testclient import TestClient

from api import create_app
from corridorhub.cmd_serve import server_config
from store.settings import Settings


@contextmanager
def running(settings: Settings) -> Iterator[tuple[str, int]]:
    """``corridorhub serve``'s uvicorn server for ``settings`` on a free port, in a thread."""
    settings = replace(settings, host="127.0.0.1", port=_free_port(), log_level="WARNING")
    server = uvicorn.Server(server_config(create_app(settings), settings))
    thread = threading.Thread(target=server.run, name="hygiene-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield settings.host, settings.port
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def _closed_by_server(sock: socket.socket, within_s: float) -> bool:
    """True when the server closes ``sock`` (EOF or reset) before ``within_s`` passes."""
    sock.settimeout(within_s)
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def test_a_slow_header_connection_is_closed(hub: Hub) -> None:
    settings = replace(hub.settings, http_header_timeout_s=1.0, http_keep_alive_s=1.0)
    with running(settings) as (host, port):
        slow = socket.create_connection((host, port))
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # the headers never end
        started = time.monotonic()
        assert _closed_by_server(slow, within_s=15), "a connection with unfinished headers stayed open"
        assert time.monotonic() - started >= 0.9  # not before the timeout: it was the timeout
        slow.close()
        idle = socket.create_connection((host, port))  # connects and says nothing at all
        assert _closed_by_server(idle, within_s=15)
        idle.close()
        assert httpx.get(f"http://{host}:{port}/healthz", timeout=10).status_code == 200  # still serving


def test_a_keep_alive_connection_gets_the_header_timeout_for_its_next_request(hub: Hub) -> None:
    settings = replace(hub.settings, http_header_timeout_s=1.0, http_keep_alive_s=30.0)
    with running(settings) as (host, port):
        conn = socket.create_connection((host, port))
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        conn.settimeout(10)
        assert conn.recv(65536).startswith(b"HTTP/1.1 200")
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # the second request's headers stall
        assert _closed_by_server(conn, within_s=15)
        conn.close()


def _read_response(conn: socket.socket) -> tuple[bytes, bytes]:
    """The head and the body of one response with a Content-Length, however it is cut into segments."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536) or b"\0"  # a closed connection: the assertions below say so
        assert not data.endswith(b"\0"), data
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = conn.recv(65536)
        assert chunk, (head, body)
        body += chunk
    return head, body


def test_a_stalled_body_is_408(hub: Hub) -> None:
    settings = replace(hub.settings, http_body_timeout_s=1.0, http_header_timeout_s=30.0)
    with running(settings) as (host, port):
        conn = socket.create_connection((host, port))
        conn.sendall(
            b"POST /v1/sql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + hub.analyst.encode() + b'\r\nContent-Length: 100\r\n\r\n{"sql": '
        )
        conn.settimeout(15)
        head, body = _read_response(conn)
        conn.close()
    assert head.startswith(b"HTTP/1.1 408"), head[:200]
    error = json.loads(body)["error"]
    assert error["code"] == "request_timeout" and "not all received within 1 s" in error["message"]


def test_a_body_trickled_a_byte_at_a_time_is_408_at_the_deadline(hub: Hub) -> None:
    """One deadline for the whole body: a byte every 0.3 s (the gap far below the 1.5 s timeout) would take
    60 s to send these 200 bytes; the answer is a 408 long before."""
    settings = replace(hub.settings, http_body_timeout_s=1.5, http_header_timeout_s=30.0)
    with running(settings) as (host, port):
        conn = socket.create_connection((host, port))
        conn.sendall(
            b"POST /v1/sql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + hub.analyst.encode() + b"\r\nContent-Length: 200\r\n\r\n"
        )
        stop = threading.Event()

        def trickle() -> None:
            while not stop.wait(0.3):
                try:
                    conn.sendall(b" ")
                except OSError:
                    return

        sender = threading.Thread(target=trickle, daemon=True)
        sender.start()
        conn.settimeout(30)
        try:
            head, body = _read_response(conn)
        finally:
            stop.set()
            sender.join(timeout=5)
            conn.close()
    assert head.startswith(b"HTTP/1.1 408"), head[:200]
    assert json.loads(body)["error"]["code"] == "request_timeout"


def _assert_json_error(head: bytes, body: bytes, status: int, code: str) -> dict[str, object]:
    """uvicorn's own refusals in the API's one error shape (tests/api/test_errors.py), id and all."""
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), head[:200]
    headers = dict(
        (name.strip().lower(), value.strip())
        for name, _, value in (line.partition(b":") for line in head.split(b"\r\n")[1:])
    )
    assert headers[b"content-type"] == b"application/json", head
    error = json.loads(body)["error"]
    assert set(error) == {"status", "code", "message", "request_id"}, error
    assert error["status"] == status and error["code"] == code, error
    assert error["request_id"] == headers[b"x-request-id"].decode() and len(error["request_id"]) >= 8
    assert isinstance(error["message"], str) and len(error["message"]) > 10
    return error


_POST = b"POST /v1/sql HTTP/1.1\r\nHost: x\r\n"
MALFORMED = {
    "garbage request line": (b"GARBAGE\r\n\r\n", 400, "bad_request"),
    "Content-Length abc": (_POST + b"Content-Length: abc\r\n\r\n", 400, "bad_request"),
    "Content-Length -1": (_POST + b"Content-Length: -1\r\n\r\n", 400, "bad_request"),
    "Content-Length 10^23": (
        b"POST /v1/sql HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        413,
        "body_too_large",
    ),
    "non-UTF-8 path": (b"GET /\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad_request"),
    "malformed chunk size": (
        b"POST /v1/sql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        400,
        "bad_request",
    ),
}  # fmt: skip


def test_requests_uvicorn_cannot_parse_get_the_json_error_shape(hub: Hub) -> None:
    settings = replace(hub.settings, http_header_timeout_s=30.0)
    with running(settings) as (host, port):
        for label, (raw, status, code) in MALFORMED.items():
            conn = socket.create_connection((host, port))
            conn.sendall(raw)
            conn.settimeout(15)
            head, body = _read_response(conn)
            conn.close()
            error = _assert_json_error(head, body, status, code)
            assert "Invalid HTTP request received" not in str(error), label


def test_connections_beyond_the_cap_get_503(hub: Hub) -> None:
    settings = replace(hub.settings, http_max_connections=2, http_header_timeout_s=30.0)
    with running(settings) as (host, port):
        held = [socket.create_connection((host, port)) for _ in range(2)]
        deadline = time.monotonic() + 15  # uvicorn counts a connection once its loop has accepted it
        while (refused := httpx.get(f"http://{host}:{port}/healthz", timeout=10)).status_code != 503:
            assert time.monotonic() < deadline, f"a third connection was still served ({refused.status_code})"
            time.sleep(0.1)
        error = refused.json()["error"]
        assert error["code"] == "too_many_connections" and "2 connections" in error["message"]
        assert (
            error["request_id"] == refused.headers["X-Request-ID"] and refused.headers["Retry-After"] == "1"
        )
        for sock in held:
            sock.close()
        deadline = time.monotonic() + 15
        while httpx.get(f"http://{host}:{port}/healthz", timeout=10).status_code != 200:
            assert time.monotonic() < deadline, "the service did not recover after the connections closed"
            time.sleep(0.2)


def test_healthz_names_no_host_path(hub: Hub, client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert str(hub.settings.lake) not in response.text and "/" not in json.dumps(response.json())
    assert set(response.json()) == {"status", "tables"}


def test_healthz_of_a_missing_lake_names_no_host_path(tmp_path: Path) -> None:
    with TestClient(create_app(Settings(lake=tmp_path / "absent"))) as client:
        response = client.get("/healthz")
    assert response.status_code == 503 and str(tmp_path) not in response.text


@pytest.mark.parametrize(
    ("params", "name"),
    [([2**63], "1"), ([1, -(2**63) - 1], "2"), ({"big": 2**64}, "big")],
)
def test_integer_parameters_outside_int64_are_400(
    hub: Hub, client: TestClient, params: object, name: str
) -> None:
    response = client.post(
        "/v1/sql", json={"sql": "SELECT ? AS v", "params": params}, headers=hub.headers("analyst")
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "bad_parameter" and f"Parameter {name} " in error["message"]


def test_int64_extremes_and_floats_keep_their_type(hub: Hub, client: TestClient) -> None:
    response = client.post(
        "/v1/sql",
        json={
            "sql": "SELECT ? AS a, ? AS b, ? AS c, ? AS d",
            "params": [2**63 - 1, -(2**63), 1.5, 7],
        },
        headers=hub.headers("analyst"),
    )
    assert response.status_code == 200, response.text
    row = response.json()["rows"][0]
    assert row == [2**63 - 1, -(2**63), 1.5, 7] and isinstance(row[3], int)


def test_symlinked_dataset_version_and_file_are_not_followed(tmp_path: Path) -> None:
    releases = tmp_path / "releases"
    real = write_release_folder(releases, SMALL_DATASET, SMALL_VERSION, {"data.csv": b"a\r\n1\r\n"})
    outside = write_release_folder(tmp_path / "elsewhere", "secret", "v1", {"data.csv": b"s\r\n9\r\n"})
    (releases / SMALL_DATASET / "v9").symlink_to(outside, target_is_directory=True)  # a version folder
    (releases / "linked-dataset").symlink_to(outside.parent, target_is_directory=True)  # a dataset folder
    (real / "copy.csv").symlink_to(real / "data.csv")  # a file beside its target, in the same folder
    with TestClient(create_app(Settings(lake=tmp_path / "lake", releases=releases))) as client:
        versions = client.get(f"/v1/datasets/{SMALL_DATASET}").text
        assert "v9" not in versions
        assert client.get(f"/v1/datasets/{SMALL_DATASET}/releases/v9/data.csv").status_code == 404
        assert "linked-dataset" not in client.get("/v1/datasets").text
        assert client.get("/v1/datasets/linked-dataset/releases/v1/data.csv").status_code == 404
        assert (
            client.get(f"/v1/datasets/{SMALL_DATASET}/releases/{SMALL_VERSION}/copy.csv").status_code == 404
        )
        assert (
            client.get(f"/v1/datasets/{SMALL_DATASET}/releases/{SMALL_VERSION}/data.csv").status_code == 200
        )


def test_every_answer_carries_a_request_id_and_errors_repeat_it(hub: Hub, client: TestClient) -> None:
    ok = client.get("/healthz")
    error = client.post("/v1/sql", json={"sql": "SELEC 1"}, headers=hub.headers("analyst"))
    assert (
        len(ok.headers["X-Request-ID"]) == 16 and ok.headers["X-Request-ID"] != error.headers["X-Request-ID"]
    )
    assert error.json()["error"]["request_id"] == error.headers["X-Request-ID"]
    given = client.get("/nowhere", headers={"X-Request-ID": "client-id-42"})
    assert given.headers["X-Request-ID"] == "client-id-42" == given.json()["error"]["request_id"]
    odd = client.get("/nowhere", headers={"X-Request-ID": "a b\tc<script>"})
    assert odd.headers["X-Request-ID"] != "a b\tc<script>"  # not a plain token: replaced


def test_log_lines_about_a_request_carry_its_id(hub: Hub, caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(hub.settings)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("boom")

    with (
        caplog.at_level(logging.ERROR, logger="corridorhub.api"),
        TestClient(app, raise_server_exceptions=False) as client,
    ):
        response = client.get("/boom")
    rid = response.headers["X-Request-ID"]
    assert response.json()["error"]["request_id"] == rid
    assert any(rid in record.getMessage() for record in caplog.records), caplog.text


def _nested_subqueries(depth: int) -> str:
    sql = "SELECT 1 AS x"
    for level in range(depth):
        sql = f"SELECT * FROM ({sql}) t{level}"
    return sql


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT " + "abs(" * 450 + "1" + ")" * 450,
        _nested_subqueries(600),
        "SELECT " + "(" * 5000 + "1" + ")" * 5000,
    ],
    ids=["abs 450 deep", "600 nested subqueries", "5000 parentheses"],
)
def test_deep_nesting_is_a_400_with_a_message(hub: Hub, client: TestClient, sql: str) -> None:
    response = client.post("/v1/sql", json={"sql": sql}, headers=hub.headers("analyst"))
    assert response.status_code == 400, response.text[:300]
    message = response.json()["error"]["message"]
    assert "nested too deeply" in message or "Max expression depth" in message, message


def test_corridorhub_serve_logs_each_access_with_its_request_id(hub: Hub, tmp_path: Path) -> None:
    """The real command in its own process: the access line names the id the answer carried."""
    port = _free_port()
    log = tmp_path / "serve.log"
    command = [
        sys.executable,
        "-m",
        "corridorhub",
        "serve",
        "--lake",
        str(hub.settings.lake),
        "--port",
        str(port),
    ]
    with log.open("wb") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
                break
            except httpx.TransportError:
                assert server.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        assert answer.status_code == 200 and str(hub.settings.lake) not in answer.text
        rid = answer.headers["X-Request-ID"]
    finally:
        server.terminate()
        server.wait(timeout=30)
    lines = [line for line in log.read_text().splitlines() if "GET /healthz" in line]
    assert any(f"[{rid}]" in line for line in lines), log.read_text()
