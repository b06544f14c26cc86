"""Cell tables (Cassandra) through mask -> map -> write into real PostgreSQL and chdb.

Changes are built as the Cassandra source emits them; each test states the rows Cassandra would
show after them, and both sinks' `_current` views must show exactly those rows.
"""

from __future__ import annotations

import copy
import itertools
import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg2
import psycopg2.extras
import pytest
from psycopg2 import sql

from cdc_pipeline.config.models import MaskingConfig, MaskRule, TypeOverride
from cdc_pipeline.core.cells import CellChange, CellWrite, ClusteringBound, CollectionWrite, ElementWrite, RangeDeletion
from cdc_pipeline.core.changes import ChangeBatch, ChangeOp, RowChange, TableChanges
from cdc_pipeline.core.checkpoint import Checkpoint
from cdc_pipeline.core.schema import ColumnSchema, TableSchema
from cdc_pipeline.dlq.store import DeadLetter, DeadLetterStore
from cdc_pipeline.local_servers.postgres import LocalPostgres
from cdc_pipeline.mapping.mapper import TypeMapper
from cdc_pipeline.mapping.sink_types import SinkTableLayout, TypeNotMappable
from cdc_pipeline.masking.masker import Masker
from cdc_pipeline.sinks.base import TableStats
from cdc_pipeline.sinks.cell_merge.deletions import PartitionLevelDeletion, deletions_of
from cdc_pipeline.sinks.cell_merge.stamped_rows import key_text
from cdc_pipeline.sinks.cell_merge.state import RowState, state_text
from cdc_pipeline.sinks.clickhouse.identifiers import quote_identifier
from cdc_pipeline.sinks.clickhouse.sink import ClickHouseSink
from cdc_pipeline.sinks.postgres.sink import PostgresSink
from cdc_pipeline.sinks.registry import sink_kind
from cdc_pipeline.sources.cassandra.positions import CommitLogPosition
from cdc_pipeline_tests.harness import MASKING_KEY

SOURCE = "cass"
_numbers = itertools.count()

SCHEMA = TableSchema(
    "ks",
    "events",
    (
        ColumnSchema("k", "text", "text", False),
        ColumnSchema("c1", "int", "int", False),
        ColumnSchema("c2", "int", "int", False, descending=True),
        ColumnSchema("a", "text", "text", True),
        ColumnSchema("n", "bigint", "bigint", True),
        ColumnSchema("info", "json", "frozen<map<text, int>>", True),
        ColumnSchema("tags", "json", "set<text>", True, collection="set"),
        ColumnSchema("attrs", "json", "map<text, int>", True, collection="map"),
    ),
    ("k", "c1", "c2"),
    partition_key_length=1,
)
KEY = ("k", "c1", "c2")


def row_change(
    timestamp: int,
    key: tuple[str, int, int],
    values: dict[str, Any] | None = None,
    *,
    insert: bool = False,
    ttl_until: int | None = None,
    row_deletion: int | None = None,
) -> RowChange:
    values = values or {}
    cells = CellChange(
        cells={c: CellWrite(timestamp, ttl_until) for c, v in values.items() if not isinstance(v, CollectionWrite)},
        liveness=CellWrite(timestamp, ttl_until) if insert else None,
        row_deletion=row_deletion,
    )
    op = (
        ChangeOp.INSERT if insert else (ChangeOp.DELETE if row_deletion is not None and not values else ChangeOp.UPDATE)
    )
    return RowChange(op, {**dict(zip(KEY, key, strict=True)), **values}, timestamp, f"cdc:1:{timestamp}", 0, cells)


def partition_change(
    timestamp: int, k: str, *, partition: bool = False, ranges: tuple[RangeDeletion, ...] = ()
) -> RowChange:
    cells = CellChange(partition_deletion=timestamp if partition else None, range_deletions=ranges)
    return RowChange(ChangeOp.DELETE, {"k": k}, timestamp, f"cdc:1:{timestamp}", 0, cells)


@dataclass
class CellPipeline:
    pg_dsn: str
    postgres_sink: PostgresSink
    clickhouse_sink: ClickHouseSink
    dlq: DeadLetterStore
    masking: MaskingConfig

    def run(
        self,
        changes: list[RowChange],
        schema: TableSchema = SCHEMA,
        kinds: tuple[str, ...] = ("postgres", "clickhouse"),
    ) -> None:
        """One batch through mask, map and the sinks, rejections to the DLQ as the replication job does."""
        batch = self.masked(changes, schema)
        self.dlq.record(SOURCE, batch.rejections)
        for kind in kinds:
            sink = self.postgres_sink if kind == "postgres" else self.clickhouse_sink
            mapped = TypeMapper(sink.name, sink_kind(kind).map_column, []).map_batch(batch)
            self.dlq.record(SOURCE, mapped.rejections)
            sink.write(mapped, lambda rejections: self.dlq.record(SOURCE, rejections), advance_checkpoint=False)

    def masked(self, changes: list[RowChange], schema: TableSchema = SCHEMA) -> ChangeBatch:
        batch = ChangeBatch(
            SOURCE,
            Checkpoint(CommitLogPosition(1, 0)),
            Checkpoint(CommitLogPosition(1, len(changes))),
            {schema.qualified_name: TableChanges(schema, copy.deepcopy(changes))},
        )
        return Masker(self.masking, MASKING_KEY).mask_batch(batch)

    def postgres_sink_layout(self, batch: ChangeBatch) -> SinkTableLayout:
        mapper = TypeMapper(self.postgres_sink.name, sink_kind("postgres").map_column, [])
        return mapper.map_batch(batch).tables[SCHEMA.qualified_name].layout

    def postgres_rows(self, schema: TableSchema = SCHEMA) -> list[dict[str, Any]]:
        with (
            psycopg2.connect(self.pg_dsn) as connection,
            connection.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cursor,
        ):
            cursor.execute(f'SELECT * FROM replica."ks__{schema.name}_current" ORDER BY k, c1, c2')
            rows = [dict(row) for row in cursor.fetchall()]
        connection.close()
        return rows

    def clickhouse_rows(self, schema: TableSchema = SCHEMA, parse_json: bool = True) -> list[dict[str, Any]]:
        sink = self.clickhouse_sink
        result = sink.client.query(f"SELECT * FROM {sink.qualified(f'ks__{schema.name}_current')} ORDER BY k, c1, c2")
        rows = [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]
        # ClickHouse keeps JSON as text; PostgreSQL's jsonb comes back parsed.
        json_columns = [c.name for c in schema.columns if c.data_type == "json" and parse_json]
        for row in rows:
            for name in json_columns:
                if row[name] is not None:
                    row[name] = json.loads(row[name])
        return rows

    def rows(self, schema: TableSchema = SCHEMA) -> list[dict[str, Any]]:
        """The view's rows, asserted identical in both sinks."""
        postgres, clickhouse = self.postgres_rows(schema), self.clickhouse_rows(schema)
        assert postgres == clickhouse
        return postgres

    def stats(self) -> tuple[TableStats | None, TableStats | None]:
        return (
            self.postgres_sink.table_stats(SCHEMA.qualified_name),
            self.clickhouse_sink.table_stats(SCHEMA.qualified_name),
        )


@pytest.fixture
def cells(postgres: LocalPostgres, chdb_dsn: str, worker_name: str) -> Iterator[CellPipeline]:
    name = f"cells_{worker_name}_{next(_numbers)}"
    dsn = postgres.create_database(name)
    clickhouse = ClickHouseSink("warehouse", chdb_dsn, name)
    pipeline = CellPipeline(
        dsn,
        PostgresSink("analytics", dsn, "replica"),
        clickhouse,
        DeadLetterStore(dsn, "dlq"),
        MaskingConfig(classify_by_name=False),
    )
    yield pipeline
    clickhouse.client.command(f"DROP DATABASE IF EXISTS {quote_identifier(name)}")
    postgres.drop_database(name)


def expected(k: str, c1: int, c2: int, **values: Any) -> dict[str, Any]:
    return {"k": k, "c1": c1, "c2": c2, "a": None, "n": None, "info": None, "tags": None, "attrs": None, **values}


def test_partial_updates_merge_cell_by_cell_and_older_writes_lose(cells: CellPipeline) -> None:
    cells.run(
        [
            row_change(100, ("p", 1, 1), {"a": "x", "n": 1}, insert=True),
            row_change(200, ("p", 1, 1), {"n": 2}),  # one cell: `a` stays
        ]
    )
    cells.run([row_change(50, ("p", 1, 1), {"a": "older", "n": 0})])  # written before both: loses
    assert cells.rows() == [expected("p", 1, 1, a="x", n=2)]


def test_an_older_cell_arriving_later_fills_a_column_at_the_same_version(cells: CellPipeline) -> None:
    cells.run([row_change(200, ("p", 1, 1), {"a": "x"}, insert=True)])
    cells.run([row_change(100, ("p", 1, 1), {"n": 7})])  # no newer timestamp: _version stays 200
    assert cells.rows() == [expected("p", 1, 1, a="x", n=7)]
    # Once ClickHouse merges the parts (the engine's max per cell), the row stays the same.
    cells.clickhouse_sink.client.command(f"OPTIMIZE TABLE {cells.clickhouse_sink.qualified('ks__events')} FINAL")
    assert cells.clickhouse_rows() == [expected("p", 1, 1, a="x", n=7)]
    assert cells.stats() == (TableStats(1, 200), TableStats(1, 200))


def test_a_row_deletion_shadows_older_inserts_arriving_later(cells: CellPipeline) -> None:
    cells.run([row_change(100, ("p", 1, 1), {"a": "x"}, insert=True), row_change(300, ("p", 1, 1), row_deletion=300)])
    cells.run([row_change(250, ("p", 1, 1), {"a": "older"}, insert=True)])
    assert cells.rows() == []
    cells.run([row_change(400, ("p", 1, 1), {"n": 4})])  # newer than the deletion: shows, `a` stays gone
    assert cells.rows() == [expected("p", 1, 1, n=4)]


def test_a_partition_deletion_shadows_later_arriving_older_writes_to_new_rows(cells: CellPipeline) -> None:
    cells.run(
        [
            row_change(100, ("p", 1, 1), {"a": "x"}, insert=True),
            row_change(100, ("q", 1, 1), {"a": "other partition"}, insert=True),
            partition_change(200, "p", partition=True),
        ]
    )
    cells.run(
        [
            row_change(150, ("p", 2, 2), {"a": "older than the deletion"}, insert=True),  # a row never seen before
            row_change(250, ("p", 3, 3), {"a": "newer"}, insert=True),
        ]
    )
    assert cells.rows() == [expected("p", 3, 3, a="newer"), expected("q", 1, 1, a="other partition")]


def test_a_range_deletion_on_a_descending_clustering_column(cells: CellPipeline) -> None:
    keys = [("p", 1, 1), ("p", 1, 2), ("p", 1, 3), ("p", 1, 4), ("p", 2, 3)]
    cells.run([row_change(100, key, {"n": key[2]}, insert=True) for key in keys])
    # DELETE ... WHERE k = 'p' AND c1 = 1 AND c2 >= 2 AND c2 < 4: c2 is DESC, so in clustering order
    # the range runs from (1, 4) exclusive to (1, 2) inclusive.
    deletion = RangeDeletion(ClusteringBound((1, 4), False), ClusteringBound((1, 2), True), 200)
    cells.run([partition_change(200, "p", ranges=(deletion,))])
    cells.run([row_change(150, ("p", 1, 3), {"a": "late, older"}, insert=True)])  # stays deleted
    assert cells.rows() == [
        expected("p", 1, 1, n=1),
        expected("p", 1, 4, n=4),
        expected("p", 2, 3, n=3),
    ]


def test_ttls_hide_expired_cells_and_rows_when_read(cells: CellPipeline) -> None:
    now = int(time.time())
    cells.run(
        [
            row_change(100, ("p", 1, 1), {"a": "gone"}, insert=True, ttl_until=now - 10),  # whole row expired
            row_change(100, ("p", 2, 2), {"a": "kept"}, insert=True, ttl_until=now + 3600),
            row_change(100, ("p", 3, 3), {"n": 3}, insert=True),
            row_change(200, ("p", 3, 3), {"a": "expired cell"}, ttl_until=now - 10),
        ]
    )
    assert cells.rows() == [expected("p", 2, 2, a="kept"), expected("p", 3, 3, n=3)]
    assert cells.stats() == (TableStats(2, 300), TableStats(2, 300))
    in_sink = {tuple(key) for key in cells.postgres_sink.live_keys(SCHEMA.qualified_name, KEY)}
    assert in_sink == {("p", 2, 2), ("p", 3, 3)}
    assert {tuple(key) for key in cells.clickhouse_sink.live_keys(SCHEMA.qualified_name, KEY)} == in_sink


def test_collection_element_writes_merge(cells: CellPipeline) -> None:
    cells.run(
        [
            row_change(
                100,
                ("p", 1, 1),
                {
                    "tags": CollectionWrite(
                        "set", 99, (ElementWrite("red", None, 100), ElementWrite("blue", None, 100))
                    ),
                    "attrs": CollectionWrite("map", 99, (ElementWrite("x", 1, 100),)),
                    "info": json.dumps({"frozen": 1}),
                },
                insert=True,
            ),
        ]
    )
    cells.run(
        [
            row_change(
                200,
                ("p", 1, 1),
                {"tags": CollectionWrite("set", None, (ElementWrite("red", None, 200, deleted=True),))},
            ),
            row_change(200, ("p", 1, 1), {"attrs": CollectionWrite("map", None, (ElementWrite("y", 2, 200),))}),
        ]
    )
    assert cells.rows() == [expected("p", 1, 1, tags=["blue"], attrs={"x": 1, "y": 2}, info={"frozen": 1})]


def test_replaying_a_batch_changes_nothing(cells: CellPipeline) -> None:
    batch = [
        row_change(100, ("p", 1, 1), {"a": "x"}, insert=True),
        row_change(100, ("p", 1, 2), {"a": "y"}, insert=True),
        partition_change(
            150, "p", ranges=(RangeDeletion(ClusteringBound((1, 2), True), ClusteringBound((1, 2), True), 150),)
        ),
        row_change(300, ("q", 1, 1), {"n": 1}),
    ]
    cells.run(batch)
    rows, stats = cells.rows(), cells.stats()
    cells.run(batch)
    assert cells.rows() == rows == [expected("p", 1, 1, a="x"), expected("q", 1, 1, n=1)]
    assert cells.stats() == stats == (TableStats(2, 400), TableStats(2, 400))


def _letters(cells: CellPipeline) -> list[DeadLetter]:
    return cells.dlq.pending(SOURCE)


def test_a_value_the_sink_refuses_goes_to_the_dlq_and_the_others_land(cells: CellPipeline) -> None:
    cells.run(
        [
            row_change(100, ("p", 1, 1), {"a": "fine"}, insert=True),
            # Frozen values arrive as JSON text; this one is not JSON: PostgreSQL's jsonb refuses it.
            row_change(100, ("p", 2, 2), {"info": "{not json"}, insert=True),
            row_change(100, ("p", 3, 3), {"a": "fine too"}, insert=True),
        ]
    )
    assert cells.postgres_rows() == [expected("p", 1, 1, a="fine"), expected("p", 3, 3, a="fine too")]
    (letter,) = _letters(cells)
    assert (letter.stage, letter.sink, letter.table) == ("write", "analytics", "ks.events")
    assert letter.values["c1"] == 2 and "json" in letter.error.lower()
    # ClickHouse keeps JSON as text: it holds all three rows.
    assert [row["c1"] for row in cells.clickhouse_rows(parse_json=False)] == [1, 2, 3]


def test_a_value_that_cannot_map_is_refused_at_the_map_stage_naming_the_column(cells: CellPipeline) -> None:
    schema = TableSchema(
        "ks",
        "amounts",
        (
            ColumnSchema("k", "text", "text", False),
            ColumnSchema("c1", "int", "int", False),
            ColumnSchema("c2", "int", "int", False),
            ColumnSchema("amount", "decimal", "decimal", True),
        ),
        KEY,
        partition_key_length=1,
    )
    cells.run(
        [
            row_change(100, ("p", 1, 1), {"amount": Decimal("1.5")}, insert=True),
            row_change(100, ("p", 2, 2), {"amount": Decimal("1e60")}, insert=True),  # beyond Decimal(76, 38)
        ],
        schema,
    )
    (letter,) = _letters(cells)
    assert (letter.stage, letter.sink) == ("map", "warehouse")
    assert "column amount" in letter.error and "Decimal(76, 38)" in letter.error
    assert [r["c1"] for r in cells.clickhouse_rows(schema)] == [1]
    assert [r["c1"] for r in cells.postgres_rows(schema)] == [1, 2]


def test_a_range_deletion_over_a_masked_clustering_column_is_refused_at_the_mask_stage(cells: CellPipeline) -> None:
    cells.masking = MaskingConfig(classify_by_name=False, rules=[MaskRule(table="ks.*", column="c1", action="hash")])
    deletion = RangeDeletion(ClusteringBound((1,), True), ClusteringBound((2,), True), 200)
    cells.run(
        [
            row_change(100, ("p", 1, 1), {"a": "x"}, insert=True),
            row_change(100, ("p", 1, 1), {"n": 5}),  # the hashed key still finds the same row
            partition_change(200, "p", ranges=(deletion,)),
        ]
    )
    (letter,) = _letters(cells)
    assert letter.stage == "mask"
    assert "table ks.events, column c1" in letter.error and "range deletion" in letter.error
    (row,) = cells.rows()
    assert (row["a"], row["n"]) == ("x", 5) and row["c1"] != "1" and len(row["c1"]) == 64


def test_counter_columns_are_refused_with_the_reason() -> None:
    schema = TableSchema(
        "ks",
        "hits",
        (ColumnSchema("k", "text", "text", False), ColumnSchema("hits", "counter", "counter", True)),
        ("k",),
        partition_key_length=1,
    )
    with pytest.raises(TypeNotMappable, match=r"table ks\.hits, column hits: counter columns are not replicated"):
        TypeMapper("warehouse", sink_kind("clickhouse").map_column, []).layout(schema)


def test_two_cell_tables_with_one_sink_name_the_second_waits_naming_the_first(cells: CellPipeline) -> None:
    """Keyspaces `p` with table `a__b` and `p__a` with table `b` are both `p__a__b` in the sinks: the
    first keeps the name, the other's changes wait in the DLQ of each sink, naming the first."""
    first = TableSchema("p", "a__b", SCHEMA.columns, SCHEMA.key_columns, partition_key_length=1)
    second = TableSchema("p__a", "b", SCHEMA.columns, SCHEMA.key_columns, partition_key_length=1)
    cells.run([row_change(10, ("x", 1, 1), {"a": "first"}, insert=True)], first)
    cells.run([row_change(20, ("y", 2, 2), {"a": "second"}, insert=True)], second)
    cells.run([row_change(30, ("z", 3, 3), {"a": "first again"}, insert=True)], first)
    with psycopg2.connect(cells.pg_dsn) as connection, connection.cursor() as cursor:
        cursor.execute('SELECT k, a FROM replica."p__a__b_current" ORDER BY k')
        assert cursor.fetchall() == [("x", "first"), ("z", "first again")]
    connection.close()
    sink = cells.clickhouse_sink
    stored = sink.client.query(f"SELECT k, a FROM {sink.qualified('p__a__b_current')} ORDER BY k").result_rows
    assert [tuple(row) for row in stored] == [("x", "first"), ("z", "first again")]
    letters = cells.dlq.pending()
    assert sorted((letter.table, letter.sink) for letter in letters) == [
        ("p__a.b", "analytics"),
        ("p__a.b", "warehouse"),
    ]
    assert all("already holds table p.a__b of source 'cass'" in letter.error for letter in letters)


def test_a_batch_over_more_partitions_than_the_server_has_lock_slots(cells: CellPipeline) -> None:
    # A default PostgreSQL (max_locks_per_transaction 64, max_connections 100, as the test server)
    # holds about 10,000 locks for all sessions: a lock per partition failed this batch with
    # "out of shared memory".
    partitions = 20_000
    cells.run([row_change(100, (f"p{i}", 1, 1), {"n": i}, insert=True) for i in range(partitions)])

    with psycopg2.connect(cells.pg_dsn) as connection, connection.cursor() as cursor:
        cursor.execute('SELECT count(*), sum(n) FROM replica."ks__events_current"')
        assert cursor.fetchone() == (partitions, sum(range(partitions)))
    connection.close()
    sink = cells.clickhouse_sink
    counted = sink.client.query(f"SELECT count(), sum(n) FROM {sink.qualified('ks__events_current')}").result_rows
    assert [tuple(row) for row in counted] == [(partitions, sum(range(partitions)))]


def _state_form_rows(layout: SinkTableLayout, changes: list[RowChange]) -> list[dict[str, Any]]:
    """The rows the earlier form (a JSON state per row) held after `changes`: each row's state merged
    change by change (sinks/cell_merge/state.py), its visible values and its bookkeeping."""
    schema = layout.cell_schema
    assert schema is not None
    states: dict[str, tuple[list[Any], RowState]] = {}
    for change in changes:
        key_values = [change.values[k] for k in schema.key_columns]
        entry = states.setdefault(key_text(key_values), (key_values, RowState.for_key(key_values)))
        entry[1].merge(change, schema.key_columns)
    rows = []
    for key, (key_values, state) in states.items():
        is_live, live_until = state.life()
        rows.append(
            {
                **dict.fromkeys(layout.column_names),
                **dict(zip(schema.key_columns, key_values, strict=True)),
                **state.visible_values(),
                "_version": state.version,
                "_is_deleted": not is_live,
                "_cells": state.to_json(),
                "_key": key,
                "_partition": key_text(key_values[: schema.partition_key_length]),
                "_expiry": state_text(state.expiry()),
                "_live_until": live_until,
            }
        )
    return rows


_STATE_FORM_COLUMNS = ["_version", "_is_deleted", "_cells", "_key", "_partition", "_expiry", "_live_until"]


def _state_form_tables(cells: CellPipeline, changes: list[RowChange]) -> None:
    """Both sinks' tables as the earlier form made them, holding `changes`."""
    batch = cells.masked(changes)
    sink = cells.clickhouse_sink
    layout = (
        TypeMapper(sink.name, sink_kind("clickhouse").map_column, [])
        .map_batch(batch)
        .tables[SCHEMA.qualified_name]
        .layout
    )
    columns = [f"{quote_identifier(c.name)} {c.sink_type}" for c in layout.columns]
    sink.client.command(
        f"CREATE TABLE {sink.qualified(layout.table_name)} ({', '.join(columns)}, _version UInt64,"
        " _is_deleted UInt8, _cells String, _key String, _partition String, _expiry String,"
        " _live_until Nullable(Int64)) ENGINE = ReplacingMergeTree(_version) ORDER BY (_partition, _key)"
    )
    rows = _state_form_rows(layout, batch.tables[SCHEMA.qualified_name].changes)
    converters = {c.name: c.converted for c in layout.columns}
    sink.client.insert(
        sink.qualified(layout.table_name),
        [[converters[n](row[n]) for n in layout.column_names] + [row[n] for n in _STATE_FORM_COLUMNS] for row in rows],
        column_names=[*layout.column_names, *_STATE_FORM_COLUMNS],
    )

    layout = cells.postgres_sink_layout(batch)
    key = ", ".join(f'"{k}"' for k in layout.key_columns)
    columns = [f'"{c.name}" {c.sink_type}' for c in layout.columns]
    names = [*layout.column_names, *_STATE_FORM_COLUMNS]
    with psycopg2.connect(cells.pg_dsn) as connection, connection.cursor() as cursor:
        cursor.execute("CREATE SCHEMA IF NOT EXISTS replica")
        cursor.execute(
            f'CREATE TABLE replica."{layout.table_name}" ({", ".join(columns)}, _version bigint NOT NULL,'
            " _is_deleted boolean NOT NULL DEFAULT false, _cells text NOT NULL, _key text NOT NULL,"
            f" _partition text NOT NULL, _expiry jsonb NOT NULL, _live_until bigint, PRIMARY KEY ({key}))"
        )
        cursor.execute(
            f'CREATE VIEW replica."{layout.table_name}_current" AS SELECT * FROM replica."{layout.table_name}"'
            " WHERE NOT _is_deleted"
        )
        psycopg2.extras.execute_values(
            cursor,
            sql.SQL("INSERT INTO {} ({}) VALUES %s")
            .format(sql.Identifier("replica", layout.table_name), sql.SQL(", ").join(map(sql.Identifier, names)))
            .as_string(cursor),
            [[row[n] for n in names] for row in rows],
        )
    connection.close()


def test_tables_of_the_earlier_state_form_are_converted_when_next_written(cells: CellPipeline) -> None:
    now = int(time.time())
    earlier = [
        row_change(
            100,
            ("p", 1, 1),
            {
                "a": "x",
                "n": 1,
                "tags": CollectionWrite("set", 99, (ElementWrite("red", None, 100), ElementWrite("blue", None, 100))),
            },
            insert=True,
        ),
        row_change(100, ("p", 2, 2), {"n": 2, "attrs": CollectionWrite("map", None, (ElementWrite("x", 1, 100),))}),
        row_change(100, ("p", 3, 3), {"a": "gone"}, insert=True),
        row_change(150, ("p", 3, 3), row_deletion=150),
        row_change(100, ("q", 1, 1), {"a": "expires"}, insert=True, ttl_until=now + 3600),
    ]
    _state_form_tables(cells, earlier)
    later = [
        # An older write to the deleted row stays shadowed: the converted row kept its deletion.
        row_change(120, ("p", 3, 3), {"a": "older"}),
        # An older cell loses against the converted one; a newer one wins; elements merge.
        row_change(90, ("p", 1, 1), {"a": "older"}),
        row_change(
            200, ("p", 1, 1), {"tags": CollectionWrite("set", None, (ElementWrite("red", None, 200, deleted=True),))}
        ),
        row_change(200, ("p", 2, 2), {"attrs": CollectionWrite("map", None, (ElementWrite("y", 2, 200),))}),
    ]
    cells.run(later)
    assert cells.rows() == [
        expected("p", 1, 1, a="x", n=1, tags=["blue"]),
        expected("p", 2, 2, n=2, attrs={"x": 1, "y": 2}),
        expected("q", 1, 1, a="expires"),
    ]
    postgres_stats, clickhouse_stats = cells.stats()
    assert clickhouse_stats == postgres_stats
    # The earlier form is gone; later batches write to the stamped tables.
    sink = cells.clickhouse_sink
    tables = {row[0] for row in sink.client.query(f"SHOW TABLES FROM {quote_identifier(sink._database)}").result_rows}
    assert not any(name.endswith("__state_form") for name in tables)
    with psycopg2.connect(cells.pg_dsn) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT column_name FROM information_schema.columns WHERE table_name = 'ks__events'")
        assert "_cells" not in {name for (name,) in cursor.fetchall()}
    connection.close()
    cells.run([row_change(300, ("q", 2, 2), {"n": 3}, insert=True)])
    assert len(cells.rows()) == 4


def _random_changes(randomness: random.Random) -> list[RowChange]:
    """Writes of every kind to a few rows of two partitions, each at a time of its own."""
    times = iter(randomness.sample(range(100, 10_000), 60))
    keys = [("p", 1, 1), ("p", 1, 2), ("p", 2, 1), ("q", 1, 1)]
    changes: list[RowChange] = []
    for _ in range(24):
        key, at = randomness.choice(keys), next(times)
        kind = randomness.choice(["insert", "update", "null", "delete", "set", "map", "range", "partition"])
        if kind == "insert":
            changes.append(row_change(at, key, {"a": f"a{at}", "n": at}, insert=True))
        elif kind == "update":
            column = randomness.choice(["a", "n"])
            value = (f"a{at}" if column == "a" else at) if randomness.random() < 0.5 else None
            changes.append(row_change(at, key, {column: value}))
        elif kind == "null":
            changes.append(row_change(at, key, {"a": None}))
        elif kind == "delete":
            changes.append(row_change(at, key, row_deletion=at))
        elif kind == "set":
            element = ElementWrite(
                randomness.choice(["red", "blue", "green"]), None, at, deleted=randomness.random() < 0.3
            )
            whole = randomness.random() < 0.3  # a whole-value write: its tombstone a microsecond before
            changes.append(row_change(at, key, {"tags": CollectionWrite("set", at - 1 if whole else None, (element,))}))
        elif kind == "map":
            element = ElementWrite(randomness.choice(["x", "y"]), at, at, deleted=randomness.random() < 0.3)
            changes.append(row_change(at, key, {"attrs": CollectionWrite("map", None, (element,))}))
        elif kind == "range":
            bound = ClusteringBound((1,), True)
            changes.append(partition_change(at, key[0], ranges=(RangeDeletion(bound, bound, at),)))
        else:
            changes.append(partition_change(at, key[0], partition=True))
    return changes


def _model_rows(changes: list[RowChange]) -> list[dict[str, Any]]:
    """What Cassandra shows after `changes`, by the reference model (state.py), order aside."""
    states: dict[tuple[Any, ...], RowState] = {}
    deletions: list[tuple[str, PartitionLevelDeletion]] = []
    for change in changes:
        assert change.cells is not None
        if change.cells.is_partition_level:
            deletions.extend((change.values["k"], d) for d in deletions_of(change.cells))
            continue
        key = tuple(change.values[k] for k in KEY)
        states.setdefault(key, RowState.for_key(list(key))).merge(change, KEY)
    clustering = [SCHEMA.column("c1"), SCHEMA.column("c2")]
    rows = []
    for key, state in sorted(states.items()):
        for partition, deletion in deletions:
            if partition == key[0] and deletion.covers(clustering, key[1:]):
                state.apply_deletion(deletion.timestamp)
        if state.is_live:
            shown = {
                name: json.loads(value) if name in ("tags", "attrs") and value is not None else value
                for name, value in state.visible_values().items()
            }
            rows.append(expected(*key, **shown))
    return rows


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_any_order_and_any_replay_of_the_changes_ends_as_the_reference_model(cells: CellPipeline, seed: int) -> None:
    # The engines merge what each batch brings: whatever the batches' order and cut, and however
    # often a batch is replayed (a crash, a second replica), the sinks show what Cassandra would.
    randomness = random.Random(seed)
    changes = _random_changes(randomness)
    want = _model_rows(changes)
    for _ in range(2):
        order = changes[:]
        randomness.shuffle(order)
        cuts = sorted(randomness.sample(range(1, len(order)), 2))
        for batch in (order[: cuts[0]], order[cuts[0] : cuts[1]], order[cuts[1] :]):
            cells.run(batch)
        assert cells.rows() == want
    postgres_stats, clickhouse_stats = cells.stats()
    assert postgres_stats == clickhouse_stats


def test_a_clickhouse_override_that_cannot_hold_null_is_refused_naming_the_column(cells: CellPipeline) -> None:
    # A deleted cell holds NULL beside its stamp: Array(...) cannot be Nullable in ClickHouse.
    override = TypeOverride(table=SCHEMA.qualified_name, column="a", sink="warehouse", type="Array(String)")
    sink = cells.clickhouse_sink
    batch = cells.masked([row_change(100, ("p", 1, 1), {"n": 1}, insert=True)])
    mapped = TypeMapper(sink.name, sink_kind("clickhouse").map_column, [override]).map_batch(batch)
    with pytest.raises(TypeNotMappable) as refused:
        sink.write(mapped, lambda rejections: None, advance_checkpoint=False)
    assert "column a" in str(refused.value) and "Array(String)" in str(refused.value)
    assert SCHEMA.qualified_name in str(refused.value)
