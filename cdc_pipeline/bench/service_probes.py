"""What the service benchmark (service.py) measures while the service runs: the streaming run's
process and its memory, the latency from a source commit to each sink, and a steady rate's lag."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psutil

from cdc_pipeline.bench.dagster_service import DagsterService, wait_for
from cdc_pipeline.bench.rate_writer import Commit, SourceWriter, max_id, write_at_rate

# The sinks' names and the PostgreSQL sink's schema in the benchmark's pipeline (service.py).
CH_SINK, PG_SINK = "warehouse", "analytics"
SINK_SCHEMA = "replica"


class MemorySampler:
    """Samples a process's RSS and its file-backed part every 100 ms, in a thread."""

    def __init__(self, pid: int) -> None:
        self._process = psutil.Process(pid)
        self.peak_rss = 0
        self.peak_private = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.1):
            try:
                info = self._process.memory_info()
            except psutil.NoSuchProcess:
                return
            self.peak_rss = max(self.peak_rss, info.rss)
            self.peak_private = max(self.peak_private, info.rss - info.shared)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def streaming_run_pid(service: DagsterService, timeout: float = 120) -> tuple[int, float]:
    """The pid and start time of the service's streaming run, once it has one."""
    instance = service.instance()
    found: dict[str, Any] = {}

    def started() -> bool:
        for record in instance.get_run_records(limit=5):
            if record.dagster_run.job_name.startswith("stream_") and record.start_time:
                for entry in instance.all_logs(record.dagster_run.run_id):
                    message = entry.message or ""
                    if message.startswith("Started process for run (pid: "):
                        found["pid"] = int(message.split("pid: ")[1].rstrip(")."))
                        found["start"] = record.start_time
                        return True
        return False

    wait_for(started, timeout, "the streaming run to start", interval=0.2)
    return int(found["pid"]), float(found["start"])


def measure_latency(
    writer: SourceWriter,
    first_id: int,
    seconds: float,
    sink_dsn: str,
    table: str,
    progress_of: Callable[[], float] | None,
) -> dict[str, list[float]]:
    """One row a second for `seconds`; latency to PostgreSQL by polling it, to ClickHouse by the run's progress."""
    commits: list[Commit] = []
    writing = threading.Thread(target=write_at_rate, args=(writer, 1, seconds, first_id, commits))
    writing.start()
    pg_seen: dict[int, float] = {}
    ch_seen: dict[int, float] = {}
    while writing.is_alive() or len(pg_seen) < len(commits) or (progress_of and len(ch_seen) < len(commits)):
        now = time.time()
        newest = max_id(sink_dsn, SINK_SCHEMA, table)
        applied_through = progress_of() if progress_of else 0.0
        for commit in list(commits):
            if commit.last_id not in pg_seen and commit.last_id <= newest:
                pg_seen[commit.last_id] = now
            if progress_of and commit.last_id not in ch_seen and commit.committed_at <= applied_through:
                ch_seen[commit.last_id] = now
        if not writing.is_alive() and now - commits[-1].committed_at > 60:
            raise TimeoutError("commits did not become visible within 60 s of the last one")
        time.sleep(0.05)
    figures = {PG_SINK: [pg_seen[c.last_id] - c.committed_at for c in commits]}
    if progress_of:
        figures[CH_SINK] = [ch_seen[c.last_id] - c.committed_at for c in commits]
    return figures


def measure_rate(
    writer: SourceWriter, rate: int, seconds: float, first_id: int, sink_dsn: str, table: str
) -> dict[str, float]:
    """A steady writer; the lag of each commit in PostgreSQL, in the first and second half, and the replicated rate."""
    commits: list[Commit] = []
    writing = threading.Thread(target=write_at_rate, args=(writer, rate, seconds, first_id, commits))
    started = time.time()
    writing.start()
    lags: list[tuple[float, float]] = []  # (commit time, lag)
    done: set[int] = set()
    while writing.is_alive() or len(done) < len(commits):
        newest = max_id(sink_dsn, SINK_SCHEMA, table)
        now = time.time()
        for commit in commits:
            if commit.last_id not in done and commit.last_id <= newest:
                done.add(commit.last_id)
                lags.append((commit.committed_at, now - commit.committed_at))
        if not writing.is_alive() and commits and now - commits[-1].committed_at > 120:
            break
        time.sleep(0.1)
    written = sum(c.rows for c in commits)
    caught_up = max((t + lag for t, lag in lags), default=started)
    half = started + seconds / 2
    first = [lag for t, lag in lags if t < half] or [0.0]
    second = [lag for t, lag in lags if t >= half] or [0.0]
    return {
        "written_per_second": written / (commits[-1].committed_at - started) if commits else 0.0,
        "replicated_per_second": written / max(caught_up - started, 1e-3),
        "lag_first_half_p95": percentile(first, 95),
        "lag_second_half_p95": percentile(second, 95),
        "lag_max": max(second + first),
        "all_arrived": float(len(done) == len(commits)),
    }


def percentile(values: list[float], percent: float) -> float:
    """The nearest-rank percentile of `values`."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(percent / 100 * (len(ordered) - 1)))]
