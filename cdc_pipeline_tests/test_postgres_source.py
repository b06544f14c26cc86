"""The PostgreSQL logical-decoding source, end to end through the Dagster job, against real servers."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import dagster as dg
import psycopg2
import pytest
from dagster._core.definitions.sensor_definition import SensorExecutionData

from cdc_pipeline.defs.resource_keys import DEAD_LETTER_QUEUE, MASKING, sink_key
from cdc_pipeline.defs.resources import open_change_source
from cdc_pipeline.defs.run_tags import REACHED_TAG
from cdc_pipeline.delivery.limits import BatchLimits
from cdc_pipeline.delivery.session import ReplicationSession
from cdc_pipeline.snapshot.chunks import Chunk
from cdc_pipeline.sources.postgres.replication_slot import LogicalDecodingError
from cdc_pipeline_tests import snapshot_steps
from cdc_pipeline_tests.harness import CH_SINK, PG_SINK, assert_same_rows, run_replication_cli, run_summary
from cdc_pipeline_tests.postgres_source import SCHEMA, SOURCE, PostgresSourceHarness
from cdc_pipeline_tests.test_crash_recovery import CRASH_POINTS

# Every type family the source maps, each with NULLs and edge values.
_ALL_TYPES_TABLE = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE kinds (
    id bigint PRIMARY KEY,
    small smallint, medium integer NOT NULL DEFAULT 0, price numeric(12, 2), exact numeric,
    ratio real, score double precision, flag boolean, label varchar(20), code char(5), note text,
    ref uuid, born date, seen timestamp(3), happened_at timestamptz, opens time, doc jsonb,
    raw bytea, feeling mood, wait interval, tags int[], net inet
)
"""
_ROWS = [
    "INSERT INTO kinds VALUES (1, -32768, 2147483647, 1234567890.12, 3.14159265358979323846264338327950288,"
    " 1.5, -2.25e-300, true, 'héllo wörld', 'ab', E'line\\nbreak\\ttab', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',"
    " '1999-12-31', '2024-02-29 23:59:59.123', '2024-06-01 12:00:00+02', '23:59:59.999999', '{\"a\": [1, null]}',"
    " '\\x00ff10', 'happy', '1 day 02:03:04', '{1,2,3}', '10.0.0.1/8')",
    "INSERT INTO kinds (id) VALUES (2)",
    "INSERT INTO kinds (id, price, exact, ratio, score, note) VALUES (3, -0.01, 'NaN', 'Infinity', '-Infinity', '')",
]


def test_changes_of_every_type_reach_both_sinks_exactly(pg_source: PostgresSourceHarness) -> None:
    pg_source.source_execute(_ALL_TYPES_TABLE)
    pg_source.create_slot()
    pg_source.source_execute(*_ROWS)
    pg_source.replicate()

    expected = pg_source.source_rows("kinds")
    assert len(expected) == 3
    assert_same_rows(pg_source.postgres_rows("kinds"), expected, PG_SINK)
    # ClickHouse has no NaN/Infinity decimal: that row waits in the DLQ with the reason.
    assert_same_rows(pg_source.clickhouse_rows("kinds"), expected[:2], CH_SINK)
    ((table, sink, stage, error, _),) = pg_source.dead_letters()
    assert (table, sink, stage) == ("public.kinds", CH_SINK, "map") and "NaN" in error and "column exact" in error

    # Updates (one changing the key), deletes and a multi-statement transaction.
    pg_source.source_execute(
        "UPDATE kinds SET note = 'changed', flag = false, doc = '{\"b\": 2}' WHERE id = 1",
        "UPDATE kinds SET id = 20 WHERE id = 2",
        "DELETE FROM kinds WHERE id = 3",
        "INSERT INTO kinds (id, note) SELECT g, 'bulk ' || g FROM generate_series(100, 1099) g",
    )
    pg_source.source_execute("UPDATE kinds SET medium = medium + 1 WHERE id BETWEEN 100 AND 599")
    pg_source.replicate()
    expected = pg_source.source_rows("kinds")
    assert [row["id"] for row in expected[:3]] == [1, 20, 100] and len(expected) == 1002
    assert_same_rows(pg_source.postgres_rows("kinds"), expected, PG_SINK)
    assert_same_rows(pg_source.clickhouse_rows("kinds"), expected, CH_SINK)


def test_a_replayed_range_changes_nothing_and_the_slot_follows_the_slowest_sink(
    pg_source: PostgresSourceHarness,
) -> None:
    pg_source.source_execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
    pg_source.create_slot()
    created_at = pg_source.slot_position()
    pg_source.source_execute("INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 500) g")
    with dg.instance_for_test() as instance:
        first = pg_source.replicate(instance)
        # Nothing new: the next run reads nothing and writes nothing.
        second = pg_source.replicate(instance)
    written = [
        e.materialization.metadata["rows_inserted"].value
        for result in (first, second)
        for e in result.get_asset_materialization_events()
        if e.materialization.asset_key.path[-1].endswith("t")
    ]
    assert written == [500, 500], written
    # The first run's checkpoint became the slot's position when the second run started: the WAL
    # before it is released; nothing past the sinks' checkpoints is.
    sink = pg_source.resources()[f"sink_{PG_SINK}"].sink(PG_SINK)
    checkpoint = sink.checkpoint(SOURCE)
    assert checkpoint is not None and pg_source.slot_position() not in (None, created_at)
    assert_same_rows(pg_source.postgres_rows("t"), pg_source.source_rows("t"), PG_SINK)
    assert_same_rows(pg_source.clickhouse_rows("t"), pg_source.source_rows("t"), CH_SINK)


def test_a_batch_is_cut_at_transaction_ends_and_the_rest_follows(pg_source: PostgresSourceHarness) -> None:
    pg_source.source_execute("CREATE TABLE t (id int PRIMARY KEY)")
    pg_source.create_slot()
    for start in range(0, 400, 100):  # four transactions of 100 rows
        pg_source.source_execute(f"INSERT INTO t SELECT g FROM generate_series({start + 1}, {start + 100}) g")
    with dg.instance_for_test() as instance:
        first = pg_source.replicate(instance, max_rows=150, max_batches=1)
        stopped_at = instance.get_run_by_id(first.run_id).tags[REACHED_TAG]
        rows_after_first = len(pg_source.postgres_rows("t"))
        # Whole transactions only: never a part of one.
        assert rows_after_first % 100 == 0 and 100 <= rows_after_first < 400, rows_after_first
        # The next run drains the rest, batch by batch.
        rest = run_summary(pg_source.replicate(instance, max_rows=150))
        assert rest["batches"] >= 2 and len(pg_source.postgres_rows("t")) == 400, rest
    assert stopped_at
    assert_same_rows(pg_source.clickhouse_rows("t"), pg_source.source_rows("t"), CH_SINK)


def test_values_the_sinks_cannot_hold_go_to_the_dlq_naming_column_and_fix(pg_source: PostgresSourceHarness) -> None:
    pg_source.source_execute(
        "CREATE TABLE docs (id int PRIMARY KEY, title text, body text, due date)",
        "CREATE TABLE docs_full (id int PRIMARY KEY, title text, body text)",
        "ALTER TABLE docs_full REPLICA IDENTITY FULL",
    )
    pg_source.create_slot()
    # A body far above the TOAST threshold, random so compression cannot shrink it below.
    big = "".join(f"{i:x}" for i in range(200_000))
    for table in ("docs", "docs_full"):
        pg_source.source_execute(f"INSERT INTO {table} (id, title, body) VALUES (1, 'a', %s)", parameters=(big,))
    pg_source.source_execute(
        "UPDATE docs SET title = 'b' WHERE id = 1",
        "UPDATE docs_full SET title = 'b' WHERE id = 1",
        "INSERT INTO docs (id, title, due) VALUES (2, 'forever', 'infinity')",
        "INSERT INTO docs (id, title, due) VALUES (3, 'ancient', '0044-03-15 BC')",
    )
    pg_source.replicate()

    reasons = {(table, stage, error.split(":")[0]) for table, _, stage, error, _ in pg_source.dead_letters()}
    assert reasons == {("public.docs", "parse", "column body"), ("public.docs", "parse", "column due")}, reasons
    errors = " ".join(error for *_, error, _ in pg_source.dead_letters())
    assert "REPLICA IDENTITY FULL" in errors and "'infinity'" in errors and "a BC date" in errors
    # Reasons are not masked (payloads are): they never quote a value.
    assert "0044" not in errors and big[:40] not in errors
    # With REPLICA IDENTITY FULL the unchanged value is carried and replicated.
    assert_same_rows(pg_source.postgres_rows("docs_full"), pg_source.source_rows("docs_full"), PG_SINK)
    assert_same_rows(pg_source.clickhouse_rows("docs_full"), pg_source.source_rows("docs_full"), CH_SINK)
    # The DELETE-less table keeps the insert's row; the refused update waits in the DLQ.
    assert [row["title"] for row in pg_source.postgres_rows("docs")] == ["a"]


def test_a_lost_slot_or_a_missing_setting_stops_the_run_with_the_reason(pg_source: PostgresSourceHarness) -> None:
    pg_source.source_execute("CREATE TABLE t (id int PRIMARY KEY)")
    pg_source.create_slot()
    pg_source.source_execute("INSERT INTO t VALUES (1)")
    pg_source.replicate()
    with psycopg2.connect(pg_source.source_dsn) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT pg_drop_replication_slot(%s)", (pg_source.slot,))
    connection.close()
    job = pg_source.definitions().resolve_job_def(f"replicate_{SOURCE}")
    with pytest.raises(LogicalDecodingError, match="is gone, but sink.*the changes since then are lost"):
        job.execute_in_process()

    # A selected table outside the publication would never deliver a change.
    pg_source.create_slot()
    pg_source.source_execute("CREATE TABLE later (id int PRIMARY KEY)")
    with pytest.raises(LogicalDecodingError, match=r"does not carry the selected table\(s\) \['public.later'\]"):
        job.execute_in_process()


def _tick(pg_source: PostgresSourceHarness, instance: dg.DagsterInstance, cursor: str | None) -> SensorExecutionData:
    definitions = pg_source.definitions()
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources=pg_source.resources(), definitions=definitions
    )
    return definitions.resolve_sensor_def(f"{SOURCE}_wal_sensor").evaluate_tick(context)


def test_the_sensor_runs_for_published_changes_and_not_for_other_wal(pg_source: PostgresSourceHarness) -> None:
    pg_source.replication_mode = "per_run"
    pg_source.source_execute(
        "CREATE TABLE t (id int PRIMARY KEY)", "CREATE SCHEMA other", "CREATE TABLE other.unpublished (id int)"
    )
    pg_source.create_slot()
    pg_source.source_execute("INSERT INTO t VALUES (1)")
    with dg.instance_for_test() as instance:
        first = _tick(pg_source, instance, cursor=None)
        (request,) = first.run_requests
        job = pg_source.definitions().resolve_job_def(f"replicate_{SOURCE}")
        assert job.execute_in_process(instance=instance, run_config=request.run_config, tags=request.tags).success

        # The run's own progress mark and the sinks' writes (same server here) moved the WAL, and a
        # table outside the publication changes: nothing to replicate, no run.
        pg_source.source_execute("INSERT INTO other.unpublished VALUES (1)")
        idle = _tick(pg_source, instance, cursor=first.cursor)
        assert not idle.run_requests and "no change to replicate" in str(idle.skip_message)
        again = _tick(pg_source, instance, cursor=idle.cursor)
        assert not again.run_requests

        pg_source.source_execute("INSERT INTO t VALUES (2)")
        (next_request,) = _tick(pg_source, instance, cursor=again.cursor).run_requests
        assert job.execute_in_process(instance=instance, run_config=next_request.run_config, tags=next_request.tags)
    assert_same_rows(pg_source.postgres_rows("t"), pg_source.source_rows("t"), PG_SINK)


def test_a_backfill_loads_rows_older_than_the_slot_and_streaming_takes_over(pg_source: PostgresSourceHarness) -> None:
    table = f"{SCHEMA}.orders"
    pg_source.tables = [table]
    pg_source.source_execute(
        "CREATE TABLE orders (id bigint PRIMARY KEY, total numeric(10,2), note text, placed timestamptz, due date)",
        "INSERT INTO orders SELECT g, g + 0.25, 'note ' || g,"
        " '2024-01-01 00:00:00+00'::timestamptz + g * interval '1 min', '2024-01-01'::date + g"
        " FROM generate_series(1, 2500) g",
        "INSERT INTO orders (id, note, due) VALUES (3000, 'unloadable', 'infinity')",
    )
    # A transaction in flight when the load is planned: the handoff waits for it to end.
    in_flight = psycopg2.connect(pg_source.source_dsn)
    with in_flight.cursor() as cursor:
        cursor.execute("INSERT INTO orders (id, note) VALUES (2999, 'committed during the plan')")
    definitions = pg_source.definitions()
    with dg.instance_for_test() as instance:
        planned: list[tuple[dg.AssetsDefinition, list[Chunk]]] = []
        planner = threading.Thread(
            target=lambda: planned.append(snapshot_steps.plan(definitions, instance, SOURCE, table, 1000))
        )
        planner.start()
        planner.join(timeout=2)
        assert planner.is_alive(), "the plan did not wait for the transaction in flight"
        in_flight.commit()
        in_flight.close()
        planner.join(timeout=60)
        ((snapshot, chunks),) = planned
        assert [chunk.index for chunk in chunks] == [0, 1, 2]
        first = snapshot_steps.load(snapshot, chunks[0], instance)
        assert first["rows_read"] == 1000
        pg_source.source_execute(
            "UPDATE orders SET total = 0, note = 'changed after its chunk' WHERE id IN (5, 700)",
            "UPDATE orders SET note = 'changed before its chunk' WHERE id IN (1500, 2400)",
            "DELETE FROM orders WHERE id IN (10, 1600)",
            "UPDATE orders SET id = 5000 WHERE id = 2000",
        )
        for chunk in chunks[1:]:
            snapshot_steps.load(snapshot, chunk, instance)
        pg_source.replicate(instance)

    source = [row for row in pg_source.source_rows("orders") if row["id"] != 3000]
    assert len(source) == 2500 - 2 + 1
    assert_same_rows(pg_source.postgres_rows("orders"), source, PG_SINK)
    assert_same_rows(pg_source.clickhouse_rows("orders"), source, CH_SINK)
    ((_, sink, stage, error, _),) = pg_source.dead_letters()
    assert (sink, stage) == ("", "parse") and "column due" in error and "'infinity'" in error


def test_kill_9_at_every_step_of_a_batch_then_restart_converges(
    pg_source: PostgresSourceHarness, tmp_path: Path
) -> None:
    pg_source.use_private_clickhouse(tmp_path)
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    pg_source.source_execute(
        "CREATE TABLE accounts (id int PRIMARY KEY, name text, balance numeric(20,4))",
        "CREATE TABLE ledger (region text, seq int, amount numeric(12,3), PRIMARY KEY (region, seq))",
    )
    pg_source.create_slot()
    for round_number, crash_at in enumerate([*CRASH_POINTS, f"before_release_{SOURCE}"]):
        base = round_number * 100
        pg_source.source_execute(
            f"INSERT INTO accounts SELECT g, 'acct ' || g || ' 😀', g % 20 + 0.25"
            f" FROM generate_series({base}, {base + 19}) g"
        )
        pg_source.source_execute(
            f"UPDATE accounts SET balance = balance * 2, name = name || ' upd' WHERE id % 3 = 0 AND id >= {base}",
            f"UPDATE accounts SET id = id + 50 WHERE id = {base + 1}",
            f"DELETE FROM accounts WHERE id = {base + 2}",
        )
        pg_source.source_execute(
            f"INSERT INTO ledger SELECT 'r{round_number}', g, g * 7.125 FROM generate_series(0, 9) g",
            f"DELETE FROM ledger WHERE region = 'r{round_number}' AND seq = 3",
            f"UPDATE ledger SET amount = -amount WHERE region = 'r{round_number}' AND seq > 5",
        )
        config = pg_source.write_config_file(tmp_path)
        crashed = run_replication_cli(config, dagster_home, SOURCE, crash_at)
        assert crashed.returncode == -signal.SIGKILL, f"{crash_at}: {crashed.returncode}\n{crashed.stderr[-3000:]}"
        restarted = run_replication_cli(config, dagster_home, SOURCE)
        assert restarted.returncode == 0, restarted.stderr[-3000:]
        for table, key in (("accounts", "id"), ("ledger", "seq")):
            source = sorted(pg_source.source_rows(table, key), key=lambda r: tuple(map(str, r.values())))
            for where, rows in (
                ("ClickHouse", pg_source.clickhouse_rows(table, key)),
                ("PostgreSQL", pg_source.postgres_rows(table, key)),
            ):
                assert_same_rows(
                    sorted(rows, key=lambda r: tuple(map(str, r.values()))), source, f"{where} {table} after {crash_at}"
                )


def test_two_runs_started_together_do_not_raise_a_false_loss(pg_source: PostgresSourceHarness) -> None:
    """Run A reads the sinks' checkpoints; before it reads the slot, run B delivers the backlog and
    releases the WAL. The slot then stands past the checkpoints A read: nothing is lost, and A, having
    read the checkpoints again, goes on instead of stopping with a data-loss alarm."""
    pg_source.source_execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
    pg_source.create_slot()
    pg_source.source_execute("INSERT INTO t VALUES (1, 'a')")
    pg_source.replicate()
    pg_source.source_execute("INSERT INTO t VALUES (2, 'b'), (3, 'c')")

    resources = SimpleNamespace(**pg_source.resources())
    pipeline = pg_source.pipeline

    def session() -> ReplicationSession:
        sinks = {name: getattr(resources, sink_key(name)).sink(name) for name in pipeline.sinks}
        return ReplicationSession(
            SOURCE,
            pipeline,
            open_change_source(resources, SOURCE, pipeline),
            sinks,
            getattr(resources, DEAD_LETTER_QUEUE).store(),
            getattr(resources, MASKING).masker(pipeline.masking),
            print,
        )

    run_a, run_b = session(), session()
    limits = BatchLimits.from_config(pipeline.batch)
    read_by_a = run_a.source.read_batch

    def run_b_first(*args: Any, **kwargs: Any) -> Any:
        # The race, made exact: run B's whole batch happens between A's checkpoint read and its read.
        run_a.source.read_batch = read_by_a  # type: ignore[method-assign]
        run_b.replicate_batch(limits)
        return read_by_a(*args, **kwargs)

    run_a.source.read_batch = run_b_first  # type: ignore[method-assign]
    try:
        report = run_a.replicate_batch(limits)
    finally:
        run_a.close()
        run_b.close()
    assert report.source_rows == 0  # B delivered everything; A found nothing left
    assert_same_rows(pg_source.postgres_rows("t"), pg_source.source_rows("t"), PG_SINK)
    assert_same_rows(pg_source.clickhouse_rows("t"), pg_source.source_rows("t"), CH_SINK)


def _backends_on(dsn: str) -> dict[int, str]:
    """The other connections to the database now: pid -> when it connected."""
    with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid, backend_start::text FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        backends = {int(pid): str(start) for pid, start in cursor.fetchall()}
    connection.close()
    return backends


def _settled_backends_on(dsn: str, expected: dict[int, str]) -> dict[int, str]:
    """The other connections once those closed by their clients have left (a backend exits a
    moment after its client hangs up), or what is there after 10 s."""
    deadline = time.monotonic() + 10
    backends = _backends_on(dsn)
    while backends != expected and time.monotonic() < deadline:
        time.sleep(0.05)
        backends = _backends_on(dsn)
    return backends


def test_the_batches_of_a_run_share_one_connection_to_the_source(pg_source: PostgresSourceHarness) -> None:
    pg_source.source_execute("CREATE TABLE t (id int PRIMARY KEY)")
    source = open_change_source(SimpleNamespace(**pg_source.resources()), SOURCE, pg_source.pipeline)
    try:
        source.ensure_slot()  # type: ignore[attr-defined]
        kept = _backends_on(pg_source.source_dsn)
        assert len(kept) == 1, "the source keeps one connection for its reads"
        for i in range(6):
            pg_source.source_execute(f"INSERT INTO t VALUES ({i})")
        checkpoint = None
        ids: list[int] = []
        for _ in range(6):
            batch = source.read_batch({"sink": checkpoint}, None, max_rows=2)
            ids += [change.values["id"] for table in batch.tables.values() for change in table.changes]
            checkpoint = batch.end
            source.release({"sink": checkpoint})
            source.high_water_mark()
            # The same backend (same pid, same start) serves every batch, and nothing else stays.
            assert _settled_backends_on(pg_source.source_dsn, kept) == kept
            if len(ids) == 6:
                break
    finally:
        source.close()
    assert ids == list(range(6))
    assert _settled_backends_on(pg_source.source_dsn, {}) == {}, "closing the source lets its connection go"
