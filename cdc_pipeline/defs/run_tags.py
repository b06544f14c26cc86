"""Run tags the pipeline sets and reads: dagster.yaml limits runs by some of them."""

from __future__ import annotations

import hashlib

from cdc_pipeline.config.models import PipelineConfig

# One replication run per source at a time (dagster.yaml), and the sensor finds a source's runs.
SOURCE_TAG = "cdc/source"
# The binlog range a sensor requested: "<from>-<to>".
RANGE_TAG = "cdc/range"
# Where a run's read stopped; the sensor continues from there when it stopped at the batch size.
REACHED_TAG = "cdc/reached"
# Runs of the streaming job (continuous mode): the sensor keeps one alive per source.
STREAMING_TAG = "cdc/streaming"
# Runs that open the embedded ClickHouse path; dagster.yaml lets one such run go at a time.
EMBEDDED_CLICKHOUSE_TAG = "cdc/chdb"


# Runs of sources that write the same tables (a Cassandra cluster's nodes) into a sink that cannot merge
# two runs' writes at once; dagster.yaml lets one such run go at a time per owner.
SHARED_TABLES_TAG = "cdc/shared-tables"


def shared_tables_tags(pipeline: PipelineConfig, source_name: str) -> dict[str, str]:
    """The tag that makes `source_name`'s runs take turns with those of the sources sharing its tables,
    when some sink does not lock its cell merges; else none."""
    if len(pipeline.sources_sharing_tables_with(source_name)) < 2:
        return {}
    if all(sink.locks_cell_merges for sink in pipeline.sinks.values()):
        return {}
    owner = pipeline.sources[source_name].table_owner(source_name)
    return {SHARED_TABLES_TAG: hashlib.sha256(owner.encode()).hexdigest()[:16]}


def embedded_clickhouse_tags(pipeline: PipelineConfig) -> dict[str, str]:
    """The tag for runs that write an embedded ClickHouse sink (a short digest of its path)."""
    path = pipeline.embedded_clickhouse_path
    return {EMBEDDED_CLICKHOUSE_TAG: hashlib.sha256(path.encode()).hexdigest()[:16]} if path else {}
