"""The frames ``store.sql_pool`` and its workers (``store._sql_worker``) exchange besides Arrow IPC streams:
a 4-byte big-endian length, then that many bytes of UTF-8 JSON."""

from __future__ import annotations

import json
import struct
from typing import IO, Any

_HEADER = struct.Struct(">I")


def read_frame(stream: IO[bytes]) -> dict[str, Any] | None:
    """The next frame, or None when the stream ended (cleanly or in the middle of a frame)."""
    head = stream.read(_HEADER.size)
    if len(head) < _HEADER.size:
        return None
    (length,) = _HEADER.unpack(head)
    body = stream.read(length)
    if len(body) < length:
        return None
    found: dict[str, Any] = json.loads(body)
    return found


def write_frame(stream: IO[bytes], message: dict[str, Any], *, flush: bool = True) -> None:
    body = json.dumps(message).encode()
    stream.write(_HEADER.pack(len(body)) + body)
    if flush:
        stream.flush()
