"""The plan job: record the handoff, let checkpoint-less sinks adopt it, register the chunks."""

import dagster as dg

from cdc_pipeline.config.models import PipelineConfig
from cdc_pipeline.defs.asset_keys import snapshot_asset_key
from cdc_pipeline.defs.resource_keys import sink_key, source_key
from cdc_pipeline.defs.resources import open_snapshot_source, sink_of
from cdc_pipeline.defs.sink_tables.assets import configured_tables
from cdc_pipeline.defs.snapshots.assets import snapshot_partitions_name
from cdc_pipeline.snapshot.chunks import plan_chunks
from cdc_pipeline.snapshot.handoff import snapshot_version


class SnapshotPlanConfig(dg.Config):
    table: str  # 'database.table', one of the tables the config names
    chunk_rows: int = 500_000


def plan_snapshot_job_name(source_name: str) -> str:
    return f"plan_snapshot_{source_name}"


def build_plan_snapshot_job(source_name: str, pipeline: PipelineConfig) -> dg.JobDefinition:
    tables = configured_tables(pipeline, source_name)
    sink_names = list(pipeline.sinks)

    @dg.op(
        name=f"plan_snapshot_{source_name}_op",
        required_resource_keys={source_key(source_name), *map(sink_key, sink_names)},
    )
    def plan_snapshot(context: dg.OpExecutionContext, config: SnapshotPlanConfig) -> None:
        if config.table not in tables:
            raise dg.Failure(f"table {config.table!r} is not one of the tables source '{source_name}' names: {tables}")
        source = open_snapshot_source(context.resources, source_name, pipeline)
        schema = source.table_schema(config.table)
        if schema is None or not schema.key_columns:
            raise dg.Failure(f"{config.table} does not exist at '{source_name}' or has no key to split it by")
        # Before any chunk is read: streaming replays every change from here.
        handoff = source.handoff_checkpoint()
        for sink_name in sink_names:
            in_force = sink_of(context.resources, sink_name).adopt_checkpoint(source_name, handoff)
            context.log.info(f"sink '{sink_name}' streams from {in_force}")
        chunks = plan_chunks(source, schema, config.chunk_rows, snapshot_version(handoff))
        partitions = snapshot_partitions_name(source_name, config.table)
        # A new plan replaces the previous one: the partition grid shows this load's progress only.
        for old_key in context.instance.get_dynamic_partitions(partitions):
            context.instance.delete_dynamic_partition(partitions, old_key)
        context.instance.add_dynamic_partitions(partitions, [chunk.partition_key for chunk in chunks])
        context.log.info(
            f"{config.table}: {len(chunks)} chunks from handoff {handoff}; backfill asset"
            f" {snapshot_asset_key(source_name, config.table).to_user_string()} over them to load it"
        )

    @dg.job(name=plan_snapshot_job_name(source_name), executor_def=dg.in_process_executor)
    def plan_job() -> None:
        plan_snapshot()

    return plan_job
