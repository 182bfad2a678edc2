"""Differential privacy (OpenDP): calibrated noise, contribution bounding, the threshold without a universe.

The noise tests are statistical: OpenDP cannot be seeded, so they draw thousands of values and allow
bounds many standard errors wide (a false failure is far less likely than one in a million).
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

import publish.datasets  # noqa: F401  (registers every dataset and its DP plan)
from publish.dp import DEVICES, OPERATOR_DEVICES, apply_dp, bound_contributions
from publish.dp_threshold import publication_threshold, sum_tail
from publish.noise import DP_PLANS, public_operators
from store.errors import ConfigError
from store.settings import Settings

SEED = b"a seed that is never published"


def _cells(n_cells: int, devices_per_cell: int, *, value: float = 10.0) -> pa.Table:
    """Each device in exactly one cell, one row each."""
    cells = np.repeat(np.arange(n_cells), devices_per_cell)
    return pa.table(
        {
            "mesh": pa.array(cells, pa.int64()),
            "device": pa.array([f"d{i}" for i in range(len(cells))]),
            "samples": pa.array(np.full(len(cells), 3), pa.int64()),
            "speed": pa.array(np.full(len(cells), value)),
        }
    )


def _discrete_laplace_variance(scale: float) -> float:
    p = math.exp(-1 / scale)
    return 2 * p / (1 - p) ** 2


def test_count_noise_has_the_calibrated_scale() -> None:
    n_cells, per_cell, epsilon = 3000, 20, 0.5
    table = _cells(n_cells, per_cell)
    universe = pa.table({"mesh": pa.array(range(n_cells), pa.int64())})
    out, report = apply_dp(
        table,
        keys=["mesh"],
        device="device",
        counts=[],
        means={},
        epsilon=epsilon,
        delta=0.0,
        contributions=1,
        seed=SEED,
        universe=universe,
    )
    noise = out[DEVICES].to_numpy() - per_cell
    expected = _discrete_laplace_variance(1 / epsilon)  # sensitivity 1 -> scale 1/epsilon = 2
    assert abs(noise.mean()) < 0.3
    assert 0.8 * expected < noise.var() < 1.2 * expected
    assert report.epsilon == pytest.approx(epsilon, rel=1e-6)
    assert report.delta == 0.0
    assert report.reproducible is False


def test_noise_grows_with_contributions_and_budget_is_split() -> None:
    table = _cells(2000, 30)
    universe = pa.table({"mesh": pa.array(range(2000), pa.int64())})
    out, report = apply_dp(
        table,
        keys=["mesh"],
        device="device",
        counts={"samples": 5},
        means={"speed": (0.0, 30.0)},
        epsilon=3.0,
        delta=0.0,
        contributions=2,
        seed=SEED,
        universe=universe,
    )
    # Three queries share epsilon 3: each gets 1; devices have L1 sensitivity L = 2 -> scale 2.
    assert [q["epsilon"] for q in report.queries.values()] == pytest.approx([1.0, 1.0, 1.0])
    assert report.queries["samples"]["sensitivity_l1"] == 10
    noise = out[DEVICES].to_numpy() - 30
    assert 0.8 * _discrete_laplace_variance(2) < noise.var() < 1.2 * _discrete_laplace_variance(2)
    # samples: each device contributes 3 (under its cap of 5): true 90, scale 10.
    sample_noise = out["samples"].to_numpy() - 90
    assert 0.8 * _discrete_laplace_variance(10) < sample_noise.var() < 1.2 * _discrete_laplace_variance(10)
    speeds = out["speed"].to_numpy()
    assert ((speeds >= 0) & (speeds <= 30)).all()
    assert abs(np.median(speeds) - 10.0) < 1.0


def test_contribution_bounding_keeps_at_most_l_cells_per_device() -> None:
    rows = pa.table(
        {
            "mesh": pa.array(list(range(10)) * 3, pa.int64()),
            "device": pa.array(["a"] * 10 + ["b"] * 10 + ["c"] * 10),
        }
    )
    bounded = bound_contributions(rows, device="device", keys=["mesh"], contributions=2, seed=SEED)
    per_device: dict[str, list[int]] = {}
    for d, m in zip(bounded["device"].to_pylist(), bounded["mesh"].to_pylist(), strict=True):
        per_device.setdefault(d, []).append(m)
    assert {d: len(m) for d, m in per_device.items()} == {"a": 2, "b": 2, "c": 2}
    again = bound_contributions(rows, device="device", keys=["mesh"], contributions=2, seed=SEED)
    assert again.equals(bounded)
    others = [
        bound_contributions(rows, device="device", keys=["mesh"], contributions=2, seed=bytes([i]) * 8)
        for i in range(5)
    ]
    assert any(not o.equals(bounded) for o in others)  # the seed, not the data, decides


def test_apply_dp_bounds_contributions_and_clamps_values() -> None:
    # One device everywhere with an absurd speed; 40 honest devices in each of 3 cells.
    honest = _cells(3, 40)
    loud = pa.table(
        {
            "mesh": pa.array(range(3), pa.int64()),
            "device": pa.array(["loud"] * 3),
            "samples": pa.array([10_000] * 3, pa.int64()),
            "speed": pa.array([1e6] * 3),
        }
    )
    universe = pa.table({"mesh": pa.array(range(3), pa.int64())})
    out, report = apply_dp(
        pa.concat_tables([honest, loud]),
        keys=["mesh"],
        device="device",
        counts={"samples": 5},
        means={"speed": (0.0, 30.0)},
        epsilon=30.0,
        delta=0.0,
        contributions=1,
        seed=SEED,
        universe=universe,
    )
    assert report.device_cells_dropped_by_bounding == 2  # the loud device kept 1 of its 3 cells
    assert (out["speed"].to_numpy() <= 30.0).all()
    # With epsilon 30 the noise is small: the loud device adds at most 5 samples and 30 km/h / 41.
    assert out["samples"].to_numpy().max() < 40 * 3 + 5 + 20


def test_threshold_selects_cells_without_a_universe() -> None:
    big = _cells(5, 400)
    small = pa.table(
        {
            "mesh": pa.array([99], pa.int64()),
            "device": pa.array(["lonely"]),
            "samples": pa.array([1], pa.int64()),
            "speed": pa.array([5.0]),
        }
    )
    out, report = apply_dp(
        pa.concat_tables([big, small]),
        keys=["mesh"],
        device="device",
        counts=[],
        means={"speed": (0.0, 30.0)},
        epsilon=1.0,
        delta=1e-6,
        contributions=1,
        seed=SEED,
        universe=None,
    )
    assert out["mesh"].to_pylist() == [0, 1, 2, 3, 4]  # the one-device cell is not released
    assert report.threshold is not None and report.threshold > 1
    assert 0 < report.delta <= 1e-6
    assert report.epsilon <= 1.0 + 1e-9
    with pytest.raises(ConfigError, match="public list of cells"):
        apply_dp(big, keys=["mesh"], device="device", counts=[], means={}, epsilon=1.0, delta=0.0,
                 contributions=1, seed=SEED)  # fmt: skip


def test_the_plans_share_dp_epsilon_without_exceeding_it() -> None:
    """``dp_epsilon`` is the epsilon per device-day of all DP datasets together: their shares add up to at
    most 1 (a new plan must take its share from the others)."""
    assert set(DP_PLANS) >= {"network-quality-mesh", "traffic-speed-mesh", "safety-events", "fleet-activity"}
    assert sum(plan.epsilon_share for plan in DP_PLANS.values()) <= 1.0 + 1e-9
    assert all(0 < plan.devices_share < 1 for plan in DP_PLANS.values())


def test_device_counts_per_operator_sum_to_the_cell_at_the_same_sensitivity() -> None:
    n_cells, per_cell, epsilon = 2000, 30, 1.0
    table = _cells(n_cells, per_cell).append_column(
        "operator", pa.array([f"op{i % 3}" for i in range(n_cells * per_cell)])
    )
    universe = pa.table({"mesh": pa.array(range(n_cells), pa.int64())})
    out, report = apply_dp(
        table,
        keys=["mesh"],
        device="device",
        counts=[],
        means={},
        epsilon=epsilon,
        delta=0.0,
        contributions=1,
        seed=SEED,
        universe=universe,
        operator="operator",
        operators=("op0", "op1", "op2", "op3"),  # op3 is public but has no device: pure noise
    )
    per_operator = np.array(out[OPERATOR_DEVICES].to_pylist())
    assert per_operator.shape == (n_cells, 4)
    assert (out[DEVICES].to_numpy() == np.maximum(per_operator.sum(axis=1), 0)).all()
    noise = per_operator - np.array([10, 10, 10, 0])
    expected = _discrete_laplace_variance(1 / epsilon)  # sensitivity L = 1 as for one count per cell
    assert 0.8 * expected < noise.var() < 1.2 * expected
    assert report.queries[DEVICES]["sensitivity_l1"] == 1
    assert report.epsilon == pytest.approx(epsilon, rel=1e-6)


def test_the_threshold_bounds_cells_published_by_noise_alone() -> None:
    assert sum_tail(0.5, 1, 1) == pytest.approx(math.exp(-2) / (1 + math.exp(-2)))  # closed form
    threshold = publication_threshold(2.0, 3, 30_000, 10, 1.0)
    assert threshold > 10
    assert 30_000 * sum_tail(2.0, 3, threshold) <= 1.0 < 30_000 * sum_tail(2.0, 3, threshold - 1)
    assert publication_threshold(0.3, 3, 7, 10, 1.0) == 10  # never below k


def test_devices_of_operators_off_the_public_list_count_nowhere() -> None:
    table = _cells(1, 30).append_column("operator", pa.array(["op0"] * 20 + ["stranger"] * 10))
    out, report = apply_dp(
        table,
        keys=["mesh"],
        device="device",
        counts=[],
        means={},
        epsilon=50.0,
        delta=0.0,
        contributions=1,
        seed=SEED,
        universe=pa.table({"mesh": pa.array([0], pa.int64())}),
        operator="operator",
        operators=("op0",),
    )
    assert report.device_cells_in == 20
    assert abs(out[DEVICES][0].as_py() - 20) <= 2  # scale 1/50: p of a miss < 1e-40


def test_dp_operators_must_be_operator_names() -> None:
    assert public_operators(Settings(dp_operators=" op1,op0 ,op1")) == ("op0", "op1")
    assert public_operators(Settings()) == ()
    with pytest.raises(ConfigError, match="'dp_operators' must be operator names"):
        public_operators(Settings(dp_operators="op0, bad name"))
