"""Cassandra CDC end to end through Dagster: a real Cassandra 5 node's cdc_raw -> parse -> mask -> map ->
ClickHouse (chdb) and PostgreSQL, compared row by row with what Cassandra itself shows.

Writes carry explicit write times (T0 + n), so which write wins follows from Cassandra's rules
(newest write time wins, a deletion wins a tie), independently of the order the pipeline sees them.
"""

from __future__ import annotations

import os
import signal
from contextlib import closing
from pathlib import Path

import dagster as dg
import psycopg2
import pytest
from cassandra import WriteFailure
from dagster._core.definitions.sensor_definition import SensorExecutionData

from cdc_pipeline.defs.resource_keys import sink_key, source_key
from cdc_pipeline.mapping.mapper import TypeMapper
from cdc_pipeline.masking.masker import Masker
from cdc_pipeline.sinks.base import Sink
from cdc_pipeline.sinks.registry import sink_kind
from cdc_pipeline_tests.cassandra_pipeline import SOURCE, CassandraPipelineHarness
from cdc_pipeline_tests.harness import (
    CH_SINK,
    MASKING_KEY,
    PG_SINK,
    assert_same_rows,
    run_replication_cli,
    run_summary,
)
from cdc_pipeline_tests.polling import wait_until
from cdc_pipeline_tests.test_crash_recovery import CRASH_POINTS

T0 = 1_700_000_000_000_000  # microseconds


def _create_tables(pipeline: CassandraPipelineHarness) -> None:
    ks = pipeline.keyspace
    pipeline.execute(
        f"CREATE TYPE {ks}.place (street text, zip int)",
        # Composite partition key, two clustering columns (one descending), every value family.
        f"CREATE TABLE {ks}.orders (region text, customer int, day date, seq int, amount decimal, note text,"
        " placed_at timestamp, ratio double, big varint, paid boolean, ref uuid, event timeuuid, payload blob,"
        " at_time time, peer inet, tags set<text>, scores list<int>, attrs map<text, int>, home frozen<place>,"
        " work place, pair tuple<int, text>, PRIMARY KEY ((region, customer), day, seq))"
        " WITH CLUSTERING ORDER BY (day ASC, seq DESC) AND cdc = true",
        f"CREATE TABLE {ks}.visits (id int PRIMARY KEY, hits counter) WITH cdc = true",
        f"CREATE TABLE {ks}.carts (user_id int, item text, qty int, owner text static,"
        " PRIMARY KEY (user_id, item)) WITH cdc = true",
    )


def _first_round(pipeline: CassandraPipelineHarness) -> None:
    ks = pipeline.keyspace
    eu7 = "region = 'eu' AND customer = 7"
    pipeline.execute(
        f"INSERT INTO {ks}.orders (region, customer, day, seq, amount, note, placed_at, ratio, big, paid, ref, event,"
        " payload, at_time, peer, tags, scores, attrs, home, work, pair) VALUES ('eu', 7, '2024-05-06', 1, 12.50,"
        " 'first', '2024-05-06 10:11:12.345+0000', 0.25, 123456789012345678901234567890, true,"
        " 5b6962dd-3f90-4c93-8f61-eabfa4a5e3b9, 50554d6e-29bb-11e5-b345-feff819cdc9f, 0xcafe, '08:09:10.123456789',"
        " '10.1.2.3', {'a', 'b'}, [1, 2], {'k': 1, 'l': 2}, {street: 'Main', zip: 1000}, {street: 'Dock', zip: 2000},"
        f" (3, 'three')) USING TIMESTAMP {T0 + 1}",
        f"INSERT INTO {ks}.orders (region, customer, day, seq, note) VALUES ('eu', 7, '2024-05-06', 2, 'second')"
        f" USING TIMESTAMP {T0 + 2}",
        f"INSERT INTO {ks}.orders (region, customer, day, seq, note) VALUES ('eu', 7, '2024-05-07', 3, 'third')"
        f" USING TIMESTAMP {T0 + 3}",
        f"INSERT INTO {ks}.orders (region, customer, day, seq, note) VALUES ('us', 1, '2024-01-01', 1, 'us one')"
        f" USING TIMESTAMP {T0 + 4}",
        f"INSERT INTO {ks}.orders (region, customer, day, seq, note) VALUES ('us', 1, '2024-01-02', 2, 'us two')"
        f" USING TIMESTAMP {T0 + 5}",
        # One cell changes; the row's other cells stay as they are.
        f"UPDATE {ks}.orders USING TIMESTAMP {T0 + 10} SET note = 'changed' WHERE {eu7} AND day = '2024-05-06'"
        " AND seq = 1",
        # An older write arriving later loses where a newer cell exists (note), wins where not (ratio).
        f"UPDATE {ks}.orders USING TIMESTAMP {T0 + 6} SET note = 'stale', ratio = 9.5 WHERE {eu7}"
        " AND day = '2024-05-06' AND seq = 1",
        # Partial collection and UDT updates.
        f"UPDATE {ks}.orders USING TIMESTAMP {T0 + 11} SET tags = tags + {{'c'}}, scores = scores + [9],"
        f" attrs['j'] = 5, work.zip = 99 WHERE {eu7} AND day = '2024-05-06' AND seq = 1",
        f"DELETE attrs['k'], tags['a'] FROM {ks}.orders USING TIMESTAMP {T0 + 12} WHERE {eu7}"
        " AND day = '2024-05-06' AND seq = 1",
        # A deleted cell.
        f"UPDATE {ks}.orders USING TIMESTAMP {T0 + 12} SET amount = null WHERE {eu7} AND day = '2024-05-06'"
        " AND seq = 1",
        # Row delete, then an older insert of the same key: it stays deleted.
        f"DELETE FROM {ks}.orders USING TIMESTAMP {T0 + 13} WHERE {eu7} AND day = '2024-05-06' AND seq = 2",
        f"INSERT INTO {ks}.orders (region, customer, day, seq, note) VALUES ('eu', 7, '2024-05-06', 2, 'too old')"
        f" USING TIMESTAMP {T0 + 12}",
        # Range delete on the clustering columns (seq is descending).
        f"DELETE FROM {ks}.orders USING TIMESTAMP {T0 + 14} WHERE {eu7} AND day = '2024-05-07' AND seq >= 0"
        " AND seq < 10",
        # Partition delete; an older insert into that partition stays invisible, a newer one shows.
        f"DELETE FROM {ks}.orders USING TIMESTAMP {T0 + 15} WHERE region = 'us' AND customer = 1",
        f"INSERT INTO {ks}.orders (region, customer, day, seq, note) VALUES ('us', 1, '2024-01-03', 3, 'hidden')"
        f" USING TIMESTAMP {T0 + 14}",
        f"INSERT INTO {ks}.orders (region, customer, day, seq, note) VALUES ('us', 1, '2024-01-04', 4, 'after')"
        f" USING TIMESTAMP {T0 + 16}",
        # Counters cannot be merged: their changes go to the DLQ.
        f"UPDATE {ks}.visits SET hits = hits + 3 WHERE id = 1",
        # A static column (one value per partition) and the rows beside it.
        f"INSERT INTO {ks}.carts (user_id, item, qty, owner) VALUES (1, 'apple', 2, 'ann')",
        f"INSERT INTO {ks}.carts (user_id, item, qty) VALUES (1, 'pear', 5)",
        f"UPDATE {ks}.carts SET owner = 'bob' WHERE user_id = 1",
    )


def _second_round(pipeline: CassandraPipelineHarness) -> None:
    """Schema changes while the pipeline runs, and TTLs."""
    ks = pipeline.keyspace
    pipeline.execute(
        f"CREATE TABLE {ks}.late (id int, part text, v text, PRIMARY KEY ((id, part))) WITH cdc = true",
        f"INSERT INTO {ks}.late (id, part, v) VALUES (1, 'x', 'created while running')",
        f"ALTER TABLE {ks}.orders ADD extra text",
        f"INSERT INTO {ks}.orders (region, customer, day, seq, note, extra) VALUES ('eu', 9, '2024-06-01', 1,"
        " 'after alter', 'new column')",
        # Rows and cells with a TTL: one that expires during the test, one that outlives it.
        f"INSERT INTO {ks}.orders (region, customer, day, seq, note) VALUES ('eu', 8, '2024-06-02', 1, 'short')"
        " USING TTL 10",
        f"INSERT INTO {ks}.orders (region, customer, day, seq, note) VALUES ('eu', 8, '2024-06-02', 2, 'long')"
        " USING TTL 3600",
        # A TTL'd cell of a row that stays: only the cell goes (write time now: newer than T0 + 10).
        f"UPDATE {ks}.orders USING TTL 10 SET note = 'fleeting' WHERE region = 'eu' AND customer = 7"
        " AND day = '2024-05-06' AND seq = 1",
    )


def _sides_agree(pipeline: CassandraPipelineHarness, table: str) -> bool:
    """The source, read before and after both sinks, equals each sink."""
    source = pipeline.source_rows(table)
    return pipeline.postgres_rows(table) == source == pipeline.clickhouse_rows(table) == pipeline.source_rows(table)


def _assert_sinks_equal_source(pipeline: CassandraPipelineHarness, tables: list[str], when: str) -> None:
    """Source == PostgreSQL == ClickHouse, row by row. Rows with a few seconds of TTL may expire
    between reading one side and the next, so a comparison that straddles an expiry is read again."""
    for table in tables:
        assert pipeline.source_rows(table), f"{table}: the scenario leaves rows in every table"
        if any(_sides_agree(pipeline, table) for _ in range(3)):
            continue
        source = pipeline.source_rows(table)
        assert_same_rows(pipeline.postgres_rows(table), source, f"PostgreSQL {table} {when}")
        assert_same_rows(pipeline.clickhouse_rows(table), source, f"ClickHouse {table} {when}")


def _static_rows(pipeline: CassandraPipelineHarness) -> dict[str, list[tuple[int, str]]]:
    """carts' static column as Cassandra shows it (one value per partition) and as each sink holds it."""
    ks = pipeline.keyspace
    source = sorted((r.user_id, r.owner) for r in pipeline.cassandra.session().execute(
        f"SELECT DISTINCT user_id, owner FROM {ks}.carts"))  # fmt: skip
    return {
        "source": source,
        "postgres": sorted((r["user_id"], r["owner"]) for r in pipeline.postgres_rows("carts_static")),
        "clickhouse": sorted((r["user_id"], r["owner"]) for r in pipeline.clickhouse_rows("carts_static")),
    }


def test_every_change_kind_reaches_both_sinks_as_cassandra_shows_it(
    cassandra_pipeline: CassandraPipelineHarness,
) -> None:
    pipeline = cassandra_pipeline
    pipeline.named_tables = ["orders"]  # an asset with checks
    _create_tables(pipeline)
    _first_round(pipeline)
    first = pipeline.replicate()
    # The run shows how full cdc_raw is (the node refuses CDC writes when it is full).
    summary = run_summary(first)
    assert summary["cdc_raw_segments"] >= 1
    assert summary["cdc_raw_bytes_used"] > 0
    _assert_sinks_equal_source(pipeline, ["orders", "carts"], "after round 1")
    statics = _static_rows(pipeline)
    assert statics["source"] == [(1, "bob")] and statics["postgres"] == statics["clickhouse"] == statics["source"]

    # What the rules above leave, stated from the scenario (not read from the pipeline).
    (first_order,) = [
        r for r in pipeline.postgres_rows("orders") if (r["day"].isoformat(), r["seq"]) == ("2024-05-06", 1)
    ]
    # The late update's note lost to the newer one, its ratio beat the insert's.
    assert first_order["note"] == "changed" and first_order["ratio"] == 9.5 and first_order["amount"] is None
    assert first_order["tags"] == ["b", "c"] and first_order["scores"] == [1, 2, 9]
    assert first_order["attrs"] == {"j": 5, "l": 2} and first_order["work"] == {"street": "Dock", "zip": 99}
    us_orders = sorted(r["note"] for r in pipeline.postgres_rows("orders") if r["region"] == "us")
    assert us_orders == ["after"]

    dead = pipeline.dead_letters()
    assert {(table, stage) for table, _, stage, _, _ in dead} == {(f"{pipeline.keyspace}.visits", "parse")}
    assert all("counter" in error for _, _, _, error, _ in dead)
    with closing(psycopg2.connect(pipeline.sink_dsn)) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT DISTINCT not_replayable FROM dlq.dead_letters WHERE source_table LIKE %s",
                       (f"{pipeline.keyspace}.%",))  # fmt: skip
        marks = [row[0] for row in cursor.fetchall()]
    # Marked in the DLQ itself (the asset's "replayable" column), so no replay is tried on them.
    assert len(marks) == 1 and "no cell writes to replay" in marks[0]

    _second_round(pipeline)
    pipeline.replicate()
    _assert_sinks_equal_source(pipeline, ["orders", "late"], "after round 2")
    assert any(r["note"] == "short" for r in pipeline.postgres_rows("orders"))

    # TTLs: once Cassandra no longer shows the expired row and cell, neither do the sinks, without
    # another batch (expiry is evaluated when the views are read).
    def expired() -> bool:
        rows = pipeline.source_rows("orders")
        return all(r["note"] not in ("short", "fleeting") for r in rows)

    wait_until(expired, timeout=30, interval=0.5, what="the TTL'd row and cell to expire in Cassandra")
    _assert_sinks_equal_source(pipeline, ["orders"], "after the TTLs passed")
    stats = [sink.table_stats(f"{pipeline.keyspace}.orders") for sink in _sinks(pipeline)]
    assert stats[0] is not None and stats[0] == stats[1]
    assert stats[0].live_rows == len(pipeline.source_rows("orders"))

    # The table's asset checks agree: row counts, key digests (composite keys, a date, a DESC
    # column), the two sinks' versions, cdc_raw far from full, freshness, no rows held for a schema change.
    definitions = pipeline.definitions()
    check_keys = {
        key
        for key in definitions.resolve_asset_graph().asset_check_keys
        if key.asset_key.path[-1] == f"{pipeline.keyspace}__orders"
    }
    checks = definitions.resolve_implicit_global_asset_job_def().get_subset(asset_check_selection=check_keys)
    # In the instance that ran the last batch: the freshness check reads its runs (the node's own
    # writes keep moving cdc_raw's high-water mark past a sink that is caught up).
    with dg.instance_for_test() as instance:
        pipeline.replicate(instance=instance)
        evaluations = checks.execute_in_process(instance=instance).get_asset_check_evaluations()
    assert len(evaluations) == 12 and all(e.passed for e in evaluations), [
        (e.check_name, e.metadata) for e in evaluations
    ]


def _sinks(pipeline: CassandraPipelineHarness) -> list[Sink]:
    resources = pipeline.resources()
    return [resources[sink_key(PG_SINK)].sink(PG_SINK), resources[sink_key(CH_SINK)].sink(CH_SINK)]


def test_replaying_every_batch_into_sinks_that_hold_it_changes_nothing(
    cassandra_pipeline: CassandraPipelineHarness,
) -> None:
    pipeline = cassandra_pipeline
    _create_tables(pipeline)
    _first_round(pipeline)
    pipeline.replicate()
    before = {table: (pipeline.postgres_rows(table), pipeline.clickhouse_rows(table)) for table in ("orders", "carts")}
    # Both sinks hold checkpoints now; replay everything cdc_raw still holds into them once more,
    # as a crash between the write and the checkpoint would: the merge is idempotent.
    source = pipeline.resources()[source_key(SOURCE)].change_source(SOURCE, pipeline.pipeline.sources[SOURCE])
    sinks = _sinks(pipeline)
    batch = Masker(pipeline.pipeline.masking, MASKING_KEY).mask_batch(source.read_batch({"replay": None}, None, 10**6))
    for sink, kind in zip(sinks, ("postgres", "clickhouse"), strict=True):
        sink.write(
            TypeMapper(sink.name, sink_kind(kind).map_column, []).map_batch(batch),
            lambda rejections: None,
            advance_checkpoint=False,
        )
    after = {table: (pipeline.postgres_rows(table), pipeline.clickhouse_rows(table)) for table in ("orders", "carts")}
    assert after == before


def test_kill_9_at_every_step_of_a_batch_then_restart_converges(
    cassandra_pipeline: CassandraPipelineHarness, tmp_path: Path
) -> None:
    pipeline = cassandra_pipeline
    pipeline.use_private_clickhouse()
    config = pipeline.write_config_file()
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    ks = pipeline.keyspace
    pipeline.execute(
        f"CREATE TABLE {ks}.readings (sensor int, at int, value double, label text, PRIMARY KEY (sensor, at))"
        " WITH cdc = true"
    )
    for round_number, crash_at in enumerate([*CRASH_POINTS, f"before_release_{SOURCE}"]):
        base = round_number * 100
        pipeline.execute(
            *(
                f"INSERT INTO {ks}.readings (sensor, at, value, label) VALUES ({i % 3}, {base + i}, {i / 4}, 'r{i}')"
                for i in range(40)
            ),
            f"UPDATE {ks}.readings SET label = 'updated' WHERE sensor = 0 AND at = {base}",
            f"DELETE FROM {ks}.readings WHERE sensor = 1 AND at = {base + 1}",
            f"DELETE FROM {ks}.readings WHERE sensor = 2 AND at >= {base} AND at < {base + 10}",
        )
        crashed = run_replication_cli(config, dagster_home, SOURCE, crash_at)
        assert crashed.returncode == -signal.SIGKILL, f"{crash_at}: {crashed.returncode}\n{crashed.stderr[-3000:]}"
        resumed = run_replication_cli(config, dagster_home, SOURCE)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        source = pipeline.source_rows("readings")
        assert_same_rows(pipeline.postgres_rows("readings"), source, f"PostgreSQL after {crash_at}")
        assert_same_rows(pipeline.clickhouse_rows("readings"), source, f"ClickHouse after {crash_at}")
    assert pipeline.dead_letters() == []


def test_a_timescaledb_hypertable_setting_without_the_extension_keeps_a_plain_table_and_says_so(
    cassandra_pipeline: CassandraPipelineHarness,
) -> None:
    """The timescaledb extension cannot be installed on these machines: this is the PostgreSQL path of
    the setting (the table stays plain and its asset says why), and its validation."""
    pipeline = cassandra_pipeline
    ks = pipeline.keyspace
    pipeline.execute(
        f"CREATE TABLE {ks}.metrics (host text, at timestamp, cpu double, PRIMARY KEY (host, at)) WITH cdc = true",
        f"INSERT INTO {ks}.metrics (host, at, cpu) VALUES ('a', '2024-05-06 10:00:00+0000', 0.5)",
        f"INSERT INTO {ks}.metrics (host, at, cpu) VALUES ('a', '2024-05-06 10:01:00+0000', 0.7)",
    )
    pipeline.hypertables = {f"{ks}.metrics": "cpu"}  # not a key column: TimescaleDB could not use it
    failed = pipeline.definitions().resolve_job_def(f"replicate_{SOURCE}").execute_in_process(raise_on_error=False)
    assert not failed.success
    failure = str(failed.failure_data_for_node(f"replicate_{SOURCE}"))
    assert f"sinks.{PG_SINK}.hypertables.{ks}.metrics" in failure and "'cpu' is not part of" in failure

    pipeline.hypertables = {f"{ks}.metrics": "at"}
    result = pipeline.replicate()
    notes = [
        materialization.metadata["timescaledb"].value
        for materialization in result.asset_materializations_for_node(f"replicate_{SOURCE}")
        if materialization.asset_key.path == [PG_SINK, f"{ks}__metrics"]
    ]
    assert notes and "timescaledb extension is not installed" in notes[0]
    assert_same_rows(pipeline.postgres_rows("metrics"), pipeline.source_rows("metrics"), "PostgreSQL metrics")


def _tick(pipeline: CassandraPipelineHarness, instance: dg.DagsterInstance, cursor: str | None) -> SensorExecutionData:
    definitions = pipeline.definitions()
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources=pipeline.resources(), definitions=definitions
    )
    return definitions.resolve_sensor_def(f"{SOURCE}_commitlog_sensor").evaluate_tick(context)


def test_the_commitlog_sensor_launches_a_run_for_new_changes_and_skips_when_caught_up(
    cassandra_pipeline: CassandraPipelineHarness,
) -> None:
    pipeline = cassandra_pipeline
    pipeline.replication_mode = "per_run"
    ks = pipeline.keyspace
    pipeline.execute(f"CREATE TABLE {ks}.pings (id int PRIMARY KEY, v text) WITH cdc = true")
    pipeline.execute(f"INSERT INTO {ks}.pings (id, v) VALUES (1, 'one')")
    job = pipeline.definitions().resolve_job_def(f"replicate_{SOURCE}")
    with dg.instance_for_test() as instance:
        first = _tick(pipeline, instance, cursor=None)
        (request,) = first.run_requests
        assert request.run_config["ops"][f"replicate_{SOURCE}"]["config"]["stop_at"].startswith("cdc:")
        assert job.execute_in_process(instance=instance, run_config=request.run_config, tags=request.tags).success

        caught_up = _tick(pipeline, instance, cursor=first.cursor)
        # The test node is shared: other tests' CDC tables may move its cdc_raw meanwhile. The range
        # already requested is never requested again; only a new one is.
        for request in caught_up.run_requests:
            assert caught_up.cursor != first.cursor and request.run_key != first.run_requests[0].run_key

        pipeline.execute(f"INSERT INTO {ks}.pings (id, v) VALUES (2, 'two')")
        (next_request,) = _tick(pipeline, instance, cursor=caught_up.cursor or first.cursor).run_requests
        assert job.execute_in_process(
            instance=instance, run_config=next_request.run_config, tags=next_request.tags
        ).success
    assert_same_rows(pipeline.postgres_rows("pings"), pipeline.source_rows("pings"), "PostgreSQL pings")
    assert_same_rows(pipeline.clickhouse_rows("pings"), pipeline.source_rows("pings"), "ClickHouse pings")


def test_a_refused_change_replays_with_its_write_times_after_the_fix(
    cassandra_pipeline: CassandraPipelineHarness,
) -> None:
    pipeline = cassandra_pipeline
    ks = pipeline.keyspace
    # 40 fractional digits: PostgreSQL's numeric takes it, ClickHouse's Decimal(76, 38) cannot.
    precise = "1." + "0" * 39 + "1"
    pipeline.execute(
        f"CREATE TABLE {ks}.prices (id int PRIMARY KEY, price decimal, label text) WITH cdc = true",
        f"INSERT INTO {ks}.prices (id, price, label) VALUES (1, {precise}, 'a') USING TIMESTAMP {T0 + 1}",
        f"UPDATE {ks}.prices USING TIMESTAMP {T0 + 2} SET label = 'b' WHERE id = 1",
    )
    pipeline.replicate()
    ((table, sink, stage, error, _),) = pipeline.dead_letters()
    assert (table, sink, stage) == (f"{ks}.prices", CH_SINK, "map") and "column price" in error
    # ClickHouse has the newer label only; PostgreSQL has everything.
    assert [(r["price"], r["label"]) for r in pipeline.clickhouse_rows("prices")] == [(None, "b")]
    assert_same_rows(pipeline.postgres_rows("prices"), pipeline.source_rows("prices"), "PostgreSQL prices")

    # The operator's fix: the column holds text from now on (the sink retypes its column itself).
    pipeline.type_overrides = [
        {"table": f"{ks}.prices", "column": "price", "sink": CH_SINK, "type": "Nullable(String)"}
    ]
    pipeline.replay_dead_letters()
    assert pipeline.dead_letters() == []
    # The insert merges with its own write time: its price lands, its older label does not win.
    assert_same_rows(pipeline.clickhouse_rows("prices"), pipeline.source_rows("prices"), "ClickHouse prices")


def test_a_full_cdc_raw_refuses_writes_until_the_pipeline_catches_up(
    cassandra_pipeline: CassandraPipelineHarness,
) -> None:
    pipeline = cassandra_pipeline
    ks = pipeline.keyspace
    pipeline.execute(f"CREATE TABLE {ks}.blobs (id int PRIMARY KEY, payload blob) WITH cdc = true")
    session = pipeline.cassandra.session()
    insert = session.prepare(f"INSERT INTO {ks}.blobs (id, payload) VALUES (?, ?)")
    payload = os.urandom(200 * 1024)
    # The test node's cdc_total_space (64 MiB) holds about 320 of these; twice that bounds the loop.
    written = 0
    with pytest.raises(WriteFailure):
        for row in range(640):
            session.execute(insert, (row, payload))
            written += 1
    assert written > 100

    # A batch reads batch.max_bytes (8 MiB): one batch frees that much of cdc_raw, and the run shows
    # how full it still is.
    one_batch = run_summary(pipeline.replicate(max_batches=1))
    assert one_batch["batches"] == 1 and one_batch["cdc_raw_bytes_used"] > 32 * 1024 * 1024, one_batch
    # A run drains the rest in such batches.
    rest = run_summary(pipeline.replicate())
    assert rest["batches"] >= 3 and rest["cdc_raw_bytes_used"] < one_batch["cdc_raw_bytes_used"] / 4, rest

    def accepted() -> bool:
        try:
            session.execute(insert, (10_000, b"accepted again"))
            return True
        except WriteFailure:
            return False

    # The node re-measures cdc_raw every cdc_free_space_check_interval (250 ms on the test node).
    wait_until(accepted, 10, "CDC writes accepted once the pipeline caught up", interval=0.1)
    pipeline.stream()
    source = pipeline.source_rows("blobs")
    assert len(source) == written + 1
    assert_same_rows(pipeline.postgres_rows("blobs"), source, "PostgreSQL blobs")
    assert_same_rows(pipeline.clickhouse_rows("blobs"), source, "ClickHouse blobs")


def test_a_dropped_column_leaves_the_sinks_and_does_not_come_back_when_re_added(
    cassandra_pipeline: CassandraPipelineHarness,
) -> None:
    pipeline = cassandra_pipeline
    ks = pipeline.keyspace
    pipeline.execute(
        f"CREATE TABLE {ks}.notes (id int PRIMARY KEY, a text, c text) WITH cdc = true",
        f"INSERT INTO {ks}.notes (id, a, c) VALUES (1, 'a1', 'c before the drop')",
        f"INSERT INTO {ks}.notes (id, a, c) VALUES (2, 'a2', 'c before the drop')",
    )
    pipeline.replicate()
    pipeline.execute(f"ALTER TABLE {ks}.notes DROP c", f"INSERT INTO {ks}.notes (id, a) VALUES (3, 'a3')")
    pipeline.replicate()
    _assert_sinks_equal_source(pipeline, ["notes"], "after the drop")
    assert "c" not in pipeline.postgres_rows("notes")[0]

    # Cassandra does not bring back values written before a drop when a column of that name is added
    # again; neither may the sinks, for rows touched again (2) or not (1).
    pipeline.execute(
        f"ALTER TABLE {ks}.notes ADD c text",
        f"UPDATE {ks}.notes SET a = 'a2 again' WHERE id = 2",
        f"INSERT INTO {ks}.notes (id, a, c) VALUES (4, 'a4', 'c after the re-add')",
    )
    pipeline.replicate()
    _assert_sinks_equal_source(pipeline, ["notes"], "after the re-add")
    assert [r["c"] for r in pipeline.source_rows("notes")] == [None, None, None, "c after the re-add"]
