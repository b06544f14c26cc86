"""The sensor, the asset checks and the materialization metadata, through Dagster's own APIs."""

from __future__ import annotations

import dagster as dg
import psycopg2
from dagster._core.definitions.sensor_definition import SensorExecutionData

from cdc_pipeline.defs.run_tags import EMBEDDED_CLICKHOUSE_TAG, SOURCE_TAG
from cdc_pipeline.sources.mysql.positions import BinlogPosition
from cdc_pipeline.sources.mysql.preflight import current_binlog_position
from cdc_pipeline_tests.harness import CH_SINK, PG_SINK, SOURCE, PipelineHarness, run_summary
from cdc_pipeline_tests.polling import wait_until


def _evaluate(harness: PipelineHarness, instance: dg.DagsterInstance, cursor: str | None) -> SensorExecutionData:
    definitions = harness.definitions()
    sensor = definitions.resolve_sensor_def(f"{SOURCE}_binlog_sensor")
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources=harness.resources(), definitions=definitions
    )
    return sensor.evaluate_tick(context)


def test_sensor_requests_one_run_per_new_range_and_waits_for_the_running_one(harness: PipelineHarness) -> None:
    harness.extra_config["replication"] = {"mode": "per_run"}
    harness.source_execute("CREATE TABLE t (id INT PRIMARY KEY)", "INSERT INTO t VALUES (1)")
    with dg.instance_for_test() as instance:
        result = _evaluate(harness, instance, cursor=None)
        (request,) = result.run_requests
        job = harness.definitions().resolve_job_def(f"replicate_{SOURCE}")
        assert job.tags[SOURCE_TAG] == SOURCE and EMBEDDED_CLICKHOUSE_TAG in job.tags
        high_water = str(current_binlog_position(harness.mariadb.settings))
        assert request.run_key == f"{SOURCE}:start-{high_water}"
        assert request.run_config["ops"][f"replicate_{SOURCE}"]["config"]["stop_at"] == high_water
        assert result.cursor == high_water

        # Nothing new since the cursor: skip.
        idle = _evaluate(harness, instance, cursor=high_water)
        assert not idle.run_requests and "no new binlog events" in str(idle.skip_message)

        # A run of this source in progress: skip even though there is new data.
        job = harness.definitions().resolve_job_def(f"replicate_{SOURCE}")
        running = instance.create_run_for_job(job, tags={SOURCE_TAG: SOURCE}, status=dg.DagsterRunStatus.STARTED)
        harness.source_execute("INSERT INTO t VALUES (2)")
        skipped = _evaluate(harness, instance, cursor=high_water)
        assert not skipped.run_requests and running.run_id in str(skipped.skip_message)

        # That run failed: its range is requested again under a key that names the failure.
        instance.report_run_failed(running)
        newer = str(current_binlog_position(harness.mariadb.settings))
        retried = _evaluate(harness, instance, cursor=newer)
        assert retried.run_requests[0].run_key == f"{SOURCE}:{newer}-{newer}:retry-of-{running.run_id}"


def test_sensor_continues_a_run_that_stopped_short_of_its_range(harness: PipelineHarness) -> None:
    harness.extra_config["replication"] = {"mode": "per_run"}
    harness.source_execute(
        "CREATE TABLE t (id INT PRIMARY KEY)",
        *[f"INSERT INTO t VALUES ({i})" for i in range(6)],  # six transactions
    )
    high_water = str(current_binlog_position(harness.mariadb.settings))
    with dg.instance_for_test() as instance:
        first = harness.replicate(instance=instance, stop_at=high_water, max_rows=2, max_batches=1)
        reached = instance.get_run_by_id(first.run_id).tags["cdc/reached"]
        assert BinlogPosition.parse(reached) < BinlogPosition.parse(high_water)
        assert len(harness.postgres_rows("t")) == 2
        # No new binlog event since the sensor's cursor, yet the rest is requested.
        tick = _evaluate(harness, instance, cursor=high_water)
        (request,) = tick.run_requests
        assert request.run_key == f"{SOURCE}:{reached}-{high_water}"
        # A run drains its range in batches of max_rows, each checkpointed.
        rest = run_summary(harness.replicate(instance=instance, stop_at=high_water, max_rows=2))
        assert rest["batches"] == 2 and rest["reached"] == high_water, rest
        assert len(harness.postgres_rows("t")) == 6
        assert "no new binlog events" in str(_evaluate(harness, instance, cursor=high_water).skip_message)


def test_materializations_carry_counts_position_and_lag_and_checks_pass(harness: PipelineHarness) -> None:
    table = f"{harness.database}.orders"
    harness.configure_source(tables={"include": [table]})
    harness.source_execute(
        "CREATE TABLE orders (id INT PRIMARY KEY, total DECIMAL(10,2))",
        "INSERT INTO orders VALUES (1, 10.00), (2, 20.00), (3, 30.00)",
        "UPDATE orders SET total = 11.00 WHERE id = 1",
        "DELETE FROM orders WHERE id = 3",
    )
    result = harness.replicate()
    high_water = str(current_binlog_position(harness.mariadb.settings))
    for sink in (CH_SINK, PG_SINK):
        (materialization,) = [
            m
            for m in result.asset_materializations_for_node(f"replicate_{SOURCE}")
            if m.asset_key.path == [sink, f"{harness.database}__orders"]
        ]
        metadata = {k: v.value for k, v in materialization.metadata.items()}
        # Three inserts, one update, one delete at the source: all delivered.
        assert (metadata["rows_inserted"], metadata["rows_updated"], metadata["rows_deleted"]) == (3, 1, 1)
        assert metadata["dlq_count"] == 0
        assert metadata["source_position"] == high_water
        assert 0 <= metadata["lag_seconds"] < 600

    definitions = harness.definitions()
    check_keys = [
        key
        for key in definitions.resolve_asset_graph().asset_check_keys
        if key.asset_key.path[-1] == f"{harness.database}__orders"
    ]
    assert {k.name for k in check_keys} == {
        "row_count_matches_source",
        "keys_match_source",
        "versions_match_other_sinks",
        "source_log_retained",
        "sink_is_fresh",
        "schema_in_sync",
    }
    checks = definitions.resolve_implicit_global_asset_job_def().get_subset(asset_check_selection=set(check_keys))
    outcome = checks.execute_in_process()
    evaluations = outcome.get_asset_check_evaluations()
    assert len(evaluations) == 12 and all(e.passed for e in evaluations), [
        (e.check_name, e.metadata) for e in evaluations
    ]
    by_name = {(e.asset_key.path[0], e.check_name): e for e in evaluations}
    assert by_name[(PG_SINK, "row_count_matches_source")].metadata["source_rows"].value == 2

    # A key changed behind the pipeline's back: same row count, but the key digest differs.
    with psycopg2.connect(harness.pg_dsn) as connection, connection.cursor() as cursor:
        cursor.execute(f'UPDATE replica."{harness.database}__orders" SET id = 20 WHERE id = 2')
    connection.close()
    evaluations = checks.execute_in_process(raise_on_error=False).get_asset_check_evaluations()
    failed = {(e.asset_key.path[0], e.check_name) for e in evaluations if not e.passed}
    assert failed == {(PG_SINK, "keys_match_source")}

    # A row removed behind the pipeline's back makes the row-count check fail too.
    with psycopg2.connect(harness.pg_dsn) as connection, connection.cursor() as cursor:
        cursor.execute(f'DELETE FROM replica."{harness.database}__orders" WHERE id = 20')
    connection.close()
    evaluations = checks.execute_in_process(raise_on_error=False).get_asset_check_evaluations()
    failed = {(e.asset_key.path[0], e.check_name) for e in evaluations if not e.passed}
    assert (PG_SINK, "row_count_matches_source") in failed and (PG_SINK, "keys_match_source") in failed


def test_sensor_backs_off_after_consecutive_failures_then_retries(harness: PipelineHarness) -> None:
    harness.extra_config["replication"] = {"mode": "per_run"}
    harness.source_execute("CREATE TABLE t (id INT PRIMARY KEY)", "INSERT INTO t VALUES (1)")
    job = harness.definitions().resolve_job_def(f"replicate_{SOURCE}")
    with dg.instance_for_test() as instance:
        failed = []
        for _ in range(3):  # a sink that stays down: three runs in a row failed
            run = instance.create_run_for_job(job, tags={SOURCE_TAG: SOURCE}, status=dg.DagsterRunStatus.STARTED)
            instance.report_run_failed(run)
            failed.append(run.run_id)
        high_water = str(current_binlog_position(harness.mariadb.settings))
        waiting = _evaluate(harness, instance, cursor=high_water)
        assert not waiting.run_requests
        assert "the last 3 runs" in str(waiting.skip_message) and "backing off" in str(waiting.skip_message)
        # poll_interval_seconds is 1 here: after 1 s x 2**2 the range is requested again, once.
        retried = wait_until(
            lambda: _evaluate(harness, instance, cursor=high_water).run_requests or None, 30, "the retry"
        )
        assert [request.run_key for request in retried] == [f"{SOURCE}:{high_water}-{high_water}:retry-of-{failed[-1]}"]
