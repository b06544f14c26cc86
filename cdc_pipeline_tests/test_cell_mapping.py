"""The map step for cell tables (Cassandra): each change's written columns are checked and converted,
and a change that cannot go to the sink is refused naming why, with the rest of the batch going on."""

from __future__ import annotations

import datetime as dt

from cdc_pipeline.core.cells import CellChange, CellWrite, CollectionWrite, ElementWrite
from cdc_pipeline.core.changes import ChangeBatch, ChangeOp, RowChange, TableChanges
from cdc_pipeline.core.checkpoint import Checkpoint
from cdc_pipeline.core.schema import ColumnSchema, TableSchema
from cdc_pipeline.mapping.mapper import TypeMapper
from cdc_pipeline.sinks.registry import sink_kind
from cdc_pipeline.sources.cassandra.positions import CommitLogPosition

SCHEMA = TableSchema(
    "ks",
    "events",
    (
        ColumnSchema("k", "text", "text", False),
        ColumnSchema("c", "int", "int", False),
        ColumnSchema("note", "text", "text", True),
        ColumnSchema("at", "timestamp", "timestamp", True),
        ColumnSchema("secret", "text", "text", True, masked_as_null=True),
        ColumnSchema("attrs", "json", "map<text, int>", True, collection="map"),
    ),
    ("k", "c"),
    partition_key_length=1,
)
AT = dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.UTC)


def _change(values: dict[str, object], written: tuple[str, ...]) -> RowChange:
    cells = CellChange(cells={column: CellWrite(10) for column in written})
    return RowChange(ChangeOp.UPDATE, values, 10, "cdc:1:10", 0, cells)


def _mapped(changes: list[RowChange], kind: str) -> tuple[list[list[object]], list[str]]:
    start = Checkpoint(CommitLogPosition(1, 0))
    batch = ChangeBatch("cass", start, start, {SCHEMA.qualified_name: TableChanges(SCHEMA, changes)}, masked=True)
    mapped = TypeMapper("sink", sink_kind(kind).map_column, []).map_batch(batch)
    table = mapped.tables.get(SCHEMA.qualified_name)
    return (table.rows if table else []), [rejection.error for rejection in mapped.rejections]


def test_the_columns_a_change_wrote_are_converted_in_the_layouts_order_the_rest_left_empty() -> None:
    attrs = CollectionWrite("map", None, (ElementWrite("size", 3, 10),))
    change = _change({"k": "a", "c": 1, "attrs": attrs, "note": "hi", "secret": "s3cr3t"}, ("note", "secret"))
    for kind in ("clickhouse", "postgres"):
        rows, refused = _mapped([change], kind)
        assert refused == [], kind
        (row,) = rows
        # k, c, note, at (not written), secret (masked as null: never shown), attrs (checked as text);
        # each sink has its own form of an int (PostgreSQL's COPY takes text)
        assert [row[0], str(row[1]), row[2], row[3], row[4]] == ["a", "1", "hi", None, None], kind
        assert row[5] is not None, kind


def test_a_change_that_cannot_go_to_the_sink_is_refused_naming_why_and_the_others_go_on() -> None:
    good = _change({"k": "a", "c": 1, "at": AT}, ("at",))
    no_write_time = _change({"k": "a", "c": 2, "note": "x"}, ())
    unknown = _change({"k": "a", "c": 3, "gone": 1}, ("gone",))
    no_key = _change({"k": "a", "note": "x"}, ("note",))
    rows, refused = _mapped([good, no_write_time, unknown, no_key], "postgres")
    assert len(rows) == 1
    assert [reason.split(": ", 1)[1] for reason in refused] == [
        "column note: a value without a cell write time",
        "column(s) ['gone'] are not in the table's schema",
        "key column(s) ['c'] missing or NULL",
    ]
