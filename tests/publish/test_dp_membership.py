"""Membership inference from publication patterns under differential privacy (the audit's finding 3).

The audit read from a DP release which 250 m cells carry real traffic, because dominance was decided on
the true operator shares: a published cell ruled out a lone device there with certainty.  Now every
publication decision must come from the noise.  The test fixes the noise at its one boundary
(``publish.dp._laplace_int`` / ``_laplace_float``, the functions that call OpenDP) to values that ignore
the true counts, and publishes neighbouring lakes through the real release path (build, noisy
suppression, gate, files): if anything true (counts, operator shares, whether a cell has data) reached a
decision, the releases would differ.  They must be identical, and be exactly what the publication rule
gives on the fixed noisy values.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import publish.dp
from publish.release import publish_release
from store.lake import Lake
from store.settings import Settings
from tests.publish.telemetry import DAY, Fleet, fleet_lake

#: Per (cell, operator) noisy device counts, cell after cell (3 operators): 15 devices at a third each
#: (published), 13 with one operator at 12/13 (dominated), 6 (under k), 24 with the largest share 20/28
#: (published, though one draw is negative).
PATTERN = (5, 5, 5, 12, 1, 0, 3, 2, 1, -4, 20, 8)
PUBLISHED_COUNTS = {15, 24}
DATASETS = ("network-quality-mesh", "traffic-speed-mesh", "safety-events", "fleet-activity")


def _fixed_int(values: list[int], sensitivity: int, epsilon: float) -> tuple[list[int], float]:
    return [PATTERN[i % len(PATTERN)] for i in range(len(values))], epsilon


def _fixed_float(values: list[float], sensitivity: float, epsilon: float) -> tuple[list[float], float]:
    return [0.0] * len(values), epsilon


@pytest.fixture
def fixed_noise(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(publish.dp, "_laplace_int", _fixed_int)
    monkeypatch.setattr(publish.dp, "_laplace_float", _fixed_float)
    yield


def _lakes(root: Path) -> dict[str, Lake]:
    """Neighbouring lakes over the same public operators op0, op1, op2."""
    return {
        # 13 devices, 5/4/4 per operator: no operator dominates in truth
        "balanced": fleet_lake(root / "balanced", Fleet(devices=13, operators=3, minutes=1)),
        # one device more, of op0
        "plus one": fleet_lake(
            root / "plus-one",
            Fleet(devices=13, operators=3, minutes=1),
            Fleet(devices=1, operators=1, minutes=1, seed=7),
        ),
        # 11 of op0 and one each of op1 and op2: op0 dominates every cell in truth (85 % > 80 %)
        "dominated": fleet_lake(
            root / "dominated",
            Fleet(devices=10, operators=1, minutes=1),
            Fleet(devices=3, operators=3, minutes=1, seed=1),
        ),
        # a lone device of each operator, far from k everywhere
        "lone": fleet_lake(root / "lone", Fleet(devices=3, operators=3, minutes=1)),
    }


@pytest.mark.parametrize("dataset_id", DATASETS)
@pytest.mark.usefixtures("fixed_noise")
def test_with_the_noise_fixed_neighbouring_lakes_publish_the_same_cells(
    dataset_id: str, tmp_path: Path
) -> None:
    published = {}
    for name, lake in _lakes(tmp_path / "lakes").items():
        settings = Settings(
            lake=lake.root, releases=tmp_path / name, dp_epsilon=50.0, dp_budget_epsilon=100.0
        )
        result = publish_release(lake, dataset_id, DAY, DAY, settings)  # the gate runs, and passes
        dp = result.privacy.extra["differential_privacy"]
        assert dp["publication_threshold"] <= min(PUBLISHED_COUNTS)  # the rule, not the threshold, decides
        published[name] = pq.read_table(result.folder / f"{dataset_id}.parquet")
    reference = published["balanced"]
    devices = "active_devices" if dataset_id == "fleet-activity" else "devices"
    assert reference.num_rows > 0
    assert set(reference.column(devices).to_pylist()) == PUBLISHED_COUNTS
    for name, table in published.items():
        assert table.equals(reference), f"{name}: the release depends on more than the noise"


@pytest.mark.usefixtures("fixed_noise")
def test_the_published_cells_are_the_rule_applied_to_the_noisy_values(tmp_path: Path) -> None:
    """Every other cell of the universe (cells 0 and 3 of each 4), whatever the lake holds."""
    lake = _lakes(tmp_path / "lakes")["lone"]
    settings = Settings(lake=lake.root, releases=tmp_path / "r", dp_epsilon=50.0, dp_budget_epsilon=100.0)
    result = publish_release(lake, "safety-events", DAY, DAY, settings)
    privacy = result.privacy
    universe = privacy.cells_before
    expected = sum(1 for i in range(universe) if i % 4 in (0, 3))
    assert result.rows == expected
    assert privacy.cells_suppressed_dominance == sum(1 for i in range(universe) if i % 4 == 1)
    assert privacy.cells_suppressed_k == sum(1 for i in range(universe) if i % 4 == 2)
