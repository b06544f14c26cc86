"""Initial load as a backfill over key-range partitions, with writes during the load, then streaming."""

from __future__ import annotations

import dagster as dg
import psycopg2

from cdc_pipeline.defs.asset_keys import snapshot_asset_key
from cdc_pipeline.defs.snapshots.assets import snapshot_partitions_name
from cdc_pipeline.snapshot.chunks import Chunk
from cdc_pipeline_tests.harness import SOURCE, PipelineHarness, assert_same_rows

ROWS = 2500


def _without(rows: list[dict], column: str) -> list[dict]:  # type: ignore[type-arg]
    return [{k: v for k, v in row.items() if k != column} for row in rows]


def test_backfill_loads_existing_rows_and_the_handoff_to_streaming_converges(harness: PipelineHarness) -> None:
    table = f"{harness.database}.orders"
    source_config = harness.config_dict()["sources"][SOURCE]
    harness.extra_config["sources"] = {SOURCE: {**source_config, "tables": {"include": [table]}}}
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
        plan = definitions.resolve_job_def(f"plan_snapshot_{SOURCE}")
        plan.execute_in_process(
            run_config={"ops": {f"plan_snapshot_{SOURCE}_op": {"config": {"table": table, "chunk_rows": 1000}}}},
            instance=instance,
        )
        keys = instance.get_dynamic_partitions(snapshot_partitions_name(SOURCE, table))
        chunks = sorted((Chunk.parse(key) for key in keys), key=lambda chunk: chunk.index)
        assert [chunk.index for chunk in chunks] == [0, 1, 2]
        # Resolved from the definitions, the asset comes with the test's resources bound.
        snapshot = definitions.resolve_assets_def(snapshot_asset_key(SOURCE, table))

        first = dg.materialize([snapshot], partition_key=chunks[0].partition_key, instance=instance)
        metadata = first.asset_materializations_for_node(snapshot.node_def.name)[0].metadata
        assert metadata["rows_read"].value == 834  # ids 1..834: the first third of 1..2500

        # The source changes while the load runs, inside and outside the loaded ranges.
        harness.source_execute(
            "UPDATE orders SET total = 0, note = 'changed after its chunk' WHERE id IN (5, 700)",
            "UPDATE orders SET note = 'changed before its chunk' WHERE id IN (1500, 2400)",
            "DELETE FROM orders WHERE id IN (10, 1600)",
            "UPDATE orders SET id = 5000 WHERE id = 2000",
            "INSERT INTO orders VALUES (2600, 1.00, 'new', 'late@example.com')",
        )
        for chunk in chunks[1:]:
            dg.materialize([snapshot], partition_key=chunk.partition_key, instance=instance)
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
    source_config = harness.config_dict()["sources"][SOURCE]
    harness.extra_config["sources"] = {SOURCE: {**source_config, "tables": {"include": [table]}}}
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
        plan = definitions.resolve_job_def(f"plan_snapshot_{SOURCE}")
        plan.execute_in_process(
            run_config={"ops": {f"plan_snapshot_{SOURCE}_op": {"config": {"table": table, "chunk_rows": 100}}}},
            instance=instance,
        )
        snapshot = definitions.resolve_assets_def(snapshot_asset_key(SOURCE, table))
        removed = 0
        for key in instance.get_dynamic_partitions(snapshot_partitions_name(SOURCE, table)):
            result = dg.materialize([snapshot], partition_key=key, instance=instance)
            removed += (
                result.asset_materializations_for_node(snapshot.node_def.name)[0]
                .metadata["rows_removed_analytics"]
                .value
            )
        harness.replicate(instance=instance)
    assert removed == 1
    source = harness.source_rows("items")
    assert_same_rows(harness.postgres_rows("items"), source, "PostgreSQL")
    assert_same_rows(harness.clickhouse_rows("items"), source, "ClickHouse")
