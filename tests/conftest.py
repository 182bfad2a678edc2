"""Fixtures shared by the whole suite: a real mosquitto started from deploy/mosquitto.conf, and a lake folder.

The broker is never mocked and never skipped: without mosquitto the broker fixtures fail with the
install hint (``./dev test`` installs it when it can).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from corridorhub.broker import EmbeddedBroker
from store.errors import BrokerError


def _started_broker(data_dir: Path) -> EmbeddedBroker:
    try:
        return EmbeddedBroker(data_dir).start()
    except BrokerError as exc:
        pytest.fail(f"the tests need a real mosquitto: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """One mosquitto for the session; use your own client ids and topics. Do not stop or restart it."""
    started = _started_broker(tmp_path_factory.mktemp("broker"))
    yield started
    started.stop()


@pytest.fixture
def fresh_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A mosquitto of this test's own, free to stop, kill and restart (same port, same persistence)."""
    started = _started_broker(tmp_path / "broker")
    yield started
    started.stop()


@pytest.fixture
def lake_dir(tmp_path: Path) -> Path:
    """Where this test's lake lives (created by whoever writes it first)."""
    return tmp_path / "lake"
