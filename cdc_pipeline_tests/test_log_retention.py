"""The source log is the write-ahead log: the `source_log_retained` check warns when a sink's
checkpoint comes close to what the source purges, fails once it is purged, and the next run stops
naming the sink, its checkpoint and the lost range instead of skipping ahead."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import closing, contextmanager
from typing import Any

import dagster as dg
import psycopg2
import pytest
import yaml

from cdc_pipeline.config.loading import PipelineConfigError, parse_pipeline_config
from cdc_pipeline.defs.builder import build_definitions
from cdc_pipeline.defs.resource_keys import sink_key, source_key
from cdc_pipeline.local_servers.postgres import LocalPostgres
from cdc_pipeline.sources.cassandra.change_source import CassandraChangeSource
from cdc_pipeline.sources.mysql.preflight import current_binlog_position, oldest_binlog_position
from cdc_pipeline.sources.postgres.replication_slot import LogicalDecodingError
from cdc_pipeline_tests.cassandra_pipeline import CassandraPipelineHarness
from cdc_pipeline_tests.harness import CH_SINK, PG_SINK, PipelineHarness, run_summary
from cdc_pipeline_tests.polling import wait_until
from cdc_pipeline_tests.postgres_source import PostgresSourceHarness

CHECK = "source_log_retained"
Evaluations = dict[str, dg.AssetCheckEvaluation]
Runner = PipelineHarness | PostgresSourceHarness | CassandraPipelineHarness


def _retention_checks(runner: Runner, table: str, config: dict[str, Any] | None = None) -> Evaluations:
    """The retention check of `table` in every sink, by sink name; `config` replaces the runner's."""
    pipeline = parse_pipeline_config(yaml.safe_dump(config or runner.config_dict()))
    definitions = build_definitions(pipeline, runner.resources())
    keys = {
        key
        for key in definitions.resolve_asset_graph().asset_check_keys
        if key.name == CHECK and key.asset_key.path[-1] == table
    }
    assert len(keys) == 2, keys
    job = definitions.resolve_implicit_global_asset_job_def().get_subset(asset_check_selection=keys)
    evaluations = job.execute_in_process(raise_on_error=False).get_asset_check_evaluations()
    return {e.asset_key.path[0]: e for e in evaluations}


def _value(evaluation: dg.AssetCheckEvaluation, key: str) -> Any:
    return evaluation.metadata[key].value


def _failure_message(result: dg.ExecuteInProcessResult) -> str:
    return str(next(e for e in result.all_events if e.is_step_failure).step_failure_data.error.cause.message)


# -- MySQL / MariaDB: binlog expiry ----------------------------------------------------------------


@contextmanager
def _binlog_expiry(harness: PipelineHarness, seconds: int) -> Iterator[None]:
    """The session server's binlog expiry for one test; restored after it (other tests share the server)."""
    with harness.mariadb.settings.connect() as connection, connection.cursor() as cursor:
        cursor.execute("SELECT @@GLOBAL.binlog_expire_logs_seconds")
        before = int(cursor.fetchone()[0])
        cursor.execute(f"SET GLOBAL binlog_expire_logs_seconds = {seconds}")
    try:
        yield
    finally:
        with harness.mariadb.settings.connect() as connection, connection.cursor() as cursor:
            cursor.execute(f"SET GLOBAL binlog_expire_logs_seconds = {before}")


def test_mysql_binlog_expiry_warns_with_the_time_left_and_a_purge_fails_naming_the_lost_range(
    harness: PipelineHarness,
) -> None:
    table = f"{harness.database}__t"
    harness.configure_source(tables={"include": [f"{harness.database}.t"]})
    harness.source_execute("CREATE TABLE t (id INT PRIMARY KEY)", "INSERT INTO t VALUES (1)")
    harness.replicate()
    checkpoint = str(current_binlog_position(harness.mariadb.settings))

    # No expiry: nothing will be purged by age.
    evaluations = _retention_checks(harness, table)
    assert all(e.passed for e in evaluations.values()), [e.metadata for e in evaluations.values()]
    assert _value(evaluations[PG_SINK], "binlog_expire_logs_seconds") == 0

    with _binlog_expiry(harness, 7200):
        # The checkpoint's binlog is closed now: the server may purge it two hours from its last write.
        harness.source_execute("FLUSH BINARY LOGS")
        evaluations = _retention_checks(harness, table)
        for sink in (CH_SINK, PG_SINK):
            evaluation = evaluations[sink]
            assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
            assert _value(evaluation, "sink_checkpoint") == checkpoint
            assert 7200 - 300 < _value(evaluation, "seconds_left") <= 7200
            assert _value(evaluation, "hours_left") <= 2
            assert _value(evaluation, "binlog_expire_logs_seconds") == 7200
            assert "warn_when_hours_left: 24" in str(evaluation.description)
        # Two hours are plenty when the threshold is one.
        relaxed = {**harness.config_dict(), "retention": {"warn_when_hours_left": 1}}
        assert all(e.passed for e in _retention_checks(harness, table, relaxed).values())

        # The run shows the same numbers, per sink.
        summary = run_summary(harness.replicate())
        assert summary["binlog_expire_logs_seconds"] == 7200
        assert 0 < int(summary[f"{PG_SINK}_seconds_left"]) <= 7200

    # The binlog after the checkpoint purged behind the pipeline's back: the check fails naming the range...
    # (No change was replicated since: the sinks' checkpoint is still the first one.)
    checkpoint_file = checkpoint.rsplit(":", 1)[0]
    harness.source_execute("INSERT INTO t VALUES (2)", "FLUSH BINARY LOGS")
    harness.source_execute(f"PURGE BINARY LOGS TO '{current_binlog_position(harness.mariadb.settings).file}'")
    oldest_kept = str(oldest_binlog_position(harness.mariadb.settings))
    assert not oldest_kept.startswith(checkpoint_file)
    evaluations = _retention_checks(harness, table)
    for evaluation in evaluations.values():
        assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
        assert _value(evaluation, "lost_range") == f"{_value(evaluation, 'sink_checkpoint')} up to {oldest_kept}"
        assert _value(evaluation, "oldest_kept") == oldest_kept
        assert _value(evaluation, "sink_checkpoint").startswith(checkpoint_file)
    # ... and the run stops naming the sink, its checkpoint and the oldest binlog kept.
    result = harness.definitions().resolve_job_def("replicate_shop").execute_in_process(raise_on_error=False)
    assert not result.success
    message = _failure_message(result)
    assert re.search(rf"sink '({CH_SINK}|{PG_SINK})' checkpoint {checkpoint_file}:\d+ ", message), message
    assert f"(oldest kept: {oldest_kept.split(':')[0]})" in message and "were purged" in message


# -- PostgreSQL: the slot's WAL limit --------------------------------------------------------------


@contextmanager
def _slot_wal_limit(postgres: LocalPostgres, size: str) -> Iterator[None]:
    """max_slot_wal_keep_size on the session server for one test, reset after it."""

    def configure(statement: str) -> None:
        with closing(psycopg2.connect(postgres.dsn())) as connection, connection.cursor() as cursor:
            connection.autocommit = True
            cursor.execute(statement)
            cursor.execute("SELECT pg_reload_conf()")

    configure(f"ALTER SYSTEM SET max_slot_wal_keep_size = '{size}'")
    try:
        yield
    finally:
        configure("ALTER SYSTEM RESET max_slot_wal_keep_size")


def _write_wal_segment(pg_source: PostgresSourceHarness, row: int) -> None:
    """A change, then a switch to the next WAL segment: the slot (not advanced) holds one more segment."""
    pg_source.source_execute(f"INSERT INTO t VALUES ({row})")
    with closing(psycopg2.connect(pg_source.postgres.dsn())) as connection, connection.cursor() as cursor:
        connection.autocommit = True
        cursor.execute("SELECT pg_switch_wal()")
        cursor.execute("CHECKPOINT")  # where the server removes WAL and invalidates slots past the limit


def test_postgres_slot_warns_as_safe_wal_size_shrinks_and_a_lost_slot_fails_the_check_and_the_run(
    pg_source: PostgresSourceHarness,
) -> None:
    pg_source.tables = ["public.t"]
    table = "public__t"
    pg_source.source_execute("CREATE TABLE t (id int PRIMARY KEY)")
    pg_source.create_slot()
    pg_source.source_execute("INSERT INTO t VALUES (1)")
    # Ten 16 MB WAL segments: each segment switch below uses a tenth of the limit.
    with _slot_wal_limit(pg_source.postgres, "160MB"):
        pg_source.replicate()
        first = _retention_checks(pg_source, table)
        assert all(e.passed for e in first.values()), [e.metadata for e in first.values()]
        assert _value(first[PG_SINK], "max_slot_wal_keep_size") == 160 * 1024 * 1024
        safe_at_first = _value(first[PG_SINK], "bytes_left")
        # The server counts in whole segments: safe_wal_size may exceed the limit by the rest of the current one.
        assert 0 < safe_at_first <= (160 + 16) * 1024 * 1024

        # WAL the slot must keep piles up (the sinks do not move on): safe_wal_size shrinks.
        row = 2
        while _value(_retention_checks(pg_source, table)[PG_SINK], "percent_used") < 80:
            assert row < 16, "160 MB of WAL limit not 80% used after fourteen 16 MB segments"
            _write_wal_segment(pg_source, row)
            row += 1
        warned = _retention_checks(pg_source, table)
        for evaluation in warned.values():
            assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
            assert _value(evaluation, "bytes_left") < safe_at_first
            assert _value(evaluation, "percent_used") >= 80
            assert _value(evaluation, "bytes_behind") > 0

        # Past the limit the next checkpoint invalidates the slot.
        while _value(_retention_checks(pg_source, table)[PG_SINK], "wal_status") != "lost":
            assert row < 30, "the slot was not invalidated after 28 segments past a 160 MB limit"
            _write_wal_segment(pg_source, row)
            row += 1
        lost = _retention_checks(pg_source, table)
        for sink, evaluation in lost.items():
            assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
            checkpoint = _value(evaluation, "sink_checkpoint")
            assert _value(evaluation, "lost_range").startswith(f"{checkpoint} up to ")
            assert f"sink '{sink}' checkpoint {checkpoint}" in str(evaluation.description)

        result = pg_source.definitions().resolve_job_def("replicate_store").execute_in_process(raise_on_error=False)
        assert not result.success
        message = _failure_message(result)
        assert f"replication slot {pg_source.slot!r} was invalidated" in message, message
        for sink in (CH_SINK, PG_SINK):
            assert re.search(rf"sink '{sink}' checkpoint [0-9A-F]+/[0-9A-F]+: lost [0-9A-F]+/[0-9A-F]+ up to", message)


def test_postgres_a_recreated_slot_past_the_checkpoints_is_refused(pg_source: PostgresSourceHarness) -> None:
    pg_source.tables = ["public.t"]
    pg_source.source_execute("CREATE TABLE t (id int PRIMARY KEY)")
    pg_source.create_slot()
    pg_source.source_execute("INSERT INTO t VALUES (1)")
    pg_source.replicate()
    # The slot dropped and created again: it starts after changes no sink has read.
    with closing(psycopg2.connect(pg_source.source_dsn)) as connection, connection.cursor() as cursor:
        connection.autocommit = True
        cursor.execute("SELECT pg_drop_replication_slot(%s)", (pg_source.slot,))
    pg_source.source_execute("INSERT INTO t VALUES (2)")
    pg_source.create_slot()
    slot_position = pg_source.slot_position()
    evaluations = _retention_checks(pg_source, "public__t")
    for evaluation in evaluations.values():
        assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
        assert _value(evaluation, "lost_range").endswith(f"up to {slot_position} (the slot's position)")
    with pytest.raises(LogicalDecodingError, match=rf"stands at {slot_position}, past the checkpoint.*sink '"):
        pg_source.definitions().resolve_job_def("replicate_store").execute_in_process()
    # Row 2 reached no sink: nothing was skipped silently.
    assert [row["id"] for row in pg_source.postgres_rows("t")] == [1]


# -- Cassandra: cdc_raw against cdc_total_space ----------------------------------------------------


def _cassandra_source(pipeline: CassandraPipelineHarness) -> CassandraChangeSource:
    source = pipeline.resources()[source_key("events")].change_source("events", pipeline.pipeline.sources["events"])
    assert isinstance(source, CassandraChangeSource)
    return source


def test_cassandra_cdc_raw_near_cdc_total_space_warns(cassandra_pipeline: CassandraPipelineHarness) -> None:
    pipeline = cassandra_pipeline
    pipeline.tables = ["t"]
    pipeline.execute(f"CREATE TABLE {pipeline.keyspace}.t (id int PRIMARY KEY, payload blob) WITH cdc = true")
    session = pipeline.cassandra.session()
    insert = session.prepare(f"INSERT INTO {pipeline.keyspace}.t (id, payload) VALUES (?, ?)")
    for row in range(5):
        session.execute(insert, (row, os.urandom(100 * 1024)))
    summary = run_summary(pipeline.replicate(max_batches=1))
    # The run shows cdc_raw against its limit, and what each sink holds there.
    assert summary["cdc_total_space_bytes"] == 64 * 1024 * 1024
    assert summary[f"{PG_SINK}_percent_used"] > 0

    table = f"{pipeline.keyspace}__t"
    evaluations = _retention_checks(pipeline, table)
    assert all(e.passed for e in evaluations.values()), [e.metadata for e in evaluations.values()]
    used = _value(evaluations[PG_SINK], "percent_used")
    assert 0 < used < 80

    # With the threshold below what cdc_raw holds now, the check warns (writes to CDC tables stop at 100%).
    tight = {**pipeline.config_dict(), "retention": {"warn_when_percent_used": used / 2}}
    warned = _retention_checks(pipeline, table, tight)
    for evaluation in warned.values():
        assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
        assert _value(evaluation, "percent_used") >= used / 2
        assert _value(evaluation, "cdc_raw_bytes_used") > 0
        assert f"warn_when_percent_used: {used / 2:g}" in str(evaluation.description)
    # A source's own thresholds win over the top-level ones.
    per_source = {**tight}
    per_source["sources"] = {"events": {**tight["sources"]["events"], "retention": {"warn_when_percent_used": 99}}}
    assert all(e.passed for e in _retention_checks(pipeline, table, per_source).values())


def test_cassandra_a_segment_deleted_behind_the_pipeline_fails_naming_the_lost_range(
    cassandra_pipeline: CassandraPipelineHarness,
) -> None:
    pipeline = cassandra_pipeline
    pipeline.tables = ["t"]
    ks = pipeline.keyspace
    pipeline.execute(f"CREATE TABLE {ks}.t (id int PRIMARY KEY, payload blob) WITH cdc = true")
    session = pipeline.cassandra.session()
    insert = session.prepare(f"INSERT INTO {ks}.t (id, payload) VALUES (?, ?)")
    session.execute(insert, (0, b"first"))
    session.execute(insert, (1, b"second"))
    pipeline.replicate(max_rows=1, max_batches=1)  # the checkpoint stops inside the segment
    source = _cassandra_source(pipeline)
    held = _sink_checkpoint(pipeline)
    segment_id = int(held.split(":")[1])

    # More writes close that segment (1 MiB on the test node) and open later ones.
    def closed() -> bool:
        session.execute(insert, (int.from_bytes(os.urandom(3), "big") + 10, os.urandom(200 * 1024)))
        return any(s.segment_id == segment_id and s.complete for s in source.cdc_raw.segments()) and any(
            s.segment_id > segment_id for s in source.cdc_raw.segments()
        )

    wait_until(closed, 60, f"segment {segment_id} closed", interval=0)
    # Deleted by someone else before the sinks read it.
    (segment,) = [s for s in source.cdc_raw.segments() if s.segment_id == segment_id]
    source.cdc_raw.delete(segment)
    oldest_kept = f"cdc:{source.cdc_raw.segments()[0].segment_id}:0"

    evaluations = _retention_checks(pipeline, f"{ks}__t")
    for evaluation in evaluations.values():
        assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
        assert _value(evaluation, "lost_range").startswith(f"{held} up to cdc:")
        assert _value(evaluation, "oldest_kept") == oldest_kept

    result = pipeline.definitions().resolve_job_def("replicate_events").execute_in_process(raise_on_error=False)
    assert not result.success
    message = _failure_message(result)
    assert re.search(rf"sink '({CH_SINK}|{PG_SINK})' checkpoint {held}: segment {segment_id} is no longer", message)
    assert f"(oldest kept: {oldest_kept})" in message and "re-sync" in message


def _sink_checkpoint(pipeline: CassandraPipelineHarness) -> str:
    """The PostgreSQL sink's checkpoint for the source (both sinks committed the same batch)."""
    checkpoint = pipeline.resources()[sink_key(PG_SINK)].sink(PG_SINK).checkpoint("events")
    assert checkpoint is not None
    return str(checkpoint)


def test_retention_thresholds_default_per_source_and_name_the_key_when_wrong() -> None:
    base: dict[str, Any] = {
        "sources": {"shop": {"kind": "mysql"}, "store": {"kind": "postgres", "dsn_env": "X"}},
        "sinks": {"warehouse": {"kind": "clickhouse"}},
        "dlq": {"dsn_env": "X"},
        # Two sources cannot both stream into one embedded chdb path.
        "replication": {"mode": "per_run"},
    }
    defaults = parse_pipeline_config(yaml.safe_dump(base))
    assert defaults.retention_of("shop").warn_when_hours_left == 24
    assert defaults.retention_of("store").warn_when_percent_used == 80
    own = {**base, "retention": {"warn_when_hours_left": 6}}
    own["sources"] = {
        **base["sources"],
        "store": {**base["sources"]["store"], "retention": {"warn_when_percent_used": 50}},
    }
    pipeline = parse_pipeline_config(yaml.safe_dump(own))
    assert pipeline.retention_of("shop").warn_when_hours_left == 6
    assert pipeline.retention_of("store").warn_when_percent_used == 50
    with pytest.raises(PipelineConfigError, match=r"retention\.warn_when_percent_used: Input should be less than"):
        parse_pipeline_config(yaml.safe_dump({**base, "retention": {"warn_when_percent_used": 120}}))
    with pytest.raises(PipelineConfigError, match=r"sources\.shop\.retention\.warn_when_days_left: Extra inputs"):
        bad = {
            **base,
            "sources": {**base["sources"], "shop": {"kind": "mysql", "retention": {"warn_when_days_left": 1}}},
        }
        parse_pipeline_config(yaml.safe_dump(bad))
