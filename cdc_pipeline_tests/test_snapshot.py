"""Initial load as a backfill over key-range partitions, with writes during the load, then streaming."""

from __future__ import annotations

import dagster as dg
import psycopg2

from cdc_pipeline.core.schema import ColumnSchema, TableSchema
from cdc_pipeline.sinks.clickhouse.mysql_pull import why_not_pullable
from cdc_pipeline.snapshot.chunks import Chunk
from cdc_pipeline_tests import snapshot_steps
from cdc_pipeline_tests.harness import CH_SINK, SOURCE, PipelineHarness, assert_same_rows

ROWS = 2500


def _plan(
    definitions: dg.Definitions, instance: dg.DagsterInstance, table: str, chunk_rows: int
) -> tuple[dg.AssetsDefinition, list[Chunk]]:
    return snapshot_steps.plan(definitions, instance, SOURCE, table, chunk_rows)


_load = snapshot_steps.load


def _without(rows: list[dict], column: str) -> list[dict]:  # type: ignore[type-arg]
    return [{k: v for k, v in row.items() if k != column} for row in rows]


def test_backfill_loads_existing_rows_and_the_handoff_to_streaming_converges(harness: PipelineHarness) -> None:
    table = f"{harness.database}.orders"
    harness.configure_source(tables={"include": [table]})
    harness.source_execute(
        "CREATE TABLE orders (id INT PRIMARY KEY, total DECIMAL(10,2), note VARCHAR(40), email VARCHAR(80))",
        *[
            "INSERT INTO orders VALUES "
            + ", ".join(f"({i}, {i}.25, 'note {i}', 'buyer{i}@example.com')" for i in range(start, start + 500))
            for start in range(1, ROWS + 1, 500)
        ],
        # The rows are older than every binlog the server keeps: streaming alone cannot see them.
        "FLUSH BINARY LOGS",
    )
    with harness.mariadb.settings.connect() as connection, connection.cursor() as cursor:
        cursor.execute("SHOW MASTER STATUS")
        cursor.execute(f"PURGE BINARY LOGS TO '{cursor.fetchone()[0]}'")

    definitions = harness.definitions()
    with dg.instance_for_test() as instance:
        snapshot, chunks = _plan(definitions, instance, table, chunk_rows=1000)
        assert [chunk.index for chunk in chunks] == [0, 1, 2]
        metadata = _load(snapshot, chunks[0], instance)
        assert metadata["rows_read"] == 834  # ids 1..834: the first third of 1..2500
        assert metadata["pulled_by"] == []  # email is masked: masking runs in Python

        # The source changes while the load runs, inside and outside the loaded ranges.
        harness.source_execute(
            "UPDATE orders SET total = 0, note = 'changed after its chunk' WHERE id IN (5, 700)",
            "UPDATE orders SET note = 'changed before its chunk' WHERE id IN (1500, 2400)",
            "DELETE FROM orders WHERE id IN (10, 1600)",
            "UPDATE orders SET id = 5000 WHERE id = 2000",
            "INSERT INTO orders VALUES (2600, 1.00, 'new', 'late@example.com')",
        )
        for chunk in chunks[1:]:
            _load(snapshot, chunk, instance)
        # Streaming takes over from the handoff position the plan recorded.
        harness.replicate(instance=instance)

    source = harness.source_rows("orders")
    assert len(source) == ROWS - 2 + 1
    for where, rows in (
        ("PostgreSQL", harness.postgres_rows("orders")),
        ("ClickHouse", harness.clickhouse_rows("orders")),
    ):
        assert_same_rows(_without(rows, "email"), _without(source, "email"), where)
        assert all(row["email"].startswith("tok_") for row in rows), where  # masked on the way in
    assert harness.dead_letters() == []


def test_resync_repairs_a_damaged_sink_while_streaming_goes_on(harness: PipelineHarness) -> None:
    table = f"{harness.database}.items"
    harness.configure_source(tables={"include": [table]})
    harness.source_execute(
        "CREATE TABLE items (id BIGINT UNSIGNED PRIMARY KEY, label VARCHAR(20))",
        "INSERT INTO items VALUES " + ", ".join(f"({i}, 'item {i}')" for i in range(1, 301)),
    )
    harness.replicate()
    sink_table = f'replica."{harness.database}__items"'
    # Damage the PostgreSQL sink behind the pipeline's back.
    with psycopg2.connect(harness.pg_dsn) as connection, connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {sink_table} WHERE id IN (3, 250)")
        cursor.execute(f"UPDATE {sink_table} SET label = 'wrong' WHERE id = 7")
        cursor.execute(f"INSERT INTO {sink_table} VALUES (150000, 'only in the sink', 1, false)")
    connection.close()
    harness.source_execute("UPDATE items SET label = 'streamed' WHERE id = 9")

    definitions = harness.definitions()
    with dg.instance_for_test() as instance:
        snapshot, chunks = _plan(definitions, instance, table, chunk_rows=100)
        removed = 0
        for chunk in chunks:
            metadata = _load(snapshot, chunk, instance)
            removed += metadata["rows_removed_analytics"]  # type: ignore[operator]
            assert metadata["pulled_by"] == ["warehouse"]  # ClickHouse pulled from MySQL itself
        harness.replicate(instance=instance)
    assert removed == 1
    source = harness.source_rows("items")
    assert_same_rows(harness.postgres_rows("items"), source, "PostgreSQL")
    assert_same_rows(harness.clickhouse_rows("items"), source, "ClickHouse")


def test_the_clickhouse_pull_matches_the_python_path_and_leaves_unfit_chunks_to_it(harness: PipelineHarness) -> None:
    table = f"{harness.database}.mixed"
    harness.configure_source(tables={"include": [table]})
    harness.source_execute(
        "CREATE TABLE mixed (id INT UNSIGNED PRIMARY KEY, amount DECIMAL(30,10), ratio DOUBLE, label VARCHAR(30),"
        " body TEXT, raw VARBINARY(8), kind ENUM('a','b c'), doc JSON, day DATE,"
        " at DATETIME(6), stamp TIMESTAMP(3) NULL, small TINYINT, big BIGINT UNSIGNED)",
        "INSERT INTO mixed VALUES"
        " (1, -12345678901234567890.0123456789, 0.1, 'émoji 😀', '', x'00ff', 'b c', '{\"k\": [1, null]}',"
        " '2024-02-29', '2024-02-29 23:59:59.999999', '2038-01-19 03:14:07.999', -128, 18446744073709551615),"
        " (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),"
        " (3000, 1, 2, 'old', 'x', x'', 'a', '[]', '1000-01-01', '1900-01-01 00:00:00', NULL, 0, 0)",
    )
    definitions = harness.definitions()
    with dg.instance_for_test() as instance:
        snapshot, chunks = _plan(definitions, instance, table, chunk_rows=2)
        pulled = {chunk.index: _load(snapshot, chunk, instance)["pulled_by"] for chunk in chunks}
    # Chunk 0 (ids 1, 2) fits ClickHouse and is pulled; chunk 1 holds a 1000-01-01 date: Python path.
    assert pulled == {0: ["warehouse"], 1: []}
    source = harness.source_rows("mixed")
    assert_same_rows(harness.postgres_rows("mixed"), source, "PostgreSQL")
    assert_same_rows(harness.clickhouse_rows("mixed"), source[:2], "ClickHouse")
    ((_, sink, stage, error, _),) = harness.dead_letters()
    assert (sink, stage) == ("warehouse", "map") and "1000-01-01" in error


def test_tables_the_pull_cannot_copy_exactly_stay_on_the_python_path() -> None:
    def schema(*types: str) -> TableSchema:
        columns = tuple(ColumnSchema(f"c{i}", t, t, nullable=True) for i, t in enumerate(types))
        return TableSchema("db", "t", (ColumnSchema("id", "int", "int", False), *columns), ("id",))

    assert why_not_pullable(schema("varchar", "decimal", "datetime", "json"), set(), set()) is None
    assert "c0 (binary)" in (why_not_pullable(schema("binary"), set(), set()) or "")
    assert "c0 (time)" in (why_not_pullable(schema("time"), set(), set()) or "")
    assert "masked" in (why_not_pullable(schema("varchar"), {"c0"}, set()) or "")
    assert "type overrides" in (why_not_pullable(schema("varchar"), set(), {"c0"}) or "")


def test_parallel_writers_create_a_fresh_sink_schema_without_tripping_over_each_other(
    harness: PipelineHarness,
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from cdc_pipeline.core.checkpoint import Checkpoint
    from cdc_pipeline.sinks.postgres.sink import PostgresSink
    from cdc_pipeline.sources.mysql.positions import BinlogPosition

    for attempt in range(3):
        # Chunk runs of a backfill start together on a sink nobody has written yet.
        sinks = [PostgresSink("analytics", harness.pg_dsn, f"fresh_{attempt}") for _ in range(8)]
        with ThreadPoolExecutor(len(sinks)) as pool:
            adopted = list(
                pool.map(
                    lambda sink: sink.adopt_checkpoint("shop", Checkpoint(BinlogPosition("binlog.000001", 4))), sinks
                )
            )
        assert {str(checkpoint) for checkpoint in adopted} == {"binlog.000001:4"}


def test_the_clickhouse_pull_reaches_a_source_configured_as_localhost(harness: PipelineHarness) -> None:
    """`host: localhost` means TCP to the pipeline (PyMySQL); ClickHouse's mysql() engine would read
    it as a Unix socket that does not exist. The pull reaches the server as the pipeline does."""
    table = f"{harness.database}.plain"
    harness.configure_source(host="localhost", tables={"include": [table]})
    harness.source_execute(
        "CREATE TABLE plain (id INT PRIMARY KEY, label VARCHAR(20))",
        "INSERT INTO plain VALUES (1, 'one'), (2, 'two'), (3, 'three')",
    )
    definitions = harness.definitions()
    with dg.instance_for_test() as instance:
        snapshot, chunks = _plan(definitions, instance, table, chunk_rows=10)
        loaded = [_load(snapshot, chunk, instance) for chunk in chunks]
    assert all(metadata["pulled_by"] == [CH_SINK] for metadata in loaded), loaded
    assert all("pull_failed" not in metadata for metadata in loaded), loaded
    source = harness.source_rows("plain")
    assert_same_rows(harness.clickhouse_rows("plain"), source, "ClickHouse")
    assert_same_rows(harness.postgres_rows("plain"), source, "PostgreSQL")
