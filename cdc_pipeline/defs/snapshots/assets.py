"""Initial load / re-sync as an asset backfill: one asset per table, one partition per key-range chunk.

The plan job records the handoff position, lets sinks without a checkpoint adopt it, and registers
the chunks as the asset's partitions; a backfill over them loads the table while streaming goes on.
The partition grid is the progress bar; a failed chunk is retried on its own.
"""

import dagster as dg

from cdc_pipeline.config.models import PipelineConfig
from cdc_pipeline.core.sink_names import sink_table_name
from cdc_pipeline.defs.asset_keys import snapshot_asset_key
from cdc_pipeline.defs.dagster_names import dagster_name
from cdc_pipeline.defs.resource_keys import DEAD_LETTER_QUEUE, MASKING, sink_key, source_key
from cdc_pipeline.defs.resources import dead_letter_store_of, masker_of, open_snapshot_source, sinks_of
from cdc_pipeline.defs.sink_tables.assets import configured_tables
from cdc_pipeline.snapshot.chunks import Chunk
from cdc_pipeline.snapshot.loader import load_chunk


def snapshot_partitions_name(source_name: str, table: str) -> str:
    return f"snapshot__{source_name}__{dagster_name(sink_table_name(table))}"


def snapshot_partitions(source_name: str, table: str) -> dg.DynamicPartitionsDefinition:
    return dg.DynamicPartitionsDefinition(name=snapshot_partitions_name(source_name, table))


def build_snapshot_assets(pipeline: PipelineConfig) -> list[dg.AssetsDefinition]:
    return [
        _snapshot_asset(source_name, table, pipeline)
        for source_name in pipeline.sources
        for table in configured_tables(pipeline, source_name)
    ]


def _snapshot_asset(source_name: str, table: str, pipeline: PipelineConfig) -> dg.AssetsDefinition:
    sink_names = list(pipeline.sinks)

    @dg.asset(
        key=snapshot_asset_key(source_name, table),
        partitions_def=snapshot_partitions(source_name, table),
        group_name="snapshots",
        kinds={pipeline.sources[source_name].kind},
        required_resource_keys={source_key(source_name), DEAD_LETTER_QUEUE, MASKING, *map(sink_key, sink_names)},
        description=f"Initial load / re-sync of {table} from '{source_name}' into every sink, by key range.",
    )
    def snapshot(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        chunk = Chunk.parse(context.partition_key)
        source = open_snapshot_source(context.resources, source_name, pipeline)
        schema = source.table_schema(table)
        if schema is None or not schema.key_columns:
            raise dg.Failure(f"{table} cannot be loaded: it does not exist at '{source_name}' or has no key")
        dead_letters = dead_letter_store_of(context.resources)
        result = load_chunk(
            source_name,
            source,
            schema,
            chunk,
            pipeline,
            masker_of(context.resources, pipeline),
            sinks_of(context.resources, sink_names),
            lambda rejections: dead_letters.record(source_name, rejections),
            context.log.warning,
        )
        for sink_name, reason in result.pull_failures.items():
            context.log.warning(f"{reason}; {sink_name} loaded the chunk through the Python path instead")
        return dg.MaterializeResult(
            metadata={
                "rows_read": result.rows_read,
                **{f"rows_written_{sink_name}": result.rows_written[sink_name] for sink_name in sink_names},
                **{f"rows_removed_{sink_name}": result.rows_removed[sink_name] for sink_name in sink_names},
                "dlq_count": result.dead_lettered,
                # ClickHouse sinks that pulled the chunk from MySQL themselves (the fast path).
                "pulled_by": dg.MetadataValue.json(result.pulled_by),
                **({"pull_failed": dg.MetadataValue.json(result.pull_failures)} if result.pull_failures else {}),
                "key_range": "whole table" if chunk.low is None else f"{chunk.low} .. {chunk.high}",
                "snapshot_version": chunk.version,
            }
        )

    return snapshot
