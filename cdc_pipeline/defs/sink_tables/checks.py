"""Asset checks per sink table, comparing it with the source and with the other sinks.

- row_count_matches_source: live rows in the sink == rows at the source;
- keys_match_source: the same set of keys (an order-independent digest of the keys);
- versions_match_other_sinks: same live rows and sum of `_version` as the other sinks;
- source_log_retained (retention.py): the source still keeps its log from the sink's checkpoint on;
- schema_in_sync (schema_status.py): no rows held in the DLQ for a schema change the sink refused.

A difference is an error once the sink's checkpoint has reached the source's high-water mark, and
only a warning while the sink lags (the difference is then expected).
"""

import dagster as dg

from cdc_pipeline.config.models import PipelineConfig
from cdc_pipeline.core.checkpoint import Checkpoint
from cdc_pipeline.core.key_digest import key_digest
from cdc_pipeline.core.positions import SourcePosition
from cdc_pipeline.defs.asset_keys import sink_table_asset_key
from cdc_pipeline.defs.resource_keys import MASKING, sink_key, source_key
from cdc_pipeline.defs.resources import change_source_of, sink_of
from cdc_pipeline.defs.sink_tables.assets import configured_tables
from cdc_pipeline.defs.sink_tables.retention import build_retention_check
from cdc_pipeline.defs.sink_tables.schema_status import build_schema_check
from cdc_pipeline.masking.masker import Masker
from cdc_pipeline.sinks.base import Sink
from cdc_pipeline.sources.change_source import ChangeSource
from cdc_pipeline.sources.registry import source_kind


def build_sink_table_checks(pipeline: PipelineConfig) -> list[dg.AssetChecksDefinition]:
    checks = []
    for source_name in pipeline.sources:
        for table in configured_tables(pipeline, source_name):
            for sink_name in pipeline.sinks:
                checks.append(_row_count_check(source_name, table, sink_name, pipeline))
                checks.append(_keys_check(source_name, table, sink_name, pipeline))
                checks.append(build_retention_check(source_name, table, sink_name, pipeline))
                checks.append(build_schema_check(source_name, table, sink_name))
                if len(pipeline.sinks) > 1:
                    checks.append(_sinks_agree_check(source_name, table, sink_name, list(pipeline.sinks)))
    return checks


def _sink_progress(source: ChangeSource, sink: Sink, source_name: str) -> tuple[SourcePosition, Checkpoint | None]:
    return source.high_water_mark(), sink.checkpoint(source_name)


def _severity(
    pipeline: PipelineConfig, source_name: str, high_water: SourcePosition, checkpoint: Checkpoint | None
) -> dg.AssetCheckSeverity:
    caught_up = source_kind(pipeline.sources[source_name].kind).caught_up(checkpoint, high_water)
    return dg.AssetCheckSeverity.ERROR if caught_up else dg.AssetCheckSeverity.WARN


def _row_count_check(
    source_name: str, table: str, sink_name: str, pipeline: PipelineConfig
) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=sink_table_asset_key(sink_name, table),
        name="row_count_matches_source",
        required_resource_keys={source_key(source_name), sink_key(sink_name)},
        description="Live rows in the sink equal the source's row count.",
    )
    def row_count_matches_source(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        with change_source_of(context.resources, source_name, pipeline) as source:
            sink = sink_of(context.resources, sink_name)
            high_water, checkpoint = _sink_progress(source, sink, source_name)
            stats = sink.table_stats(table)
            source_rows = source.row_count(table)
            sink_rows = stats.live_rows if stats else 0
            return dg.AssetCheckResult(
                passed=source_rows == sink_rows,
                severity=_severity(pipeline, source_name, high_water, checkpoint),
                metadata={
                    "source_rows": source_rows,
                    "sink_rows": sink_rows,
                    "sink_checkpoint": str(checkpoint),
                    "source_high_water_mark": str(high_water),
                },
            )

    return row_count_matches_source


def _keys_check(source_name: str, table: str, sink_name: str, pipeline: PipelineConfig) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=sink_table_asset_key(sink_name, table),
        name="keys_match_source",
        required_resource_keys={source_key(source_name), sink_key(sink_name), MASKING},
        description="The sink holds exactly the source's keys (streamed, order-independent digest).",
    )
    def keys_match_source(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        with change_source_of(context.resources, source_name, pipeline) as source:
            sink = sink_of(context.resources, sink_name)
            schema = source.table_schema(table)
            if schema is None or not schema.key_columns:
                return dg.AssetCheckResult(passed=False, metadata={"reason": f"{table} has no key at the source"})
            masked_keys = set(Masker(pipeline.masking, None).plan(table, list(schema.key_columns))) & set(
                schema.key_columns
            )
            if masked_keys:
                # Hashed keys cannot be compared with the source's; the count check still applies.
                return dg.AssetCheckResult(
                    passed=True, metadata={"skipped": f"key columns {sorted(masked_keys)} are masked"}
                )
            high_water, checkpoint = _sink_progress(source, sink, source_name)
            at_source = key_digest(source.live_keys(schema))
            in_sink = (
                key_digest(sink.live_keys(table, schema.key_columns)) if sink.table_stats(table) else key_digest([])
            )
            return dg.AssetCheckResult(
                passed=at_source == in_sink,
                severity=_severity(pipeline, source_name, high_water, checkpoint),
                metadata={
                    "source_keys": at_source.count,
                    "sink_keys": in_sink.count,
                    "source_digest": f"{at_source.digest:016x}",
                    "sink_digest": f"{in_sink.digest:016x}",
                    "sink_checkpoint": str(checkpoint),
                },
            )

    return keys_match_source


def _sinks_agree_check(source_name: str, table: str, sink_name: str, sink_names: list[str]) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=sink_table_asset_key(sink_name, table),
        name="versions_match_other_sinks",
        required_resource_keys={sink_key(name) for name in sink_names},
        description="Same live row count and sum of _version as the other sinks at the same checkpoint.",
    )
    def versions_match_other_sinks(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        observed = {}
        for name in sink_names:
            sink = sink_of(context.resources, name)
            stats = sink.table_stats(table)
            observed[name] = (
                str(sink.checkpoint(source_name)),
                stats.live_rows if stats else 0,
                stats.version_sum if stats else 0,
            )
        mine = observed[sink_name]
        # Sinks at another checkpoint are expected to differ; only those at this one are compared.
        comparable = {name: o for name, o in observed.items() if o[0] == mine[0]}
        return dg.AssetCheckResult(
            passed=all(o[1:] == mine[1:] for o in comparable.values()),
            metadata={name: f"checkpoint {o[0]}, rows {o[1]}, version sum {o[2]}" for name, o in observed.items()},
        )

    return versions_match_other_sinks
