"""``GET /metrics``: Prometheus text for the service's queries and for every ingest worker.

``prometheus_client`` writes the exposition format (escaping, ``_total``/``_bucket`` naming, histogram
cumulation) so we do not have to; each app has its own ``CollectorRegistry``, never the process-global
one, so two apps in one process (the tests) keep separate counts.  The ingest figures are read from the
workers' status files at scrape time by a custom collector: the service holds no ingest state.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from store.ingest_status import read_statuses

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OUTCOMES = ("ok", "refused", "error", "timeout", "rejected", "cancelled")
_QUERY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class ApiMetrics:
    def __init__(self, lake_root: Path) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.queries = Counter(
            "corridorhub_sql_queries",
            "SQL queries answered, by outcome (ok, refused, error, timeout, rejected: 429, cancelled).",
            ["outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "corridorhub_sql_query_seconds",
            "Time from a query's arrival to its last byte sent or its error, by outcome.",
            ["outcome"],
            buckets=_QUERY_BUCKETS_S,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "corridorhub_sql_queries_open", "SQL queries holding a slot now.", registry=self.registry
        )
        self.waiting = Gauge(
            "corridorhub_sql_queries_waiting", "SQL queries waiting for a slot now.", registry=self.registry
        )
        for outcome in OUTCOMES:  # every series exists from the start, at 0
            self.queries.labels(outcome)
            self.latency.labels(outcome)
        self.registry.register(IngestCollector(lake_root))

    def observe_query(self, outcome: str, seconds: float) -> None:
        self.queries.labels(outcome).inc()
        self.latency.labels(outcome).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class IngestCollector(Collector):
    """Each ingest worker's counters, from ``{lake}/_hub/ingest/*.json``, labelled ``worker``."""

    _COUNTERS = (
        ("messages_received", "MQTT messages received."),
        ("messages_acked", "MQTT messages acknowledged after their commit."),
        ("bytes_received", "Payload bytes received."),
        ("duplicates_dropped", "Redelivered samples dropped by dedup."),
        ("commits", "Delta commits."),
        ("commit_failures", "Delta commits that failed (retried)."),
        ("connects", "Connections to the broker."),
    )
    _GAUGES = (
        ("buffer_messages", "Messages waiting for a commit."),
        ("buffer_bytes", "Payload bytes waiting for a commit."),
        ("seq_missing_total", "seq values missing (gaps) over all devices and streams."),
    )

    def __init__(self, lake_root: Path) -> None:
        self.lake_root = lake_root

    def describe(self) -> list[Metric]:
        return []  # the families depend on what the status files hold at scrape time

    def collect(self) -> Iterator[Metric]:
        statuses = [s for s in read_statuses(self.lake_root) if isinstance(s.get("client_id"), str)]
        labels = ["worker"]
        for name, text in self._COUNTERS:
            family = CounterMetricFamily(f"corridorhub_ingest_{name}", text, labels=labels)
            for status in statuses:
                family.add_metric([status["client_id"]], _number(status.get(name)))
            yield family
        for name, text in self._GAUGES:
            gauge = GaugeMetricFamily(f"corridorhub_ingest_{name}", text, labels=labels)
            for status in statuses:
                gauge.add_metric([status["client_id"]], _number(status.get(name)))
            yield gauge
        yield from self._per_key(statuses)
        connected = GaugeMetricFamily(
            "corridorhub_ingest_connected", "1 when the worker is connected to the broker.", labels=labels
        )
        age = GaugeMetricFamily(
            "corridorhub_ingest_status_age_seconds",
            "Seconds since the worker last wrote its status.",
            labels=labels,
        )
        now = time.time()
        for status in statuses:
            connected.add_metric([status["client_id"]], 1.0 if status.get("connected") else 0.0)
            age.add_metric([status["client_id"]], max(0.0, now - _number(status.get("written_at"))))
        yield connected
        yield age
        yield self._commit_latency(statuses)

    def _per_key(self, statuses: list[dict[str, Any]]) -> Iterator[Metric]:
        rows = CounterMetricFamily(
            "corridorhub_ingest_rows", "Rows committed, by stream.", labels=["worker", "stream"]
        )
        quarantined = CounterMetricFamily(
            "corridorhub_ingest_quarantined",
            "Samples or payloads quarantined, by reason.",
            labels=["worker", "reason"],
        )
        for status in statuses:
            for stream, count in _mapping(status.get("rows")).items():
                rows.add_metric([status["client_id"], str(stream)], _number(count))
            for reason, count in _mapping(status.get("quarantined")).items():
                quarantined.add_metric([status["client_id"], str(reason)], _number(count))
        yield rows
        yield quarantined

    def _commit_latency(self, statuses: list[dict[str, Any]]) -> Metric:
        family = HistogramMetricFamily(
            "corridorhub_ingest_commit_seconds", "Time of one Delta commit, made durable.", labels=["worker"]
        )
        for status in statuses:
            latency = _mapping(status.get("commit_latency"))
            bounds, counts = latency.get("buckets_s"), latency.get("counts")
            if not isinstance(bounds, list) or not isinstance(counts, list) or len(counts) != len(bounds) + 1:
                continue
            cumulative, buckets = 0.0, []
            for bound, count in zip([*map(str, bounds), "+Inf"], counts, strict=True):
                cumulative += _number(count)  # the status file counts per bucket, Prometheus cumulates
                buckets.append((bound, cumulative))
            family.add_metric([status["client_id"]], buckets, _number(latency.get("sum_s")))
        return family


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
