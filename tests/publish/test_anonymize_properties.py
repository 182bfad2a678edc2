"""Properties of the anonymization over random telemetry, checked against oracles computed from the raw
samples (not from the anonymizer's own bookkeeping):

* every published cell has at least k distinct devices, and no operator above the dominance share;
* no cell that fails k or dominance can be derived from the published cells: its indicator vector over the
  finest cells is not in the linear span of the published cells' (totals, the other grid level);
* more generally, every set of finest cells the public can isolate by subtraction passes k and dominance;
* and the devices a total's device count minus its published cells' reveals are none or at least k.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from publish.anonymize import CellIndex, suppress
from publish.build import build_dataset
from publish.datasets import Rollup
from store.geo import jis_mesh
from store.lake import Lake
from store.settings import Settings
from tests.publish.telemetry import rows

# The south-west corner of a JIS 1 km cell near Haneda Innovation City; 250 m cells are 1/480 deg x 1/320 deg.
LAT_BASE = 4265 / 120
LON_BASE = 100 + 3179 / 80
T0 = datetime(2025, 3, 14, 1, 0, tzinfo=UTC)  # 10:00 JST
DAY = date(2025, 3, 14)
PROPERTY = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])

Sample = tuple[int, int, int, int, int]  # device, hour, row i (0-5), column j (0-4), seconds


def in_span(published: list[set[Any]], target: set[Any], universe: Iterable[Any]) -> bool:
    """Whether the indicator of ``target`` is a linear combination of the indicators of ``published``."""
    index = {leaf: n for n, leaf in enumerate(sorted(universe, key=repr))}
    if not published:
        return False
    matrix = np.zeros((len(published), len(index)))
    for r, cells in enumerate(published):
        for leaf in cells:
            matrix[r, index[leaf]] = 1.0
    vector = np.zeros((1, len(index)))
    for leaf in target:
        vector[0, index[leaf]] = 1.0
    return bool(np.linalg.matrix_rank(np.vstack([matrix, vector])) == np.linalg.matrix_rank(matrix))


def verdict(members: list[tuple[str, str, float]], k: int, dominance: float) -> bool:
    """True when (device, operator, weight) contributions pass k and dominance."""
    devices = {d for d, _, _ in members}
    if len(devices) < k:
        return False
    weight: dict[str, float] = defaultdict(float)
    for _, operator, w in members:
        weight[operator] += w
    return max(weight.values()) / sum(weight.values()) <= dominance


# -- the anonymizer alone: random contributions over a two-level tree ----------------------------------


@st.composite
def contributions(draw: st.DrawFn) -> tuple[pa.Table, int, float]:
    leaves = draw(st.lists(st.integers(0, 11), min_size=1, max_size=12, unique=True))
    records = []
    for leaf in leaves:
        code = 5339_2559_00 + (leaf // 4) * 100 + leaf % 4 + 11  # 3 parents of 4 children
        for device in draw(st.lists(st.integers(0, 9), min_size=1, max_size=6, unique=True)):
            weight = draw(st.integers(1, 20))
            records.append(
                {"code": code, "device": f"d{device}", "operator": f"op{device % 3}", "weight": weight}
            )
    k = draw(st.integers(2, 4))
    dominance = draw(st.sampled_from([0.5, 0.7, 0.8, 1.0]))
    return pa.Table.from_pylist(records), k, dominance


@PROPERTY
@given(contributions())
def test_residual_rule_leaves_nothing_derivable(case: tuple[pa.Table, int, float]) -> None:
    table, k, dominance = case
    leaf_codes = sorted(set(table.column("code").to_pylist()))
    parents = sorted({c // 100 for c in leaf_codes})
    cells = pa.table({"code": pa.array(leaf_codes + parents, pa.int64())})
    index = CellIndex(
        table, ("code",), Rollup("code", lambda c: c // 100 if c > 10**9 else None), k, dominance
    )
    result = _suppress(cells, index)
    members: dict[int, list[tuple[str, str, float]]] = defaultdict(list)
    for r in table.to_pylist():
        members[r["code"]].append((r["device"], r["operator"], float(r["weight"])))
    leaves_of = {c: {c} for c in leaf_codes} | {p: {c for c in leaf_codes if c // 100 == p} for p in parents}

    def passes(cells_: set[int]) -> bool:
        return verdict([m for c in cells_ for m in members[c]], k, dominance)

    published = [leaves_of[c] for (c,) in result.published]
    for (code,) in result.published:
        assert passes(leaves_of[code])
    for code in leaf_codes + parents:
        if not passes(leaves_of[code]):
            assert not in_span(published, leaves_of[code], leaf_codes), f"cell {code} can be derived"
    for parent in parents:  # what subtraction isolates under each published parent passes too
        if (parent,) in result.published:
            residual = leaves_of[parent] - {
                c for (c,) in result.published if c in leaves_of[parent] and c != parent
            }
            assert not residual or passes(residual)
            # device counts: the devices of the parent found in no published child (the parent's device
            # count minus the children's reveals them) are none or at least k
            covered = leaves_of[parent] - residual
            only_residual = {d for c in residual for d, _, _ in members[c]} - {
                d for c in covered for d, _, _ in members[c]
            }
            assert not covered or len(only_residual) == 0 or len(only_residual) >= k, only_residual


def _suppress(cells: pa.Table, index: CellIndex) -> Any:
    # the candidate rows need a time column for the earlier-release rule: none here
    table = cells.append_column("t", pa.array([DAY] * cells.num_rows, pa.date32()))
    return suppress(table, index, time_column="t")


# -- network-quality-mesh over random samples in a real lake -------------------------------------------

samples_strategy = st.lists(
    st.tuples(
        st.integers(0, 7), st.integers(0, 1), st.integers(0, 5), st.integers(0, 4), st.integers(0, 3599)
    ),
    min_size=1,
    max_size=60,
)


def network_records(samples: list[Sample], operators: int) -> list[dict[str, Any]]:
    out = []
    for n, (device, hour, i, j, second) in enumerate(samples):
        out.append(
            {
                "operator": f"op{device % operators}",
                "device_id": f"dev{device}",
                "ts": T0 + timedelta(hours=hour, seconds=second),
                "seq": n,
                "lat": LAT_BASE + (i + 0.5) / 480,
                "lon": LON_BASE + (j + 0.5) / 320,
                "rat": "NR_SA",
                "rsrp_dbm": -90.0 - n % 7,
            }
        )
    return out


@PROPERTY
@given(samples_strategy, st.integers(1, 3), st.integers(2, 3), st.sampled_from([0.5, 0.8, 1.0]))
def test_network_quality_mesh_publishes_only_safe_cells(
    samples: list[Sample], operators: int, k: int, dominance: float
) -> None:
    records = network_records(samples, operators)
    with tempfile.TemporaryDirectory() as folder:
        lake = Lake(Path(folder) / "lake")
        lake.ensure_tables()
        lake.append("network", rows("network", records))
        config = Settings(lake=Path(folder) / "lake", releases=Path(folder) / "releases")
        config = dataclasses.replace(config, publish_k=k, publish_dominance=dominance)
        built = build_dataset(lake, "network-quality-mesh", DAY, DAY, config)
    # the oracle: cells from the raw samples, with the reference mesh function
    members: dict[tuple[datetime, int], list[tuple[str, str, float]]] = defaultdict(list)
    for r in records:
        hour = r["ts"].replace(minute=0, second=0)
        members[(hour, jis_mesh(r["lat"], r["lon"], 5))].append((r["device_id"], r["operator"], 1.0))
    leaves = set(members)
    cells = {leaf: {leaf} for leaf in leaves}
    for hour, m5 in leaves:
        cells.setdefault((hour, m5 // 100), set()).add((hour, m5))
    published: list[set[tuple[datetime, int]]] = []
    for row in built.table.to_pylist():
        key = (row["hour_start"], row["mesh_code"])
        under = cells[key]
        contributions = [m for leaf in under for m in members[leaf]]
        assert row["samples"] == len(contributions)
        assert row["devices"] == len({d for d, _, _ in contributions}) >= k
        assert verdict(contributions, k, dominance)
        published.append(under)
    for key, under in cells.items():
        if not verdict([m for leaf in under for m in members[leaf]], k, dominance):
            assert not in_span(published, under, leaves), f"suppressed cell {key} can be derived"


# -- fleet-activity: per-type rows and the per-day total ----------------------------------------------

fleet_strategy = st.lists(
    st.tuples(st.integers(0, 9), st.sampled_from(["bus", "shuttle", "robot"]), st.integers(2, 6)),
    min_size=1,
    max_size=10,
    unique_by=lambda t: t[0],
)


@PROPERTY
@given(fleet_strategy, st.integers(2, 4))
def test_fleet_activity_total_never_reveals_a_suppressed_type(
    fleet: list[tuple[int, str, int]], k: int
) -> None:
    records = []
    for device, device_type, steps in fleet:
        for i in range(steps):
            records.append(
                {
                    "operator": f"op{device % 4}",
                    "device_id": f"dev{device}",
                    "ts": T0 + timedelta(seconds=10 * i),
                    "seq": i,
                    "device_type": device_type,
                    "lat": LAT_BASE + 0.0007 * i,
                    "lon": LON_BASE,
                    "speed_mps": 7.0,
                    "mode": "autonomous",
                }
            )
    with tempfile.TemporaryDirectory() as folder:
        lake = Lake(Path(folder) / "lake")
        lake.ensure_tables()
        lake.append("state", rows("state", records))
        config = Settings(lake=Path(folder) / "lake", releases=Path(folder) / "releases")
        built = build_dataset(
            lake, "fleet-activity", DAY, DAY, dataclasses.replace(config, publish_k=k, publish_dominance=1.0)
        )
    devices_of: dict[str, set[int]] = defaultdict(set)
    for device, device_type, _ in fleet:
        devices_of[device_type].add(device)
    types = set(devices_of)
    cells = {t: {t} for t in types} | {"all": types}
    published = []
    for row in built.table.to_pylist():
        under = cells[row["device_type"]]
        assert row["active_devices"] == len({d for t in under for d in devices_of[t]}) >= k
        published.append(under)
    for name, under in cells.items():
        if len({d for t in under for d in devices_of[t]}) < k:
            assert not in_span(published, under, types), f"suppressed {name} can be derived"
