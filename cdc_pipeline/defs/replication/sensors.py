"""A sensor per source. Continuous mode: keeps one streaming run of the source alive (restarting one
that failed, with back-off). Per-run mode: reads only the change log's high-water mark and requests
a run that drains the log up to it, one at a time."""

import time
from collections.abc import Sequence

import dagster as dg

from cdc_pipeline.config.models import PipelineConfig
from cdc_pipeline.defs.replication.progress import ProgressRecorder, read_progress
from cdc_pipeline.defs.resource_keys import source_key
from cdc_pipeline.defs.resources import change_source_of
from cdc_pipeline.defs.run_tags import RANGE_TAG, REACHED_TAG, SOURCE_TAG, STREAMING_TAG
from cdc_pipeline.sources.registry import source_kind

_IN_PROGRESS = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


# Consecutive failed runs are retried at once the first time, then after 2, 4, 8 ... poll
# intervals, at most 10 minutes apart: a source or sink that stays down is not hammered every tick.
_FAILURES_COUNTED = 12
_MAX_BACK_OFF_SECONDS = 600.0


def _consecutive_failures(records: Sequence[dg.RunRecord]) -> int:
    count = 0
    for record in records:
        if record.dagster_run.status != dg.DagsterRunStatus.FAILURE:
            break
        count += 1
    return count


def _back_off_seconds(records: Sequence[dg.RunRecord], poll_interval: int) -> float:
    """How much longer to wait before retrying after consecutive failures (0: go ahead)."""
    failures = _consecutive_failures(records)
    if failures < 2 or records[0].end_time is None:
        return 0.0
    delay = min(poll_interval * 2.0 ** (failures - 1), _MAX_BACK_OFF_SECONDS)
    return max(0.0, records[0].end_time + delay - time.time())


def _runs_and_back_off(
    context: dg.SensorEvaluationContext, job: dg.JobDefinition, source_name: str, pipeline: PipelineConfig, what: str
) -> tuple[Sequence[dg.RunRecord], dg.SkipReason | None]:
    """The job's latest runs of the source, and why to wait while consecutive failures call for it."""
    records = context.instance.get_run_records(
        filters=dg.RunsFilter(job_name=job.name, tags={SOURCE_TAG: source_name}), limit=_FAILURES_COUNTED
    )
    wait = _back_off_seconds(records, pipeline.batch.poll_interval_seconds)
    if wait <= 0 or not records:
        return records, None
    return records, dg.SkipReason(
        f"the last {_consecutive_failures(records)} {what} of {source_name} failed"
        f" (latest {records[0].dagster_run.run_id}); backing off, next try in {wait:.0f} s"
    )


def build_source_sensor(
    source_name: str,
    job: dg.JobDefinition,
    streaming_job: dg.JobDefinition,
    pipeline: PipelineConfig,
    running: bool = False,
) -> dg.SensorDefinition:
    kind = source_kind(pipeline.sources[source_name].kind)
    log_name, parse_position = kind.log_name, kind.parse_position
    continuous = pipeline.replication.mode == "continuous"
    if continuous:
        description = f"Keeps one streaming run ({streaming_job.name}) of '{source_name}' alive."
    else:
        description = f"Polls the {log_name} high-water mark of '{source_name}' and launches a replication run."

    @dg.sensor(
        name=f"{source_name}_{log_name}_sensor",
        jobs=[job, streaming_job],
        minimum_interval_seconds=pipeline.batch.poll_interval_seconds,
        required_resource_keys={source_key(source_name)},
        default_status=dg.DefaultSensorStatus.RUNNING if running else dg.DefaultSensorStatus.STOPPED,
        description=description,
    )
    def poll_change_log(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        # Any run of the source counts (either job): the two never run at once (dagster.yaml).
        any_run = context.instance.get_run_records(filters=dg.RunsFilter(tags={SOURCE_TAG: source_name}), limit=1)
        if any_run and any_run[0].dagster_run.status in _IN_PROGRESS:
            return dg.SkipReason(f"run {any_run[0].dagster_run.run_id} of {source_name} is still in progress")
        if continuous:
            return _keep_streaming(context, source_name, streaming_job, pipeline)
        records, backing_off = _runs_and_back_off(context, job, source_name, pipeline, "runs")
        if backing_off is not None:
            return backing_off
        latest = records[0].dagster_run if records else None
        with change_source_of(context.resources, source_name, pipeline) as source:
            high_water = str(source.high_water_mark())
        # The sink checkpoints are the truth (the run reads from them); the cursor only says what
        # was last requested. A failed run is requested again under a new key naming the failure;
        # a run that ended short of it (max_batches, a yielded chdb path) is continued from where it stopped.
        start = context.cursor or "start"
        suffix = ""
        if latest is not None and latest.status == dg.DagsterRunStatus.FAILURE:
            suffix = f":retry-of-{latest.run_id}"
        else:
            if context.cursor == high_water:
                reached = latest.tags.get(REACHED_TAG) if latest is not None else None
                if reached is None or parse_position(reached) >= parse_position(high_water):
                    _sinks_stay_current(context.instance, source_name, pipeline, latest)
                    return dg.SkipReason(f"no new {log_name} events past {high_water}")
                start = reached
            # The log moved, perhaps only by writes nothing replicates (other databases, or sinks
            # sharing the server): a source that can tell cheaply saves the run.
            if source.has_unread_changes() is False:
                _sinks_stay_current(context.instance, source_name, pipeline, latest)
                return dg.SensorResult(
                    skip_reason=f"no change to replicate up to {high_water} ({log_name} moved by other writes)",
                    cursor=high_water,
                )
        run_key = f"{source_name}:{start}-{high_water}{suffix}"
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    job_name=job.name,
                    run_key=run_key,
                    run_config={"ops": {job.name: {"config": {"stop_at": high_water}}}},
                    tags={SOURCE_TAG: source_name, RANGE_TAG: f"{start}-{high_water}"},
                )
            ],
            cursor=high_water,
        )

    return poll_change_log


def _keep_streaming(
    context: dg.SensorEvaluationContext, source_name: str, streaming_job: dg.JobDefinition, pipeline: PipelineConfig
) -> dg.SensorResult | dg.SkipReason:
    """No run of the source is alive: start the next streaming run, unless the last ones keep failing.

    The source is not asked anything: the run itself creates what a new source lacks (a PostgreSQL
    slot and publication), so a source starts from the sensor alone."""
    records, backing_off = _runs_and_back_off(context, streaming_job, source_name, pipeline, "streaming runs")
    if backing_off is not None:
        return backing_off
    latest = records[0].dagster_run if records else None
    # Keyed by the run it follows: two ticks that both saw that run end request one successor.
    after = latest.run_id if latest is not None else "none"
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                job_name=streaming_job.name,
                run_key=f"{source_name}:stream-after-{after}",
                tags={SOURCE_TAG: source_name, STREAMING_TAG: "true"},
            )
        ]
    )


def _sinks_stay_current(
    instance: dg.DagsterInstance, source_name: str, pipeline: PipelineConfig, latest: dg.DagsterRun | None
) -> None:
    """Per-run mode: nothing new at the source since the last run, which succeeded: the sinks it
    brought up to date stay so, and their measured lag stays near zero (a sink the run found down
    is judged by the status it observed, see defs/sink_tables/freshness.py)."""
    if latest is None or latest.status != dg.DagsterRunStatus.SUCCESS:
        return
    recorder = ProgressRecorder(instance, source_name)
    now = time.time()
    for sink_name in pipeline.sinks:
        progress = read_progress(instance, source_name, sink_name)
        if progress is not None:
            recorder.record(sink_name, now, progress.checkpoint)
    recorder.flush()
