"""Asset keys, in one place: the ops report materializations of the assets the definitions declare."""

import dagster as dg

from cdc_pipeline.core.sink_names import sink_table_name
from cdc_pipeline.defs.dagster_names import dagster_name

DEAD_LETTER_QUEUE_KEY = dg.AssetKey(["dead_letter_queue"])


def snapshot_asset_key(source_name: str, source_table: str) -> dg.AssetKey:
    """`[snapshot, source, database__table]`: the initial load of one table, partitioned by key range."""
    return dg.AssetKey(["snapshot", source_name, dagster_name(sink_table_name(source_table))])


def sink_table_asset_key(sink_name: str, source_table: str) -> dg.AssetKey:
    """`[sink, database__table]`: one asset per table per sink."""
    return dg.AssetKey([sink_name, dagster_name(sink_table_name(source_table))])
