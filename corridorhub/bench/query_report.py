"""The query benchmark's figures: the readable report, the target, and the closing JSON line."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from corridorhub.bench.corridor_day import day_figures
from corridorhub.bench.query import QueryTiming
from corridorhub.bench.query_http import HttpLatency
from corridorhub.bench.report import Target

#: Target of issue 3: the sandboxed path at most 30% slower than plain sorted Parquet, on every query.
QUERY_TARGETS = (Target("worst_query_ratio", 1.3, at_least=False),)


@dataclass(frozen=True)
class QueryBenchResult:
    """Everything ``bench query`` measured, and how the data was made."""

    rows: dict[str, int]
    devices: int
    interval_s: float
    generated_s: float | None  # None when a cached lake was reused
    plain_write_s: float | None
    layout: dict[str, dict[str, float]]
    sandbox_setup_s: float
    timings: list[QueryTiming]
    http: HttpLatency
    http_alone: HttpLatency  # the same request from one client: service time without queueing
    memory_limit: str
    threads: int
    repeats: int


def query_figures(result: QueryBenchResult) -> dict[str, Any]:
    """Every figure, rounded for print; ratios are computed from the printed (rounded) medians."""
    out: dict[str, Any] = {
        **day_figures(result.rows, result.devices, result.interval_s, result.generated_s),
        "plain_write_s": None if result.plain_write_s is None else round(result.plain_write_s, 1),
        "layout": result.layout,
        "memory_limit": result.memory_limit,
        "threads": result.threads,
        "repeats": result.repeats,
        "statistic": "median",
        "sandbox_setup_s": round(result.sandbox_setup_s, 4),
    }
    ratios: dict[str, float] = {}
    cpu_ratios: dict[str, float] = {}
    for t in result.timings:
        name = t.query.name
        sandbox, plain = round(t.sandbox_median_s, 4), round(t.plain_median_s, 4)
        sandbox_cpu, plain_cpu = round(t.sandbox_cpu_median_s, 4), round(t.plain_cpu_median_s, 4)
        ratios[name] = _ratio(sandbox, plain)
        cpu_ratios[name] = _ratio(sandbox_cpu, plain_cpu)
        out[f"{name}_sandbox_s"] = sandbox
        out[f"{name}_plain_s"] = plain
        out[f"{name}_ratio"] = ratios[name]
        out[f"{name}_sandbox_cpu_s"] = sandbox_cpu
        out[f"{name}_plain_cpu_s"] = plain_cpu
        out[f"{name}_cpu_ratio"] = cpu_ratios[name]
        out[f"{name}_runs"] = len(t.plain_s)
        out[f"{name}_rows"] = t.rows
    worst = max(ratios, key=lambda name: ratios[name])
    out["worst_query"] = worst
    out["worst_query_ratio"] = ratios[worst]
    worst_cpu = max(cpu_ratios, key=lambda name: cpu_ratios[name])
    out["worst_query_cpu"] = worst_cpu
    out["worst_query_cpu_ratio"] = cpu_ratios[worst_cpu]
    h = result.http
    out.update(
        {
            "http_requests": len(h.latencies_s),
            "http_clients": h.clients,
            "http_errors": h.errors,
            "http_p50_ms": round(h.p50_ms, 2),
            "http_p99_ms": round(h.p99_ms, 2),
            "http_max_ms": round(h.max_ms, 2),
            "http_requests_per_s": round(h.requests_per_s, 1),
            "http_1client_p50_ms": round(result.http_alone.p50_ms, 2),
            "http_1client_p99_ms": round(result.http_alone.p99_ms, 2),
        }
    )
    out["targets_met"] = {t.key: t.met(out) for t in QUERY_TARGETS}
    return out


def _ratio(sandbox: float, plain: float) -> float:
    return round(sandbox / plain, 3) if plain > 0 else float("inf")


def render_query(result: QueryBenchResult, figs: dict[str, Any]) -> list[str]:
    """The readable report, ending with the one JSON line."""
    r = result.rows
    made = (
        "reused from the cache"
        if result.generated_s is None
        else f"generated in {result.generated_s:.1f} s, plain files written in "
        f"{result.plain_write_s or 0:.1f} s"
    )
    lines = [
        "corridorhub bench query",
        f"  data: {r['state']:,} state, {r['network']:,} network, {r['event']:,} event rows; "
        f"{result.devices} devices sampling every {result.interval_s:.3f} s over 05:00-23:00 JST ({made})",
        "  layout: "
        + "; ".join(
            f"{name} {v['lake_files']:.0f} lake files {v['lake_mib']:,.0f} MiB, plain 1 file "
            f"{v['plain_mib']:,.0f} MiB"
            for name, v in result.layout.items()
        ),
        f"  both sides: memory_limit {result.memory_limit}, threads {result.threads}; median of "
        f"{result.repeats} runs each (more for short queries), alternating; every row fetched as Arrow",
        f"  sandbox set-up (worker start, views, lock): {result.sandbox_setup_s * 1000:.0f} ms, once",
        f"  {'':<18} {'wall-clock, median':^29} {'process CPU, median':^29}",
        f"  {'query':<18} {'sandbox s':>10} {'plain s':>10} {'ratio':>7} {'sandbox s':>10} {'plain s':>10} "
        f"{'ratio':>7} {'runs':>5} {'rows':>7}",
    ]
    for t in result.timings:
        n = t.query.name
        lines.append(
            f"  {n:<18} {figs[f'{n}_sandbox_s']:>10.4f} {figs[f'{n}_plain_s']:>10.4f} "
            f"{figs[f'{n}_ratio']:>7.3f} {figs[f'{n}_sandbox_cpu_s']:>10.4f} "
            f"{figs[f'{n}_plain_cpu_s']:>10.4f} {figs[f'{n}_cpu_ratio']:>7.3f} {len(t.plain_s):>5} "
            f"{t.rows:>7,}   {t.query.description}"
        )
    h = result.http
    lines += [
        f"  HTTP POST /v1/sql (small aggregate over event), {h.clients} clients, "
        f"{len(h.latencies_s)} requests: p50 {figs['http_p50_ms']:.1f} ms, p99 {figs['http_p99_ms']:.1f} ms, "
        f"max {figs['http_max_ms']:.1f} ms, {figs['http_requests_per_s']:.0f} requests/s, {h.errors} errors; "
        f"one client alone: p50 {figs['http_1client_p50_ms']:.1f} ms, "
        f"p99 {figs['http_1client_p99_ms']:.1f} ms",
        "  target (2-core machine):",
    ]
    for target in QUERY_TARGETS:
        verdict = "met" if figs["targets_met"][target.key] else "NOT MET"
        lines.append(f"    {str(target):<30} {figs[target.key]:>10} {verdict} (worst: {figs['worst_query']})")
    lines.append(
        f"    (process CPU instead of wall-clock: worst ratio {figs['worst_query_cpu_ratio']}, "
        f"{figs['worst_query_cpu']})"
    )
    lines.append(json.dumps(figs, sort_keys=True))
    return lines
