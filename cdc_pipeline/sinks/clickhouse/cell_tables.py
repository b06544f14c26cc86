"""ClickHouse tables of cell tables (Cassandra): stamped cells merged by the engine, never read back to write.

The table is an `AggregatingMergeTree` ordered by the source's key columns: every change is one
inserted row of stamped cells (sinks/cell_merge/stamped_rows.py) and each column merges with
`max` (a scalar's `(*stamp, value)`), `maxMap` (a collection's elements) or `any` (`_key` and
`_partition`, the key's canonical texts). Background merges and `FINAL` reads apply the same
functions, so a batch is written without loading what the table holds: the engine does Cassandra's
reconciliation.

Shadowing and TTLs are evaluated when read, by two views: `<table>__merged` shows every row with
its visible values, `_version`, `_is_deleted` and `_live_until`; `<table>_current` the live rows.
Partition and range deletions are kept in `<table>__deletions`: a row arriving later in a deleted
range gets the deletion in its `_deleted_at`, and a deletion arriving later is written as a
`_deleted_at` row for each stored row it covers (the only read, of the deleting partitions' keys).

Data first, then the checkpoint (in the sink): a crash replays the batch, whose rows merge to the
same maxima.

Tables written by the earlier form (a JSON state per row, column `_cells`) are moved aside and
rewritten as stamped rows when the sink first meets them (`upgrade_state_table`,
`convert_state_table`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from clickhouse_connect.driver.client import Client

from cdc_pipeline.core.changes import RowChange
from cdc_pipeline.mapping.sink_types import (
    CELLS_COLUMN,
    DELETED_AT_COLUMN,
    DELETED_COLUMN,
    KEY_COLUMN,
    LIVE_UNTIL_COLUMN,
    LIVENESS_COLUMN,
    PARTITION_COLUMN,
    VERSION_COLUMN,
    SinkColumn,
    SinkTableLayout,
    TypeNotMappable,
)
from cdc_pipeline.sinks.base import bisect_failures
from cdc_pipeline.sinks.cell_merge.deletions import DELETION_COLUMN, DELETIONS_SUFFIX, TIMESTAMP_COLUMN
from cdc_pipeline.sinks.cell_merge.stamped_batch import StampedBatch, StoredKey
from cdc_pipeline.sinks.cell_merge.stamped_rows import (
    NO_TIME,
    TOMBSTONE_KEY,
    UNWRITTEN,
    collection_of_state,
    stamps_of_state,
)
from cdc_pipeline.sinks.cell_merge.state import RowState

Qualify = Callable[[str], str]
Quote = Callable[[str], str]

MERGED_VIEW_SUFFIX = "__merged"
# The earlier form's table while it is converted (see upgrade_state_table).
_UPGRADING_SUFFIX = "__state_form"
_STAMP = "Int64, UInt8, Int64"
_CONVERT_PAGE_ROWS = 20_000
_NO_TIME = str(NO_TIME)
_NOW = "toUnixTimestamp(now())"


def stamped_columns() -> tuple[str, ...]:
    """The bookkeeping columns of a stamped cell table, after the source columns."""
    return (DELETED_AT_COLUMN, LIVENESS_COLUMN, VERSION_COLUMN, KEY_COLUMN, PARTITION_COLUMN)


def live_condition(quote: Quote) -> str:
    """A row `<table>__merged` shows that the `_current` view shows: not deleted, not ended by TTLs."""
    until = quote(LIVE_UNTIL_COLUMN)
    return f"{quote(DELETED_COLUMN)} = 0 AND ({until} IS NULL OR {until} > {_NOW})"


# ClickHouse types that cannot be inside Nullable(...).
_NEVER_NULLABLE = ("Array(", "Map(", "Tuple(", "Nested(", "JSON", "Object(", "Variant(", "Dynamic")


def _value_type(layout: SinkTableLayout, column: SinkColumn) -> str:
    """The type of a cell's value beside its stamp: nullable, since a deleted or unwritten cell holds NULL."""
    sink_type = column.sink_type
    if sink_type.startswith(("Nullable(", "LowCardinality(Nullable(")):
        return sink_type
    if sink_type.startswith("LowCardinality(") and sink_type.endswith(")"):
        return f"LowCardinality(Nullable({sink_type[len('LowCardinality(') : -1]}))"
    if sink_type.startswith(_NEVER_NULLABLE):
        raise TypeNotMappable(
            f"table {layout.source_table}, column {column.name}: type {sink_type} cannot hold NULL, which a"
            " Cassandra cell table's deleted or unwritten cell needs; override it with a type ClickHouse allows"
            " inside Nullable(...) (e.g. String, holding JSON text)"
        )
    return f"Nullable({sink_type})"


def _column_type(layout: SinkTableLayout, column: SinkColumn) -> str:
    assert layout.cell_schema is not None
    if column.name in layout.key_columns:
        return column.sink_type  # the sorting key
    if layout.cell_schema.column(column.name).collection is not None:
        return f"SimpleAggregateFunction(maxMap, Tuple(Array(String), Array(Tuple({_STAMP}, String))))"
    return f"SimpleAggregateFunction(max, Tuple({_STAMP}, {_value_type(layout, column)}))"


def _column_default(layout: SinkTableLayout, column: SinkColumn) -> str:
    # Rows written before a column existed (ALTER TABLE ADD at the source) hold nothing for it.
    assert layout.cell_schema is not None
    if column.name in layout.key_columns or layout.cell_schema.column(column.name).collection is not None:
        return ""
    stamped = f"Tuple({_STAMP}, {_value_type(layout, column)})"
    return f" DEFAULT CAST(({_NO_TIME}, 0, {_NO_TIME}, NULL), '{_escaped(stamped)}')"


def _escaped(text: str) -> str:
    """`text` inside a single-quoted ClickHouse literal (types such as DateTime64(6, 'UTC') hold quotes)."""
    return text.replace("\\", "\\\\").replace("'", "\\'")


class _ViewExpressions:
    """The SQL of what a stamped row shows, column by column (shadowing and TTLs applied)."""

    def __init__(self, layout: SinkTableLayout, quote: Quote) -> None:
        assert layout.cell_schema is not None
        self.layout, self.quote = layout, quote
        self.schema = layout.cell_schema
        self.deleted_at = quote(DELETED_AT_COLUMN)

    def live_elements(self, name: str) -> str:
        """A collection's elements that no tombstone shadows (TTLs aside), in show order."""
        c = f"src.{self.quote(name)}"
        tombstone = f"if(notEmpty({c}.1) AND {c}.1[1] = '{TOMBSTONE_KEY}', {c}.2[1].1, {_NO_TIME})"
        horizon = f"greatest(src.{self.deleted_at}, {tombstone})"
        return f"arrayFilter((e, k) -> k != '{TOMBSTONE_KEY}' AND e.1 > {horizon} AND e.2 = 0, {c}.2, {c}.1)"

    def scalar_live(self, name: str) -> str:
        c = f"src.{self.quote(name)}"
        return f"({c}.1 > src.{self.deleted_at} AND {c}.2 = 0)"

    def shown(self, name: str, elements_alias: str) -> str:
        c = f"src.{self.quote(name)}"
        kind = self.schema.column(name).collection
        if kind is None:
            return f"if({self.scalar_live(name)} AND ({c}.3 = {_NO_TIME} OR {c}.3 > {_NOW}), {c}.4, NULL)"
        opening, closing = ("[", "]") if kind in ("list", "set") else ("{", "}")
        unexpired = f"arrayFilter(e -> e.3 = {_NO_TIME} OR e.3 > {_NOW}, {elements_alias})"
        return (
            f"if(empty({unexpired}), NULL,"
            f" concat('{opening}', arrayStringConcat(arrayMap(e -> e.4, {unexpired}), ','), '{closing}'))"
        )

    def merged_view(self, table: str) -> str:
        """`<table>__merged`: every row, what it shows, and the bookkeeping the sink reads."""
        quote = self.quote
        value_columns = [c for c in self.layout.column_names if c not in self.layout.key_columns]
        element_aliases = {
            name: quote(f"cdc elements {index}")
            for index, name in enumerate(value_columns)
            if self.schema.column(name).collection is not None
        }
        liveness = f"src.{quote(LIVENESS_COLUMN)}"
        lives = [f"if({liveness}.1 > src.{self.deleted_at}, [{liveness}.2], [])"]
        for name in value_columns:
            if name in element_aliases:
                lives.append(f"arrayMap(e -> e.3, {element_aliases[name]})")
            else:
                lives.append(f"if({self.scalar_live(name)}, [src.{quote(name)}.3], [])")
        lives_alias = quote("cdc lives")
        inner = ", ".join(["*", *(f"{self.live_elements(name)} AS {alias}" for name, alias in element_aliases.items())])
        inner += f", arrayConcat({', '.join(lives)}) AS {lives_alias}"
        shown = [
            f"src.{quote(c)} AS {quote(c)}"
            if c in self.layout.key_columns
            else f"{self.shown(c, element_aliases.get(c, ''))} AS {quote(c)}"
            for c in self.layout.column_names
        ]
        bookkeeping = [
            f"src.{quote(VERSION_COLUMN)} AS {quote(VERSION_COLUMN)}",
            f"toUInt8(empty({lives_alias})) AS {quote(DELETED_COLUMN)}",
            f"if(empty({lives_alias}) OR has({lives_alias}, {_NO_TIME}), NULL, arrayMax({lives_alias}))"
            f" AS {quote(LIVE_UNTIL_COLUMN)}",
            f"src.{quote(KEY_COLUMN)} AS {quote(KEY_COLUMN)}",
            f"src.{quote(PARTITION_COLUMN)} AS {quote(PARTITION_COLUMN)}",
        ]
        return f"SELECT {', '.join(shown + bookkeeping)} FROM (SELECT {inner} FROM {table} AS src FINAL) AS src"


def cell_table_ddl(
    qualify: Qualify, quote: Quote, layout: SinkTableLayout, view_name: str, dropping: list[str]
) -> list[str]:
    """The table, its deletions table and its views, brought up to `layout`; `dropping`: columns
    dropped at the source since the sink last looked (dropped here too, and added again empty if the
    source has a column of that name again)."""
    columns = [f"{quote(c.name)} {_column_type(layout, c)}{_column_default(layout, c)}" for c in layout.columns]
    columns += [
        f"{quote(DELETED_AT_COLUMN)} SimpleAggregateFunction(max, Int64)",
        f"{quote(LIVENESS_COLUMN)} SimpleAggregateFunction(max, Tuple(Int64, Int64))",
        f"{quote(VERSION_COLUMN)} SimpleAggregateFunction(max, UInt64)",
        # Functions of the key (`any` keeps the one value). The partition's text finds the rows a
        # partition or range deletion covers: a bloom filter skips the granules without it.
        f"{quote(KEY_COLUMN)} SimpleAggregateFunction(any, String)",
        f"{quote(PARTITION_COLUMN)} SimpleAggregateFunction(any, String)",
        f"INDEX cdc_partition_lookup {quote(PARTITION_COLUMN)} TYPE bloom_filter GRANULARITY 1",
    ]
    table = qualify(layout.table_name)
    # Ordered by the source's key, partition key first: rows of one partition sit together, and a
    # read by key (a user's, through the views) uses the primary index before FINAL merges.
    sorting_key = ", ".join(quote(k) for k in layout.key_columns)
    merged = qualify(layout.table_name + MERGED_VIEW_SUFFIX)
    source_columns = ", ".join(quote(c) for c in layout.column_names)
    return [
        f"CREATE TABLE IF NOT EXISTS {table} ({', '.join(columns)})"
        f" ENGINE = AggregatingMergeTree ORDER BY ({sorting_key}) SETTINGS allow_nullable_key = 1",
        f"CREATE TABLE IF NOT EXISTS {qualify(layout.table_name + DELETIONS_SUFFIX)}"
        f" ({quote(PARTITION_COLUMN)} String, {quote(DELETION_COLUMN)} String, {quote(TIMESTAMP_COLUMN)} Int64)"
        f" ENGINE = ReplacingMergeTree ORDER BY ({quote(PARTITION_COLUMN)}, {quote(DELETION_COLUMN)})",
        *(f"ALTER TABLE {table} DROP COLUMN IF EXISTS {quote(c)}" for c in dropping),
        # Columns added at the source since the table was made (Cassandra's ALTER TABLE ADD).
        *(
            f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {quote(c.name)} {_column_type(layout, c)}"
            f"{_column_default(layout, c)}"
            for c in layout.columns
            if c.name not in layout.key_columns
        ),
        # A type override is the operator's fix for values the mapped type refused: the column takes it.
        *(
            f"ALTER TABLE {table} MODIFY COLUMN {quote(c.name)} {_column_type(layout, c)}{_column_default(layout, c)}"
            for c in layout.columns
            if c.overridden and c.name not in layout.key_columns
        ),
        f"CREATE OR REPLACE VIEW {merged} AS {_ViewExpressions(layout, quote).merged_view(table)}",
        f"CREATE OR REPLACE VIEW {qualify(view_name)} AS SELECT {source_columns} FROM {merged}"
        f" WHERE {live_condition(quote)}",
    ]


class ClickHouseCellTableWriter:
    """Writes one batch of one cell table into its ClickHouse table: one stamped row per change."""

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
        self._column_names = [*layout.column_names, *stamped_columns()]

    def write(self, rows: list[list[Any]], changes: list[RowChange], reject: Callable[[RowChange, str], None]) -> None:
        """`rows`: the mapper's converted rows, beside their `changes`."""
        quote = self._quote
        batch = StampedBatch(self._schema, self._layout.column_names, rows, changes)
        table = self._qualify(self._layout.table_name)
        deletions_table = self._qualify(self._layout.table_name + DELETIONS_SUFFIX)
        stored_deletions: list[tuple[str, str]] = []
        if batch.partitions:
            stored_deletions = [
                (partition, text)
                for partition, text in self._client.query(
                    f"SELECT DISTINCT {quote(PARTITION_COLUMN)}, {quote(DELETION_COLUMN)} FROM {deletions_table}"
                    f" WHERE {quote(PARTITION_COLUMN)} IN {{partitions:Array(String)}}",
                    parameters={"partitions": batch.partitions},
                ).result_rows
            ]
        new_deletions = batch.deletions(stored_deletions)
        if new_deletions:
            self._client.insert(
                deletions_table,
                [list(deletion) for deletion in new_deletions],
                column_names=[PARTITION_COLUMN, DELETION_COLUMN, TIMESTAMP_COLUMN],
            )
        stored_keys: list[StoredKey] = []
        if batch.deleting_partitions:
            keys = ", ".join(f"any({quote(k)})" for k in self._schema.key_columns)
            stored_keys = [
                (key, partition, list(key_values))
                for key, partition, *key_values in self._client.query(
                    f"SELECT {quote(KEY_COLUMN)}, {quote(PARTITION_COLUMN)}, {keys} FROM {table}"
                    f" WHERE {quote(PARTITION_COLUMN)} IN {{deleting:Array(String)}}"
                    f" GROUP BY {quote(KEY_COLUMN)}, {quote(PARTITION_COLUMN)}",
                    parameters={"deleting": batch.deleting_partitions},
                ).result_rows
            ]
        lines, owners = batch.lines()
        for (key, partition, key_values), deleted_at, owner in batch.covered(stored_keys):
            lines.append(batch.builder.deletion_row(key_values, key, partition, deleted_at))
            owners.append([owner])

        def attempt(chunk: list[list[Any]]) -> None:
            self._client.insert(table, chunk, column_names=self._column_names)

        def refuse(changes: list[RowChange], error: str) -> None:
            for change in changes:
                reject(change, error)

        if lines:
            bisect_failures(lines, owners, attempt, refuse, self._is_data_error)


# -- the earlier form ------------------------------------------------------------------------------


def upgrade_state_table(client: Client, database: str, qualify: Qualify, layout: SinkTableLayout) -> bool:
    """Move a table of the earlier form (a JSON state per row) aside before the stamped table is
    made in its place; True when one waits to be converted by `convert_state_table`."""
    table, aside = layout.table_name, layout.table_name + _UPGRADING_SUFFIX
    if CELLS_COLUMN in _column_names(client, database, table):
        if _column_names(client, database, aside):
            raise RuntimeError(
                f"cell table {table}: both {table} and {aside} hold the earlier state form; keep one and drop the other"
            )
        client.command(f"RENAME TABLE {qualify(table)} TO {qualify(aside)}")
        # Its view read the state form; it is made again over the stamped table.
        client.command(f"DROP VIEW IF EXISTS {qualify(table + '_current')}")
    return bool(_column_names(client, database, aside))


def convert_state_table(client: Client, database: str, qualify: Qualify, quote: Quote, layout: SinkTableLayout) -> int:
    """Write every row of the moved-aside earlier form as a stamped row, then drop it; returns the
    rows converted. Safe to repeat after a crash: stamped rows merge to the same maxima."""
    assert layout.cell_schema is not None
    aside = qualify(layout.table_name + _UPGRADING_SUFFIX)
    present = set(_column_names(client, database, layout.table_name + _UPGRADING_SUFFIX))
    columns = [c.name for c in layout.columns if c.name in present]
    names = [*columns, CELLS_COLUMN, KEY_COLUMN, PARTITION_COLUMN]
    converter = _StateConverter(layout)
    converted = 0
    after = ("", "")
    while True:
        # Pages in key order: chdb cannot insert while a result streams.
        block = client.query(
            f"SELECT {', '.join(quote(n) for n in names)} FROM {aside} FINAL"
            f" WHERE ({quote(PARTITION_COLUMN)}, {quote(KEY_COLUMN)}) > ({{p:String}}, {{k:String}})"
            f" ORDER BY {quote(PARTITION_COLUMN)}, {quote(KEY_COLUMN)} LIMIT {_CONVERT_PAGE_ROWS}",
            parameters={"p": after[0], "k": after[1]},
        ).result_rows
        if not block:
            break
        stored = [dict(zip(names, values, strict=True)) for values in block]
        lines = [converter.row(row) for row in stored]
        client.insert(qualify(layout.table_name), lines, column_names=[*layout.column_names, *stamped_columns()])
        converted += len(lines)
        after = (stored[-1][PARTITION_COLUMN], stored[-1][KEY_COLUMN])
    client.command(f"DROP TABLE {aside}")
    return converted


class _StateConverter:
    """A row of the earlier form (its stored visible values and its JSON state) as a stamped row."""

    def __init__(self, layout: SinkTableLayout) -> None:
        assert layout.cell_schema is not None
        self.layout, self.schema = layout, layout.cell_schema

    def row(self, stored: dict[str, Any]) -> list[Any]:
        state = RowState.from_json(stored[CELLS_COLUMN])
        cells, liveness, deleted_at = stamps_of_state(state)
        line: list[Any] = [stored.get(name) for name in self.layout.key_columns]
        for column in self.layout.columns:
            name = column.name
            if name in self.layout.key_columns:
                continue
            kind = self.schema.column(name).collection
            if kind is not None:
                line.append(collection_of_state(kind, state.collections.get(name)))
            elif name not in cells:
                line.append(UNWRITTEN)
            else:
                # A kept cell is what the earlier form showed (states drop shadowed cells): its stored value.
                stamp = cells[name]
                line.append((*stamp, None if stamp[1] else stored.get(name)))
        return [*line, deleted_at, liveness, state.version, stored[KEY_COLUMN], stored[PARTITION_COLUMN]]


def _column_names(client: Client, database: str, table: str) -> list[str]:
    rows = client.query(
        "SELECT name FROM system.columns WHERE database = {db:String} AND table = {t:String} ORDER BY position",
        parameters={"db": database, "t": table},
    ).result_rows
    return [row[0] for row in rows]
