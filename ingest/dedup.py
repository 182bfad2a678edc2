"""Exactly-once in the lake: drop redelivered samples, keep every new one, and count gaps in ``seq``.

**What a duplicate is.**  A sample is identified by (operator, device_id, stream, seq, ts)
(``store.schema.SAMPLE_IDENTITY``; ts alone where seq is absent).  A redelivery (the broker sending a
message again after a reconnect, a publisher's retry, a hub killed between commit and acknowledgement)
repeats the same payload, so both seq and ts repeat and the copy is dropped.  A sample that reuses a
``seq`` with another ``ts`` is a *new* sample: a device whose counter restarted (a reboot, a firmware
update, a swapped modem), or one that sent the same seq twice.  It is kept.  Compaction removes copies
with the same identity, so both layers follow one rule.

**Counter runs.**  A device's seq values form *runs*: one run from the counter's (re)start until the next
restart.  Each run remembers the ts of its last ``window`` seq values, in a ring indexed by seq: that is
what tells a redelivery from a reused seq, exactly.  The next seq of the run used last continues it (the
usual case).  Otherwise a new sample can belong to each run where its seq is above the run's highest or
in one of its gaps (below the run's lowest only if it was also taken before that sample); of those it
joins the nearest: the seq values it skips there, plus up to ``IDLE_PENALTY`` for a run that has been
idle (a seq that happens to suit an idle run is a coincidence), then the run used last.  Device clocks
are not trusted for this choice: they skew.  A sample that can belong to no run (its seq is already held
with another ts, or it lies below a run's start but is newer) means the counter restarted: it begins a
new run.  Redeliveries of every remembered run are recognised, however runs and redeliveries interleave.

**Gaps.**  ``missing`` is, per run, the seq values between its lowest and highest seen that have not (yet)
arrived; a late sample fills its gap.  Where a run overtakes another run's highest seq, a sample lost or
reordered right there can be counted against the other run, so the total may be off by one or two per
restart; every sample is kept either way.

**Memory is bounded.**  A ring grows with its run up to ``window`` slots of 8 bytes (128 KiB for the
default 16,384); a track keeps at most ``MAX_RUNS`` runs and ``2 * window`` slots in all, and folds the
least recently used runs into its totals (a late sample older than every run it remembers is counted there
too).  Samples without seq remember their ts for ``ts_window_us`` of arrival time (at most
``MAX_SEQLESS``).  At most ``MAX_TRACKS`` devices x streams are tracked; beyond, the least recently
seen are forgotten.  A seq more than ``MAX_JUMP`` from every run starts a new run (not a gap of billions).
A redelivery older than what is remembered slips through and ``corridorhub compact`` removes it.
Written here rather than taken from a library: the rule (seq and ts, runs, gaps) is ours, and a per-sample
Python set would cost hundreds of MB at corridor rates.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

DEFAULT_WINDOW = 16_384
DEFAULT_TS_WINDOW_US = 600_000_000  # ten minutes
IDLE_PENALTY = 2  # seq values of distance charged for each sample a run sat idle (at most)
MAX_RUNS = 16  # counter runs remembered per device and stream, within 2 x window slots in all
MAX_JUMP = 2**31  # a seq this far from a run is a new run, not a gap of 2 billion lost samples
MAX_SEQLESS = 16_384  # samples without seq remembered per device and stream
MAX_TRACKS = 30_000  # devices x streams remembered; beyond, the least recently seen tenth is forgotten
_EMPTY = -(2**63)  # a ring slot that holds no sample
_FIRST_SLOTS = 64


@dataclass
class CounterRun:
    """One run of a device's seq counter: from its (re)start until the next restart."""

    window: int
    slots: array[int] = field(init=False)  # ts of seq s at s % len(slots); seqs in (high - len, high]
    low: int | None = None  # lowest seq accepted
    high: int = -1  # highest seq accepted
    ts_low: int = 0  # ts of the sample at ``low``
    ts_high: int = 0  # ts of the sample at ``high``
    first_ts: int = 0  # earliest ts in the run
    accepted: int = 0  # distinct seq values accepted and remembered
    too_old: int = 0  # accepted below the remembered window (left to compaction)
    last_used: int = 0  # the track's arrival count when this run last took a sample

    def __post_init__(self) -> None:
        self.slots = array("q", [_EMPTY]) * min(_FIRST_SLOTS, self.window)

    @property
    def missing(self) -> int:
        """Seq values between the lowest and highest seen that never arrived (gaps)."""
        if self.low is None:
            return 0
        return max(0, self.high - self.low + 1 - self.accepted)

    def _remembered(self, seq: int) -> bool:
        return self.low is not None and self.high - len(self.slots) < seq <= self.high

    def holds(self, seq: int, ts: int) -> bool:
        """True when exactly this sample (seq and ts) was accepted before: a redelivery."""
        return self._remembered(seq) and self.slots[seq % len(self.slots)] == ts

    def distance(self, seq: int, ts: int) -> int | None:
        """How far a new sample (not a redelivery) lies from this run in seq: 0 for the next seq or a gap
        it fills, more for a jump; None when it cannot belong here (a restarted counter)."""
        assert self.low is not None
        if seq > self.high:
            return seq - self.high - 1 if seq - self.high <= MAX_JUMP else None
        if seq < self.low:
            # below the run's start only if it was also taken before it
            return self.low - seq - 1 if ts <= self.ts_low and self.low - seq <= MAX_JUMP else None
        if self._remembered(seq):
            return 0 if self.slots[seq % len(self.slots)] == _EMPTY else None  # a gap, or a seq taken
        return 0 if ts <= self.ts_high else None  # older than the ring: late only if taken before the newest

    def add(self, seq: int, ts: int) -> None:
        if self.low is None:
            self.low, self.high, self.ts_low, self.ts_high, self.first_ts = seq, seq, ts, ts, ts
        elif seq > self.high:
            self._grow(seq - self.low + 1)
            self._slide(seq)
            self.ts_high = ts
        elif seq <= self.high - len(self.slots):
            self._grow(self.high - seq + 1)
            if seq <= self.high - len(self.slots):
                self.too_old += 1  # the window is full: kept, but no longer checked here
                self.first_ts = min(self.first_ts, ts)
                return
        self.slots[seq % len(self.slots)] = ts
        self.accepted += 1
        self.first_ts = min(self.first_ts, ts)
        if seq < self.low:
            self.low, self.ts_low = seq, ts

    def add_next(self, seq: int, ts: int) -> None:
        """``add`` for ``seq == high + 1`` in a run that has begun: the hot path."""
        low = self.low
        assert low is not None
        slots = self.slots
        if seq - low >= len(slots) and len(slots) < self.window:
            self._grow(seq - low + 1)
            slots = self.slots
        slots[seq % len(slots)] = ts  # the slot of seq - len(slots), which leaves the ring
        self.high = seq
        self.ts_high = ts
        self.accepted += 1
        if ts < self.first_ts:
            self.first_ts = ts

    def _grow(self, span: int) -> None:
        """Widen the ring (doubling, up to ``window``) so that it covers ``span`` seq values."""
        size = len(self.slots)
        if span <= size or size >= self.window:
            return
        new_size = size
        while new_size < span and new_size < self.window:
            new_size *= 2
        new_size = min(new_size, self.window)
        grown = array("q", [_EMPTY]) * new_size
        for seq in range(max(self.high - size + 1, 0), self.high + 1):
            grown[seq % new_size] = self.slots[seq % size]
        self.slots = grown

    def _slide(self, new_high: int) -> None:
        """Forget the slots that fall out of the ring as ``high`` moves up to ``new_high``."""
        size = len(self.slots)
        if new_high - self.high >= size:
            self.slots = array("q", [_EMPTY]) * size
        else:  # seqs high+1 .. new_high: one or two slices of the ring, cleared at C speed
            start, stop = (self.high + 1) % size, (new_high + 1) % size
            if start < stop:
                self.slots[start:stop] = array("q", [_EMPTY]) * (stop - start)
            else:
                self.slots[start:] = array("q", [_EMPTY]) * (size - start)
                self.slots[:stop] = array("q", [_EMPTY]) * stop
        self.high = new_high


@dataclass
class SeqTrack:
    """What one device's stream has delivered so far: its counter runs, newest last."""

    window: int
    runs: list[CounterRun] = field(default_factory=list)  # the run used last at the end
    restarts: int = 0  # counter restarts seen
    arrivals: int = 0  # samples with seq accepted
    folded_runs: int = 0  # runs no longer remembered
    folded_missing: int = 0  # their gaps
    folded_samples: int = 0  # their samples
    seqless: int = 0  # samples without seq accepted
    ts_seen: dict[int, int] = field(default_factory=dict)  # samples without seq: ts -> arrival, oldest first
    last_seen_us: int = 0

    @property
    def missing(self) -> int:
        """Seq values missing (gaps) over every run of the counter."""
        return self.folded_missing + sum(run.missing for run in self.runs)

    @property
    def samples(self) -> int:
        return self.folded_samples + self.seqless + sum(run.accepted + run.too_old for run in self.runs)

    @property
    def current(self) -> CounterRun | None:
        """The run used last (the counter as the device has it now)."""
        return self.runs[-1] if self.runs else None

    def add_seq(self, seq: int, ts: int) -> bool:
        """True when the sample is new (and remember it), False for a redelivery."""
        runs = self.runs
        if runs:
            newest = runs[-1]
            # The usual case: the next seq of the run used last, and no copy of a sample of another run.
            if seq == newest.high + 1 and (
                len(runs) == 1 or not any(run.holds(seq, ts) for run in runs[:-1])
            ):
                newest.add_next(seq, ts)
                self.arrivals += 1
                newest.last_used = self.arrivals
                return True
        for run in runs:
            if run.holds(seq, ts):
                return False
        # Of the runs it can belong to, the nearest: the seq values it skips, plus a little for each
        # sample since the run last took one (a seq that happens to suit an idle run is a coincidence);
        # then the run used last.  None: a restart.  Device clocks are not trusted here (they skew).
        best: tuple[int, int] | None = None
        for i, run in enumerate(runs):
            distance = run.distance(seq, ts)
            if distance is not None:
                rank = (distance + min(self.arrivals - run.last_used, IDLE_PENALTY), -i)
                if best is None or rank < best:
                    best = rank
        if best is not None:
            run = runs.pop(-best[1])
            runs.append(run)  # most recently used last
        else:
            if runs and not (self.folded_runs and ts < min(r.first_ts for r in runs)):
                self.restarts += 1  # (a sample older than every run remembered is late, from a folded run)
            run = CounterRun(self.window)
            runs.append(run)
            while len(runs) > MAX_RUNS or sum(len(r.slots) for r in runs) > 2 * self.window:
                oldest = runs.pop(0)  # the least recently used
                self.folded_runs += 1
                self.folded_missing += oldest.missing
                self.folded_samples += oldest.accepted + oldest.too_old
        run.add(seq, ts)
        self.arrivals += 1
        run.last_used = self.arrivals
        return True

    def add_ts(self, ts_us: int, received_us: int, window_us: int) -> bool:
        """For a sample without seq: True when its ts is new.  Remembered for ``window_us`` of the hub's
        clock (arrival), at most ``MAX_SEQLESS``: a device clock that skews cannot make it forget."""
        seen = self.ts_seen
        if ts_us in seen:
            return False
        seen[ts_us] = received_us
        self.seqless += 1
        oldest = next(iter(seen))  # dicts keep insertion order: the oldest arrival first
        while len(seen) > MAX_SEQLESS or seen[oldest] < received_us - window_us:
            del seen[oldest]
            oldest = next(iter(seen))
        return True


class Deduplicator:
    """Per (operator, device_id, stream): which samples were accepted, and the gaps in seq."""

    def __init__(
        self,
        window: int = DEFAULT_WINDOW,
        ts_window_us: int = DEFAULT_TS_WINDOW_US,
        max_tracks: int = MAX_TRACKS,
    ) -> None:
        if window <= 0 or window & (window - 1):
            raise ValueError("window must be a power of two")
        self.window = window
        self.ts_window_us = ts_window_us
        self.max_tracks = max_tracks
        self.tracks: dict[tuple[str, str, str], SeqTrack] = {}
        self.duplicates = 0
        self.tracks_forgotten = 0

    def _track(self, operator: str, device_id: str, stream: str) -> SeqTrack:
        key = (operator, device_id, stream)
        track = self.tracks.get(key)
        if track is None:
            if len(self.tracks) >= self.max_tracks:
                self._forget_idle_tracks()
            track = self.tracks[key] = SeqTrack(self.window)
        return track

    def _forget_idle_tracks(self) -> None:
        """Drop the least recently seen tenth of the tracks (memory stays bounded however many device ids
        appear); their redeliveries are left to compaction and their counts leave the status."""
        by_age = sorted(self.tracks, key=lambda k: self.tracks[k].last_seen_us)
        for key in by_age[: max(1, len(by_age) // 10)]:
            del self.tracks[key]
            self.tracks_forgotten += 1

    def keep_mask(self, stream: str, table: pa.Table, *, remember_only: bool = False) -> np.ndarray:
        """A boolean mask of the rows of ``table`` that are new; they are remembered as accepted.

        Rows are taken in table order (the order of receipt).  With ``remember_only`` every row is
        remembered and kept (used to seed from the lake).
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
            if seq is not None:
                new = track.add_seq(seq, ts[r])
            else:
                new = track.add_ts(ts[r], int(received[r]), self.ts_window_us)
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
