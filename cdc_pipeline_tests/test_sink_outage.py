"""Sinks that go away: a stopped server, a revoked permission, every sink down.

The PostgreSQL sink lives on a PostgreSQL server of this module's own, which the tests stop and
start again; the pipeline reaches it as a non-superuser role whose DSN holds a password, so the
tests can also show that the password never reaches a log line, metadata or an error.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import dagster as dg
import psycopg2
import pytest
from psycopg2 import sql

from cdc_pipeline.core.checkpoint import Checkpoint
from cdc_pipeline.core.schema import ColumnSchema, TableSchema
from cdc_pipeline.defs.replication.sink_status import STATUS
from cdc_pipeline.defs.resource_keys import DEAD_LETTER_QUEUE, sink_key
from cdc_pipeline.defs.resources import DeadLetterQueueResource
from cdc_pipeline.defs.sink_tables.freshness import FRESHNESS_CHECK
from cdc_pipeline.local_servers.postgres import LocalPostgres
from cdc_pipeline.mapping.mapper import MappedBatch, TypeMapper
from cdc_pipeline.mapping.sink_types import SinkTableLayout
from cdc_pipeline.sinks.availability import SinkUnavailable, dsn_secrets, redacted_reason
from cdc_pipeline.sinks.base import Sink
from cdc_pipeline.sinks.clickhouse.resource import ClickHouseSinkResource
from cdc_pipeline.sinks.clickhouse.sink import ClickHouseSink
from cdc_pipeline.sinks.postgres.sink import PostgresSink
from cdc_pipeline.sinks.registry import SINK_KINDS, sink_kind
from cdc_pipeline.sources.postgres.positions import LogSequenceNumber
from cdc_pipeline_tests.harness import CH_SINK, PG_SINK, SOURCE, PipelineHarness, assert_same_rows, run_summary
from cdc_pipeline_tests.polling import wait_until
from cdc_pipeline_tests.postgres_source import SOURCE as PG_SOURCE
from cdc_pipeline_tests.postgres_source import PostgresSourceHarness

PASSWORD = "s3cret-outage-pw"


@pytest.fixture(scope="module")
def sink_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPostgres]:
    """A PostgreSQL server for the sink alone: stopping it leaves the DLQ (on the session's server) up."""
    server = LocalPostgres(tmp_path_factory.mktemp("outage_sink") / "data", keep_data=True).start()
    yield server
    server.stop()


@dataclass
class OutageHarness(PipelineHarness):
    """The PostgreSQL sink on `sink_server` as role `role`; the DLQ stays on the session's server."""

    dlq_dsn: str = ""
    admin_dsn: str = ""  # the sink database as superuser, for REVOKE/GRANT
    role: str = ""
    clickhouse_refused: bool = False

    def resources(self) -> dict[str, Any]:
        resources = super().resources()
        resources[DEAD_LETTER_QUEUE] = DeadLetterQueueResource(dsn=self.dlq_dsn, schema_name="dlq")
        if self.clickhouse_refused:
            # A ClickHouse server whose port refuses connections.
            resources[sink_key(CH_SINK)] = ClickHouseSinkResource(
                dsn=f"http://default:{PASSWORD}@127.0.0.1:{_closed_port()}", database=f"{self.database}_ch"
            )
        return resources

    def run(self, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
        job = self.definitions().resolve_job_def(f"replicate_{SOURCE}")
        return job.execute_in_process(instance=instance, raise_on_error=False)

    def postgres_checkpoint(self) -> Checkpoint | None:
        return PostgresSink(PG_SINK, self.pg_dsn, "replica").checkpoint(SOURCE)

    def admin(self, *statements: str) -> None:
        with closing(psycopg2.connect(self.admin_dsn)) as connection, connection, connection.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)

    def freshness(self, instance: dg.DagsterInstance) -> dict[str, dg.AssetCheckEvaluation]:
        """The freshness check of table t in each sink, evaluated now."""
        definitions = self.definitions()
        keys = {k for k in definitions.resolve_asset_graph().asset_check_keys if k.name == FRESHNESS_CHECK}
        job = definitions.resolve_implicit_global_asset_job_def().get_subset(asset_check_selection=keys)
        evaluations = job.execute_in_process(instance=instance, raise_on_error=False).get_asset_check_evaluations()
        return {e.asset_key.path[0]: e for e in evaluations}

    def assert_sinks_match_source(self) -> None:
        expected = self.source_rows("t")
        assert_same_rows(self.clickhouse_rows("t"), expected, "ClickHouse")
        assert_same_rows(self.postgres_rows("t"), expected, "PostgreSQL")


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _as_role(dsn: str, role: str) -> str:
    parts = urlsplit(dsn)
    host = parts.netloc.split("@", 1)[1] if "@" in parts.netloc else parts.netloc
    return urlunsplit(parts._replace(netloc=f"{role}:{PASSWORD}@{host}"))


@pytest.fixture
def outage(harness: PipelineHarness, sink_server: LocalPostgres, tmp_path: Path) -> Iterator[OutageHarness]:
    name = harness.database
    admin_dsn = sink_server.create_database(name)
    role = f"cdc_{name}"
    with closing(psycopg2.connect(admin_dsn)) as connection, connection, connection.cursor() as cursor:
        cursor.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{PASSWORD}'")
        cursor.execute(f"GRANT CONNECT, CREATE, TEMPORARY ON DATABASE {name} TO {role}")
    values = {f.name: getattr(harness, f.name) for f in fields(harness)}
    values.update(pg_dsn=_as_role(admin_dsn, role), extra_config={})
    test = OutageHarness(**values, dlq_dsn=harness.pg_dsn, admin_dsn=admin_dsn, role=role)
    test.configure_source(tables={"include": [f"{name}.t"]})
    # Small retry delays: the tests are about what happens after the tries, not about waiting.
    test.extra_config["sink_outages"] = {"write_attempts": 2, "first_retry_delay_seconds": 0.05}
    test.source_execute("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))")
    yield test
    sink_server.start()  # idempotent when it runs; a test that failed while it was stopped leaves it stopped
    sink_server.drop_database(name)
    with closing(psycopg2.connect(sink_server.dsn())) as connection, connection, connection.cursor() as cursor:
        cursor.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def _messages(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult) -> str:
    """Everything the run recorded: log lines, events with their metadata, failures."""
    return "\n".join(repr(entry) for entry in instance.all_logs(result.run_id))


def _observed_status(instance: dg.DagsterInstance, sink: str, table: str) -> dict[str, Any]:
    (record,) = instance.fetch_observations(dg.AssetKey([sink, table]), limit=1).records
    observation = record.asset_observation
    assert observation is not None
    return {k: v.value for k, v in observation.metadata.items()}


def test_stopped_sink_server_lags_then_catches_up_while_the_other_sink_replicates(
    outage: OutageHarness, sink_server: LocalPostgres
) -> None:
    table = f"{outage.database}__t"
    outage.source_execute("INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c')")
    with dg.instance_for_test() as instance:
        assert outage.run(instance).success
        outage.assert_sinks_match_source()
        before = outage.postgres_checkpoint()
        assert before is not None

        sink_server.stop()
        outage.source_execute(
            "INSERT INTO t VALUES (4, 'd'), (5, 'e')", "UPDATE t SET v = 'A' WHERE id = 1", "DELETE FROM t WHERE id = 2"
        )
        first = outage.run(instance)
        # The run succeeds: ClickHouse took the batch, PostgreSQL stays at its checkpoint.
        assert first.success
        assert_same_rows(outage.clickhouse_rows("t"), outage.source_rows("t"), "ClickHouse")
        summary = run_summary(first)
        status = str(summary[f"{PG_SINK}_status"])
        assert status.startswith("unavailable since "), summary
        assert f"sink '{PG_SINK}'" not in status  # the status is the sink's own: no repetition
        assert "OperationalError" in status and summary[f"{CH_SINK}_status"] == "available"
        observed = _observed_status(instance, PG_SINK, table)
        assert observed[STATUS] == status
        # The log is kept for the sink whose checkpoint is unknown.
        assert summary["released"] is False and summary["sinks_unavailable"] == PG_SINK
        fresh = outage.freshness(instance)
        assert fresh[CH_SINK].passed and not fresh[PG_SINK].passed, {k: e.metadata for k, e in fresh.items()}

        # Still down for a second run: the outage keeps its start.
        outage.source_execute("INSERT INTO t VALUES (6, 'f')")
        second = outage.run(instance)
        assert second.success
        assert _observed_status(instance, PG_SINK, table)["unavailable_since"] == observed["unavailable_since"]
        assert_same_rows(outage.clickhouse_rows("t"), outage.source_rows("t"), "ClickHouse")
        for result in (first, second):
            assert PASSWORD not in _messages(instance, result)

        sink_server.start()
        # Its checkpoint never moved while it was down.
        assert outage.postgres_checkpoint() == before
        assert not outage.freshness(instance)[PG_SINK].passed  # still the outage's status until a run writes

        caught_up = outage.run(instance)
        assert caught_up.success
        outage.assert_sinks_match_source()
        assert _observed_status(instance, PG_SINK, table)[STATUS] == "available"
        assert run_summary(caught_up)["released"] is True
        fresh = outage.freshness(instance)
        assert all(e.passed for e in fresh.values()), {k: e.metadata for k, e in fresh.items()}


def test_revoked_permission_is_retried_then_lags_and_recovers_after_grant(outage: OutageHarness) -> None:
    table = f"{outage.database}__t"
    outage.source_execute("INSERT INTO t VALUES (1, 'a')")
    with dg.instance_for_test() as instance:
        assert outage.run(instance).success
        before = outage.postgres_checkpoint()
        outage.admin(f"REVOKE INSERT, UPDATE ON ALL TABLES IN SCHEMA replica FROM {outage.role}")
        outage.source_execute("INSERT INTO t VALUES (2, 'b')", "UPDATE t SET v = 'A' WHERE id = 1")

        result = outage.run(instance)
        assert result.success
        summary = run_summary(result)
        # Tried as often as configured, then left to lag: a permission problem, not bad rows.
        assert summary[f"{PG_SINK}_write_attempts"] == 2
        status = str(summary[f"{PG_SINK}_status"])
        assert "InsufficientPrivilege" in status and "permission denied" in status
        assert outage.dead_letters() == []
        assert outage.postgres_checkpoint() == before
        assert_same_rows(outage.clickhouse_rows("t"), outage.source_rows("t"), "ClickHouse")
        assert len(outage.postgres_rows("t")) == 1
        assert not outage.freshness(instance)[PG_SINK].passed
        assert PASSWORD not in _messages(instance, result)

        outage.admin(f"GRANT INSERT, UPDATE ON ALL TABLES IN SCHEMA replica TO {outage.role}")
        assert outage.run(instance).success
        outage.assert_sinks_match_source()
        assert _observed_status(instance, PG_SINK, table)[STATUS] == "available"
        assert all(e.passed for e in outage.freshness(instance).values())


def test_refused_clickhouse_lags_alone_and_every_sink_down_fails_the_run(
    outage: OutageHarness, sink_server: LocalPostgres
) -> None:
    outage.source_execute("INSERT INTO t VALUES (1, 'a'), (2, 'b')")
    outage.clickhouse_refused = True
    with dg.instance_for_test() as instance:
        # ClickHouse refuses connections: PostgreSQL replicates on its own.
        result = outage.run(instance)
        assert result.success
        assert_same_rows(outage.postgres_rows("t"), outage.source_rows("t"), "PostgreSQL")
        assert "OperationalError" in str(run_summary(result)[f"{CH_SINK}_status"])
        assert PASSWORD not in _messages(instance, result)

        # Both sinks down: nothing was delivered, and the run says so.
        pg_before = outage.postgres_checkpoint()
        sink_server.stop()
        outage.source_execute("INSERT INTO t VALUES (3, 'c')")
        failed = outage.run(instance)
        assert not failed.success
        (failure,) = failed.get_step_failure_events()
        assert failure.step_key == f"replicate_{SOURCE}"
        error = failure.step_failure_data.error
        assert error is not None
        assert f"every sink of {SOURCE} is unavailable" in error.message
        assert f"'{CH_SINK}' (OperationalError" in error.message and f"'{PG_SINK}' (OperationalError" in error.message
        assert PASSWORD not in _messages(instance, failed)
        sink_server.start()
        assert outage.postgres_checkpoint() == pg_before

        # ClickHouse stays refused, PostgreSQL is back: the next run delivers it.
        assert outage.run(instance).success
        assert_same_rows(outage.postgres_rows("t"), outage.source_rows("t"), "PostgreSQL")


def test_unavailable_reason_blanks_the_dsn_password_and_keeps_the_first_line() -> None:
    dsn = f"postgresql://cdc:{PASSWORD}@db.internal:5432/replica"
    error = psycopg2.OperationalError(f'connection to "{dsn}" failed: timeout\nDETAIL: more')
    reason = redacted_reason(error, dsn_secrets(dsn))
    assert reason == 'OperationalError: connection to "postgresql://cdc:***@db.internal:5432/replica" failed: timeout'
    assert dsn_secrets(f"host=db.internal password={PASSWORD} dbname=replica") == [PASSWORD]
    assert str(SinkUnavailable(PG_SINK, reason)).startswith(f"sink '{PG_SINK}' is unavailable: OperationalError")


def _every_sink_method(layout: SinkTableLayout) -> dict[str, Callable[[Sink], object]]:
    """A call of each data-touching `Sink` method (table_note answers from memory)."""
    at = Checkpoint(LogSequenceNumber(1))
    batch = MappedBatch(PG_SINK, SOURCE, at, at, None)
    return {
        "checkpoint": lambda sink: sink.checkpoint(SOURCE),
        "adopt_checkpoint": lambda sink: sink.adopt_checkpoint(SOURCE, at),
        "write": lambda sink: sink.write(batch, lambda rejections: None),
        "table_stats": lambda sink: sink.table_stats(layout.source_table),
        "older_live_keys": lambda sink: sink.older_live_keys(layout, None, 1),
        "tombstone_missing": lambda sink: sink.tombstone_missing(layout, None, set(), 1),
        "release_schema_hold": lambda sink: sink.release_schema_hold(SOURCE, layout.source_table),
        "live_keys": lambda sink: list(sink.live_keys(layout.source_table, layout.key_columns)),
    }


@pytest.mark.parametrize("kind", sorted(SINK_KINDS))
def test_every_sink_method_reports_a_server_that_is_down_as_unavailable_without_the_password(kind: str) -> None:
    port = _closed_port()
    dsn = {
        "clickhouse": f"http://default:{PASSWORD}@127.0.0.1:{port}",
        "postgres": f"host=127.0.0.1 port={port} user=cdc password={PASSWORD} dbname=replica connect_timeout=2",
    }[kind]
    sink = {
        "clickhouse": lambda: ClickHouseSink(CH_SINK, dsn, "cdc"),
        "postgres": lambda: PostgresSink(PG_SINK, dsn, "cdc"),
    }[kind]()
    schema = TableSchema("shop", "t", (ColumnSchema("id", "int", "int", nullable=False),), ("id",))
    layout = TypeMapper(sink.name, sink_kind(kind).map_column, []).layout(schema)
    calls = _every_sink_method(layout)
    protocol_methods = {name for name, member in vars(Sink).items() if callable(member) and not name.startswith("_")}
    assert set(calls) == protocol_methods - {"table_note"}, "a Sink method without a call here"
    for method, call in calls.items():
        with pytest.raises(SinkUnavailable) as down:
            call(sink)
        assert down.value.sink == sink.name, method
        assert PASSWORD not in str(down.value), method
        assert down.value.__cause__ is None and down.value.__suppress_context__, method


@dataclass
class SlotOutageHarness(PostgresSourceHarness):
    """A PostgreSQL source whose PostgreSQL sink lives on `sink_server`; the DLQ stays on the session's server."""

    dlq_dsn: str = ""

    def config_dict(self) -> dict[str, Any]:
        config = super().config_dict()
        config["sink_outages"] = {"write_attempts": 2, "first_retry_delay_seconds": 0.05}
        return config

    def resources(self) -> dict[str, Any]:
        resources = super().resources()
        resources[DEAD_LETTER_QUEUE] = DeadLetterQueueResource(dsn=self.dlq_dsn, schema_name="dlq")
        return resources

    def run(self, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
        job = self.definitions().resolve_job_def(f"replicate_{PG_SOURCE}")
        return job.execute_in_process(instance=instance, raise_on_error=False)

    def slot_lsn(self) -> LogSequenceNumber:
        position = self.slot_position()
        assert position is not None
        return LogSequenceNumber.parse(position)


def test_the_replication_slot_stays_behind_a_sink_that_is_down(
    pg_source: PostgresSourceHarness, sink_server: LocalPostgres
) -> None:
    """The source log is the sinks' write-ahead log: while a sink is down, the slot keeps the WAL it
    still needs (release frees nothing), and the sink catches up from it when it returns."""
    sink_dsn = sink_server.create_database(pg_source.clickhouse_database.removesuffix("_ch") + "_pgsink")
    values = {f.name: getattr(pg_source, f.name) for f in fields(pg_source)}
    values.update(sink_dsn=sink_dsn)
    test = SlotOutageHarness(**values, dlq_dsn=pg_source.sink_dsn)
    test.source_execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
    test.create_slot()
    test.source_execute("INSERT INTO t VALUES (1, 'a'), (2, 'b')")
    try:
        with dg.instance_for_test() as instance:
            assert test.run(instance).success
            kept = test.slot_lsn()

            sink_server.stop()
            test.source_execute("INSERT INTO t VALUES (3, 'c')", "UPDATE t SET v = 'B' WHERE id = 2")
            lagging = test.run(instance)
            assert lagging.success
            assert_same_rows(test.clickhouse_rows("t"), test.source_rows("t"), "ClickHouse")
            assert run_summary(lagging)["released"] is False
            # ClickHouse moved on; the slot did not: the WAL the PostgreSQL sink lacks is still there.
            assert test.slot_lsn() == kept
            # A second run while it is still down: ClickHouse's checkpoint is now ahead of the
            # PostgreSQL sink's, and the slot must still not move to it.
            test.source_execute("INSERT INTO t VALUES (4, 'd')", "DELETE FROM t WHERE id = 1")
            assert test.run(instance).success
            assert_same_rows(test.clickhouse_rows("t"), test.source_rows("t"), "ClickHouse")
            assert test.slot_lsn() == kept

            sink_server.start()
            assert test.run(instance).success
            assert_same_rows(test.postgres_rows("t"), test.source_rows("t"), "PostgreSQL")
            assert_same_rows(test.clickhouse_rows("t"), test.source_rows("t"), "ClickHouse")
            assert test.slot_lsn() > kept
    finally:
        sink_server.start()
        sink_server.drop_database(pg_source.clickhouse_database.removesuffix("_ch") + "_pgsink")


def test_a_streaming_run_keeps_replicating_while_a_sink_is_down_and_catches_it_up(
    outage: OutageHarness, sink_server: LocalPostgres
) -> None:
    """Continuous mode: one run, alive throughout; the sink that goes away rests, the other streams on,
    and the returning sink catches up inside the same run."""
    outage.source_execute("INSERT INTO t VALUES (1, 'a'), (2, 'b')")
    with dg.instance_for_test() as instance:
        streaming = _stream_in_background(outage, instance, lifetime_minutes=1.0)
        wait_until(lambda: _postgres_matches(outage), 60, "the first rows in PostgreSQL")

        sink_server.stop()
        outage.source_execute("INSERT INTO t VALUES (3, 'c')", "UPDATE t SET v = 'A' WHERE id = 1")
        wait_until(lambda: outage.clickhouse_rows("t") == outage.source_rows("t"), 60, "ClickHouse to stream on alone")
        observed = wait_until(
            lambda: (
                _observed_status(instance, PG_SINK, f"{outage.database}__t")
                if instance.fetch_observations(dg.AssetKey([PG_SINK, f"{outage.database}__t"]), limit=1).records
                else None
            ),
            30,
            "the outage to be observed",
        )
        assert str(observed[STATUS]).startswith("unavailable since "), observed

        sink_server.start()
        outage.source_execute("DELETE FROM t WHERE id = 2")
        wait_until(lambda: _postgres_matches(outage), 90, "PostgreSQL to catch up in the same run")
        streaming.join()
        (run,) = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert _observed_status(instance, PG_SINK, f"{outage.database}__t")[STATUS] == "available"
        outage.assert_sinks_match_source()
        assert PASSWORD not in "\n".join(repr(entry) for entry in instance.all_logs(run.run_id))


def _postgres_matches(outage: OutageHarness) -> bool:
    try:
        return outage.postgres_rows("t") == outage.source_rows("t")
    except psycopg2.Error:
        return False  # the server is down, or the table is not there yet


def _stream_in_background(
    outage: OutageHarness, instance: dg.DagsterInstance, lifetime_minutes: float
) -> threading.Thread:
    """A streaming run for `lifetime_minutes`, in a thread (the test changes things around it)."""
    thread = threading.Thread(
        target=outage.stream,
        kwargs={"instance": instance, "until_caught_up": False, "lifetime_minutes": lifetime_minutes},
    )
    thread.start()
    return thread
