"""The privacy ledger: one file for all datasets, budget per device-day, two-phase spending, concurrency."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import date
from pathlib import Path

import pytest

from publish.ledger import PrivacyLedger, ledger_path, legacy_entries
from store.errors import ConfigError, PrivacyBudgetExhausted

ROOT = Path(__file__).resolve().parents[2]
D1, D2 = date(2025, 3, 14), date(2025, 3, 15)


def test_the_budget_is_per_day_over_all_datasets(tmp_path: Path) -> None:
    ledger = PrivacyLedger(ledger_path(tmp_path), budget_epsilon=1.0)
    assert ledger.path == tmp_path / "privacy-ledger.json"
    ledger.spend("traffic-speed-mesh", "v1", [D1, D2], 0.3, 1e-7)
    ledger.spend("network-quality-mesh", "v1", [D1], 0.7, 1e-7)  # exactly to the budget on D1
    assert ledger.remaining(D1) == pytest.approx(0.0) and ledger.remaining(D2) == pytest.approx(0.7)
    spent = ledger.spent(D1)
    assert (spent.epsilon, spent.delta) == pytest.approx((1.0, 2e-7))
    assert spent.by_dataset == pytest.approx({"traffic-speed-mesh": 0.3, "network-quality-mesh": 0.7})
    with pytest.raises(PrivacyBudgetExhausted) as refused:  # another dataset, same day: refused
        ledger.spend("safety-events", "v1", [D2, D1], 0.1, 0.0)
    message = str(refused.value)
    assert message.startswith("safety-events: privacy budget exhausted for 2025-03-14")
    assert "needs epsilon 0.1 per device-day, that day has spent 1 of 1 (0 left;" in message
    assert "network-quality-mesh 0.7, traffic-speed-mesh 0.3" in message
    ledger.spend("safety-events", "v1", [D2], 0.1, 0.0)  # the other day still has room
    assert ledger.spent(D2).epsilon == pytest.approx(0.4)
    with pytest.raises(PrivacyBudgetExhausted, match="already spent"):
        PrivacyLedger(ledger.path, budget_epsilon=5.0).spend("traffic-speed-mesh", "v1", [D2], 0.1, 0.0)
    body = json.loads(ledger.path.read_text())
    assert body["unit"] == "device-day" and [e["days"] for e in body["entries"]][0] == [
        "2025-03-14",
        "2025-03-15",
    ]


def test_a_failed_release_spends_nothing(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path / "ledger.json", budget_epsilon=1.0)
    with pytest.raises(RuntimeError), ledger.spending("fleet-activity", "v1", [D1], 0.8, 0.0):
        assert ledger.remaining(D1) == pytest.approx(0.2)  # reserved while it runs
        raise RuntimeError("the gate failed")
    assert ledger.remaining(D1) == 1.0
    assert ledger.entries() == []
    with ledger.spending("fleet-activity", "v1", [D1], 0.8, 0.0) as entry:
        pass
    assert [e.state for e in ledger.entries()] == ["committed"]
    assert entry.version == "v1"
    with pytest.raises(ConfigError, match="no new day"):
        ledger.reserve("fleet-activity", "v2", [], 0.1, 0.0)


def test_a_failure_after_the_draw_is_charged_and_a_drawn_charge_is_never_given_back(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path / "ledger.json", budget_epsilon=1.0)
    with pytest.raises(RuntimeError), ledger.spending("fleet-activity", "v1", [D1], 0.4, 0.0) as entry:
        ledger.drawn(entry)
        raise RuntimeError("nothing to publish")
    assert [(e.version, e.state) for e in ledger.entries()] == [("v1", "committed")]
    left = ledger.reserve("safety-events", "v1", [D1], 0.2, 0.0)
    with pytest.raises(ConfigError, match="is spent and cannot be given back"):
        ledger.cancel(ledger.drawn(left))
    assert ledger.settle(lambda e: False) == []  # a killed process after its draw: committed anyway
    assert {e.state for e in ledger.entries()} == {"committed"}
    assert ledger.spent(D1).epsilon == pytest.approx(0.6)


def test_settle_commits_placed_and_gives_back_abandoned_reservations(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path / "ledger.json", budget_epsilon=1.0)
    placed = ledger.reserve("network-quality-mesh", "v1", [D1], 0.3, 0.0)
    abandoned = ledger.reserve("traffic-speed-mesh", "v1", [D1], 0.3, 0.0)
    running = ledger.reserve("safety-events", "v1", [D1], 0.2, 0.0)
    verdicts = {placed.token: True, abandoned.token: False, running.token: None}
    dropped = ledger.settle(lambda e: verdicts[e.token])
    assert [e.dataset for e in dropped] == ["traffic-speed-mesh"]
    states = {e.dataset: e.state for e in ledger.entries()}
    assert states == {"network-quality-mesh": "committed", "safety-events": "reserved"}
    assert ledger.spent(D1).epsilon == pytest.approx(0.5)


_SPENDER = textwrap.dedent(
    """
    import os, sys, time
    sys.path.insert(0, {root!r})
    from publish.ledger import PrivacyLedger
    from store.errors import PrivacyBudgetExhausted
    ledger = PrivacyLedger({path!r}, budget_epsilon=1.0)
    deadline = time.monotonic() + 60
    while not os.path.exists({go!r}) and time.monotonic() < deadline:  # start together
        time.sleep(0.001)
    won = 0
    for i in range(15):
        try:
            ledger.spend("{name}", "v" + str(i), ["2025-03-14"], 0.1, 0.0)
            won += 1
        except PrivacyBudgetExhausted:
            pass
    print(won)
    """
)


def test_ledger_survives_concurrent_spenders(tmp_path: Path) -> None:
    """Two processes publishing two datasets on the same day share one budget."""
    path, go = str(tmp_path / "ledger.json"), tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _SPENDER.format(root=str(ROOT), path=path, name=name, go=str(go))],
            stdout=subprocess.PIPE,
            text=True,
        )
        for name in ("safety-events", "fleet-activity")
    ]
    go.touch()
    won = [int(p.communicate(timeout=120)[0]) for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert sum(won) == 10  # 30 attempts of 0.1 against a budget of 1.0 for the day: exactly 10 fit
    ledger = PrivacyLedger(Path(path), budget_epsilon=1.0)
    assert len(ledger.entries()) == 10
    assert ledger.spent(D1).epsilon == pytest.approx(1.0)


def test_the_per_dataset_ledgers_of_earlier_versions_still_count(tmp_path: Path) -> None:
    old = {
        "format": 1,
        "entries": [
            {"dataset": "fleet-activity", "version": "2025-03-14_2025-03-15-r1", "epsilon": 1.0,
             "delta": 1e-6, "state": "committed", "token": "a", "at": "2025-03-18T00:00:00+00:00"},
            {"dataset": "fleet-activity", "version": "2025-03-15_2025-03-15-r1", "epsilon": 0.5,
             "delta": 0.0, "state": "reserved", "token": "b", "at": "2025-03-18T00:00:00+00:00"},
        ],
    }  # fmt: skip
    (tmp_path / "fleet-activity").mkdir()
    (tmp_path / "fleet-activity" / "privacy-ledger.json").write_text(json.dumps(old))
    ledger = PrivacyLedger(ledger_path(tmp_path), budget_epsilon=2.0)
    assert ledger.adopt(legacy_entries(tmp_path)) == 2
    assert ledger.adopt(legacy_entries(tmp_path)) == 0  # once
    assert ledger.spent(D1).epsilon == pytest.approx(1.0)
    assert ledger.spent(D2).epsilon == pytest.approx(1.5)  # an old reservation counted as spent
    with pytest.raises(PrivacyBudgetExhausted, match="2025-03-15"):
        ledger.spend("safety-events", "v1", [D2], 0.6, 0.0)
