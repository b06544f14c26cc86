"""The replication job's steps: parse -> mask -> (record upstream rejections) -> map -> write, per sink.

The job runs in one process with an in-memory IO manager: rows move between ops in memory only,
so unmasked values never reach Dagster's storage.

A sink that is unavailable (sinks/availability.py) does not stop the others: its write step retries,
then records the outage and leaves the sink at its checkpoint; the run succeeds as long as one sink
took the batch, and the source's log is kept for the lagging sink.
"""

import time
from collections import Counter
from typing import Any

import dagster as dg

from cdc_pipeline.config.models import PipelineConfig
from cdc_pipeline.core.changes import ChangeBatch
from cdc_pipeline.core.checkpoint import Checkpoint
from cdc_pipeline.core.fault_injection import crash_point
from cdc_pipeline.core.positions import parse_position
from cdc_pipeline.defs.asset_keys import DEAD_LETTER_QUEUE_KEY, sink_table_asset_key
from cdc_pipeline.defs.dead_letters.metadata import dead_letter_metadata
from cdc_pipeline.defs.replication.progress import ProgressRecorder
from cdc_pipeline.defs.replication.reporting import reasons, status_assets, table_activity
from cdc_pipeline.defs.replication.sink_status import (
    AVAILABLE,
    STATUS,
    SinkOutcome,
    observe_recovery,
    observe_unavailable,
    unavailable_status,
)
from cdc_pipeline.defs.resource_keys import DEAD_LETTER_QUEUE, MASKING, sink_key, source_key
from cdc_pipeline.defs.resources import open_change_source
from cdc_pipeline.defs.run_tags import REACHED_TAG
from cdc_pipeline.delivery.limits import BatchLimits
from cdc_pipeline.delivery.loop import at_or_past
from cdc_pipeline.delivery.steps import listed, read_checkpoints, release_log, write_with_retries
from cdc_pipeline.mapping.mapper import MappedBatch, TypeMapper


class BatchWindow(dg.Config):
    """Where this run stops reading; the sensor sets it to the high-water mark it saw."""

    stop_at: str | None = None
    max_rows: int | None = None


def build_replication_ops(source_name: str, pipeline: PipelineConfig) -> dg.GraphDefinition:
    sink_names = list(pipeline.sinks)

    @dg.op(
        name=f"parse_{source_name}",
        required_resource_keys={source_key(source_name), *map(sink_key, sink_names)},
        description="Reads the change log from the smallest checkpoint of the reachable sinks and parses row changes.",
        out={"result": dg.Out(ChangeBatch), "unreachable": dg.Out(dict[str, str])},
    )
    def parse(context: dg.OpExecutionContext, config: BatchWindow) -> tuple[ChangeBatch, dict[str, str]]:
        source = open_change_source(context.resources, source_name, pipeline)
        source.check()
        checkpoints, unreachable = _read_checkpoints(context, source_name, sink_names)
        if not checkpoints:
            raise dg.Failure(f"every sink of {source_name} is unavailable: {listed(unreachable)}")
        for name, reason in unreachable.items():
            # Its checkpoint is unknown and may lie behind the others: the batch read from theirs may
            # start past it, so this sink gets nothing this run and catches up from its own later.
            context.log.warning(f"sink '{name}' is skipped this run, its checkpoint cannot be read: {reason}")
        limits = BatchLimits.from_config(pipeline.batch, config.max_rows)
        head, read_started_at = source.high_water_mark(), time.time()
        batch = source.read_batch(
            checkpoints,
            stop_at=parse_position(config.stop_at) if config.stop_at else None,
            max_rows=limits.max_rows,
            max_bytes=limits.max_bytes,
            max_seconds=limits.max_seconds,
        )
        crash_point("after_read")
        # How close each sink is to losing the log it needs, measured after the read (so a purge
        # during it shows). A streaming run measures it once per report interval instead.
        batch.log_metadata.update(source.retention(checkpoints).as_metadata())
        if batch.end == batch.start or at_or_past(batch.log_read_to or batch.end.position, head):
            batch.caught_up_at = read_started_at
        # The sensor reads this tag: a run that stopped short of stop_at (batch size reached) is
        # followed by another from here, even when no new binlog event arrives.
        context.instance.add_run_tags(context.run_id, {REACHED_TAG: str(batch.log_read_to or batch.end.position)})
        context.log.info(
            f"read {batch.row_count} row changes of {len(batch.tables)} tables from {batch.start} to {batch.end}"
            f" (sink checkpoints: { {k: str(v) for k, v in checkpoints.items()} })"
        )
        for change in batch.schema_changes:
            context.log.info(f"schema change of {change.table or '(no table found)'}: {change.describe()}")
        context.add_output_metadata(
            {
                "rows": batch.row_count,
                "from": str(batch.start),
                "to": str(batch.end),
                "schema_changes": len(batch.schema_changes),
                **batch.log_metadata,
            },
            output_name="result",
        )
        context.add_output_metadata({"sinks": len(unreachable)}, output_name="unreachable")
        return batch, unreachable

    @dg.op(name=f"mask_{source_name}", required_resource_keys={MASKING})
    def mask(context: dg.OpExecutionContext, batch: ChangeBatch) -> ChangeBatch:
        masked = getattr(context.resources, MASKING).masker(pipeline.masking).mask_batch(batch)
        context.add_output_metadata({"rows": masked.row_count, "rejected": len(masked.rejections)})
        return masked

    @dg.op(name=f"dead_letter_{source_name}", required_resource_keys={DEAD_LETTER_QUEUE})
    def record_upstream_rejections(context: dg.OpExecutionContext, batch: ChangeBatch) -> ChangeBatch:
        """Parse/mask failures concern every sink: store them before any sink checkpoint passes them."""
        store = getattr(context.resources, DEAD_LETTER_QUEUE).store()
        recorded = store.record(source_name, batch.rejections)
        if recorded:
            context.log.warning(f"{recorded} events sent to the DLQ: {reasons(batch.rejections)}")
            context.log_event(
                dg.AssetMaterialization(asset_key=DEAD_LETTER_QUEUE_KEY, metadata=dead_letter_metadata(store))
            )
        context.add_output_metadata({"dead_lettered": recorded})
        return batch

    graph_ops: dict[str, tuple[Any, Any]] = {}
    for sink_name in sink_names:
        graph_ops[sink_name] = (_map_op(source_name, sink_name, pipeline), _write_op(source_name, sink_name, pipeline))

    @dg.op(
        name=f"release_{source_name}",
        required_resource_keys={source_key(source_name), *map(sink_key, sink_names)},
        description="After every sink wrote the batch: lets the source free the log they all passed.",
    )
    def release(context: dg.OpExecutionContext, written: list[SinkOutcome]) -> None:
        down = {outcome.sink: outcome.unavailable for outcome in written if outcome.unavailable is not None}
        if len(down) == len(sink_names):
            # Nothing moved: a run that delivered to no sink must not look green.
            raise dg.Failure(f"every sink of {source_name} is unavailable: {listed(down)}")
        source = open_change_source(context.resources, source_name, pipeline)
        sinks = {name: getattr(context.resources, sink_key(name)).sink(name) for name in sink_names}
        outcome = release_log(source_name, source, sinks)
        if outcome.unreadable:
            # The earliest checkpoint is unknown while one cannot be read: freeing the log past the
            # others' could drop what that sink still needs. Keep everything until it answers.
            context.log.warning(
                f"{source_name} change log not released: the checkpoint of {listed(outcome.unreadable)} cannot be read"
            )
        usage, unreadable = outcome.usage, outcome.unreadable
        if usage:
            context.log.info(f"{source_name} change log after release: {usage}")
        context.add_output_metadata(
            {**usage, "released": not unreadable, "sinks_unavailable": ", ".join(sorted(down)) or "none"}
        )

    @dg.graph(name=f"replicate_{source_name}_graph")
    def replicate() -> None:
        parsed, unreachable = parse()
        batch = record_upstream_rejections(mask(parsed))
        release(written=[write_op(map_op(batch), unreachable) for map_op, write_op in graph_ops.values()])

    return replicate


def _read_checkpoints(
    context: dg.OpExecutionContext, source_name: str, sink_names: list[str]
) -> tuple[dict[str, Checkpoint | None], dict[str, str]]:
    return read_checkpoints(
        source_name, {name: getattr(context.resources, sink_key(name)).sink(name) for name in sink_names}
    )


def _map_op(source_name: str, sink_name: str, pipeline: PipelineConfig) -> dg.OpDefinition:
    kind = pipeline.sinks[sink_name].kind

    @dg.op(name=f"map_{source_name}_to_{sink_name}")
    def map_changes(context: dg.OpExecutionContext, batch: ChangeBatch) -> MappedBatch:
        mapped = TypeMapper(sink_name, kind, pipeline.type_overrides).map_batch(batch)
        context.add_output_metadata({"rows": mapped.row_count, "rejected": len(mapped.rejections)})
        return mapped

    return map_changes


def _write_op(source_name: str, sink_name: str, pipeline: PipelineConfig) -> dg.OpDefinition:
    outages = pipeline.sink_outages

    @dg.op(
        name=f"write_{source_name}_to_{sink_name}",
        required_resource_keys={sink_key(sink_name), DEAD_LETTER_QUEUE},
    )
    def write(context: dg.OpExecutionContext, mapped: MappedBatch, unreachable: dict[str, str]) -> SinkOutcome:
        sink = getattr(context.resources, sink_key(sink_name)).sink(sink_name)
        dead_letters = getattr(context.resources, DEAD_LETTER_QUEUE).store()
        if sink_name in unreachable:
            # The batch was read from the other sinks' checkpoints and may start past this one's:
            # writing it (should the sink be back by now) would move its checkpoint over a gap.
            return _record_unavailable(context, source_name, sink_name, pipeline, mapped, unreachable[sink_name], 0)
        delivery = write_with_retries(source_name, sink, mapped, dead_letters, outages, context.log.warning)
        if delivery.unavailable is not None:
            return _record_unavailable(
                context, source_name, sink_name, pipeline, mapped, delivery.unavailable, delivery.attempts
            )
        result = delivery.result
        assert result is not None
        progress = ProgressRecorder(context.instance, source_name)
        applied_through = mapped.caught_up_at or mapped.last_commit_ts
        if applied_through is not None:
            progress.record(sink_name, float(applied_through), str(result.checkpoint))
            progress.flush()
        lag = round(time.time() - mapped.last_commit_ts, 3) if mapped.last_commit_ts else 0.0
        rejections = delivery.rejections
        note_of = sink.table_note
        for table, activity in table_activity(delivery, str(mapped.end.position), lag).items():
            if activity.schema_held is not None:
                context.log.warning(f"{sink_name}: table {table} held: {activity.schema_held}")
            context.log_event(
                dg.AssetMaterialization(
                    asset_key=sink_table_asset_key(sink_name, table),
                    metadata=activity.metadata(note_of(table), time.time(), with_rate=False),
                )
            )
        failed = Counter(r.table for r in rejections)
        assets = status_assets(source_name, sink_name, pipeline, mapped.tables)
        recovered = observe_recovery(context, assets, time.time())
        if recovered:
            context.log.info(f"sink '{sink_name}' is available again, caught up to {result.checkpoint}")
        if failed:
            context.log.warning(f"{sum(failed.values())} events sent to the DLQ for {sink_name}: {reasons(rejections)}")
            context.log_event(
                dg.AssetMaterialization(asset_key=DEAD_LETTER_QUEUE_KEY, metadata=dead_letter_metadata(dead_letters))
            )
        context.log.info(
            f"{sink_name}: wrote {sum(sum(c.values()) for c in result.rows_by_table.values())} rows,"
            f" skipped {result.skipped_already_applied} already applied, {sum(failed.values())} to the DLQ;"
            f" checkpoint {result.checkpoint}"
        )
        context.add_output_metadata({STATUS: AVAILABLE, "checkpoint": str(result.checkpoint)})
        return SinkOutcome(sink_name)

    return write


def _record_unavailable(
    context: dg.OpExecutionContext,
    source_name: str,
    sink_name: str,
    pipeline: PipelineConfig,
    mapped: MappedBatch,
    reason: str,
    attempts: int,
) -> SinkOutcome:
    """The sink stays at its checkpoint this run; say so where people and the freshness check look."""
    metadata: dict[str, dg.RawMetadataValue] = {
        "write_attempts": attempts,
        "batch_from": str(mapped.start),
        "batch_to": str(mapped.end),
        "rows_not_written": mapped.row_count,
    }
    since = observe_unavailable(
        context, status_assets(source_name, sink_name, pipeline, mapped.tables), reason, time.time(), metadata
    )
    status = unavailable_status(since, reason)
    context.log.warning(
        f"sink '{sink_name}' {status}; it keeps its checkpoint and catches up from it when it is back"
        f" ({mapped.row_count} row changes up to {mapped.end} not written this run)"
    )
    context.add_output_metadata({STATUS: status, **metadata})
    return SinkOutcome(sink_name, reason)
