"""End to end through a real mosquitto: simulator -> broker -> ingest -> Delta lake -> DuckDB."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from harness import (
    expected_quarantine,
    ingest_settings,
    lake_keys,
    quarantine_reasons,
    running_ingestor,
    wait_until,
)

from corridorhub.broker import EmbeddedBroker, free_port
from corridorhub.simulator import FaultRates, SimConfig, expected_rows, generate
from corridorhub.simulator.publish import publish
from store.ingest_status import read_statuses
from store.lake import Lake
from store.settings import BrokerAddress

START = datetime(2026, 11, 26, 0, 0, tzinfo=UTC)
FAULTS = FaultRates(malformed=0.05, duplicate=0.05, reorder=0.03, late=0.02, skew=0.03, gap=0.02)


def _run(broker: EmbeddedBroker, lake: Path, config: SimConfig) -> tuple[list, Counter]:
    messages = list(generate(config))
    settings = ingest_settings(broker.url, lake)
    with running_ingestor(settings) as ingestor:
        report = publish(
            messages, BrokerAddress.parse(broker.url), realtime=False, client_id=f"pub-{settings.client_id}"
        )
        assert report.messages == len(messages) and report.rejected == 0
        assert wait_until(lambda: ingestor.counters.messages_acked >= len(messages), timeout=60), (
            ingestor.counters.snapshot()
        )
    return messages, lake_keys(lake)


@pytest.mark.parametrize("batch", [1, 25])
def test_every_valid_sample_lands_once_and_every_bad_one_is_quarantined(
    broker: EmbeddedBroker, lake_dir: Path, batch: int
) -> None:
    duration = 30 if batch == 1 else 150  # enough messages for every kind of fault either way
    config = SimConfig(
        devices=20, rate_hz=2, duration_s=duration, seed=7 + batch, start=START, batch=batch, faults=FAULTS
    )
    messages, keys = _run(broker, lake_dir, config)

    expected = expected_rows(messages)
    assert len(expected) > 1000
    assert set(keys) == expected, (
        f"missing {len(expected - set(keys))}, unexpected {len(set(keys) - expected)}"
    )
    assert max(keys.values()) == 1, "a sample landed twice"
    assert any(m.duplicate for m in messages), "the run should include redeliveries"

    want = expected_quarantine(messages)
    got = Counter(quarantine_reasons(lake_dir))
    assert want, "the run should include malformed payloads"
    for record, n in want.items():
        assert got[record] >= n, f"{record} not quarantined"
    assert set(got) == set(want)


def test_status_file_reports_counts_and_seq_gaps(broker: EmbeddedBroker, lake_dir: Path) -> None:
    faults = FaultRates(gap=0.05)
    config = SimConfig(devices=5, rate_hz=5, duration_s=20, seed=3, start=START, faults=faults)
    messages, keys = _run(broker, lake_dir, config)
    (status,) = read_statuses(lake_dir)
    assert status["messages_acked"] == len(messages)
    assert sum(status["rows"].values()) == len(keys)
    assert status["connected"] is False  # written at shutdown
    # Gaps the simulator made are the gaps ingest counted (none of them filled later).
    sent = expected_rows(messages)
    per_stream: Counter = Counter()
    for operator, device, stream, _seq, _ts in sent:
        per_stream[(operator, device, stream)] += 1
    expected_missing = 0
    for (operator, device, stream), n in per_stream.items():
        seqs = [s for (o, d, st, s, _) in sent if (o, d, st) == (operator, device, stream)]
        expected_missing += max(seqs) - min(seqs) + 1 - n
    assert expected_missing > 0
    assert status["seq_missing_total"] == expected_missing
    devices = {(d["operator"], d["device_id"], d["stream"]) for d in status["devices"]}
    assert devices == set(per_stream)


def test_fields_outside_the_contract_survive_in_extra(broker: EmbeddedBroker, lake_dir: Path) -> None:
    config = SimConfig(devices=3, rate_hz=2, duration_s=60, seed=11, start=START)
    messages, _ = _run(broker, lake_dir, config)
    with_extra = [m for m in messages if b'"firmware"' in m.payload]
    assert with_extra, "the simulator should send some fields outside the contract"
    con = Lake(lake_dir).connect()
    (n,) = con.execute("SELECT count(*) FROM state WHERE extra LIKE '%firmware%'").fetchone()
    assert n > 0


def test_ingest_waits_for_a_broker_that_is_not_up_yet(tmp_path: Path, lake_dir: Path) -> None:
    broker = EmbeddedBroker(tmp_path / "late-broker", port=free_port())
    settings = ingest_settings(broker.url, lake_dir)
    config = SimConfig(devices=2, rate_hz=2, duration_s=10, seed=5, start=START)
    messages = list(generate(config))
    with running_ingestor(settings) as ingestor:
        assert not ingestor.session.connected
        broker.start()
        try:
            assert wait_until(lambda: ingestor.session.connected, timeout=30)
            publish(messages, BrokerAddress.parse(broker.url), realtime=False, client_id="late-pub")
            assert wait_until(lambda: ingestor.counters.messages_acked >= len(messages), timeout=30)
        finally:
            broker.stop()
    assert set(lake_keys(lake_dir)) == expected_rows(messages)


def test_a_broker_that_ignores_mqtt5_gets_mqtt311(tmp_path: Path, lake_dir: Path) -> None:
    """amqtt says nothing at all to an MQTT 5 CONNECT with properties: ingest falls back to 3.1.1."""
    with EmbeddedBroker(tmp_path / "amqtt", force_amqtt=True) as amqtt:
        settings = ingest_settings(amqtt.url, lake_dir)
        messages = list(generate(SimConfig(devices=2, rate_hz=2, duration_s=10, seed=4, start=START)))
        with running_ingestor(settings) as ingestor:
            assert ingestor.counters.protocol == "3.1.1"
            publish(
                messages,
                BrokerAddress.parse(amqtt.url),
                realtime=False,
                client_id="amqtt-pub",
                protocol="3.1.1",
            )
            assert wait_until(lambda: ingestor.counters.messages_acked >= len(messages), timeout=30)
    assert set(lake_keys(lake_dir)) == expected_rows(messages)
