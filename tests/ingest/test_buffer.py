"""The hand-over buffer: bounded, flushes in bounded pieces, blocks the network thread when full."""

from __future__ import annotations

import threading

from ingest.buffer import Delivery, MessageBuffer
from ingest.decode import RawMessage


def delivery(i: int, size: int = 10) -> Delivery:
    return Delivery(RawMessage("corridor/a/b/state", b"x" * size, 0), i, 1, 1)


def test_a_backlog_is_taken_in_pieces_of_one_flush() -> None:
    buffer = MessageBuffer(max_bytes=10**6, flush_messages=100, flush_bytes=10**6)
    for i in range(250):
        buffer.put(delivery(i))
    stop = threading.Event()
    sizes = [len(buffer.take(interval_s=60, stop=stop)) for _ in range(3)]
    assert sizes == [100, 100, 50]  # the last piece is due at once, not after another interval


def test_flush_bytes_bound_a_piece_but_a_single_large_message_still_passes() -> None:
    buffer = MessageBuffer(max_bytes=10**6, flush_messages=1000, flush_bytes=100)
    for i in range(5):
        buffer.put(delivery(i, size=60))
    taken = buffer.take(interval_s=60, stop=threading.Event())
    assert [d.mid for d in taken] == [0, 1]
    assert buffer.bytes == 5 * 60  # taken but not yet released still counts against the bound
    buffer.release(taken)
    assert buffer.bytes == 3 * 60


def test_put_blocks_while_the_buffer_is_full_until_a_commit_releases_room() -> None:
    buffer = MessageBuffer(max_bytes=100, flush_messages=1000, flush_bytes=10**6)
    buffer.put(delivery(0, size=80))
    taken = buffer.take(interval_s=0, stop=threading.Event())
    done = threading.Event()
    threading.Thread(target=lambda: (buffer.put(delivery(1, size=80)), done.set()), daemon=True).start()
    assert not done.wait(0.5), "put should wait while 80 of 100 bytes are held by a commit"
    buffer.release(taken)
    assert done.wait(5)


def test_take_returns_nothing_once_stopped_and_empty() -> None:
    buffer = MessageBuffer(max_bytes=100, flush_messages=10, flush_bytes=100)
    stop = threading.Event()
    stop.set()
    assert buffer.take(interval_s=3600, stop=stop) == []
