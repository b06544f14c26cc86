"""The initial load's two steps as tests drive them: plan a table, then materialize one chunk."""

from __future__ import annotations

import dagster as dg

from cdc_pipeline.defs.asset_keys import snapshot_asset_key
from cdc_pipeline.defs.snapshots.assets import snapshot_partitions_name
from cdc_pipeline.snapshot.chunks import Chunk


def plan(
    definitions: dg.Definitions, instance: dg.DagsterInstance, source: str, table: str, chunk_rows: int
) -> tuple[dg.AssetsDefinition, list[Chunk]]:
    """Run the plan job; return the snapshot asset (the test's resources bound) and its chunks."""
    definitions.resolve_job_def(f"plan_snapshot_{source}").execute_in_process(
        run_config={"ops": {f"plan_snapshot_{source}_op": {"config": {"table": table, "chunk_rows": chunk_rows}}}},
        instance=instance,
    )
    keys = instance.get_dynamic_partitions(snapshot_partitions_name(source, table))
    chunks = sorted((Chunk.parse(key) for key in keys), key=lambda chunk: chunk.index)
    return definitions.resolve_assets_def(snapshot_asset_key(source, table)), chunks


def load(snapshot: dg.AssetsDefinition, chunk: Chunk, instance: dg.DagsterInstance) -> dict[str, object]:
    """Materialize one chunk; return its metadata values."""
    result = dg.materialize([snapshot], partition_key=chunk.partition_key, instance=instance)
    metadata = result.asset_materializations_for_node(snapshot.node_def.name)[0].metadata
    return {name: value.value for name, value in metadata.items()}
