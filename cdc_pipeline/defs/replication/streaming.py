"""The streaming job per source: one run that loops micro-batches (read -> mask -> map -> write ->
checkpoint -> release) with the source, the sinks and the chdb session kept open between them.

In continuous mode the sensor keeps one such run alive per source; it ends by itself after
`replication.lifetime_minutes` (so new code and config take effect, memory is recycled and the run
history stays short) and the sensor starts the next. With `until_caught_up` the run drains the
backlog present when it started, in bounded batches each checkpointed, and ends: what
`dagster job execute` and schedules want. Terminated from the UI, it stops after the batch in hand.
"""

import time
from typing import Any

import dagster as dg

from cdc_pipeline.config.models import PipelineConfig
from cdc_pipeline.defs.replication.reporting import (
    ThrottledReporter,
    memory_mib,
    peak_memory_mib,
    peak_private_memory_mib,
)
from cdc_pipeline.defs.replication.stop_signal import stop_at_batch_boundary
from cdc_pipeline.defs.resource_keys import DEAD_LETTER_QUEUE, MASKING, sink_key, source_key
from cdc_pipeline.defs.resources import open_change_source
from cdc_pipeline.defs.run_tags import (
    EMBEDDED_CLICKHOUSE_TAG,
    SOURCE_TAG,
    STREAMING_TAG,
    embedded_clickhouse_tags,
)
from cdc_pipeline.delivery.limits import BatchLimits
from cdc_pipeline.delivery.loop import STOPPED_ON_REQUEST, ReplicationLoop
from cdc_pipeline.delivery.session import EverySinkUnavailable, ReplicationSession
from cdc_pipeline.sinks.base import Sink
from cdc_pipeline.sinks.chdb_waiters import other_processes_waiting


class EmbeddedClickHouseWatch:
    """chdb serves its path to one process: a streaming run that held it for its whole lifetime would
    starve every other run that writes it (an initial load's chunks, a DLQ replay, checks). Every
    few seconds the run looks for such runs waiting in the queue (tagged with the path) or waiting
    for the path itself (sinks/chdb_waiters.py) and, if there are, ends at the batch boundary; the
    sensor's next streaming run queues behind them."""

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


class StreamConfig(dg.Config):
    until_caught_up: bool = False
    lifetime_minutes: float | None = None  # default: replication.lifetime_minutes
    max_rows: int | None = None  # default: batch.max_rows


def streaming_job_name(source_name: str) -> str:
    return f"stream_{source_name}"


def open_sinks(resources: Any, pipeline: PipelineConfig) -> dict[str, Sink]:
    return {name: getattr(resources, sink_key(name)).sink(name) for name in pipeline.sinks}


def build_streaming_job(source_name: str, pipeline: PipelineConfig) -> dg.JobDefinition:
    sink_names = list(pipeline.sinks)

    @dg.op(
        name=f"stream_{source_name}",
        required_resource_keys={source_key(source_name), *map(sink_key, sink_names), DEAD_LETTER_QUEUE, MASKING},
        description="Loops micro-batches of the change log into every sink until its lifetime ends, it is"
        " stopped, or (until_caught_up) the backlog is drained.",
    )
    def stream(context: dg.OpExecutionContext, config: StreamConfig) -> None:
        started_with_mib = memory_mib()
        resources = context.resources
        sinks = open_sinks(resources, pipeline)
        dead_letters = getattr(resources, DEAD_LETTER_QUEUE).store()
        session = ReplicationSession(
            source_name,
            pipeline,
            open_change_source(resources, source_name, pipeline),
            sinks,
            dead_letters,
            getattr(resources, MASKING).masker(pipeline.masking),
            context.log.warning,
        )
        reporter = ThrottledReporter(context, source_name, pipeline, sinks, dead_letters)
        lifetime = (config.lifetime_minutes or pipeline.replication.lifetime_minutes) * 60
        started = time.monotonic()
        try:
            session.check()
            with stop_at_batch_boundary() as stop:
                loop = ReplicationLoop(
                    session,
                    BatchLimits.from_config(pipeline.batch, config.max_rows),
                    pipeline.replication.idle_poll_seconds,
                    reporter.on_batch,
                    reporter.on_idle,
                    stop,
                    EmbeddedClickHouseWatch(context, pipeline).waiting_run,
                )
                ended = loop.run(None if config.until_caught_up else started + lifetime, config.until_caught_up)
        except EverySinkUnavailable as error:
            raise dg.Failure(str(error)) from None
        finally:
            reporter.flush()
            session.close()
        context.log.info(
            f"{source_name}: {ended} after {time.monotonic() - started:.0f} s; {reporter.total_batches} batches,"
            f" {reporter.total_rows} row changes, {reporter.total_dead_lettered} to the DLQ"
        )
        context.add_output_metadata(
            {
                "ended": ended,
                "batches": reporter.total_batches,
                "rows": reporter.total_rows,
                "memory_at_start_mib": round(started_with_mib),
                "peak_memory_mib": round(peak_memory_mib()),
                "peak_private_memory_mib": round(peak_private_memory_mib()),
            }
        )
        if ended == STOPPED_ON_REQUEST:
            # The run was terminated: it ends as canceled, after the batch in hand was delivered.
            raise dg.DagsterExecutionInterruptedError(f"{source_name}: {STOPPED_ON_REQUEST}")

    @dg.graph(name=f"stream_{source_name}_graph")
    def streaming() -> None:
        stream()

    return streaming.to_job(
        name=streaming_job_name(source_name),
        description=f"Streams source '{source_name}' into every sink in bounded micro-batches (continuous mode).",
        # Unmasked rows live only inside the op; one process, in-memory IO manager (see the definitions).
        executor_def=dg.in_process_executor,
        tags={SOURCE_TAG: source_name, STREAMING_TAG: "true", **embedded_clickhouse_tags(pipeline)},
    )
