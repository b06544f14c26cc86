"""What the source benchmarks share: one measurement per fresh process, and the median table.

A measurement is `python -m <benchmark module> --measure <phase> ...` printing one JSON line
`{"rows", "seconds", "peak_rss_mib"}`; a fresh process per measurement keeps peak RSS its own.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from collections.abc import Mapping

Measurement = dict[str, float]


def measure_in_subprocess(module: str, phase: str, arguments: list[str], expected_rows: int, run: int) -> Measurement:
    """Run one measurement, check it counted the rows the workload made, and print its rate."""
    command = [sys.executable, "-m", module, "--measure", phase, *arguments]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"measuring {phase} failed:\n{completed.stderr[-4000:]}")
    measured: Measurement = json.loads(completed.stdout.strip().splitlines()[-1])
    if measured["rows"] != expected_rows:
        raise RuntimeError(f"{phase} counted {measured['rows']:,} rows, the workload made {expected_rows:,}")
    print(
        f"  run {run + 1} {phase:<10} {measured['rows'] / measured['seconds']:>10,.0f} rows/s"
        f"  peak {measured['peak_rss_mib']:.0f} MiB",
        flush=True,
    )
    return measured


def print_medians(results: Mapping[str, list[Measurement]], labels: Mapping[str, str], reference: str) -> None:
    """The median rate and peak RSS per phase, and each rate against the reference's (same invocation)."""

    def median_rate(phase: str) -> float:
        return statistics.median(r["rows"] / r["seconds"] for r in results[phase])

    reference_rate = median_rate(reference) if reference in results else float("nan")
    print(f"{'measurement':<40}{'rows/s':>12}{'vs reference':>14}{'peak RSS MiB':>14}")
    for phase in results:
        rate = median_rate(phase)
        peak = statistics.median(r["peak_rss_mib"] for r in results[phase])
        print(f"{labels[phase]:<40}{rate:>12,.0f}{rate / reference_rate:>13.2f}x{peak:>14.0f}")
