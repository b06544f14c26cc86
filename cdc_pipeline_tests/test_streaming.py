"""The streaming job: bounded batches in one run, kill -9 anywhere across batches, the sensor's choices."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import dagster as dg
import yaml
from dagster._core.definitions.sensor_definition import SensorExecutionData

from cdc_pipeline.defs.run_tags import SOURCE_TAG
from cdc_pipeline_tests.harness import PG_SINK, SOURCE, PipelineHarness, run_replication_cli, run_summary
from cdc_pipeline_tests.polling import wait_until
from cdc_pipeline_tests.postgres_source import SOURCE as PG_SOURCE
from cdc_pipeline_tests.postgres_source import PostgresSourceHarness
from cdc_pipeline_tests.test_crash_recovery import CRASH_POINTS, apply_workload, assert_sinks_equal_source
from cdc_pipeline_tests.test_schema_evolution import _level


def _create_tables(harness: PipelineHarness) -> None:
    harness.source_execute(
        "CREATE TABLE accounts (id INT PRIMARY KEY, name VARCHAR(64), balance DECIMAL(20,4))",
        "CREATE TABLE ledger (region VARCHAR(8), seq INT, amount DECIMAL(12,3), PRIMARY KEY (region, seq))",
    )


def test_one_run_drains_the_backlog_in_bounded_batches(harness: PipelineHarness) -> None:
    _create_tables(harness)
    for round_number in range(4):
        apply_workload(harness, round_number)
    harness.extra_config["batch"] = {"max_rows": 10}
    result = harness.stream()
    assert_sinks_equal_source(harness)
    summary = run_summary(result)
    assert summary["ended"] == "caught up"
    # 4 rounds of 4 transactions of more than 10 rows, plus single-row ones: cut into many batches.
    assert int(summary["batches"]) >= 8, summary


def test_kill_9_across_batches_of_one_streaming_run_converges(harness: PipelineHarness, tmp_path: Path) -> None:
    """Small batches, so the run delivers some before dying at the point's 3rd hit; the next run resumes."""
    _kill_9_mid_run_then_finish(harness, tmp_path, [*CRASH_POINTS, f"before_release_{SOURCE}"], streaming=True)
    assert_sinks_equal_source(harness)


def _kill_9_mid_run_then_finish(
    harness: PipelineHarness, tmp_path: Path, crash_points: list[str], streaming: bool
) -> Path:
    """For each crash point: more writes, then a run (`dagster job execute`, batches of 8 rows) that
    resumes from where the last one died and is killed at the point's 3rd hit; then a run that
    finishes. Returns the Dagster home the runs used."""
    harness.use_private_clickhouse()
    harness.extra_config["batch"] = {"max_rows": 8}
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    _create_tables(harness)
    config = harness.write_config_file()
    for round_number, crash_at in enumerate(crash_points):
        apply_workload(harness, round_number)
        apply_workload(harness, round_number + 50)
        crashed = run_replication_cli(config, dagster_home, SOURCE, crash_at, streaming=streaming, crash_on_hit=3)
        assert crashed.returncode == -signal.SIGKILL, f"{crash_at}: {crashed.returncode}\n{crashed.stderr[-3000:]}"
    finished = run_replication_cli(config, dagster_home, SOURCE, streaming=streaming)
    assert finished.returncode == 0, finished.stderr[-3000:]
    return dagster_home


def test_a_per_run_run_drains_its_range_in_checkpointed_batches_and_survives_kill_9(
    harness: PipelineHarness, tmp_path: Path
) -> None:
    """`dagster job execute -j replicate_<source>`: one run takes the whole backlog in batches of
    max_rows, each checkpointed, so a run killed in its third batch leaves the first two in place
    and the next run goes on from there."""
    crash_points = [f"after_sink_{PG_SINK}", "clickhouse_mid_write", "after_read"]
    dagster_home = _kill_9_mid_run_then_finish(harness, tmp_path, crash_points, streaming=False)
    assert_sinks_equal_source(harness)
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        (last, *_) = instance.get_run_records(limit=1)
        assert last.dagster_run.status == dg.DagsterRunStatus.SUCCESS
        # What the crashed runs left was drained by the last one, batch by batch, to the log's end.
        output = next(
            event
            for event in instance.all_logs(last.dagster_run.run_id)
            if event.dagster_event is not None and event.dagster_event.event_type_value == "STEP_OUTPUT"
        )
        metadata = output.dagster_event.step_output_data.metadata  # type: ignore[union-attr]
        assert metadata["ended"].value == "caught up" and int(metadata["batches"].value) >= 2, metadata


def test_stream_run_records_measured_lag_for_the_freshness_check(harness: PipelineHarness) -> None:
    _create_tables(harness)
    apply_workload(harness, 0)
    instance = dg.DagsterInstance.ephemeral()
    harness.stream(instance=instance)
    assert_sinks_equal_source(harness)


def test_a_new_postgres_source_starts_from_the_continuous_sensor_alone(pg_source: PostgresSourceHarness) -> None:
    """No slot yet: the sensor asks the source nothing, the streaming run creates slot and publication."""
    pg_source.source_execute("CREATE TABLE t (id int PRIMARY KEY, note text)")
    with dg.instance_for_test() as instance:
        tick = _tick_wal_sensor(pg_source, instance)
        (request,) = tick.run_requests
        assert request.job_name == f"stream_{PG_SOURCE}" and request.run_key == f"{PG_SOURCE}:stream-after-none"
        first = pg_source.stream(instance=instance, tags=request.tags)
        pg_source.source_execute(
            "INSERT INTO t VALUES (1, 'one'), (2, 'two')", "UPDATE t SET note = 'zwei' WHERE id = 2"
        )
        # The next run (the successor the sensor asks for once this one ended) delivers the changes.
        (successor,) = _tick_wal_sensor(pg_source, instance).run_requests
        assert successor.run_key == f"{PG_SOURCE}:stream-after-{first.run_id}"
        pg_source.stream(instance=instance)
        assert sorted(row["note"] for row in pg_source.postgres_rows("t")) == ["one", "zwei"]


def test_the_continuous_sensor_keeps_one_run_and_backs_off_after_failures(harness: PipelineHarness) -> None:
    harness.source_execute("CREATE TABLE t (id INT PRIMARY KEY)")
    job = harness.definitions().resolve_job_def(f"stream_{SOURCE}")
    with dg.instance_for_test() as instance:
        running = instance.create_run_for_job(job, tags={SOURCE_TAG: SOURCE}, status=dg.DagsterRunStatus.STARTED)
        skipped = _tick_binlog_sensor(harness, instance)
        assert not skipped.run_requests and running.run_id in str(skipped.skip_message)
        instance.report_run_failed(running)
        # The first failure is retried at once, keyed by the run it replaces.
        (retry,) = _tick_binlog_sensor(harness, instance).run_requests
        assert retry.run_key == f"{SOURCE}:stream-after-{running.run_id}"
        for _ in range(2):
            again = instance.create_run_for_job(job, tags={SOURCE_TAG: SOURCE}, status=dg.DagsterRunStatus.STARTED)
            instance.report_run_failed(again)
        waiting = _tick_binlog_sensor(harness, instance)
        assert not waiting.run_requests and "backing off" in str(waiting.skip_message)
        # poll_interval_seconds is 1 here: after 1 s x 2**2 the next run is requested.
        wait_until(lambda: _tick_binlog_sensor(harness, instance).run_requests or None, 30, "the back-off to end")


def _tick_binlog_sensor(harness: PipelineHarness, instance: dg.DagsterInstance) -> SensorExecutionData:
    definitions = harness.definitions()
    context = dg.build_sensor_context(instance=instance, resources=harness.resources(), definitions=definitions)
    return definitions.resolve_sensor_def(f"{SOURCE}_binlog_sensor").evaluate_tick(context)


def _tick_wal_sensor(pg_source: PostgresSourceHarness, instance: dg.DagsterInstance) -> SensorExecutionData:
    definitions = pg_source.definitions()
    context = dg.build_sensor_context(instance=instance, resources=pg_source.resources(), definitions=definitions)
    return definitions.resolve_sensor_def(f"{PG_SOURCE}_wal_sensor").evaluate_tick(context)


def _drain_in_a_process(harness: PipelineHarness, tmp_path: Path, max_bytes: int) -> tuple[int, int]:
    """Drain the backlog with `dagster job execute` of the streaming job; (batches, the run's peak memory
    in MiB without mapped libraries)."""
    harness.extra_config["batch"] = {"max_bytes": max_bytes}
    config = harness.write_config_file()
    home = tmp_path / f"home_{max_bytes}"
    home.mkdir()
    run_config = home / "run.yaml"
    run_config.write_text(yaml.safe_dump({"ops": {f"stream_{SOURCE}": {"config": {"until_caught_up": True}}}}))
    dagster = Path(sys.executable).parent / "dagster"
    command = [str(dagster), "job", "execute", "-m", "cdc_pipeline.definitions", "-j", f"stream_{SOURCE}"]
    completed = subprocess.run(
        [*command, "-c", str(run_config)],
        env={**os.environ, "CDC_PIPELINE_CONFIG": str(config), "DAGSTER_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    instance = dg.DagsterInstance.from_config(str(home))
    (run,) = instance.get_runs()
    outputs = [e for e in instance.all_logs(run.run_id) if e.dagster_event and e.dagster_event.is_successful_output]
    metadata = {k: v.value for k, v in outputs[0].dagster_event.step_output_data.metadata.items()}  # type: ignore[union-attr]
    return int(metadata["batches"]), int(metadata["peak_private_memory_mib"])


def test_a_backlog_of_large_values_drains_in_batches_cut_by_bytes(harness: PipelineHarness, tmp_path: Path) -> None:
    """80 rows of 2 MiB: a byte limit of 8 MiB cuts them into batches of about 4, and the run's peak
    memory stays far below what the whole backlog takes at once (measured here: 560-630 MiB with the
    limit, 2.7 GiB without; chdb's engine alone allocates about 300 MiB, and its background merges of
    the blob parts added up to 500 MiB more once, under the full suite's load: hence 1.5 GiB)."""
    harness.use_private_clickhouse()
    harness.source_execute("CREATE TABLE blobs (id INT PRIMARY KEY, body LONGBLOB)")
    for start in range(0, 80, 10):
        harness.source_execute(
            *[
                f"INSERT INTO blobs VALUES ({i}, REPEAT(UNHEX(SHA2('{i}', 256)), 65536))"
                for i in range(start, start + 10)
            ]
        )
    batches, peak_mib = _drain_in_a_process(harness, tmp_path, 8 * 2**20)
    assert batches >= 20, batches
    source = harness.source_rows("blobs")
    assert [row["id"] for row in harness.postgres_rows("blobs")] == [row["id"] for row in source]
    assert peak_mib < 1536, peak_mib


def test_the_health_sensor_fails_a_sink_that_falls_behind_by_measured_lag(harness: PipelineHarness) -> None:
    """The freshness check is evaluated by a sensor (no run), never left "Not Evaluated": green after a
    stream that caught up, red once a change waits longer than lag_tolerance_seconds, green again
    after the next stream."""
    harness.configure_source(tables={"include": [f"{harness.database}.t"]})
    harness.extra_config["sink_outages"] = {"lag_tolerance_seconds": 2}
    harness.source_execute("CREATE TABLE t (id INT PRIMARY KEY)", "INSERT INTO t VALUES (1)")
    with dg.instance_for_test() as instance:
        harness.stream(instance=instance)
        first = _health_tick(harness, instance, None)
        verdicts = {e.asset_key.path[0]: e.passed for e in first.asset_events}
        assert verdicts == {"warehouse": True, "analytics": True}, first.asset_events
        # Unchanged verdicts are not recorded again (the event log grows with changes, not ticks).
        assert not _health_tick(harness, instance, first.cursor).asset_events

        harness.source_execute("INSERT INTO t VALUES (2)")
        cursor = first.cursor

        def failed() -> dg.SensorResult | None:
            nonlocal cursor
            tick = _health_tick(harness, instance, cursor)
            cursor = tick.cursor
            return tick if any(not e.passed for e in tick.asset_events) else None

        behind = wait_until(failed, 30, "the freshness check to fail")
        lag = [e.metadata["lag_seconds"].value for e in behind.asset_events]
        assert all(isinstance(value, float) and value > 2 for value in lag), lag
        harness.stream(instance=instance)
        recovered = _health_tick(harness, instance, cursor)
        assert {e.asset_key.path[0]: e.passed for e in recovered.asset_events} == verdicts


def _health_tick(harness: PipelineHarness, instance: dg.DagsterInstance, cursor: str | None) -> SensorExecutionData:
    definitions = harness.definitions()
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources=harness.resources(), definitions=definitions
    )
    return definitions.resolve_sensor_def("sink_health_sensor").evaluate_tick(context)


def test_schema_changes_during_a_streaming_run_reach_both_sinks_in_order(harness: PipelineHarness) -> None:
    """DDL between row changes while one streaming run is alive: the run's cached shapes follow the log."""
    harness.source_execute("CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(10))", "INSERT INTO t VALUES (1, 'one')")
    with dg.instance_for_test() as instance:
        thread = threading.Thread(
            target=harness.stream,
            kwargs={"instance": instance, "until_caught_up": False, "lifetime_minutes": 0.75},
        )
        thread.start()
        steps = [
            ("ALTER TABLE t ADD COLUMN score INT NOT NULL DEFAULT 7", "INSERT INTO t VALUES (2, 'two', 20)"),
            ("ALTER TABLE t RENAME COLUMN name TO label", "UPDATE t SET label = 'uno' WHERE id = 1"),
            ("ALTER TABLE t MODIFY label VARCHAR(40)", "INSERT INTO t VALUES (3, 'a label longer than ten', 30)"),
            ("ALTER TABLE t DROP COLUMN score", "DELETE FROM t WHERE id = 2"),
        ]
        for ddl, dml in steps:
            harness.source_execute(ddl, dml)
            wait_until(lambda: _level(harness, "t"), 60, f"both sinks after {ddl!r}")
        thread.join()
        (run,) = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.SUCCESS
