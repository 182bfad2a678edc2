"""API keys: shown once, stored hashed in a 0600 file, revocable, safe against concurrent creators."""

from __future__ import annotations

import json
import multiprocessing
import stat
from pathlib import Path

import pytest

from store.errors import KeyStoreError
from store.keys import KeyStore


def test_a_created_key_authenticates_with_its_role_and_name(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.json")
    key = store.create("analyst", "ward-analytics")
    info = store.authenticate(key)
    assert info is not None
    assert (info.name, info.role, info.revoked) == ("ward-analytics", "analyst", False)
    assert key.startswith(f"chk_{info.id}_")


def test_wrong_malformed_and_altered_keys_are_refused(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.json")
    key = store.create("operator", "ops")
    altered = key[:-1] + ("A" if key[-1] != "A" else "B")
    for attempt in (
        altered,
        "",
        "chk_",
        "Bearer " + key,
        key + "x",
        key.upper(),
        "chk_000000000000_" + "a" * 43,
    ):
        assert store.authenticate(attempt) is None, attempt


def test_the_file_holds_no_key_and_is_private(tmp_path: Path) -> None:
    path = tmp_path / "hub" / "keys.json"
    store = KeyStore(path)
    keys = [store.create("analyst", "a"), store.create("operator", "b")]
    text = path.read_text()
    for key in keys:
        assert key not in text
        assert key.rsplit("_", 1)[-1] not in text  # nor its secret part
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    entries = json.loads(text)["keys"]
    assert {e["name"] for e in entries} == {"a", "b"}
    assert all(len(e["sha256"]) == 64 for e in entries)


def test_list_shows_every_key_without_secrets(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.json")
    store.create("analyst", "a")
    store.create("operator", "b")
    store.revoke("a")
    listed = store.list()
    assert [(i.name, i.role, i.revoked) for i in listed] == [("a", "analyst", True), ("b", "operator", False)]
    assert not any(hasattr(i, "sha256") or hasattr(i, "key") for i in listed)


def test_revoke_by_name_or_id_stops_the_key(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.json")
    by_name, by_id = store.create("analyst", "one"), store.create("analyst", "two")
    store.revoke("one")
    info = store.authenticate(by_id)
    assert info is not None
    store.revoke(info.id)
    assert store.authenticate(by_name) is None
    assert store.authenticate(by_id) is None
    with pytest.raises(KeyStoreError, match="revoked already"):
        store.revoke("one")
    with pytest.raises(KeyStoreError, match="No API key"):
        store.revoke("nobody")


def test_a_second_store_on_the_same_file_sees_changes(tmp_path: Path) -> None:
    """The service keeps its KeyStore; keys created or revoked by the CLI meanwhile take effect."""
    service = KeyStore(tmp_path / "keys.json")
    assert service.authenticate("chk_000000000000_" + "a" * 43) is None
    key = KeyStore(tmp_path / "keys.json").create("analyst", "late")
    assert service.authenticate(key) is not None
    KeyStore(tmp_path / "keys.json").revoke("late")
    assert service.authenticate(key) is None


def test_bad_roles_names_and_duplicates_fail_by_name(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.json")
    with pytest.raises(KeyStoreError, match="role 'admin'"):
        store.create("admin", "x")
    for name in ("", "has space", "-dash-first", "x" * 65):
        with pytest.raises(KeyStoreError, match="Key name"):
            store.create("analyst", name)
    store.create("analyst", "dup")
    with pytest.raises(KeyStoreError, match="exists already"):
        store.create("operator", "dup")
    store.revoke("dup")
    store.create("operator", "dup")  # the name is free again once revoked


def test_a_damaged_file_is_an_error_not_an_empty_store(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text("{not json")
    with pytest.raises(KeyStoreError, match="damaged"):
        KeyStore(path).list()


def _create_many(path: str, prefix: str, count: int) -> list[str]:
    store = KeyStore(Path(path))
    return [store.create("analyst", f"{prefix}-{i}") for i in range(count)]


def test_two_processes_creating_keys_at_once_keep_every_key(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        results = pool.starmap(_create_many, [(str(path), "p1", 25), (str(path), "p2", 25)])
    store = KeyStore(path)
    assert len(store.list()) == 50
    for key in results[0] + results[1]:
        assert store.authenticate(key) is not None
