"""Builds the Dagster definitions (jobs, sensors, assets, checks, resources) from the pipeline config."""

from __future__ import annotations

from typing import Any

import dagster as dg

from cdc_pipeline.config.models import PipelineConfig
from cdc_pipeline.defs.dead_letters.assets import dead_letter_queue, dead_letter_queue_is_empty
from cdc_pipeline.defs.dead_letters.jobs import build_replay_job
from cdc_pipeline.defs.replication.jobs import build_replication_job
from cdc_pipeline.defs.replication.sensors import build_source_sensor
from cdc_pipeline.defs.replication.streaming import build_streaming_job
from cdc_pipeline.defs.resource_keys import DEAD_LETTER_QUEUE, MASKING, sink_key, source_key
from cdc_pipeline.defs.resources import DeadLetterQueueResource, MaskingResource
from cdc_pipeline.defs.sink_tables.assets import build_sink_table_specs
from cdc_pipeline.defs.sink_tables.check_schedule import build_check_schedule
from cdc_pipeline.defs.sink_tables.checks import build_sink_table_checks
from cdc_pipeline.defs.sink_tables.freshness import build_sink_freshness_checks
from cdc_pipeline.defs.sink_tables.sink_health import build_sink_health_sensor
from cdc_pipeline.defs.snapshots.assets import build_snapshot_assets
from cdc_pipeline.defs.snapshots.jobs import build_plan_snapshot_job
from cdc_pipeline.sinks.registry import sink_kind
from cdc_pipeline.sources.registry import source_kind


def resources_from_config(pipeline: PipelineConfig) -> dict[str, Any]:
    """Production resources, one per source and sink by its kind; every secret is read from the
    environment when a run starts."""
    resources: dict[str, Any] = {}
    for name, source in pipeline.sources.items():
        resources[source_key(name)] = source_kind(source.kind).resource_from_config(source)
    for name, sink in pipeline.sinks.items():
        resources[sink_key(name)] = sink_kind(sink.kind).resource_from_config(sink)
    resources[DEAD_LETTER_QUEUE] = DeadLetterQueueResource(
        dsn=dg.EnvVar(pipeline.dlq.dsn_env), schema_name=pipeline.dlq.schema_name
    )
    resources[MASKING] = MaskingResource(hmac_key=dg.EnvVar(pipeline.masking.hmac_key_env))
    return resources


def build_definitions(
    pipeline: PipelineConfig, resources: dict[str, Any] | None = None, sensors_running: bool = False
) -> dg.Definitions:
    """`sensors_running`: the replication sensors start with the code location (the embedded
    default, or `replication.start_sensors` in the config); otherwise an operator turns them on."""
    sensors_running = sensors_running or pipeline.replication.start_sensors
    jobs = []
    sensors = []
    for source_name in pipeline.sources:
        job = build_replication_job(source_name, pipeline)
        streaming_job = build_streaming_job(source_name, pipeline)
        jobs.extend([job, streaming_job])
        sensors.append(build_source_sensor(source_name, job, streaming_job, pipeline, running=sensors_running))
        jobs.append(build_plan_snapshot_job(source_name, pipeline))
    jobs.append(build_replay_job(pipeline))
    sensors.append(build_sink_health_sensor(pipeline, running=sensors_running))
    return dg.Definitions(
        assets=[*build_sink_table_specs(pipeline), *build_snapshot_assets(pipeline), dead_letter_queue],
        asset_checks=[
            *build_sink_table_checks(pipeline),
            *build_sink_freshness_checks(pipeline),
            dead_letter_queue_is_empty,
        ],
        jobs=jobs,
        sensors=sensors,
        schedules=[build_check_schedule(pipeline, running=sensors_running)],
        # The default for jobs that name no executor, above all the implicit asset job a backfill launched
        # from the UI runs: with the in-memory IO manager below, Dagster refuses the multiprocess default
        # (the UI test caught every chunk run failing that way).
        executor=dg.in_process_executor,
        resources={
            **(resources if resources is not None else resources_from_config(pipeline)),
            # Op outputs stay in memory: rows between parse and mask are unmasked and must never be
            # pickled to the instance's storage. Nothing here needs outputs persisted between runs.
            "io_manager": dg.mem_io_manager,
        },
    )
