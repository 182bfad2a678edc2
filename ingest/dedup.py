"""Exactly-once in the lake: drop redelivered samples, and count gaps in ``seq``.

A sample's key is (operator, device_id, stream, seq), or ts where seq is absent.  The broker delivers at
least once (a redelivery after a reconnect, a publisher's retry, a hub killed between commit and
acknowledgement), so every key is checked against what was accepted before.

Memory is bounded: per device and stream, a ring bitmap remembers the last ``window`` seq values
(8 KiB for the default 65,536), and samples without seq remember their ts for ``ts_window_us``.  A
redelivery older than the window slips through and ``corridorhub compact`` removes it.  A bitmap
rather than a set of ints: 60 bytes per remembered key would cost hundreds of MB at corridor rates.

The same bitmap counts what never arrived: ``missing`` is the number of seq values between the lowest
and highest seen that have not (yet) arrived; a late sample fills its gap.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

DEFAULT_WINDOW = 65_536
DEFAULT_TS_WINDOW_US = 600_000_000  # ten minutes


@dataclass
class SeqTrack:
    """What one device's stream has delivered so far."""

    window: int
    bits: bytearray = field(init=False)
    low: int | None = None  # lowest seq ever accepted
    high: int = -1  # highest seq accepted
    accepted: int = 0  # distinct seq values accepted
    accepted_in_window: int = 0
    too_old: int = 0  # samples older than the window (accepted, checked by compaction)
    ts_seen: dict[int, None] = field(default_factory=dict)  # ts of samples without seq, oldest first
    last_seen_us: int = 0

    def __post_init__(self) -> None:
        self.bits = bytearray(self.window // 8)

    @property
    def missing(self) -> int:
        """Seq values between the lowest and highest seen that never arrived (gaps)."""
        if self.low is None:
            return 0
        return max(0, self.high - self.low + 1 - self.accepted)

    def _slide(self, new_high: int) -> None:
        """Forget bits that fall out of the window as high moves up to new_high."""
        w = self.window
        if new_high - self.high >= w:
            self.bits = bytearray(w // 8)
            return
        for s in range(self.high + 1, new_high + 1):
            i = s % w
            self.bits[i >> 3] &= ~(1 << (i & 7)) & 0xFF

    def add_seq(self, seq: int) -> bool:
        """True when seq is new (and remember it), False for a duplicate."""
        w = self.window
        if seq > self.high:
            self._slide(seq)
            self.high = seq
        elif seq <= self.high - w:
            self.too_old += 1
            return True
        i = seq % w
        mask = 1 << (i & 7)
        if self.bits[i >> 3] & mask:
            return False
        self.bits[i >> 3] |= mask
        self.accepted += 1
        if self.low is None or seq < self.low:
            self.low = seq
        return True

    def add_ts(self, ts_us: int, window_us: int) -> bool:
        if ts_us in self.ts_seen:
            return False
        self.ts_seen[ts_us] = None
        if len(self.ts_seen) > 4096:
            newest = max(self.ts_seen)
            for old in [t for t in self.ts_seen if t < newest - window_us]:
                del self.ts_seen[old]
        return True


class Deduplicator:
    """Per (operator, device_id, stream): which samples were accepted, and the gaps in seq."""

    def __init__(self, window: int = DEFAULT_WINDOW, ts_window_us: int = DEFAULT_TS_WINDOW_US) -> None:
        if window % 8 or window <= 0:
            raise ValueError("window must be a positive multiple of 8")
        self.window = window
        self.ts_window_us = ts_window_us
        self.tracks: dict[tuple[str, str, str], SeqTrack] = {}
        self.duplicates = 0

    def _track(self, operator: str, device_id: str, stream: str) -> SeqTrack:
        key = (operator, device_id, stream)
        track = self.tracks.get(key)
        if track is None:
            track = self.tracks[key] = SeqTrack(self.window)
        return track

    def keep_mask(self, stream: str, table: pa.Table, *, remember_only: bool = False) -> np.ndarray:
        """A boolean mask of the rows of ``table`` that are new; they are remembered as accepted.

        With ``remember_only`` every row is remembered and kept (used to seed from the lake).
        """
        n = table.num_rows
        keep = np.ones(n, dtype=bool)
        if n == 0:
            return keep
        operators = table.column("operator").to_pylist()
        devices = table.column("device_id").to_pylist()
        seqs = table.column("seq").to_pylist()
        ts = table.column("ts").cast(pa.int64()).to_pylist()
        received = table.column("received_at").cast(pa.int64()).to_numpy()
        last: tuple[str, str] | None = None
        track: SeqTrack | None = None
        for r in range(n):
            ident = (operators[r], devices[r])
            if ident != last or track is None:
                track = self._track(operators[r], devices[r], stream)
                last = ident
            seq = seqs[r]
            new = track.add_seq(seq) if seq is not None else track.add_ts(ts[r], self.ts_window_us)
            if new:
                if received[r] > track.last_seen_us:
                    track.last_seen_us = int(received[r])
            elif not remember_only:
                keep[r] = False
        if not remember_only:
            self.duplicates += int(n - keep.sum())
        return keep

    def drop_duplicates(self, stream: str, table: pa.Table) -> pa.Table:
        keep = self.keep_mask(stream, table)
        return table if keep.all() else table.filter(pa.array(keep))
