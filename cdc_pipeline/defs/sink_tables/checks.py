"""Asset checks per sink table: live rows equal the source's, and the sinks hold the same versions."""


import dagster as dg

from cdc_pipeline.config.models import PipelineConfig
from cdc_pipeline.defs.replication.ops import sink_table_asset_key
from cdc_pipeline.defs.resource_keys import sink_key, source_key
from cdc_pipeline.defs.sink_tables.assets import configured_tables
from cdc_pipeline.sources.mysql.preflight import current_binlog_position


def _source_row_count(source_resource: object, table: str) -> int:
    database, _, name = table.partition(".")
    quoted = f"`{database.replace('`', '``')}`.`{name.replace('`', '``')}`"
    with source_resource.settings.connect() as connection, connection.cursor() as cursor:  # type: ignore[attr-defined]
        cursor.execute(f"SELECT COUNT(*) FROM {quoted}")
        return int(cursor.fetchone()[0])


def build_sink_table_checks(pipeline: PipelineConfig) -> list[dg.AssetChecksDefinition]:
    checks = []
    for source_name in pipeline.sources:
        for table in configured_tables(pipeline, source_name):
            for sink_name in pipeline.sinks:
                checks.append(_row_count_check(source_name, table, sink_name))
                if len(pipeline.sinks) > 1:
                    checks.append(_sinks_agree_check(source_name, table, sink_name, list(pipeline.sinks)))
    return checks


def _row_count_check(source_name: str, table: str, sink_name: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=sink_table_asset_key(sink_name, table),
        name="row_count_matches_source",
        required_resource_keys={source_key(source_name), sink_key(sink_name)},
        description="Live rows in the sink equal the source's row count, once the sink has caught up.",
    )
    def row_count_matches_source(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        source = getattr(context.resources, source_key(source_name))
        sink = getattr(context.resources, sink_key(sink_name)).sink(sink_name)
        high_water = current_binlog_position(source.settings)
        checkpoint = sink.checkpoint(source_name)
        stats = sink.table_stats(table)
        source_rows = _source_row_count(source, table)
        sink_rows = stats.live_rows if stats else 0
        caught_up = checkpoint is not None and checkpoint >= high_water
        return dg.AssetCheckResult(
            passed=source_rows == sink_rows,
            # While the sink lags, a difference is expected: warn, do not fail.
            severity=dg.AssetCheckSeverity.ERROR if caught_up else dg.AssetCheckSeverity.WARN,
            metadata={
                "source_rows": source_rows,
                "sink_rows": sink_rows,
                "sink_checkpoint": str(checkpoint),
                "source_high_water_mark": str(high_water),
                "caught_up": caught_up,
            },
        )

    return row_count_matches_source


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
            sink = getattr(context.resources, sink_key(name)).sink(name)
            stats = sink.table_stats(table)
            observed[name] = (str(sink.checkpoint(source_name)), stats.live_rows if stats else 0, stats.version_sum if stats else 0)
        mine = observed[sink_name]
        comparable = {name: o for name, o in observed.items() if o[0] == mine[0]}
        passed = all(o[1:] == mine[1:] for o in comparable.values())
        return dg.AssetCheckResult(
            passed=passed,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={f"{name}": f"checkpoint {o[0]}, rows {o[1]}, version sum {o[2]}" for name, o in observed.items()},
        )

    return versions_match_other_sinks
