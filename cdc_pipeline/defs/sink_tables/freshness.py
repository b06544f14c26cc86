"""The freshness check per sink table: fails while the sink is down, or trails the source for too long.

`sink_is_fresh` fails when
- the sink's last write attempt found it unavailable (the status the replication job observed on
  the asset, see defs/replication/sink_status.py), or its checkpoint cannot be read now;
- its checkpoint is behind the source's high-water mark and no replication run of the source has
  succeeded for `sink_outages.lag_tolerance_seconds` (a healthy sink trails only by the changes
  since the last run; a sink nobody replicates into any more trails for ever).
"""

import time

import dagster as dg

from cdc_pipeline.config.models import PipelineConfig
from cdc_pipeline.core.checkpoint import Checkpoint
from cdc_pipeline.core.positions import SourcePosition
from cdc_pipeline.defs.asset_keys import sink_table_asset_key
from cdc_pipeline.defs.replication.jobs import replication_job_name
from cdc_pipeline.defs.replication.sink_status import STATUS, latest_status
from cdc_pipeline.defs.resource_keys import sink_key, source_key
from cdc_pipeline.defs.resources import open_change_source
from cdc_pipeline.defs.sink_tables.assets import configured_tables
from cdc_pipeline.sinks.availability import SinkUnavailable

FRESHNESS_CHECK = "sink_is_fresh"


def build_sink_freshness_checks(pipeline: PipelineConfig) -> list[dg.AssetChecksDefinition]:
    return [
        _freshness_check(source_name, table, sink_name, pipeline)
        for source_name in pipeline.sources
        for table in configured_tables(pipeline, source_name)
        for sink_name in pipeline.sinks
    ]


def _caught_up(checkpoint: Checkpoint | None, high_water: SourcePosition) -> bool:
    # Offsets of another server (before a failover) do not compare: such a sink counts as behind.
    return (
        checkpoint is not None and type(checkpoint.position) is type(high_water) and checkpoint.position >= high_water
    )


def _last_successful_run_end(instance: dg.DagsterInstance, source_name: str) -> float | None:
    records = instance.get_run_records(
        filters=dg.RunsFilter(job_name=replication_job_name(source_name), statuses=[dg.DagsterRunStatus.SUCCESS]),
        limit=1,
    )
    return records[0].end_time if records else None


def _freshness_check(
    source_name: str, table: str, sink_name: str, pipeline: PipelineConfig
) -> dg.AssetChecksDefinition:
    asset_key = sink_table_asset_key(sink_name, table)
    tolerance = pipeline.sink_outages.lag_tolerance_seconds

    @dg.asset_check(
        asset=asset_key,
        name=FRESHNESS_CHECK,
        required_resource_keys={source_key(source_name), sink_key(sink_name)},
        description=(
            "The sink took the last batch, and does not trail the source's high-water mark for longer than"
            f" {tolerance} s without a successful replication run."
        ),
    )
    def sink_is_fresh(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        now = time.time()
        status = latest_status(context.instance, asset_key)
        if status is not None and not status.available:
            down_for = now - status.unavailable_since if status.unavailable_since is not None else None
            return dg.AssetCheckResult(
                passed=False,
                metadata={
                    STATUS: f"unavailable: {status.reason}",
                    **({"unavailable_for_seconds": round(down_for, 1)} if down_for is not None else {}),
                },
            )
        source = open_change_source(context.resources, source_name, pipeline)
        high_water = source.high_water_mark()
        try:
            checkpoint = getattr(context.resources, sink_key(sink_name)).sink(sink_name).checkpoint(source_name)
        except SinkUnavailable as down:
            return dg.AssetCheckResult(
                passed=False,
                metadata={STATUS: f"unavailable: {down.reason}", "source_high_water_mark": str(high_water)},
            )
        metadata: dict[str, dg.RawMetadataValue] = {
            STATUS: "available",
            "sink_checkpoint": str(checkpoint),
            "source_high_water_mark": str(high_water),
        }
        if _caught_up(checkpoint, high_water):
            return dg.AssetCheckResult(passed=True, metadata=metadata)
        last_run_end = _last_successful_run_end(context.instance, source_name)
        behind_for = now - last_run_end if last_run_end is not None else None
        return dg.AssetCheckResult(
            passed=behind_for is not None and behind_for <= tolerance,
            metadata={
                **metadata,
                "seconds_since_last_successful_run": round(behind_for, 1) if behind_for is not None else "never",
                "lag_tolerance_seconds": tolerance,
            },
        )

    return sink_is_fresh
