"""The API under test: a real lake in ``tmp_path`` filled through ``store.lake.Lake.append``, real keys,
the real app through ``TestClient`` (as a context manager, so the lifespan runs)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from api_harness import (
    DEVICES,
    ROWS_PER_DEVICE,
    SMALL_DATASET,
    SMALL_VERSION,
    Hub,
    state_table,
    write_release_folder,
)
from fastapi.testclient import TestClient

from api import create_app
from store.keys import KeyStore
from store.lake import Lake
from store.settings import Settings


@pytest.fixture
def hub(tmp_path: Path) -> Hub:
    """A lake holding 2 devices x 30 state samples, an analyst, an operator and a revoked key, and a
    releases folder holding one small hand-made release (``SMALL_DATASET``)."""
    lake = Lake(tmp_path / "lake")
    lake.ensure_tables()
    for device in DEVICES:
        lake.append("state", state_table(device, ROWS_PER_DEVICE))
    settings = Settings(lake=tmp_path / "lake", releases=tmp_path / "releases", sql_timeout_s=5.0)
    write_release_folder(
        settings.releases,
        SMALL_DATASET,
        SMALL_VERSION,
        {f"{SMALL_DATASET}.csv": b"day,n\r\n2025-03-14,12\r\n"},
    )
    keys = KeyStore(settings.keys_path)
    analyst = keys.create("analyst", "ward")
    operator = keys.create("operator", "ops")
    revoked = keys.create("analyst", "former")
    keys.revoke("former")
    return Hub(settings, analyst, operator, revoked)


@pytest.fixture
def client(hub: Hub) -> Iterator[TestClient]:
    with TestClient(create_app(hub.settings)) as test_client:
        yield test_client
