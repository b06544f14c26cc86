"""The per-run replication job per source (`dagster job execute`, schedules, per-run mode's sensor).

A run drains the change log up to `stop_at` (the high-water mark the sensor saw; the log's end when
unset) in bounded batches, each checkpointed, with the same loop as the streaming job
(replicating.py), and ends. Runs of a source never overlap (dagster.yaml limits them by tag).
"""

import dagster as dg

from cdc_pipeline.config.models import PipelineConfig
from cdc_pipeline.defs.replication.replicating import (
    RunPlan,
    one_op_job,
    replicate_in_batches,
    required_resource_keys,
)
from cdc_pipeline.defs.run_tags import SOURCE_TAG, embedded_clickhouse_tags, shared_tables_tags
from cdc_pipeline.sources.registry import source_kind


class BatchWindow(dg.Config):
    """How far this run reads; the sensor sets `stop_at` to the high-water mark it saw."""

    stop_at: str | None = None
    max_rows: int | None = None  # per batch; default: batch.max_rows
    max_batches: int | None = None  # default: as many as it takes to reach stop_at


def replication_job_name(source_name: str) -> str:
    return f"replicate_{source_name}"


def build_replication_job(source_name: str, pipeline: PipelineConfig) -> dg.JobDefinition:
    parse_stop_at = source_kind(pipeline.sources[source_name].kind).parse_position

    @dg.op(
        name=replication_job_name(source_name),
        required_resource_keys=required_resource_keys(source_name, pipeline),
        description="Reads the change log from the sinks' checkpoints up to stop_at and writes it into every"
        " sink, batch by batch (each checkpointed).",
    )
    def replicate(context: dg.OpExecutionContext, config: BatchWindow) -> None:
        if config.max_batches is not None and config.max_batches < 1:
            raise dg.Failure(f"max_batches must be at least 1, not {config.max_batches}")
        plan = RunPlan(
            lifetime_seconds=None,
            until_caught_up=True,
            stop_at=parse_stop_at(config.stop_at) if config.stop_at else None,
            max_rows=config.max_rows,
            max_batches=config.max_batches,
        )
        replicate_in_batches(context, source_name, pipeline, plan)

    return one_op_job(
        replicate,
        replication_job_name(source_name),
        f"Replicates the backlog of source '{source_name}' into every sink, in bounded batches.",
        {SOURCE_TAG: source_name, **embedded_clickhouse_tags(pipeline), **shared_tables_tags(pipeline, source_name)},
    )
