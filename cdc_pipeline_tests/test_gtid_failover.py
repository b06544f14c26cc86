"""resume_by: gtid follows a failover to a replica whose binlog names and offsets differ."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg2
import pytest

from cdc_pipeline.local_servers.mariadb import LocalMariaDb
from cdc_pipeline.sinks.postgres.sink import PostgresSink
from cdc_pipeline.sources.mysql.gtid import Gtid, gtid_row_version
from cdc_pipeline.sources.mysql.positions import GtidPosition, binlog_checkpoint
from cdc_pipeline_tests.harness import PG_SINK, PipelineHarness, assert_same_rows


def _query(server: LocalMariaDb, statement: str) -> tuple:  # type: ignore[type-arg]
    with server.settings.connect() as connection, connection.cursor() as cursor:
        cursor.execute(statement)
        return cursor.fetchone()


def _wait_until_replica_has(replica: LocalMariaDb, gtid_position: str, timeout_seconds: float = 60) -> None:
    deadline = time.monotonic() + timeout_seconds
    while _query(replica, "SELECT @@gtid_slave_pos")[0] != gtid_position:
        status = _query(replica, "SHOW SLAVE STATUS")
        assert time.monotonic() < deadline, f"replica did not reach {gtid_position}: {status}"
        time.sleep(0.05)


@pytest.fixture
def primary_and_replica(tmp_path: Path):  # type: ignore[no-untyped-def]
    primary = LocalMariaDb(tmp_path / "primary", server_id=11, extra_flags=("--log-slave-updates",)).start()
    # Another binlog base name: the primary's file:offset checkpoints mean nothing on the replica.
    replica = LocalMariaDb(
        tmp_path / "replica", server_id=12, extra_flags=("--log-slave-updates", "--log-bin=replica-bin")
    ).start()
    with replica.settings.connect() as connection, connection.cursor() as cursor:
        cursor.execute(
            f"CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={int(primary.port)}, MASTER_USER='root',"
            " MASTER_PASSWORD='', MASTER_USE_GTID=slave_pos"
        )
        cursor.execute("START SLAVE")
    yield primary, replica
    replica.stop()
    primary.stop()


def test_resume_by_gtid_follows_a_failover_to_the_replica(harness: PipelineHarness, primary_and_replica) -> None:  # type: ignore[no-untyped-def]
    primary, replica = primary_and_replica
    pipeline = PipelineHarness(primary, harness.database, harness.pg_dsn, harness.chdb_dsn, harness.work_dir, {})
    pipeline.configure_source(resume_by="gtid")
    _query(primary, f"CREATE DATABASE `{harness.database}`")
    pipeline.source_execute(
        "CREATE TABLE accounts (id INT PRIMARY KEY, balance DECIMAL(12,2), note VARCHAR(50))",
        "INSERT INTO accounts VALUES (1, 10.00, 'a'), (2, 20.00, 'b'), (3, 30.00, 'c'), (4, 40.00, 'd')",
    )
    pipeline.replicate()
    assert len(pipeline.postgres_rows("accounts")) == 4

    # Changes the pipeline has not read yet reach the replica, then the primary is lost.
    pipeline.source_execute(
        "UPDATE accounts SET balance = 11.00 WHERE id = 1",
        "DELETE FROM accounts WHERE id = 2",
        "INSERT INTO accounts VALUES (5, 50.00, 'e'), (6, 60.00, 'f')",
    )
    _wait_until_replica_has(replica, _query(primary, "SELECT @@gtid_binlog_pos")[0])
    primary.stop()
    with replica.settings.connect() as connection, connection.cursor() as cursor:
        cursor.execute("STOP SLAVE")
        cursor.execute("RESET SLAVE ALL")

    # The promoted replica takes writes; its GTIDs continue the domain's sequence.
    pipeline.mariadb = replica
    pipeline.source_execute(
        "UPDATE accounts SET balance = 12.00, note = 'after failover' WHERE id = 1",
        "UPDATE accounts SET note = 'moved' WHERE id = 6",
        "INSERT INTO accounts VALUES (7, 70.00, 'g')",
    )
    assert _query(replica, "SHOW MASTER STATUS")[0].startswith("replica-bin.")
    pipeline.replicate()

    source = pipeline.source_rows("accounts")
    assert [row["id"] for row in source] == [1, 3, 4, 5, 6, 7]
    assert_same_rows(pipeline.postgres_rows("accounts"), source, "PostgreSQL")
    assert_same_rows(pipeline.clickhouse_rows("accounts"), source, "ClickHouse")

    # The checkpoint now names the replica, and versions follow the GTID sequence.
    stored = PostgresSink(PG_SINK, harness.pg_dsn, "replica").checkpoint("shop")
    assert stored is not None
    checkpoint = binlog_checkpoint(stored.position)
    assert isinstance(checkpoint, GtidPosition)
    with psycopg2.connect(harness.pg_dsn) as connection, connection.cursor() as cursor:
        cursor.execute(f'SELECT _version FROM replica."{harness.database}__accounts" WHERE id = 7')
        (version,) = cursor.fetchone()
    connection.close()
    assert checkpoint.binlog.file.startswith("replica-bin.") and checkpoint.server_id == 12
    assert checkpoint.gtid == Gtid.parse(_query(replica, "SELECT @@gtid_binlog_pos")[0])
    assert version == gtid_row_version(checkpoint.gtid.sequence, 0)


def test_switching_an_existing_pipeline_to_gtid_is_refused(harness: PipelineHarness) -> None:
    harness.source_execute("CREATE TABLE t (id INT PRIMARY KEY)", "INSERT INTO t VALUES (1)")
    harness.replicate()
    harness.configure_source(resume_by="gtid")
    job = harness.definitions().resolve_job_def("replicate_shop")
    result = job.execute_in_process(raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = failure.step_failure_data.error.cause.message
    assert "written with resume_by: position" in message and "re-sync" in message
