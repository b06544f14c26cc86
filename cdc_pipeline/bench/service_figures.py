"""The service benchmark's figures (service.py): one run's, and the medians it prints with their
ratios to the in-process reference measured in the same invocation."""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass, field

from cdc_pipeline.bench.service_probes import PG_SINK, percentile


@dataclass
class RunFigures:
    reference_rate: float = 0.0
    drain_rate: float = 0.0
    drain_peak_rss_mib: float = 0.0
    drain_peak_private_mib: float = 0.0
    latency: dict[str, list[float]] = field(default_factory=dict)  # sink -> seconds per row
    per_run_latency: list[float] = field(default_factory=list)
    # "events" (runs and their event logs) and "ticks" (sensor ticks, of which dagster.yaml purges
    # the skipped ones after a day)
    storage_bytes_per_day: dict[str, float] = field(default_factory=dict)
    rates: dict[int, dict[str, float]] = field(default_factory=dict)


def report(kind: str, runs: list[RunFigures], args: argparse.Namespace) -> None:
    def median(values: list[float]) -> float:
        return statistics.median(values)

    reference = median([r.reference_rate for r in runs])
    print(f"\n{kind} source, median of {len(runs)} runs (backlog {args.backlog:,} rows, 10-column table):")
    print(f"  in-process reference (no Dagster)       {reference:>10,.0f} rows/s")
    drain = median([r.drain_rate for r in runs])
    print(
        f"  backlog drain through dagster-daemon     {drain:>10,.0f} rows/s  {drain / reference:.2f}x the reference;"
        f" peak RSS {median([r.drain_peak_rss_mib for r in runs]):.0f} MiB"
        f" ({median([r.drain_peak_private_mib for r in runs]):.0f} MiB without mapped files)"
    )
    for sink_name in runs[0].latency:
        values = [v for r in runs for v in r.latency[sink_name]]
        print(
            f"  latency at 1 row/s into {sink_name:<10}      p50 {statistics.median(values):.2f} s"
            f"  p95 {percentile(values, 95):.2f} s  max {max(values):.2f} s"
        )
    if runs[0].per_run_latency:
        values = [v for r in runs for v in r.per_run_latency]
        print(
            f"  per-run mode latency into {PG_SINK:<10}    p50 {statistics.median(values):.2f} s"
            f"  p95 {percentile(values, 95):.2f} s  max {max(values):.2f} s"
        )
    events = median([r.storage_bytes_per_day["events"] for r in runs]) / 2**20
    ticks = median([r.storage_bytes_per_day["ticks"] for r in runs]) / 2**20
    print(
        f"  Dagster storage growth at 1 row/s        events {events:.1f} MiB/day, sensor ticks {ticks:.1f}"
        " MiB/day (skipped ticks purged after a day)"
    )
    for rate in args.rates:
        figures = [r.rates[rate] for r in runs]
        replicated = median([f["replicated_per_second"] for f in figures])
        first = median([f["lag_first_half_p95"] for f in figures])
        second = median([f["lag_second_half_p95"] for f in figures])
        # Kept up: the lag of the second half is about that of the first (a writer the pipeline cannot
        # follow adds lag at a steady pace, so the second half's is clearly higher).
        bounded = second <= first + max(1.0, 0.25 * first)
        events = median([f["events_bytes_per_day"] for f in figures]) / 2**20
        print(
            f"  writer at {rate:>6,} rows/s: replicated {replicated:>8,.0f} rows/s ({replicated / reference:.2f}x the"
            f" reference); lag p95 {first:.1f} s -> {second:.1f} s: {'bounded' if bounded else 'GROWING'};"
            f" Dagster events {events:.1f} MiB/day"
        )
