"""The streaming job per source (continuous mode): one run that loops micro-batches with the source,
the sinks and the chdb session kept open between them (replicating.py).

The sensor keeps one such run alive per source; it ends by itself after
`replication.lifetime_minutes` (so new code and config take effect, memory is recycled and the run
history stays short) and the sensor starts the next. With `until_caught_up` the run drains the
backlog present when it started and ends. Terminated from the UI, it stops after the batch in hand.
"""

import dagster as dg

from cdc_pipeline.config.models import PipelineConfig
from cdc_pipeline.defs.replication.replicating import (
    RunPlan,
    one_op_job,
    replicate_in_batches,
    required_resource_keys,
)
from cdc_pipeline.defs.run_tags import SOURCE_TAG, STREAMING_TAG, embedded_clickhouse_tags, shared_tables_tags


class StreamConfig(dg.Config):
    until_caught_up: bool = False
    lifetime_minutes: float | None = None  # default: replication.lifetime_minutes
    max_rows: int | None = None  # default: batch.max_rows


def streaming_job_name(source_name: str) -> str:
    return f"stream_{source_name}"


def build_streaming_job(source_name: str, pipeline: PipelineConfig) -> dg.JobDefinition:
    @dg.op(
        name=streaming_job_name(source_name),
        required_resource_keys=required_resource_keys(source_name, pipeline),
        description="Loops micro-batches of the change log into every sink until its lifetime ends, it is"
        " stopped, or (until_caught_up) the backlog is drained.",
    )
    def stream(context: dg.OpExecutionContext, config: StreamConfig) -> None:
        lifetime_minutes = config.lifetime_minutes or pipeline.replication.lifetime_minutes
        plan = RunPlan(
            lifetime_seconds=None if config.until_caught_up else lifetime_minutes * 60,
            until_caught_up=config.until_caught_up,
            max_rows=config.max_rows,
        )
        replicate_in_batches(context, source_name, pipeline, plan)

    return one_op_job(
        stream,
        streaming_job_name(source_name),
        f"Streams source '{source_name}' into every sink in bounded micro-batches (continuous mode).",
        {
            SOURCE_TAG: source_name,
            STREAMING_TAG: "true",
            **embedded_clickhouse_tags(pipeline),
            **shared_tables_tags(pipeline, source_name),
        },
    )
