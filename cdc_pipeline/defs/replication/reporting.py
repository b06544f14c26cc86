"""What replication shows in Dagster: sink-table materializations, sink status, the DLQ, stage timings.

A run per batch reports every batch. A continuous run loops thousands of batches, and an event per
table per batch would grow Dagster's storage without bound, so `ThrottledReporter` sums each sink
table's batches and materializes it at most once per `replication.report_interval_seconds` (the
first batch of a table at once, so the UI moves as soon as a run starts). Sink status is observed
when it changes, and the stages' timings go to the run's log once per interval, summed.
"""

from __future__ import annotations

import resource
import statistics
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import psutil

from cdc_pipeline.config.models import PipelineConfig
from cdc_pipeline.core.changes import Rejection
from cdc_pipeline.defs.asset_keys import DEAD_LETTER_QUEUE_KEY, sink_table_asset_key
from cdc_pipeline.defs.dead_letters.metadata import dead_letter_metadata
from cdc_pipeline.defs.replication.progress import ProgressRecorder
from cdc_pipeline.defs.replication.sink_status import (
    AVAILABLE,
    STATUS,
    observe_recovery,
    observe_unavailable,
    unavailable_status,
)
from cdc_pipeline.defs.sink_tables.assets import configured_tables
from cdc_pipeline.defs.sink_tables.schema_status import HELD, IN_SYNC, SCHEMA_STATUS
from cdc_pipeline.delivery.loop import Progress
from cdc_pipeline.delivery.session import BatchReport
from cdc_pipeline.delivery.steps import ReleaseOutcome, SinkDelivery
from cdc_pipeline.dlq.store import DeadLetterStore
from cdc_pipeline.sinks.base import Sink


def memory_mib() -> float:
    """This process's resident memory now."""
    return float(psutil.Process().memory_info().rss) / 2**20


def peak_memory_mib() -> float:
    """This process's peak resident memory (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_private_memory_mib() -> float:
    """Peak resident memory less the file-backed pages resident now: mostly the mapped code of the
    libraries (chdb's engine alone maps about 300 MiB of its 550 MiB library, shared and reclaimable),
    so about the peak of what the process allocated."""
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    file_backed_kib = int(status.get("RssFile", "0 kB").split()[0]) + int(status.get("RssShmem", "0 kB").split()[0])
    return peak_memory_mib() - file_backed_kib / 1024


def reasons(rejections: Iterable[Rejection]) -> str:
    counts = Counter(f"{r.table}: {r.error}" for r in rejections)
    return "; ".join(f"{n} x {reason}" for reason, n in counts.most_common(5))


@dataclass
class TableActivity:
    """A sink table's changes over one or more batches."""

    counts: Counter[str] = field(default_factory=Counter)
    dead_lettered: int = 0
    schema_applied: list[str] = field(default_factory=list)
    schema_held: str | None = None
    position: str = ""
    lag_seconds: float = 0.0
    batches: int = 0
    since: float = field(default_factory=time.time)

    def add(self, delivery: SinkDelivery, table: str, position: str, lag: float, failed: int) -> None:
        result = delivery.result
        assert result is not None
        self.counts.update(result.rows_by_table.get(table, Counter()))
        self.dead_lettered += failed
        self.schema_applied.extend(result.schema_applied.get(table, []))
        if table in result.schema_held:
            self.schema_held = result.schema_held[table]
        self.position = position
        self.lag_seconds = lag
        self.batches += 1

    def metadata(self, note: str | None, now: float, with_rate: bool) -> dict[str, dg.RawMetadataValue]:
        schema: dict[str, dg.RawMetadataValue] = {SCHEMA_STATUS: IN_SYNC}
        if self.schema_applied:
            schema["schema_changes"] = "; ".join(self.schema_applied)
        if self.schema_held is not None:
            # The table's rows go to the DLQ until an operator's fix (see the schema_in_sync check).
            schema[SCHEMA_STATUS] = f"{HELD}: {self.schema_held}"
        rate: dict[str, dg.RawMetadataValue] = {}
        if with_rate:
            elapsed = max(now - self.since, 1e-3)
            rate = {"rows_per_second": round(sum(self.counts.values()) / elapsed, 1), "batches": self.batches}
        return {
            "rows_inserted": self.counts["insert"],
            "rows_updated": self.counts["update"],
            "rows_deleted": self.counts["delete"],
            "dlq_count": self.dead_lettered,
            "source_position": self.position,
            "lag_seconds": round(self.lag_seconds, 3),
            **rate,
            STATUS: AVAILABLE,
            **schema,
            **({"timescaledb": note} if note else {}),
        }


def table_activity(delivery: SinkDelivery, position: str, lag: float) -> dict[str, TableActivity]:
    """One batch's activity per sink table, for a sink that took it."""
    assert delivery.result is not None
    failed = Counter(r.table for r in delivery.rejections)
    tables = delivery.result.rows_by_table.keys() | failed.keys() | delivery.result.schema_applied.keys()
    activity: dict[str, TableActivity] = {}
    for table in sorted(tables):
        activity.setdefault(table, TableActivity()).add(delivery, table, position, lag, failed.get(table, 0))
    return activity


def status_assets(
    source_name: str, sink_name: str, pipeline: PipelineConfig, tables: Iterable[str]
) -> list[dg.AssetKey]:
    """The sink's tables whose status the UI and the freshness check read: the declared ones and the batch's."""
    names = sorted({*configured_tables(pipeline, source_name), *tables})
    return [sink_table_asset_key(sink_name, table) for table in names]


class ThrottledReporter:
    """Reports a continuous run's batches at a bounded event rate (see the module docstring)."""

    def __init__(
        self,
        context: dg.OpExecutionContext,
        source_name: str,
        pipeline: PipelineConfig,
        sinks: dict[str, Sink],
        dead_letters: DeadLetterStore,
    ) -> None:
        self._context = context
        self._source_name = source_name
        self._pipeline = pipeline
        self._sinks = sinks
        self._dead_letters = dead_letters
        self._interval = pipeline.replication.report_interval_seconds
        self._progress = ProgressRecorder(context.instance, source_name)
        self._pending: dict[tuple[str, str], TableActivity] = {}
        self._emitted_at: dict[tuple[str, str], float] = {}
        self._down: dict[str, str] = {}
        # Each sink's state as the last batch left it, for the run's output metadata.
        self._sink_state: dict[str, dict[str, dg.RawMetadataValue]] = {}
        self._release: ReleaseOutcome | None = None
        self._dead_letters_pending = False
        self._dead_letters_emitted_at = 0.0
        self._stage_samples: dict[str, list[float]] = {}
        self._window_rows = 0
        self._window_batches = 0
        self._window_started = time.time()
        self.total_rows = 0
        self.total_batches = 0
        self.total_dead_lettered = 0

    # -- from the loop -----------------------------------------------------------------------------

    def on_batch(self, report: BatchReport, progress: Progress) -> None:
        now = time.time()
        lag = round(now - report.last_commit_ts, 3) if report.last_commit_ts else 0.0
        self.total_batches += 1
        self.total_rows += report.source_rows
        self._window_batches += 1
        self._window_rows += report.source_rows
        for stage, seconds in report.stage_seconds.items():
            self._stage_samples.setdefault(stage, []).append(seconds)
        for change in report.schema_changes:
            self._context.log.info(f"schema change of {change}")
        if report.upstream_rejections:
            self._context.log.warning(
                f"{len(report.upstream_rejections)} events sent to the DLQ: {reasons(report.upstream_rejections)}"
            )
            self._dead_letters_pending = True
            self.total_dead_lettered += len(report.upstream_rejections)
        self._release = report.release
        for sink_name, delivery in report.deliveries.items():
            if delivery.unavailable is not None:
                self._sink_down(sink_name, delivery, report)
                continue
            self._sink_up(sink_name, delivery)
            assert delivery.result is not None
            self._sink_state[sink_name] = {
                "status": AVAILABLE,
                "checkpoint": str(delivery.result.checkpoint),
                "write_attempts": delivery.attempts,
            }
            if delivery.rejections:
                self._context.log.warning(
                    f"{len(delivery.rejections)} events sent to the DLQ for {sink_name}: {reasons(delivery.rejections)}"
                )
                self._dead_letters_pending = True
                self.total_dead_lettered += len(delivery.rejections)
            assert delivery.result is not None
            for table, held in delivery.result.schema_held.items():
                self._context.log.warning(f"{sink_name}: table {table} held: {held}")
            for table, activity in table_activity(delivery, str(report.end.position), lag).items():
                key = (sink_name, table)
                pending = self._pending.get(key)
                if pending is None:
                    self._pending[key] = activity
                else:
                    pending.counts.update(activity.counts)
                    pending.dead_lettered += activity.dead_lettered
                    pending.schema_applied.extend(activity.schema_applied)
                    pending.schema_held = activity.schema_held or pending.schema_held
                    pending.position, pending.lag_seconds = activity.position, activity.lag_seconds
                    pending.batches += 1
                # A schema change or hold is news at once; rows wait for the interval.
                if activity.schema_applied or activity.schema_held is not None:
                    self._emit_table(key, now)
        for sink_name, applied_through in progress.sinks.items():
            self._progress.record(sink_name, applied_through, str(report.end))
        self._emit_due(now)

    def sink_metadata(self) -> dict[str, dg.RawMetadataValue]:
        """Each sink's status, checkpoint and write attempts after the last batch, and whether the
        source's log was released past them."""
        metadata: dict[str, dg.RawMetadataValue] = {}
        for sink_name, state in sorted(self._sink_state.items()):
            metadata.update({f"{sink_name}_{key}": value for key, value in state.items()})
        metadata["sinks_unavailable"] = ", ".join(sorted(self._down)) or "none"
        if self._release is not None:
            metadata["released"] = self._release.released
            metadata.update(self._release.usage)
        return metadata

    def on_idle(self, progress: Progress) -> None:
        for sink_name, applied_through in progress.sinks.items():
            self._progress.record(sink_name, applied_through, "")
        self._emit_due(time.time())

    def flush(self) -> None:
        now = time.time()
        for key in list(self._pending):
            self._emit_table(key, now)
        self._emit_dead_letters(now)
        self._log_window(now)
        self._progress.flush()

    # -- emitting --------------------------------------------------------------------------------------

    def _emit_due(self, now: float) -> None:
        for key in list(self._pending):
            if now - self._emitted_at.get(key, 0.0) >= self._interval:
                self._emit_table(key, now)
        if self._dead_letters_pending and now - self._dead_letters_emitted_at >= self._interval:
            self._emit_dead_letters(now)
        if now - self._window_started >= self._interval:
            self._log_window(now)

    def _emit_table(self, key: tuple[str, str], now: float) -> None:
        activity = self._pending.pop(key, None)
        if activity is None:
            return
        sink_name, table = key
        note = self._sinks[sink_name].table_note(table)
        self._context.log_event(
            dg.AssetMaterialization(
                asset_key=sink_table_asset_key(sink_name, table), metadata=activity.metadata(note, now, True)
            )
        )
        self._emitted_at[key] = now

    def _emit_dead_letters(self, now: float) -> None:
        if not self._dead_letters_pending:
            return
        self._context.log_event(
            dg.AssetMaterialization(asset_key=DEAD_LETTER_QUEUE_KEY, metadata=dead_letter_metadata(self._dead_letters))
        )
        self._dead_letters_pending = False
        self._dead_letters_emitted_at = now

    def _log_window(self, now: float) -> None:
        if self._window_batches:
            elapsed = max(now - self._window_started, 1e-3)
            stages = ", ".join(
                f"{stage} {statistics.median(samples) * 1000:.0f}/{max(samples) * 1000:.0f}"
                for stage, samples in self._stage_samples.items()
            )
            self._context.log.info(
                f"{self._window_batches} batches, {self._window_rows} row changes in {elapsed:.0f} s"
                f" ({self._window_rows / elapsed:.0f}/s); per batch, median/max ms: {stages};"
                f" memory {memory_mib():.0f} MiB, peak {peak_memory_mib():.0f} MiB"
                f" ({peak_private_memory_mib():.0f} MiB without mapped libraries)"
            )
        self._stage_samples = {}
        self._window_rows = 0
        self._window_batches = 0
        self._window_started = now

    def _sink_down(self, sink_name: str, delivery: SinkDelivery, report: BatchReport) -> None:
        reason = delivery.unavailable
        assert reason is not None
        if self._down.get(sink_name) == reason:
            return  # observed already: one event per outage, not one per batch
        self._down[sink_name] = reason
        if delivery.attempts:
            # Not when the sink was only resting: the last real try is what the metadata shows.
            self._sink_state[sink_name] = {"write_attempts": delivery.attempts}
        metadata: dict[str, dg.RawMetadataValue] = {
            "write_attempts": delivery.attempts,
            "batch_from": str(report.start),
            "batch_to": str(report.end),
        }
        assets = status_assets(self._source_name, sink_name, self._pipeline, report.tables)
        since = observe_unavailable(self._context, assets, reason, time.time(), metadata)
        status = unavailable_status(since, reason)
        self._sink_state.setdefault(sink_name, {})["status"] = status
        self._context.log.warning(
            f"sink '{sink_name}' {status}; it keeps its checkpoint and catches up from it when it is back"
        )

    def _sink_up(self, sink_name: str, delivery: SinkDelivery) -> None:
        was_down = self._down.pop(sink_name, None) is not None
        if not was_down and self.total_batches > 1:
            return  # the instance is asked once per run, then only after an outage this run saw
        assets = status_assets(self._source_name, sink_name, self._pipeline, delivery.mapped_tables)
        if observe_recovery(self._context, assets, time.time()):
            assert delivery.result is not None
            self._context.log.info(f"sink '{sink_name}' is available again, caught up to {delivery.result.checkpoint}")
