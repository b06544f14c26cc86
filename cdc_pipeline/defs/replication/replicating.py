"""The body both replication jobs run: a loop of micro-batches (read -> mask -> map -> write ->
checkpoint -> release) with the source, the sinks and the chdb session kept open between them.

`stream_<source>` (continuous mode) loops until its lifetime ends; `replicate_<source>` (per-run
mode, `dagster job execute`, schedules) drains the log up to where the sensor saw it end, in
bounded batches each checkpointed. Either stops after the batch in hand when it is terminated.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import dagster as dg

from cdc_pipeline.config.models import PipelineConfig
from cdc_pipeline.core.positions import SourcePosition
from cdc_pipeline.defs.replication.reporting import (
    ThrottledReporter,
    memory_mib,
    peak_memory_mib,
    peak_private_memory_mib,
)
from cdc_pipeline.defs.replication.stop_signal import stop_at_batch_boundary
from cdc_pipeline.defs.resource_keys import DEAD_LETTER_QUEUE, MASKING, sink_key, source_key
from cdc_pipeline.defs.resources import dead_letter_store_of, masker_of, open_change_source, sinks_of
from cdc_pipeline.defs.run_tags import EMBEDDED_CLICKHOUSE_TAG, REACHED_TAG, embedded_clickhouse_tags
from cdc_pipeline.delivery.limits import BatchLimits
from cdc_pipeline.delivery.loop import STOPPED_ON_REQUEST, ReplicationLoop
from cdc_pipeline.delivery.session import EverySinkUnavailable, ReplicationSession
from cdc_pipeline.delivery.steps import read_checkpoints
from cdc_pipeline.sinks.base import Sink
from cdc_pipeline.sinks.clickhouse.chdb_waiters import other_processes_waiting
from cdc_pipeline.sources.change_source import ChangeSource


@dataclass(frozen=True)
class RunPlan:
    """When a replication run ends."""

    lifetime_seconds: float | None  # None: no time limit
    until_caught_up: bool
    stop_at: SourcePosition | None = None
    max_rows: int | None = None  # per batch; None: batch.max_rows
    max_batches: int | None = None


def required_resource_keys(source_name: str, pipeline: PipelineConfig) -> set[str]:
    return {source_key(source_name), *map(sink_key, pipeline.sinks), DEAD_LETTER_QUEUE, MASKING}


def one_op_job(op: dg.OpDefinition, name: str, description: str, tags: dict[str, str]) -> dg.JobDefinition:
    """A replication job: its one op runs in the run's process (unmasked rows live only inside it,
    and the in-memory IO manager the definitions bind never pickles them)."""

    @dg.graph(name=f"{name}_graph")
    def graph() -> None:
        op()

    return graph.to_job(name=name, description=description, executor_def=dg.in_process_executor, tags=tags)


def open_sinks(resources: Any, pipeline: PipelineConfig) -> dict[str, Sink]:
    return sinks_of(resources, pipeline.sinks)


class EmbeddedClickHouseWatch:
    """chdb serves its path to one process: a run that held it for its whole lifetime would starve
    every other run that writes it (an initial load's chunks, a DLQ replay, checks). Every few
    seconds the run looks for such runs waiting in the queue (tagged with the path) or waiting for
    the path itself (sinks/chdb_waiters.py) and, if there are, ends at the batch boundary; the
    sensor's next run queues behind them."""

    _EVERY_SECONDS = 2.0

    def __init__(self, context: dg.OpExecutionContext, pipeline: PipelineConfig) -> None:
        self._instance = context.instance
        self._run_id = context.run_id
        self._path = pipeline.embedded_clickhouse_path
        self._tag = embedded_clickhouse_tags(pipeline).get(EMBEDDED_CLICKHOUSE_TAG)
        self._looked_at = time.monotonic()

    def waiting_run(self) -> str | None:
        if self._path is None or time.monotonic() - self._looked_at < self._EVERY_SECONDS:
            return None
        self._looked_at = time.monotonic()
        processes = other_processes_waiting(self._path)
        if processes:
            return f"yielded the embedded ClickHouse path to waiting process {processes[0]}"
        if self._tag is None:
            return None
        queued = self._instance.get_run_records(
            filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.QUEUED], tags={EMBEDDED_CLICKHOUSE_TAG: self._tag}),
            limit=2,
        )
        others = [record.dagster_run.run_id for record in queued if record.dagster_run.run_id != self._run_id]
        return f"yielded the embedded ClickHouse path to queued run {others[0]}" if others else None


def replicate_in_batches(
    context: dg.OpExecutionContext, source_name: str, pipeline: PipelineConfig, plan: RunPlan
) -> None:
    """Run the loop to the plan's end; the run's totals, each sink's status and the source log's
    retention go to the op's output metadata."""
    started_with_mib = memory_mib()
    resources = context.resources
    sinks = open_sinks(resources, pipeline)
    dead_letters = dead_letter_store_of(resources)
    source = open_change_source(resources, source_name, pipeline)
    masker = masker_of(resources, pipeline)
    session = ReplicationSession(source_name, pipeline, source, sinks, dead_letters, masker, context.log.warning)
    reporter = ThrottledReporter(context, source_name, pipeline, sinks, dead_letters)
    started = time.monotonic()
    try:
        session.check()
        with stop_at_batch_boundary() as stop:
            loop = ReplicationLoop(
                session,
                BatchLimits.from_config(pipeline.batch, plan.max_rows),
                pipeline.replication.idle_poll_seconds,
                reporter.on_batch,
                reporter.on_idle,
                stop,
                EmbeddedClickHouseWatch(context, pipeline).waiting_run,
            )
            deadline = None if plan.lifetime_seconds is None else started + plan.lifetime_seconds
            ended = loop.run(deadline, plan.until_caught_up, plan.stop_at, plan.max_batches)
    except EverySinkUnavailable as error:
        raise dg.Failure(str(error)) from None
    finally:
        reporter.flush()
        session.close()
    if loop.reached is not None:
        # The per-run sensor reads it: a run that ended short of its stop_at is continued from here.
        context.instance.add_run_tags(context.run_id, {REACHED_TAG: str(loop.reached)})
    context.log.info(
        f"{source_name}: {ended} after {time.monotonic() - started:.0f} s; {reporter.total_batches} batches,"
        f" {reporter.total_rows} row changes, {reporter.total_dead_lettered} to the DLQ"
    )
    unmatched = masker.unmatched_rules() if reporter.total_batches else []
    if unmatched:
        context.log.warning(
            f"{source_name}: masking rules that matched no column of the tables this run saw: {', '.join(unmatched)}"
        )
    context.add_output_metadata(
        {
            "ended": ended,
            **({"masking_rules_unmatched": ", ".join(unmatched)} if unmatched else {}),
            "batches": reporter.total_batches,
            "rows": reporter.total_rows,
            "dead_lettered": reporter.total_dead_lettered,
            "reached": str(loop.reached) if loop.reached is not None else "nothing read",
            **reporter.sink_metadata(),
            **_retention(source_name, source, sinks),
            "memory_at_start_mib": round(started_with_mib),
            "peak_memory_mib": round(peak_memory_mib()),
            "peak_private_memory_mib": round(peak_private_memory_mib()),
        }
    )
    if ended == STOPPED_ON_REQUEST:
        # The run was terminated: it ends as canceled, after the batch in hand was delivered.
        raise dg.DagsterExecutionInterruptedError(f"{source_name}: {STOPPED_ON_REQUEST}")


def _retention(source_name: str, source: ChangeSource, sinks: dict[str, Sink]) -> dict[str, int | float | str]:
    """How close each sink is to losing the log it needs, as the run leaves it (the retention check
    judges the same numbers against its thresholds)."""
    checkpoints, _ = read_checkpoints(source_name, sinks)
    return source.retention(checkpoints).as_metadata() if checkpoints else {}
