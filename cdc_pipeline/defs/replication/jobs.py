"""One replication job per source: in-process, in-memory, tagged so runs of a source never overlap."""

from __future__ import annotations

import dagster as dg

from cdc_pipeline.config.models import PipelineConfig
from cdc_pipeline.defs.replication.ops import build_replication_ops
from cdc_pipeline.defs.run_tags import SOURCE_TAG, embedded_clickhouse_tags


def replication_job_name(source_name: str) -> str:
    return f"replicate_{source_name}"


def build_replication_job(source_name: str, pipeline: PipelineConfig) -> dg.JobDefinition:
    return build_replication_ops(source_name, pipeline).to_job(
        name=replication_job_name(source_name),
        description=f"Replicates one micro-batch of source '{source_name}' into every sink.",
        # Unmasked rows exist between parse and mask: one process, with the in-memory IO manager the
        # definitions bind, means they are never pickled into Dagster's storage.
        executor_def=dg.in_process_executor,
        tags={SOURCE_TAG: source_name, **embedded_clickhouse_tags(pipeline)},
    )
