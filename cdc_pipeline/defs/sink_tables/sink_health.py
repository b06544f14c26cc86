"""A sensor that keeps every sink table's freshness check evaluated, cheaply and often.

Every `HEALTH_INTERVAL_SECONDS` it reads each source's high-water mark once and each sink's
checkpoint and measured lag (defs/sink_tables/freshness.py), with no run launched. It records a
check evaluation when the verdict changes, and otherwise at most every `HEARTBEAT_SECONDS`, so the
UI never shows "Not Evaluated", a sink that falls behind fails its check within a tick of crossing
`sink_outages.lag_tolerance_seconds`, and Dagster's storage grows by a few events per table per hour.
"""

from __future__ import annotations

import json
import time

import dagster as dg

from cdc_pipeline.config.models import PipelineConfig
from cdc_pipeline.defs.asset_keys import sink_table_asset_key
from cdc_pipeline.defs.resource_keys import sink_key, source_key
from cdc_pipeline.defs.resources import change_source_of
from cdc_pipeline.defs.sink_tables.assets import configured_tables
from cdc_pipeline.defs.sink_tables.freshness import FRESHNESS_CHECK, evaluate_freshness

HEALTH_INTERVAL_SECONDS = 15
HEARTBEAT_SECONDS = 600


def build_sink_health_sensor(pipeline: PipelineConfig, running: bool = False) -> dg.SensorDefinition:
    @dg.sensor(
        name="sink_health_sensor",
        minimum_interval_seconds=HEALTH_INTERVAL_SECONDS,
        required_resource_keys={*map(source_key, pipeline.sources), *map(sink_key, pipeline.sinks)},
        default_status=dg.DefaultSensorStatus.RUNNING if running else dg.DefaultSensorStatus.STOPPED,
        description="Evaluates every sink table's freshness check (measured lag) without launching a run.",
    )
    def sink_health(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        embedded = {name for name, sink in pipeline.sinks.items() if sink.embedded_path}
        # Cursor: check -> [passed, when it was last recorded].
        recorded: dict[str, list[float]] = json.loads(context.cursor) if context.cursor else {}
        now = time.time()
        events: list[dg.AssetCheckEvaluation] = []
        problems: list[str] = []
        for source_name in pipeline.sources:
            try:
                with change_source_of(context.resources, source_name, pipeline) as source:
                    high_water = source.high_water_mark()
            except Exception as error:  # noqa: BLE001 - recorded as the verdict of every table of the source
                problems.append(f"{source_name}: {type(error).__name__}: {error}")
                high_water = None
            for table in configured_tables(pipeline, source_name):
                for sink_name in pipeline.sinks:
                    key = f"{sink_name}/{table}"
                    if high_water is None:
                        passed, metadata = False, {"source": f"high-water mark unreadable: {problems[-1]}"}
                    else:
                        freshness = evaluate_freshness(
                            context.instance,
                            context.resources,
                            source_name,
                            table,
                            sink_name,
                            pipeline,
                            high_water,
                            may_open_sink=sink_name not in embedded,
                        )
                        passed, metadata = freshness.passed, freshness.metadata
                    previous = recorded.get(key)
                    if previous is not None and bool(previous[0]) == passed and now - previous[1] < HEARTBEAT_SECONDS:
                        continue
                    recorded[key] = [float(passed), now]
                    events.append(
                        dg.AssetCheckEvaluation(
                            asset_key=sink_table_asset_key(sink_name, table),
                            check_name=FRESHNESS_CHECK,
                            passed=passed,
                            metadata=metadata,
                        )
                    )
        return dg.SensorResult(
            asset_events=events,
            cursor=json.dumps(recorded),
            skip_reason=None if events else "every freshness verdict is unchanged",
        )

    return sink_health
