"""Every check of every sink table (and the DLQ's), run by a schedule, so none sits at "Not Evaluated".

Freshness is evaluated every few seconds by the health sensor without a run (sink_health.py); the
other checks read every key of a table at both ends, so they run hourly as one run of their own
(tagged with the embedded chdb path, which a streaming run hands over: see defs/replication/streaming.py).
"""

from __future__ import annotations

import dagster as dg

from cdc_pipeline.config.models import PipelineConfig
from cdc_pipeline.defs.run_tags import embedded_clickhouse_tags

CHECKS_JOB = "check_sink_tables"
# Off the hour, so it does not meet every other hourly job of a deployment.
CHECKS_CRON = "17 * * * *"


def build_check_schedule(pipeline: PipelineConfig, running: bool = False) -> dg.ScheduleDefinition:
    job = dg.define_asset_job(
        name=CHECKS_JOB,
        selection=dg.AssetSelection.all_asset_checks(),
        description="Evaluates every sink table's checks (counts, keys, versions, retention, schema, freshness)"
        " and the DLQ's.",
        # The definitions bind the in-memory IO manager, which Dagster accepts in process only.
        executor_def=dg.in_process_executor,
        tags=embedded_clickhouse_tags(pipeline),
    )
    return dg.ScheduleDefinition(
        name=f"{CHECKS_JOB}_hourly",
        job=job,
        cron_schedule=CHECKS_CRON,
        default_status=dg.DefaultScheduleStatus.RUNNING if running else dg.DefaultScheduleStatus.STOPPED,
    )
