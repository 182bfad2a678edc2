"""The JSON files at the top of a release folder that guard it (the privacy ledger, the release log):
locked with ``flock`` while read and rewritten, replaced atomically (temporary file, fsync, rename, fsync of
the folder) so that a reader or a killed process never sees half a file."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold the exclusive lock ``{path}.lock`` for the block (the folder is made if needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def write_atomic(path: Path, body: dict[str, Any]) -> None:
    """Replace ``path`` with ``body`` as indented, key-sorted JSON, all or nothing."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(body, out, indent=2, sort_keys=True, ensure_ascii=False)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def dataset_busy(releases: Path, dataset_id: str) -> bool:
    """Whether a process holds ``{releases}/{dataset}/.lock`` (is publishing that dataset now)."""
    lock = Path(releases) / dataset_id / ".lock"
    if not lock.exists():
        return False
    with open(lock, "a+b") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    return False


def unused_version(name: str, taken: Iterable[str]) -> str:
    """``name`` (``...-r{n}``), or the next ``-r{n}`` not in ``taken`` (the ledger and the release log both
    keep version names that must never be used twice)."""
    used = set(taken)
    while name in used:
        stem, _, n = name.rpartition("-r")
        name = f"{stem}-r{int(n) + 1}"
    return name
