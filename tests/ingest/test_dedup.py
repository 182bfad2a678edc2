"""Dedup and seq-gap accounting."""

from __future__ import annotations

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.dedup import Deduplicator
from store.schema import TIMESTAMP


def rows(device: str, seqs: list[int | None], ts: list[int] | None = None) -> pa.Table:
    n = len(seqs)
    return pa.table(
        {
            "operator": ["op"] * n,
            "device_id": [device] * n,
            "seq": pa.array(seqs, pa.int64()),
            "ts": pa.array(ts or list(range(n)), pa.int64()).cast(TIMESTAMP),
            "received_at": pa.array([1_000_000] * n, pa.int64()).cast(TIMESTAMP),
        }
    )


def test_redeliveries_within_and_across_batches_are_dropped() -> None:
    dedup = Deduplicator()
    first = dedup.drop_duplicates("state", rows("d1", [0, 1, 2, 2, 3]))
    assert first.column("seq").to_pylist() == [0, 1, 2, 3]
    second = dedup.drop_duplicates("state", rows("d1", [3, 4, 1]))
    assert second.column("seq").to_pylist() == [4]
    assert dedup.duplicates == 3


def test_keys_are_per_device_and_per_stream() -> None:
    dedup = Deduplicator()
    assert dedup.drop_duplicates("state", rows("d1", [0, 1])).num_rows == 2
    assert dedup.drop_duplicates("state", rows("d2", [0, 1])).num_rows == 2
    assert dedup.drop_duplicates("network", rows("d1", [0, 1])).num_rows == 2


def test_samples_without_seq_are_keyed_by_ts() -> None:
    dedup = Deduplicator()
    kept = dedup.drop_duplicates("event", rows("d1", [None, None, None], ts=[10, 20, 10]))
    assert kept.num_rows == 2


def test_gaps_are_counted_and_filled_by_late_samples() -> None:
    dedup = Deduplicator()
    dedup.drop_duplicates("state", rows("d1", [0, 1, 2, 5, 6, 9]))
    track = dedup.tracks[("op", "d1", "state")]
    assert track.missing == 4  # 3, 4, 7, 8
    dedup.drop_duplicates("state", rows("d1", [3, 8]))
    assert track.missing == 2


def test_window_slides_and_old_redeliveries_are_let_through_for_compaction() -> None:
    dedup = Deduplicator(window=64)
    dedup.drop_duplicates("state", rows("d1", list(range(200))))
    assert dedup.drop_duplicates("state", rows("d1", [199, 150])).num_rows == 0
    assert dedup.drop_duplicates("state", rows("d1", [10])).num_rows == 1  # older than the window
    assert dedup.tracks[("op", "d1", "state")].too_old == 1


def test_a_huge_jump_in_seq_resets_the_window() -> None:
    dedup = Deduplicator(window=64)
    dedup.drop_duplicates("state", rows("d1", [0, 1]))
    assert dedup.drop_duplicates("state", rows("d1", [10**15, 10**15 + 1, 10**15])).num_rows == 2


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.integers(0, 300), max_size=40), max_size=8))
def test_each_seq_is_kept_exactly_once_over_any_redelivery_pattern(batches: list[list[int]]) -> None:
    dedup = Deduplicator(window=512)
    kept: list[int] = []
    for batch in batches:
        kept += dedup.drop_duplicates("state", rows("d1", list(batch))).column("seq").to_pylist()
    seen = {s for b in batches for s in b}
    assert sorted(kept) == sorted(seen)
    if seen:
        track = dedup.tracks[("op", "d1", "state")]
        assert track.missing == max(seen) - min(seen) + 1 - len(seen)
