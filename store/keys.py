"""API keys: created once, stored only as hashes, checked in constant time.

A key reads ``chk_<id>_<secret>``: ``id`` (12 hex digits) names the key in listings and logs and is not
secret; ``secret`` is 32 random bytes (``secrets.token_urlsafe``).  The file holds, per key, its id, name,
role, creation and revocation times and the SHA-256 of the whole key, never the key itself.

Why a plain SHA-256 and not a password hash (scrypt, argon2): a password hash is slow on purpose because
passwords are guessable; these keys hold 256 random bits, so no amount of guessing per hash helps, and a
fast hash keeps every authenticated request cheap.  The digests are compared with ``hmac.compare_digest``.

The file is JSON, written atomically (temporary file with mode 0600, fsync, rename, fsync of the folder).
Every read-modify-write (create, revoke) holds an exclusive ``flock`` on ``<file>.lock``, so two
``corridorhub keys create`` running at once both keep their key.  Readers need no lock: they always see a
whole file.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from store.errors import KeyStoreError

ROLES: tuple[str, ...] = ("analyst", "operator")
KEY_PREFIX = "chk"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
_KEY = re.compile(r"chk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
_FORMAT_VERSION = 1


@dataclass(frozen=True)
class KeyInfo:
    """What may be shown about a key: never the key or its hash."""

    id: str
    name: str
    role: str
    created_at: str  # RFC 3339, UTC
    revoked_at: str | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


@dataclass(frozen=True)
class _Record:
    info: KeyInfo
    sha256: str


class KeyStore:
    """The API keys in one JSON file (``Settings.keys_path``)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        self._cache_stamp: tuple[int, int, int] | None = None
        self._cache: dict[str, _Record] = {}
        self._cache_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"KeyStore({str(self.path)!r})"

    # -- changing keys ---------------------------------------------------------------------------------------

    def create(self, role: str, name: str) -> str:
        """Add a key with ``role`` and a unique ``name``; return the key, which is never shown again."""
        if role not in ROLES:
            raise KeyStoreError(f"Unknown role {role!r}: choose one of {', '.join(ROLES)}")
        if not _NAME.fullmatch(name):
            raise KeyStoreError(
                f"Key name {name!r} must be 1 to 64 letters, digits or _ . @ - "
                "(starting with a letter or digit)"
            )
        with self._locked():
            records = self._read()
            if any(r.info.name == name and not r.info.revoked for r in records.values()):
                raise KeyStoreError(f"A key named {name!r} exists already: revoke it first or choose another")
            key_id = secrets.token_hex(6)
            while key_id in records:  # pragma: no cover - 48 random bits
                key_id = secrets.token_hex(6)
            key = f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
            info = KeyInfo(key_id, name, role, _now())
            records[key_id] = _Record(info, _digest(key))
            self._write(records)
        return key

    def revoke(self, id_or_name: str) -> KeyInfo:
        """Revoke the key with this id, or else the active key with this name; return it."""
        with self._locked():
            records = self._read()
            record = records.get(id_or_name)
            if record is None:
                named = [r for r in records.values() if r.info.name == id_or_name]
                active = [r for r in named if not r.info.revoked]
                if not named:
                    raise KeyStoreError(f"No API key with id or name {id_or_name!r}")
                if not active:
                    raise KeyStoreError(f"The key {id_or_name!r} is revoked already")
                record = active[0]
            if record.info.revoked:
                raise KeyStoreError(f"The key {id_or_name!r} is revoked already")
            info = KeyInfo(record.info.id, record.info.name, record.info.role, record.info.created_at, _now())
            records[info.id] = _Record(info, record.sha256)
            self._write(records)
        return info

    # -- reading ---------------------------------------------------------------------------------------------

    def list(self) -> list[KeyInfo]:
        """Every key, revoked ones included, in the order they were created."""
        return [r.info for r in self._current().values()]

    def authenticate(self, key: str) -> KeyInfo | None:
        """The active key's info, or None for an unknown, malformed or revoked key."""
        match = _KEY.fullmatch(key)
        if match is None:
            return None
        record = self._current().get(match.group(1))
        if record is None or not hmac.compare_digest(record.sha256, _digest(key)):
            return None
        return None if record.info.revoked else record.info

    def _current(self) -> dict[str, _Record]:
        """The records, re-read only when the file changed (keys may be added while the service runs)."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise KeyStoreError(f"Cannot read the API keys file {self.path}: {exc.strerror}") from None
        stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        with self._cache_lock:
            if stamp != self._cache_stamp:
                self._cache = self._read()
                self._cache_stamp = stamp
            return self._cache

    # -- the file --------------------------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise KeyStoreError(f"Cannot lock the API keys file {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _read(self) -> dict[str, _Record]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise KeyStoreError(f"Cannot read the API keys file {self.path}: {exc.strerror}") from None
        try:
            data = json.loads(text)
            return {entry["id"]: _record(entry) for entry in data["keys"]}
        except (ValueError, KeyError, TypeError) as exc:
            raise KeyStoreError(f"The API keys file {self.path} is damaged: {exc!r}") from None

    def _write(self, records: dict[str, _Record]) -> None:
        document = {
            "version": _FORMAT_VERSION,
            "keys": [_entry(r) for r in records.values()],  # creation order
        }
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, json.dumps(document, indent=1).encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            folder = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise KeyStoreError(f"Cannot write the API keys file {self.path}: {exc.strerror}") from None


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _record(entry: dict[str, Any]) -> _Record:
    info = KeyInfo(
        str(entry["id"]),
        str(entry["name"]),
        str(entry["role"]),
        str(entry["created_at"]),
        None if entry.get("revoked_at") is None else str(entry["revoked_at"]),
    )
    return _Record(info, str(entry["sha256"]))


def _entry(record: _Record) -> dict[str, Any]:
    info = record.info
    return {
        "id": info.id,
        "name": info.name,
        "role": info.role,
        "created_at": info.created_at,
        "revoked_at": info.revoked_at,
        "sha256": record.sha256,
    }
