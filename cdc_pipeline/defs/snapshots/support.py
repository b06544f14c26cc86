"""Which sources the initial load / re-sync (snapshot backfill) covers."""

from __future__ import annotations

from cdc_pipeline.config.models import CassandraSourceConfig, PipelineConfig


def has_snapshots(pipeline: PipelineConfig, source_name: str) -> bool:
    """Whether the source can be loaded by a snapshot backfill. Cassandra sources cannot yet (no
    SnapshotSource reads a table's rows with a consistent handoff to the commit log): they get no plan
    job and no snapshot assets, and their sink tables hold what the commit log brings from the first
    segment cdc_raw still has."""
    return not isinstance(pipeline.sources[source_name], CassandraSourceConfig)
