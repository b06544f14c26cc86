"""ClickHouse tables of cell tables (Cassandra): merged states, read with FINAL, rewritten whole.

`ReplacingMergeTree(_version)` without the is_deleted parameter: a deleted row's state must stay
readable, to shadow older writes that arrive later. A merge that only added an older cell keeps
`_version`; of equal versions ReplacingMergeTree keeps the last inserted, which is the newer merge.
The table is ordered by (`_partition`, `_key`), so loading a batch's rows and partitions reads
only their index granules. Data first, then the checkpoint (in the sink): a crash replays the
batch, whose merge then finds the same states and deletions and writes the same rows again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from clickhouse_connect.driver.client import Client

from cdc_pipeline.core.changes import RowChange
from cdc_pipeline.mapping.sink_types import (
    CELL_BOOKKEEPING,
    CELLS_COLUMN,
    DELETED_COLUMN,
    EXPIRY_COLUMN,
    KEY_COLUMN,
    LIVE_UNTIL_COLUMN,
    PARTITION_COLUMN,
    VERSION_COLUMN,
    SinkTableLayout,
)
from cdc_pipeline.sinks.base import bisect_failures
from cdc_pipeline.sinks.cell_merge.table_merge import (
    DELETION_COLUMN,
    DELETIONS_SUFFIX,
    TIMESTAMP_COLUMN,
    CellTableMerge,
    MergedRow,
)

Qualify = Callable[[str], str]
Quote = Callable[[str], str]


def _string_literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def live_condition(quote: Quote) -> str:
    """A row the `_current` view shows: not deleted, and not ended by TTLs (evaluated now)."""
    until = quote(LIVE_UNTIL_COLUMN)
    return f"{quote(DELETED_COLUMN)} = 0 AND ({until} IS NULL OR {until} > toUnixTimestamp(now()))"


def cell_table_ddl(
    qualify: Qualify, quote: Quote, layout: SinkTableLayout, view_name: str, dropping: list[str]
) -> list[str]:
    """The table, its deletions table and its `_current` view, brought up to `layout`; `dropping`:
    columns dropped at the source since the sink last looked (dropped here too, and added again
    empty if the source has a column of that name again)."""
    columns = [f"{quote(c.name)} {c.sink_type}" for c in layout.columns]
    columns += [
        f"{quote(VERSION_COLUMN)} UInt64",
        f"{quote(DELETED_COLUMN)} UInt8",
        f"{quote(CELLS_COLUMN)} String",
        f"{quote(KEY_COLUMN)} String",
        f"{quote(PARTITION_COLUMN)} String",
        f"{quote(EXPIRY_COLUMN)} String",
        f"{quote(LIVE_UNTIL_COLUMN)} Nullable(Int64)",
    ]
    table = qualify(layout.table_name)
    # A value whose TTL has passed shows as NULL. The source column is named through the table's
    # alias: an expression aliased to its own column's name would otherwise refer to itself.
    expiry = quote(EXPIRY_COLUMN)
    shown = [
        quote(c)
        if c in layout.key_columns
        else f"if(ifNull(JSONExtract({expiry}, {_string_literal(c)}, 'Nullable(Int64)') <= toUnixTimestamp(now()), 0),"
        f" NULL, src.{quote(c)}) AS {quote(c)}"
        for c in layout.column_names
    ]
    return [
        f"CREATE TABLE IF NOT EXISTS {table} ({', '.join(columns)})"
        f" ENGINE = ReplacingMergeTree({quote(VERSION_COLUMN)})"
        f" ORDER BY ({quote(PARTITION_COLUMN)}, {quote(KEY_COLUMN)})",
        f"CREATE TABLE IF NOT EXISTS {qualify(layout.table_name + DELETIONS_SUFFIX)}"
        f" ({quote(PARTITION_COLUMN)} String, {quote(DELETION_COLUMN)} String, {quote(TIMESTAMP_COLUMN)} Int64)"
        f" ENGINE = ReplacingMergeTree ORDER BY ({quote(PARTITION_COLUMN)}, {quote(DELETION_COLUMN)})",
        *(f"ALTER TABLE {table} DROP COLUMN IF EXISTS {quote(c)}" for c in dropping),
        # Columns added at the source since the table was made (Cassandra's ALTER TABLE ADD): cells
        # written before hold nothing for them, so NULL is what Cassandra shows too.
        *(
            f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {quote(c.name)} {c.sink_type}"
            for c in layout.columns
            if c.name not in layout.key_columns
        ),
        f"CREATE OR REPLACE VIEW {qualify(view_name)} AS SELECT {', '.join(shown)}"
        f" FROM {table} AS src FINAL WHERE {live_condition(quote)}",
    ]


class ClickHouseCellTableWriter:
    """Merges one batch of one cell table into its ClickHouse table."""

    def __init__(
        self,
        client: Client,
        qualify: Qualify,
        quote: Quote,
        layout: SinkTableLayout,
        is_data_error: Callable[[Exception], bool],
    ) -> None:
        assert layout.cell_schema is not None
        self._client = client
        self._qualify = qualify
        self._quote = quote
        self._layout = layout
        self._schema = layout.cell_schema
        self._is_data_error = is_data_error

    def write(self, changes: list[RowChange], reject: Callable[[RowChange, str], None]) -> None:
        layout, quote = self._layout, self._quote
        merge = CellTableMerge(self._schema, changes)
        table = self._qualify(layout.table_name)
        deletions_table = self._qualify(layout.table_name + DELETIONS_SUFFIX)
        key, partition = quote(KEY_COLUMN), quote(PARTITION_COLUMN)
        rows = self._client.query(
            f"SELECT {key}, {quote(CELLS_COLUMN)} FROM {table} FINAL"
            f" WHERE {partition} IN {{partitions:Array(String)}}"
            f" AND ({key} IN {{keys:Array(String)}} OR {partition} IN {{deleting:Array(String)}})",
            parameters={"partitions": merge.partitions, "keys": merge.keys, "deleting": merge.deleting_partitions},
        ).result_rows
        stored_states: dict[str, str] = {row[0]: row[1] for row in rows}
        stored_deletions = self._client.query(
            f"SELECT DISTINCT {partition}, {quote(DELETION_COLUMN)} FROM {deletions_table}"
            f" WHERE {partition} IN {{partitions:Array(String)}}",
            parameters={"partitions": merge.partitions},
        ).result_rows
        result = merge.merge(stored_states, [(p, d) for p, d in stored_deletions])
        if result.new_deletions:
            self._client.insert(
                deletions_table,
                [[p, d.to_json(), d.timestamp] for p, d in result.new_deletions],
                column_names=[PARTITION_COLUMN, DELETION_COLUMN, TIMESTAMP_COLUMN],
            )

        def refuse(row: MergedRow, error: str) -> None:
            for change in row.changes:
                reject(change, error)

        lines, merged = result.lines(self._line, refuse)
        column_names = [*layout.column_names, VERSION_COLUMN, DELETED_COLUMN, *CELL_BOOKKEEPING]

        def attempt(chunk: list[list[Any]]) -> None:
            self._client.insert(table, chunk, column_names=column_names)

        if lines:
            bisect_failures(lines, merged, attempt, refuse, self._is_data_error)

    def _line(self, row: MergedRow) -> list[Any]:
        line: list[Any] = [column.converted(row.values[column.name]) for column in self._layout.columns]
        return [
            *line,
            row.version,
            1 if row.is_deleted else 0,
            row.state,
            row.key,
            row.partition,
            row.expiry,
            row.live_until,
        ]
