"""Benchmarks behind ``corridorhub bench``: each prints readable figures and ends with one JSON line.

``ingest``: ingest throughput against a bare MQTT client's ceiling, peak RSS and freshness (issue 2).
"""

from corridorhub.bench.ingest import IngestBenchConfig, IngestBenchResult, run_ingest_bench
from corridorhub.bench.report import TARGETS, figures, render

__all__ = ["TARGETS", "IngestBenchConfig", "IngestBenchResult", "figures", "render", "run_ingest_bench"]
