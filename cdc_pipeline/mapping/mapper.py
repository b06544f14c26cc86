"""The map step: masked changes -> rows in a sink's types, one bulk-ready list per table."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

from cdc_pipeline.config.models import TypeOverride
from cdc_pipeline.core.cells import CollectionWrite
from cdc_pipeline.core.changes import ChangeBatch, ChangeOp, Rejection, RowChange
from cdc_pipeline.core.checkpoint import Checkpoint
from cdc_pipeline.core.schema import TableSchema
from cdc_pipeline.core.schema_changes import SchemaChange, ShapeSource
from cdc_pipeline.core.sink_names import sink_table_name
from cdc_pipeline.mapping.sink_types import (
    ColumnMapper,
    SinkColumn,
    SinkTableLayout,
    TypeNotMappable,
    ValueNotMappable,
    bookkeeping_columns,
    convert_for_column,
)


@dataclass
class MappedTable:
    layout: SinkTableLayout
    # How far the sink may change its table to match the layout (core/schema_changes.py).
    shape_source: ShapeSource = ShapeSource.ROWS
    # Each row: the converted column values, then _version, then _is_deleted (0/1).
    rows: list[list[Any]] = field(default_factory=list)
    # The masked change behind each row, for the DLQ if the sink refuses the row.
    changes: list[RowChange] = field(default_factory=list)
    # Source changes folded into a row (id of its change -> count per op) where a key changed more
    # than once in the batch: an insert then an update is one row written, two changes delivered.
    folded_ops: dict[int, Counter[str]] = field(default_factory=dict)

    def add(self, values: list[Any], change: RowChange) -> None:
        """A row of converted column values, completed with `_version` and `_is_deleted`."""
        values.append(change.version)
        values.append(1 if change.op is ChangeOp.DELETE else 0)
        self.rows.append(values)
        self.changes.append(change)

    def delivered_ops(self, change: RowChange) -> Counter[str]:
        return self.folded_ops.get(id(change)) or Counter({change.op.value: 1})


@dataclass
class MappedBatch:
    sink: str
    source: str
    start: Checkpoint
    end: Checkpoint
    last_commit_ts: int | None
    tables: dict[str, MappedTable] = field(default_factory=dict)
    rejections: list[Rejection] = field(default_factory=list)
    schema_changes: list[SchemaChange] = field(default_factory=list)
    # Tables this sink cannot take in their batch's shape (a type with no mapping), and why: their
    # rows are in `rejections`, and their schema changes wait until an operator's fix.
    refused_tables: dict[str, str] = field(default_factory=dict)
    # ChangeBatch.table_owner: who holds the tables in the sink, when not the source itself.
    table_owner: str | None = None

    @property
    def owner(self) -> str:
        return self.table_owner or self.source

    @property
    def row_count(self) -> int:
        return sum(len(table.rows) for table in self.tables.values())


class TypeMapper:
    """Maps source schemas and values for one sink, honouring the config's type overrides."""

    def __init__(self, sink_name: str, map_column: ColumnMapper, overrides: list[TypeOverride]) -> None:
        """`map_column`: the sink kind's own mapping (sinks/registry.py gives a configured sink's)."""
        self.sink_name = sink_name
        self._column_mapper = map_column
        self._overrides = {(o.table, o.column): o.type for o in overrides if o.sink is None or o.sink == sink_name}

    def layout(self, schema: TableSchema) -> SinkTableLayout:
        reserved = set(bookkeeping_columns(schema.merges_cells)) & set(schema.column_names)
        if reserved:
            # Held alone (its rows to the DLQ, naming why); the source's other tables go on.
            raise TypeNotMappable(
                f"table {schema.qualified_name}: column(s) {', '.join(sorted(reserved))} bear the name of a column"
                " the sinks add to every table; leave the table out, or rename the column at the source"
            )
        columns: list[SinkColumn] = []
        for column in schema.columns:
            override = self._overrides.get((schema.qualified_name, column.name))
            is_key = column.name in schema.key_columns
            if schema.merges_cells and not is_key:
                # A cell table's row can exist with any non-key column never written (or deleted).
                column = replace(column, nullable=True)
            try:
                if schema.merges_cells and column.data_type == "counter":
                    raise TypeNotMappable(
                        "counter columns are not replicated: their changes are increments, not values, and"
                        " cannot be merged exactly; leave the table out or drop the column from replication"
                    )
                columns.append(self._column_mapper(column, is_key, override))
            except TypeNotMappable as error:
                raise TypeNotMappable(f"table {schema.qualified_name}, column {column.name}: {error}") from None
        return SinkTableLayout(
            schema.qualified_name,
            sink_table_name(schema.qualified_name),
            tuple(columns),
            schema.key_columns,
            schema if schema.merges_cells else None,
        )

    def map_batch(self, batch: ChangeBatch) -> MappedBatch:
        if not batch.masked:
            raise RuntimeError("the map step only takes masked batches")
        mapped = MappedBatch(self.sink_name, batch.source, batch.start, batch.end, batch.last_commit_ts)
        mapped.table_owner = batch.table_owner
        mapped.schema_changes = batch.schema_changes
        for qualified, table in batch.tables.items():
            try:
                layout = self.layout(table.schema)
            except TypeNotMappable as error:
                mapped.rejections.extend(self._reject(qualified, change, str(error)) for change in table.changes)
                mapped.refused_tables[qualified] = f"{self.sink_name}: {error}"
                continue
            mapped.tables[qualified] = self._map_table(layout, table.changes, mapped.rejections)
            mapped.tables[qualified].shape_source = table.shape_source
        return mapped

    def _reject(self, qualified: str, change: RowChange, error: str) -> Rejection:
        return Rejection.of_change("map", qualified, change, error, self.sink_name)

    def _map_table(self, layout: SinkTableLayout, changes: list[RowChange], rejections: list[Rejection]) -> MappedTable:
        if layout.cell_schema is not None:
            return self._map_cell_table(layout, layout.cell_schema, changes, rejections)
        table = MappedTable(layout)
        names = layout.column_names
        converting = [
            (index, column.name, column.convert) for index, column in enumerate(layout.columns) if column.convert
        ]
        key_columns = layout.key_columns
        # Later changes to a key supersede earlier ones within the batch: only the last is written.
        latest: dict[tuple[Any, ...], RowChange] = {}
        folded: dict[tuple[Any, ...], Counter[str]] = {}
        for change in changes:
            key = tuple([change.values[k] for k in key_columns])
            earlier = latest.get(key)
            if earlier is not None:
                counts = folded.get(key) or Counter({earlier.op.value: 1})
                counts[change.op.value] += 1
                folded[key] = counts
            latest[key] = change
        for key, change in latest.items():
            if None in key:
                rejections.append(
                    self._reject(layout.source_table, change, f"key column(s) {list(key_columns)} hold NULL")
                )
                continue
            values = change.values
            row = [values[name] for name in names]
            try:
                for index, name, convert in converting:
                    row[index] = convert_for_column(name, convert, row[index])
            except ValueNotMappable as error:
                rejections.append(self._reject(layout.source_table, change, f"{self.sink_name}: {error}"))
                continue
            table.add(row, change)
            if key in folded:
                table.folded_ops[id(change)] = folded[key]
        return table

    def _map_cell_table(
        self, layout: SinkTableLayout, schema: TableSchema, changes: list[RowChange], rejections: list[Rejection]
    ) -> MappedTable:
        """Check a cell table's changes; every one goes to the sink, which merges them in order.

        Changes are not folded per key (each merges) and absent columns are not read. A row holds
        the converted values the change carries (None where absent): the sink does not write it,
        it converts the merged values, but a value that cannot map is refused here, column named.
        """
        table = MappedTable(layout)
        check = _CellChangeCheck(layout, schema)
        for change in changes:
            try:
                row = check.row(change)
            except ValueNotMappable as error:
                rejections.append(self._reject(layout.source_table, change, f"{self.sink_name}: {error}"))
                continue
            table.add(row, change)
        return table


class _CellChangeCheck:
    """What `_map_cell_table` checks of each change, with the table's facts looked up once: a change
    carries only the columns it wrote, so only those are visited."""

    def __init__(self, layout: SinkTableLayout, schema: TableSchema) -> None:
        self._schema = schema
        self._width = len(layout.column_names)
        self._index = {name: index for index, name in enumerate(layout.column_names)}
        self._converters = {column.name: column.convert for column in layout.columns}
        self._keys = frozenset(schema.key_columns)
        self._masked_as_null = frozenset(column.name for column in schema.columns if column.masked_as_null)

    def row(self, change: RowChange) -> list[Any]:
        schema, values = self._schema, change.values
        cells = change.cells
        if cells is None:
            raise ValueNotMappable("a change of a cell table carries no cell write times")
        needed = schema.partition_key if cells.is_partition_level else schema.key_columns
        missing = [k for k in needed if values.get(k) is None]
        if missing:
            raise ValueNotMappable(f"key column(s) {missing} missing or NULL")
        unknown = [name for name in values if name not in self._index]
        if unknown:
            raise ValueNotMappable(f"column(s) {unknown} are not in the table's schema")
        row: list[Any] = [None] * self._width
        for name, value in values.items():
            is_collection = isinstance(value, CollectionWrite)
            if not is_collection and name not in self._keys and name not in cells.cells:
                raise ValueNotMappable(f"column {name}: a value without a cell write time")
            if name in self._masked_as_null:
                continue  # a placeholder the sink never shows
            if is_collection:
                # The sink shows a collection as JSON text: check the elements' text converts.
                value = json.dumps([[e.path, e.value] for e in value.elements], ensure_ascii=False)
            row[self._index[name]] = convert_for_column(name, self._converters[name], value)
        return row
