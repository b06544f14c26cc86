"""The replication job's steps: parse -> mask -> (record upstream rejections) -> map -> write, per sink.

The job runs in one process with an in-memory IO manager: rows move between ops in memory only,
so unmasked values never reach Dagster's storage.
"""

import time
from collections import Counter
from typing import Any

import dagster as dg

from cdc_pipeline.config.models import PipelineConfig
from cdc_pipeline.core.changes import ChangeBatch
from cdc_pipeline.core.fault_injection import crash_point
from cdc_pipeline.core.positions import parse_position
from cdc_pipeline.defs.asset_keys import DEAD_LETTER_QUEUE_KEY, sink_table_asset_key
from cdc_pipeline.defs.dead_letters.metadata import dead_letter_metadata
from cdc_pipeline.defs.resource_keys import DEAD_LETTER_QUEUE, MASKING, sink_key, source_key
from cdc_pipeline.defs.resources import open_change_source
from cdc_pipeline.defs.run_tags import REACHED_TAG
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
        description="Reads the change log from the smallest sink checkpoint and parses row changes.",
    )
    def parse(context: dg.OpExecutionContext, config: BatchWindow) -> ChangeBatch:
        source = open_change_source(context.resources, source_name, pipeline)
        source.check()
        checkpoints = {
            name: getattr(context.resources, sink_key(name)).sink(name).checkpoint(source_name) for name in sink_names
        }
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
        context.add_output_metadata(
            {"rows": batch.row_count, "from": str(batch.start), "to": str(batch.end), **batch.log_metadata}
        )
        return batch

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
        graph_ops[sink_name] = (_map_op(source_name, sink_name, pipeline), _write_op(source_name, sink_name))

    @dg.op(
        name=f"release_{source_name}",
        ins={"written": dg.In(dg.Nothing)},
        required_resource_keys={source_key(source_name), *map(sink_key, sink_names)},
        description="After every sink wrote the batch: lets the source free the log they all passed.",
    )
    def release(context: dg.OpExecutionContext) -> None:
        checkpoints = {
            name: getattr(context.resources, sink_key(name)).sink(name).checkpoint(source_name) for name in sink_names
        }
        crash_point(f"before_release_{source_name}")
        source = open_change_source(context.resources, source_name, pipeline)
        source.release(checkpoints)
        usage = source.log_usage()
        if usage:
            context.log.info(f"{source_name} change log after release: {usage}")
            context.add_output_metadata(usage)

    @dg.graph(name=f"replicate_{source_name}_graph")
    def replicate() -> None:
        batch = record_upstream_rejections(mask(parse()))
        release(written=[write_op(map_op(batch)) for map_op, write_op in graph_ops.values()])

    return replicate


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


def _write_op(source_name: str, sink_name: str) -> dg.OpDefinition:
    @dg.op(
        name=f"write_{source_name}_to_{sink_name}",
        out=dg.Out(dg.Nothing),
        required_resource_keys={sink_key(sink_name), DEAD_LETTER_QUEUE},
    )
    def write(context: dg.OpExecutionContext, mapped: MappedBatch) -> None:
        sink = getattr(context.resources, sink_key(sink_name)).sink(sink_name)
        dead_letters = getattr(context.resources, DEAD_LETTER_QUEUE).store()
        # Map-stage rejections are stored with the write-stage ones, before the checkpoint moves.
        result = sink.write(
            mapped, lambda rejections: dead_letters.record(source_name, [*mapped.rejections, *rejections])
        )
        crash_point(f"after_sink_{sink_name}")
        lag = round(time.time() - mapped.last_commit_ts, 3) if mapped.last_commit_ts else 0.0
        rejections = [*mapped.rejections, *result.rejections]
        failed = Counter(r.table for r in rejections)
        for table in sorted(result.rows_by_table.keys() | failed.keys()):
            counts = result.rows_by_table.get(table, Counter())
            note = sink.table_note(table)
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
                        **({"timescaledb": note} if note else {}),
                    },
                )
            )
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

    return write
