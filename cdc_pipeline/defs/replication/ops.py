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
from cdc_pipeline.defs.sink_tables.assets import configured_tables
from cdc_pipeline.defs.sink_tables.schema_status import HELD, IN_SYNC, SCHEMA_STATUS
from cdc_pipeline.mapping.mapper import MappedBatch, TypeMapper
from cdc_pipeline.sinks.availability import SinkUnavailable


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
            raise dg.Failure(f"every sink of {source_name} is unavailable: {_listed(unreachable)}")
        for name, reason in unreachable.items():
            # Its checkpoint is unknown and may lie behind the others: the batch read from theirs may
            # start past it, so this sink gets nothing this run and catches up from its own later.
            context.log.warning(f"sink '{name}' is skipped this run, its checkpoint cannot be read: {reason}")
        batch = source.read_batch(
            checkpoints,
            stop_at=parse_position(config.stop_at) if config.stop_at else None,
            max_rows=config.max_rows or pipeline.batch.max_rows,
        )
        crash_point("after_read")
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
            context.log.warning(f"{recorded} events sent to the DLQ: {_reasons(batch.rejections)}")
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
            raise dg.Failure(f"every sink of {source_name} is unavailable: {_listed(down)}")
        checkpoints, unreadable = _read_checkpoints(context, source_name, sink_names)
        crash_point(f"before_release_{source_name}")
        source = open_change_source(context.resources, source_name, pipeline)
        if unreadable:
            # The earliest checkpoint is unknown while one cannot be read: freeing the log past the
            # others' could drop what that sink still needs. Keep everything until it answers.
            context.log.warning(
                f"{source_name} change log not released: the checkpoint of {_listed(unreadable)} cannot be read"
            )
        else:
            source.release(checkpoints)
        usage = source.log_usage()
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
    """Each reachable sink's checkpoint (None: it has none yet), and why the others cannot say."""
    checkpoints: dict[str, Checkpoint | None] = {}
    unreachable: dict[str, str] = {}
    for name in sink_names:
        try:
            checkpoints[name] = getattr(context.resources, sink_key(name)).sink(name).checkpoint(source_name)
        except SinkUnavailable as down:
            unreachable[name] = down.reason
    return checkpoints, unreachable


def _listed(reasons: dict[str, str]) -> str:
    return "; ".join(f"'{name}' ({reason})" for name, reason in sorted(reasons.items()))


def _reasons(rejections: list[Any]) -> str:
    counts = Counter(f"{r.table}: {r.error}" for r in rejections)
    return "; ".join(f"{n} x {reason}" for reason, n in counts.most_common(5))


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
        delay = outages.first_retry_delay_seconds
        for attempt in range(1, outages.write_attempts + 1):
            try:
                # Map-stage rejections are stored with the write-stage ones, before the checkpoint moves.
                result = sink.write(
                    mapped, lambda rejections: dead_letters.record(source_name, [*mapped.rejections, *rejections])
                )
                break
            except SinkUnavailable as down:
                if attempt == outages.write_attempts:
                    return _record_unavailable(context, source_name, sink_name, pipeline, mapped, down.reason, attempt)
                context.log.warning(f"{down} (try {attempt} of {outages.write_attempts}); trying again in {delay:g} s")
                # A retry inside the run: the other sinks' steps have finished or run on regardless.
                time.sleep(delay)
                delay *= 2
        crash_point(f"after_sink_{sink_name}")
        lag = round(time.time() - mapped.last_commit_ts, 3) if mapped.last_commit_ts else 0.0
        rejections = [*mapped.rejections, *result.rejections]
        failed = Counter(r.table for r in rejections)
        for table in sorted(result.rows_by_table.keys() | failed.keys() | result.schema_applied.keys()):
            counts = result.rows_by_table.get(table, Counter())
            note = sink.table_note(table)
            schema_metadata: dict[str, str] = {SCHEMA_STATUS: IN_SYNC}
            if table in result.schema_applied:
                schema_metadata["schema_changes"] = "; ".join(result.schema_applied[table])
            if table in result.schema_held:
                # The table's rows go to the DLQ until an operator's fix (see the schema_in_sync check).
                schema_metadata[SCHEMA_STATUS] = f"{HELD}: {result.schema_held[table]}"
                context.log.warning(f"{sink_name}: table {table} held: {result.schema_held[table]}")
            context.log_event(
                dg.AssetMaterialization(
                    asset_key=sink_table_asset_key(sink_name, table),
                    metadata={
                        "rows_inserted": counts["insert"],
                        "rows_updated": counts["update"],
                        "rows_deleted": counts["delete"],
                        "dlq_count": failed.get(table, 0),
                        "source_position": str(mapped.end.position),
                        "lag_seconds": lag,
                        STATUS: AVAILABLE,
                        **schema_metadata,
                        **({"timescaledb": note} if note else {}),
                    },
                )
            )
        recovered = observe_recovery(context, _status_assets(source_name, sink_name, pipeline, mapped), time.time())
        if recovered:
            context.log.info(f"sink '{sink_name}' is available again, caught up to {result.checkpoint}")
        if failed:
            context.log.warning(
                f"{sum(failed.values())} events sent to the DLQ for {sink_name}: {_reasons(rejections)}"
            )
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


def _status_assets(
    source_name: str, sink_name: str, pipeline: PipelineConfig, mapped: MappedBatch
) -> list[dg.AssetKey]:
    """The sink's tables whose status the UI and the freshness check read: the declared ones and the batch's."""
    tables = sorted({*configured_tables(pipeline, source_name), *mapped.tables})
    return [sink_table_asset_key(sink_name, table) for table in tables]


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
        context, _status_assets(source_name, sink_name, pipeline, mapped), reason, time.time(), metadata
    )
    status = unavailable_status(since, reason)
    context.log.warning(
        f"sink '{sink_name}' {status}; it keeps its checkpoint and catches up from it when it is back"
        f" ({mapped.row_count} row changes up to {mapped.end} not written this run)"
    )
    context.add_output_metadata({STATUS: status, **metadata})
    return SinkOutcome(sink_name, reason)
