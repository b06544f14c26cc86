"""Continuous mode as users run it: `dagster dev` (webserver, daemon, code server), the sensor keeping a
streaming run alive, kill -9 of that run's process, and a termination from Dagster at a batch boundary.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import dagster as dg
import psycopg2

from cdc_pipeline.defs.run_tags import SOURCE_TAG
from cdc_pipeline_tests.dagster_ui import DagsterUi, dagster_dev, prepare_dagster_home
from cdc_pipeline_tests.harness import SOURCE, PipelineHarness, assert_same_rows
from cdc_pipeline_tests.polling import wait_until
from cdc_pipeline_tests.test_crash_recovery import apply_workload, assert_sinks_equal_source

LOCATION = "cdc_pipeline.definitions"
START_SENSOR = """
mutation ($selector: SensorSelector!) {
  startSensor(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { status } }
    ... on PythonError { message }
  }
}
"""
TERMINATE_RUN = """
mutation ($runId: String!) {
  terminateRun(runId: $runId) { __typename ... on PythonError { message } ... on TerminateRunFailure { message } }
}
"""


def _start_sensor(ui: DagsterUi, name: str) -> None:
    selector = {"repositoryLocationName": LOCATION, "repositoryName": "__repository__", "sensorName": name}
    started = ui.graphql(START_SENSOR, {"selector": selector})["startSensor"]
    assert started["__typename"] == "Sensor" and started["sensorState"]["status"] == "RUNNING", started


def _streaming_run(instance: dg.DagsterInstance, other_than: set[str]) -> dg.DagsterRun | None:
    """The source's streaming run that is executing now, if it is a new one."""
    records = instance.get_run_records(
        filters=dg.RunsFilter(
            job_name=f"stream_{SOURCE}", tags={SOURCE_TAG: SOURCE}, statuses=[dg.DagsterRunStatus.STARTED]
        ),
        limit=1,
    )
    runs = [record.dagster_run for record in records if record.dagster_run.run_id not in other_than]
    return runs[0] if runs else None


def _run_process(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The pid the run's process reported when it started (an engine event)."""
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        found = re.search(r"Started process for run \(pid: (\d+)\)", entry.message or "")
        if found:
            return int(found.group(1))
    return None


def _postgres_matches_source(harness: PipelineHarness) -> bool:
    for table, key in (("accounts", "id"), ("ledger", "seq")):
        source = sorted(harness.source_rows(table, key), key=lambda r: tuple(map(str, r.values())))
        try:
            rows = harness.postgres_rows(table, key)
        except psycopg2.errors.UndefinedTable:
            return False  # not created by the first batch yet
        sink = sorted(rows, key=lambda r: tuple(map(str, r.values())))
        try:
            assert_same_rows(sink, source, f"PostgreSQL {table}")
        except AssertionError:
            return False
    return True


def test_the_sensor_keeps_one_streaming_run_alive_through_kill_9_and_termination(
    harness: PipelineHarness, tmp_path: Path
) -> None:
    harness.use_private_clickhouse()
    harness.extra_config["batch"] = {"max_rows": 20, "poll_interval_seconds": 1}
    harness.source_execute(
        "CREATE TABLE accounts (id INT PRIMARY KEY, name VARCHAR(64), balance DECIMAL(20,4))",
        "CREATE TABLE ledger (region VARCHAR(8), seq INT, amount DECIMAL(12,3), PRIMARY KEY (region, seq))",
    )
    apply_workload(harness, 0)
    dagster_home = prepare_dagster_home(tmp_path / "dagster_home")
    env = {**os.environ, "CDC_PIPELINE_CONFIG": str(harness.write_config_file())}
    instance = dg.DagsterInstance.from_config(str(dagster_home))
    with dagster_dev(dagster_home=dagster_home, env=env, module=LOCATION, log_path=tmp_path / "dev.log") as ui:
        _start_sensor(ui, f"{SOURCE}_binlog_sensor")
        first = wait_until(lambda: _streaming_run(instance, set()), 120, "the sensor's first streaming run")
        wait_until(lambda: _postgres_matches_source(harness), 120, "the backlog in PostgreSQL")

        # Changes while the run streams arrive without another run.
        apply_workload(harness, 1)
        wait_until(lambda: _postgres_matches_source(harness), 60, "live changes in PostgreSQL")
        assert _streaming_run(instance, set()) is not None

        # kill -9 the run's process: its code server marks it failed, the sensor starts the next.
        apply_workload(harness, 2)
        pid = wait_until(lambda: _run_process(instance, first.run_id), 30, "the run's pid")
        os.kill(pid, signal.SIGKILL)
        second = wait_until(lambda: _streaming_run(instance, {first.run_id}), 120, "a streaming run after the kill")
        dead = instance.get_run_by_id(first.run_id)
        assert dead is not None and dead.status == dg.DagsterRunStatus.FAILURE, dead
        wait_until(lambda: _postgres_matches_source(harness), 120, "the changes around the kill in PostgreSQL")

        # Terminated from Dagster (as the UI's Terminate does): it stops after the batch in hand.
        apply_workload(harness, 3)
        terminated = ui.graphql(TERMINATE_RUN, {"runId": second.run_id})["terminateRun"]
        assert terminated["__typename"] == "TerminateRunSuccess", terminated
        wait_until(
            lambda: instance.get_run_by_id(second.run_id).status == dg.DagsterRunStatus.CANCELED,  # type: ignore[union-attr]
            60,
            "the terminated run to end",
        )
        messages = [entry.message for entry in instance.all_logs(second.run_id)]
        assert any("stopped at a batch boundary" in (message or "") for message in messages), "\n".join(
            map(str, messages)
        )
        wait_until(lambda: _streaming_run(instance, {first.run_id, second.run_id}), 120, "the next streaming run")
        wait_until(lambda: _postgres_matches_source(harness), 120, "the changes around the termination")
    # dagster dev stopped the last run at a batch boundary too; both sinks equal the source.
    assert ui.killed_at_shutdown == [] and ui.alive_after_shutdown == [], ui
    assert_sinks_equal_source(harness)
