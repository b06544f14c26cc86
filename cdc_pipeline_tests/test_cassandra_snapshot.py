"""Initial load (asset backfill) of Cassandra tables against the real node, into chdb and PostgreSQL.

The rows the load must bring are written while the table has cdc = false: they never reach cdc_raw,
so only the snapshot can deliver them. Writes between chunks and after the handoff stream; the sinks
merge both by cell write time, so the end state must equal what Cassandra shows, row by row.
"""

from __future__ import annotations

import datetime
from decimal import Decimal
from typing import Any

import dagster as dg

from cdc_pipeline.snapshot.chunks import Chunk
from cdc_pipeline.sources.cassandra.snapshot_reader import MAX_TOKEN, MIN_TOKEN
from cdc_pipeline_tests import snapshot_steps
from cdc_pipeline_tests.cassandra_pipeline import SOURCE, CassandraPipelineHarness
from cdc_pipeline_tests.harness import CH_SINK, PG_SINK, assert_same_rows
from cdc_pipeline_tests.polling import wait_until

REGIONS = ("eu", "us", "ap")
CUSTOMERS = range(1, 6)
DAYS = ("2024-05-06", "2024-05-07")
SEQS = (1, 2)
CHUNK_ROWS = 20
BRIEF_TTL = 30  # seconds: long enough to be loaded first, short enough to wait for
BRIEF = ("ttl", 2)


def _create_orders(pipeline: CassandraPipelineHarness) -> None:
    ks = pipeline.keyspace
    pipeline.execute(
        f"CREATE TYPE {ks}.place (street text, zip int)",
        # Composite partition key, two clustering columns, a static column, set/map/UDT and a frozen UDT.
        f"CREATE TABLE {ks}.orders (region text, customer int, day date, seq int, note text, amount decimal,"
        " tags set<text>, attrs map<text, int>, work place, home frozen<place>, owner text static,"
        " PRIMARY KEY ((region, customer), day, seq)) WITH cdc = false",
    )


def _write_before_cdc(pipeline: CassandraPipelineHarness) -> int:
    """Rows of every shape, written while cdc = false; returns how many rows (not partitions) there are."""
    ks = pipeline.keyspace
    session = pipeline.cassandra.session()
    insert = session.prepare(
        f"INSERT INTO {ks}.orders (region, customer, day, seq, note, amount, tags, attrs, work, home, owner)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    rows = 0
    for region in REGIONS:
        for customer in CUSTOMERS:
            for day in DAYS:
                for seq in SEQS:
                    n = rows
                    session.execute(
                        insert,
                        (region, customer, datetime.date.fromisoformat(day), seq, f"note {n}", Decimal(f"{n}.25"),
                         {f"t{n}", "all"}, {"n": n, "k": 1}, (f"street {n}", None), ("home", n), f"owner {region}"),
                    )  # fmt: skip
                    rows += 1
    pipeline.execute(
        # A row of nulls (only its primary-key liveness keeps it) and a partition of static columns only.
        f"INSERT INTO {ks}.orders (region, customer, day, seq) VALUES ('zz', 1, '2024-01-01', 1)",
        f"INSERT INTO {ks}.orders (region, customer, owner) VALUES ('zz', 2, 'only static')",
        # TTL'd rows: long-lived and one that expires during the test.
        f"INSERT INTO {ks}.orders (region, customer, day, seq, note) VALUES ('ttl', 1, '2024-01-01', 1, 'hour')"
        " USING TTL 3600",
        f"INSERT INTO {ks}.orders (region, customer, day, seq, note, tags) VALUES ('ttl', 2, '2024-01-01', 1,"
        f" 'brief', {{'x'}}) USING TTL {BRIEF_TTL}",
        # Elements written apart: their own write times and TTLs.
        f"UPDATE {ks}.orders USING TTL 3600 SET tags = tags + {{'late'}}, attrs['ttl'] = 9, work.zip = 77"
        " WHERE region = 'eu' AND customer = 1 AND day = '2024-05-06' AND seq = 1",
    )
    return rows + 3


def _token_of(pipeline: CassandraPipelineHarness, region: str, customer: int) -> int:
    session = pipeline.cassandra.session()
    statement = session.prepare(
        f"SELECT token(region, customer) FROM {pipeline.keyspace}.orders WHERE region = ? AND customer = ? LIMIT 1"
    )
    return int(session.execute(statement, (region, customer)).one()[0])


def _chunk_of(chunks: list[Chunk], token: int) -> int:
    (index,) = [chunk.index for chunk in chunks if chunk.low is not None and chunk.low <= token <= (chunk.high or 0)]
    return index


def _writes(pipeline: CassandraPipelineHarness, region: str, customer: int, label: str) -> None:
    """Changes of every kind to one partition: a scalar, set/map/UDT elements, the static, a delete, a new row."""
    ks = pipeline.keyspace
    where = f"region = '{region}' AND customer = {customer}"
    pipeline.execute(
        f"UPDATE {ks}.orders SET note = '{label}', tags = tags + {{'{label}'}}, tags = tags - {{'all'}},"
        f" attrs['k'] = 42, work.street = '{label}' WHERE {where} AND day = '2024-05-06' AND seq = 1",
        f"UPDATE {ks}.orders SET owner = '{label}' WHERE {where}",
        f"DELETE attrs['n'] FROM {ks}.orders WHERE {where} AND day = '2024-05-06' AND seq = 2",
        f"DELETE FROM {ks}.orders WHERE {where} AND day = '2024-05-07' AND seq = 1",
        f"INSERT INTO {ks}.orders (region, customer, day, seq, note) VALUES ('{region}', {customer}, '2025-01-01', 9,"
        f" '{label} new')",
    )


def _statics(pipeline: CassandraPipelineHarness) -> dict[str, list[tuple[Any, ...]]]:
    ks = pipeline.keyspace
    rows = pipeline.cassandra.session().execute(f"SELECT DISTINCT region, customer, owner FROM {ks}.orders")
    return {
        "source": sorted((r.region, r.customer, r.owner) for r in rows if r.owner is not None),
        PG_SINK: sorted((r["region"], r["customer"], r["owner"]) for r in pipeline.postgres_rows("orders_static")),
        CH_SINK: sorted((r["region"], r["customer"], r["owner"]) for r in pipeline.clickhouse_rows("orders_static")),
    }


def _source_rows(pipeline: CassandraPipelineHarness, table: str) -> list[dict[str, Any]]:
    """Cassandra's rows, without the one CQL shows for a partition holding only static columns
    (null clustering columns): the sinks hold that partition in `<table>_static` alone."""
    return [row for row in pipeline.source_rows(table) if row.get("seq", 0) is not None]


def _assert_sinks_equal_source(pipeline: CassandraPipelineHarness, table: str) -> list[dict[str, Any]]:
    source = _source_rows(pipeline, table)
    assert_same_rows(pipeline.postgres_rows(table), source, PG_SINK)
    assert_same_rows(pipeline.clickhouse_rows(table), source, CH_SINK)
    statics = _statics(pipeline)
    assert statics[PG_SINK] == statics["source"] and statics[CH_SINK] == statics["source"]
    return source


def _load_all(pipeline: CassandraPipelineHarness, instance: dg.DagsterInstance, table: str) -> list[Chunk]:
    snapshot, chunks = snapshot_steps.plan(pipeline.definitions(), instance, SOURCE, f"{pipeline.keyspace}.{table}",
                                           CHUNK_ROWS)  # fmt: skip
    for chunk in chunks:
        snapshot_steps.load(snapshot, chunk, instance)
    return chunks


def test_a_backfill_loads_rows_older_than_cdc_and_streaming_takes_over(
    cassandra_pipeline: CassandraPipelineHarness,
) -> None:
    pipeline = cassandra_pipeline
    pipeline.tables = ["orders"]
    ks = pipeline.keyspace
    _create_orders(pipeline)
    rows_before = _write_before_cdc(pipeline)
    pipeline.execute(f"ALTER TABLE {ks}.orders WITH cdc = true")
    definitions = pipeline.definitions()
    with dg.instance_for_test() as instance:
        snapshot, chunks = snapshot_steps.plan(definitions, instance, SOURCE, f"{ks}.orders", CHUNK_ROWS)
        # The whole token ring, split by the row count (a CQL count: an unflushed table has no size estimates).
        assert len(chunks) == -(-(rows_before + 1) // CHUNK_ROWS)  # + the static-only partition's row
        assert (chunks[0].low, chunks[-1].high) == (MIN_TOKEN, MAX_TOKEN)
        assert all(a.high is not None and b.low == a.high + 1 for a, b in zip(chunks, chunks[1:], strict=False))

        # One partition of the first chunk and one of the last: changed after, and before, their chunk.
        by_chunk: dict[int, tuple[str, int]] = {}
        for region in REGIONS:
            for customer in CUSTOMERS:
                by_chunk.setdefault(_chunk_of(chunks, _token_of(pipeline, region, customer)), (region, customer))
        first, last = by_chunk[chunks[0].index], by_chunk[chunks[-1].index]

        loaded = [snapshot_steps.load(snapshot, chunks[0], instance)]
        _writes(pipeline, *first, "after its chunk")
        _writes(pipeline, *last, "before its chunk")
        loaded += [snapshot_steps.load(snapshot, chunk, instance) for chunk in chunks[1:]]
        assert sum(int(str(m["rows_read"])) for m in loaded) >= rows_before - 1
        assert all(m["rows_removed_" + PG_SINK] == 0 and m["dlq_count"] == 0 for m in loaded)

        # Before any streaming: the rows written without CDC are in both sinks, as Cassandra shows them.
        untouched = {
            tuple(str(row[k]) for k in ("region", "customer", "day", "seq")): row
            for row in _source_rows(pipeline, "orders")
            if (row["region"], row["customer"]) not in (first, last, BRIEF)
        }
        assert len(untouched) == rows_before - 2 * len(DAYS) * len(SEQS) - 1
        for sink_rows in (pipeline.postgres_rows("orders"), pipeline.clickhouse_rows("orders")):
            held = {tuple(str(row[k]) for k in ("region", "customer", "day", "seq")): row for row in sink_rows}
            assert {key: held.get(key) for key in untouched} == untouched
            assert any((row["region"], row["customer"]) == BRIEF for row in sink_rows), "TTL'd row not loaded"
        pipeline.execute(
            f"UPDATE {ks}.orders SET note = 'after the load', attrs['z'] = 26"
            " WHERE region = 'us' AND customer = 3 AND day = '2024-05-06' AND seq = 2",
            f"UPDATE {ks}.orders SET work.zip = 5 WHERE region = 'zz' AND customer = 1 AND day = '2024-01-01'"
            " AND seq = 1",
            f"DELETE FROM {ks}.orders WHERE region = 'ap' AND customer = 5",
        )
        pipeline.replicate(instance)

    source = _assert_sinks_equal_source(pipeline, "orders")
    # The cases the test means to cover are really there.
    keys = {(row["region"], row["customer"], str(row["day"]), row["seq"]): row for row in source}
    assert keys[("zz", 1, "2024-01-01", 1)]["work"] == {"zip": 5}
    assert keys[("ttl", 1, "2024-01-01", 1)]["note"] == "hour"
    assert keys[("eu", 1, "2024-05-06", 1)]["attrs"]["ttl"] == 9
    assert not any(key[:2] == ("ap", 5) for key in keys)
    assert pipeline.dead_letters() == []
    # The brief row expires in Cassandra and in both sinks (they evaluate TTLs when read).
    wait_until(
        lambda: not any((r["region"], r["customer"]) == BRIEF for r in pipeline.source_rows("orders")),
        timeout=BRIEF_TTL * 3,
        what="the TTL'd row to expire in Cassandra",
    )
    for rows in (pipeline.postgres_rows("orders"), pipeline.clickhouse_rows("orders")):
        assert not any((r["region"], r["customer"]) == BRIEF for r in rows)


def test_loading_twice_changes_nothing(cassandra_pipeline: CassandraPipelineHarness) -> None:
    pipeline = cassandra_pipeline
    pipeline.tables = ["orders"]
    _create_orders(pipeline)
    _write_before_cdc(pipeline)
    pipeline.execute(f"ALTER TABLE {pipeline.keyspace}.orders WITH cdc = true")
    with dg.instance_for_test() as instance:
        _load_all(pipeline, instance, "orders")
        pipeline.replicate(instance)
        once = (pipeline.postgres_rows("orders"), pipeline.clickhouse_rows("orders"), _statics(pipeline))
        _load_all(pipeline, instance, "orders")
        pipeline.replicate(instance)
        twice = (pipeline.postgres_rows("orders"), pipeline.clickhouse_rows("orders"), _statics(pipeline))
    assert twice == once
    _assert_sinks_equal_source(pipeline, "orders")


def test_list_columns_go_to_the_dlq_and_the_rest_of_the_row_loads(
    cassandra_pipeline: CassandraPipelineHarness,
) -> None:
    pipeline = cassandra_pipeline
    pipeline.tables = ["queues"]
    ks = pipeline.keyspace
    pipeline.execute(
        f"CREATE TABLE {ks}.queues (id int PRIMARY KEY, note text, items list<int>) WITH cdc = false",
        f"INSERT INTO {ks}.queues (id, note, items) VALUES (1, 'with a list', [3, 1, 2])",
        f"INSERT INTO {ks}.queues (id, note) VALUES (2, 'without')",
        f"ALTER TABLE {ks}.queues WITH cdc = true",
    )
    with dg.instance_for_test() as instance:
        _load_all(pipeline, instance, "queues")
    for rows in (pipeline.postgres_rows("queues"), pipeline.clickhouse_rows("queues")):
        assert [(r["id"], r["note"], r["items"]) for r in rows] == [(1, "with a list", None), (2, "without", None)]
    ((table, sink, stage, error, payload),) = pipeline.dead_letters()
    assert (table, sink, stage) == (f"{ks}.queues", "", "parse")
    assert "'items'" in error and "list" in error
    assert payload["id"] == 1
