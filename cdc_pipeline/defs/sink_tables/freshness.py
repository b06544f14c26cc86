"""The freshness check per sink table: judged by measured lag, and evaluated automatically.

`sink_is_fresh` fails when
- the sink's last write attempt found it unavailable (the status the replication runs observed on
  the asset, see defs/replication/sink_status.py), or its checkpoint cannot be read now;
- the sink's checkpoint is behind the source's high-water mark and its newest applied change is
  older than `sink_outages.lag_tolerance_seconds`: the lag the replication runs measure and keep
  (defs/replication/progress.py). A run that died stops moving it, so the lag grows on its own.

`evaluate_freshness` is the whole judgement; the check and the health sensor (sink_health.py,
which evaluates every sink table's check every few seconds so none sits at "Not Evaluated") call it.
"""

import time
from dataclasses import dataclass
from typing import Any

import dagster as dg

from cdc_pipeline.config.models import PipelineConfig
from cdc_pipeline.core.positions import SourcePosition
from cdc_pipeline.defs.asset_keys import sink_table_asset_key
from cdc_pipeline.defs.replication.progress import read_progress
from cdc_pipeline.defs.replication.sink_status import STATUS, latest_status
from cdc_pipeline.defs.resource_keys import sink_key, source_key
from cdc_pipeline.defs.resources import change_source_of, sink_of
from cdc_pipeline.defs.sink_tables.assets import configured_tables
from cdc_pipeline.sinks.availability import SinkUnavailable
from cdc_pipeline.sources.registry import source_kind

FRESHNESS_CHECK = "sink_is_fresh"


def build_sink_freshness_checks(pipeline: PipelineConfig) -> list[dg.AssetChecksDefinition]:
    return [
        _freshness_check(source_name, table, sink_name, pipeline)
        for source_name in pipeline.sources
        for table in configured_tables(pipeline, source_name)
        for sink_name in pipeline.sinks
    ]


@dataclass(frozen=True)
class Freshness:
    passed: bool
    metadata: "dict[str, dg.RawMetadataValue]"
    # None: unknown (no run has measured it yet)
    lag_seconds: float | None


def evaluate_freshness(
    instance: dg.DagsterInstance,
    resources: Any,
    source_name: str,
    table: str,
    sink_name: str,
    pipeline: PipelineConfig,
    high_water: SourcePosition | None = None,
    may_open_sink: bool = True,
) -> Freshness:
    """Whether the sink's copy of `table` is fresh now (`high_water`: the source's, if already read).

    `may_open_sink` False: judge by the measured lag alone, without reading the sink's checkpoint (a
    sensor must not open an embedded chdb path: its process would hold it from the runs)."""
    now = time.time()
    tolerance = pipeline.sink_outages.lag_tolerance_seconds
    status = latest_status(instance, sink_table_asset_key(sink_name, table))
    if status is not None and not status.available:
        down_for = now - status.unavailable_since if status.unavailable_since is not None else None
        metadata: dict[str, dg.RawMetadataValue] = {STATUS: f"unavailable: {status.reason}"}
        if down_for is not None:
            metadata["unavailable_for_seconds"] = round(down_for, 1)
        return Freshness(False, metadata, None)
    if high_water is None:
        with change_source_of(resources, source_name, pipeline) as source:
            high_water = source.high_water_mark()
    if not may_open_sink:
        return _by_measured_lag(instance, source_name, sink_name, now, tolerance, {STATUS: "available"})
    try:
        checkpoint = sink_of(resources, sink_name).checkpoint(source_name)
    except SinkUnavailable as down:
        return Freshness(
            False, {STATUS: f"unavailable: {down.reason}", "source_high_water_mark": str(high_water)}, None
        )
    metadata = {
        STATUS: "available",
        "sink_checkpoint": str(checkpoint),
        "source_high_water_mark": str(high_water),
        "lag_tolerance_seconds": tolerance,
    }
    if source_kind(pipeline.sources[source_name].kind).caught_up(checkpoint, high_water):
        return Freshness(True, {**metadata, "lag_seconds": 0.0}, 0.0)
    return _by_measured_lag(instance, source_name, sink_name, now, tolerance, metadata)


def _by_measured_lag(
    instance: dg.DagsterInstance,
    source_name: str,
    sink_name: str,
    now: float,
    tolerance: float,
    metadata: "dict[str, dg.RawMetadataValue]",
) -> Freshness:
    metadata = {**metadata, "lag_tolerance_seconds": tolerance}
    progress = read_progress(instance, source_name, sink_name)
    if progress is None:
        return Freshness(False, {**metadata, "lag_seconds": "never measured: no replication run wrote the sink"}, None)
    lag = round(progress.lag_seconds(now), 1)
    metadata["lag_seconds"] = lag
    metadata["applied_through"] = dg.MetadataValue.timestamp(progress.applied_through)
    return Freshness(lag <= tolerance, metadata, lag)


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
            "The sink took the last batch, and its newest applied change is at most"
            f" {tolerance} s older than the source's (measured lag)."
        ),
    )
    def sink_is_fresh(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        freshness = evaluate_freshness(context.instance, context.resources, source_name, table, sink_name, pipeline)
        return dg.AssetCheckResult(passed=freshness.passed, metadata=freshness.metadata)

    return sink_is_fresh
