"""Sink tables as assets: one per (sink, table) the config names literally."""

from __future__ import annotations

import dagster as dg

from cdc_pipeline.config.models import PipelineConfig
from cdc_pipeline.defs.asset_keys import sink_table_asset_key, snapshot_asset_key


def configured_tables(pipeline: PipelineConfig, source_name: str) -> list[str]:
    """Tables the config names without globs; tables matched by a glob replicate too, but are only
    known once their first change arrives, so they get materializations without a declared asset."""
    return pipeline.sources[source_name].tables.literal_tables()


def build_sink_table_specs(pipeline: PipelineConfig) -> list[dg.AssetSpec]:
    # The sources of one Cassandra cluster's nodes write the same tables: one asset each, loaded by any
    # of their snapshots.
    sources_of: dict[str, list[str]] = {}
    for source_name in pipeline.sources:
        for table in configured_tables(pipeline, source_name):
            sources_of.setdefault(table, []).append(source_name)
    specs = []
    for table, source_names in sources_of.items():
        kinds = {pipeline.sources[name].kind for name in source_names}
        named = ", ".join(f"'{name}'" for name in source_names)
        for sink_name, sink in pipeline.sinks.items():
            specs.append(
                dg.AssetSpec(
                    key=sink_table_asset_key(sink_name, table),
                    description=f"{table} from source {named}, replicated into {sink.kind} '{sink_name}'",
                    group_name=sink_name,
                    kinds={sink.kind, *kinds},
                    metadata={"source": ", ".join(source_names), "source_table": table},
                    # Loaded by the snapshot backfill, kept current by the replication job.
                    deps=[snapshot_asset_key(name, table) for name in source_names],
                )
            )
    return specs
