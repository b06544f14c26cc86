"""A Cassandra row read by the initial load (values with the `WRITETIME()` and `TTL()` of every cell)
turned into the cell writes a streamed change would carry (core/cells.py); see snapshot_reader.py
for what CQL cannot show and how the reader stands in for it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cdc_pipeline.core.cells import CellChange, CellWrite, CollectionWrite, ElementWrite
from cdc_pipeline.core.changes import ChangeOp, Rejection, RowChange
from cdc_pipeline.core.schema import ColumnSchema, TableSchema
from cdc_pipeline.sources.cassandra.catalog import quote
from cdc_pipeline.sources.cassandra.changes import NOT_REPLAYABLE, PARSE, without_value
from cdc_pipeline.sources.cassandra.cql_types import (
    CqlType,
    UdtFields,
    ValueParser,
    driver_value_parser,
    element_path,
    reader_json,
)

LIST_REASON = (
    "non-frozen list column {column!r} is not loaded by the initial load: CQL does not show its element"
    " paths (timeuuids), and a copy under other paths would duplicate the elements streamed from the"
    " handoff on; the row's other columns were loaded, and later changes of the list stream as usual"
)


@dataclass(frozen=True)
class ReadColumn:
    """A non-key column as the chunk query selects it: the value, then its write times and TTLs."""

    column: ColumnSchema
    cql: CqlType
    # For a non-frozen UDT: its fields (name, type), each selected with WRITETIME and TTL of its own.
    fields: tuple[tuple[str, CqlType], ...] = ()

    @property
    def width(self) -> int:
        return 1 + 2 * max(1, len(self.fields))

    def selectors(self) -> list[str]:
        name = quote(self.column.name)
        if self.column.collection == "udt":
            # WRITETIME of a whole UDT lists one entry per field, null for unset fields, without
            # naming them: one selector per field is unambiguous.
            per_field = [f"{kind}({name}.{quote(field)})" for field, _ in self.fields for kind in ("WRITETIME", "TTL")]
            return [name, *per_field]
        # A set's or map's WRITETIME/TTL is a list, one entry per element in the value's order.
        return [name, f"WRITETIME({name})", f"TTL({name})"]


@dataclass
class RowCells:
    """What the non-key columns of one row (or static row) read as."""

    values: dict[str, Any]
    cells: dict[str, CellWrite]
    stamps: list[int]
    expiries: list[int | None]
    lists: dict[str, Any]  # list columns holding a value: not loaded (see the module docstring)


class RowReader:
    """Turns the selected values, write times and TTLs of a row's non-key columns into cell writes."""

    def __init__(self, table: str, udts: UdtFields) -> None:
        self._table = table
        self._udts = udts
        self._parsers: dict[str, ValueParser] = {}

    def _parser(self, column: ColumnSchema) -> ValueParser:
        if column.name not in self._parsers:
            self._parsers[column.name] = driver_value_parser(column.column_type, self._udts)
        return self._parsers[column.name]

    def cells(self, columns: list[ReadColumn], selected: Sequence[Any], now: int) -> RowCells:
        read = RowCells({}, {}, [], [], {})
        offset = 0
        for column in columns:
            part = selected[offset : offset + column.width]
            offset += column.width
            value = part[0]
            if value is None:
                continue  # null: no cell to load (a first load needs no tombstone)
            name = column.column.name
            try:
                self._column(read, column, value, part[1:], now)
            except (ValueError, TypeError, ArithmeticError) as error:
                # The message names the column and the problem, never the value (run logs are not masked).
                raise ValueError(f"column {name!r}: {type(error).__name__}: {without_value(error)}") from None
        return read

    def _column(self, read: RowCells, column: ReadColumn, value: Any, meta: Sequence[Any], now: int) -> None:
        name, kind = column.column.name, column.column.collection
        if kind is None:
            timestamp, ttl = int(meta[0]), meta[1]
            expires = now + int(ttl) if ttl else None
            read.values[name] = self._parser(column.column)(value)
            read.cells[name] = CellWrite(timestamp, expires)
            read.stamps.append(timestamp)
            read.expiries.append(expires)
            return
        elements = self._elements(column, value, meta, now)
        read.stamps += [e.timestamp for e in elements]
        read.expiries += [e.expires_at for e in elements]
        if kind == "list":
            read.lists[name] = self._parser(column.column)(value)
        elif elements:
            read.values[name] = CollectionWrite(kind, None, tuple(elements))  # type: ignore[arg-type]

    def _elements(self, column: ReadColumn, value: Any, meta: Sequence[Any], now: int) -> list[ElementWrite]:
        kind, cql, udts = column.column.collection, column.cql, self._udts
        if kind == "udt":
            found = []
            for index, ((field, field_type), field_value) in enumerate(zip(column.fields, value, strict=False)):
                timestamp, ttl = meta[2 * index], meta[2 * index + 1]
                if field_value is None or timestamp is None:
                    continue  # the sinks show a UDT as the fields that hold a value
                found.append(
                    ElementWrite(field, reader_json(field_value, field_type, udts), int(timestamp), expiry(now, ttl))
                )
            return found
        stamps, ttls = meta[0] or [], meta[1] or []
        items: list[tuple[Any, Any]]
        if kind == "map":
            key_type, value_type = cql.parameters
            items = [(reader_json(k, key_type, udts), reader_json(v, value_type, udts)) for k, v in value.items()]
        elif kind == "set":
            items = [(reader_json(element, cql.parameters[0], udts), None) for element in value]
        else:  # list: only the write times matter (liveness); the values are not loaded
            items = [(None, None) for _ in value]
        if len(stamps) != len(items):
            raise ValueError(f"WRITETIME() gave {len(stamps)} write times for {len(items)} elements")
        return [
            ElementWrite(element_path(path), element_value, int(stamp), expiry(now, ttl))
            for (path, element_value), stamp, ttl in zip(items, stamps, ttls or [None] * len(items), strict=True)
        ]


def expiry(now: int, ttl: Any) -> int | None:
    return now + int(ttl) if ttl else None


def non_key(schema: TableSchema) -> list[str]:
    return [name for name in schema.column_names if name not in schema.key_columns]


def position(schema: TableSchema) -> str:
    return f"snapshot:{schema.qualified_name}"


def row_change(schema: TableSchema, key: dict[str, Any], read: RowCells) -> RowChange:
    """An INSERT of the row's live cells. Its liveness (not readable through CQL) is no newer than its
    oldest cell, so it beats nothing the node's own liveness would not, and expires with the last cell
    when all of them expire (a row inserted USING TTL); a row of nulls only gets a liveness at 0."""
    version = max(read.stamps, default=0)
    all_expire = bool(read.expiries) and all(e is not None for e in read.expiries)
    liveness = CellWrite(
        min(read.stamps, default=0),
        max(e for e in read.expiries if e is not None) if all_expire else None,
    )
    return RowChange(
        ChangeOp.INSERT,
        {**key, **read.values},
        version,
        position(schema),
        version // 1_000_000,
        CellChange(read.cells, liveness),
    )


def static_change(schema: TableSchema, partition_key: dict[str, Any], read: RowCells) -> RowChange:
    """The partition's static cells. No liveness: a `<table>_static` row exists while one of its
    static columns holds a value, which is also how the source's rows of it are listed."""
    version = max(read.stamps, default=0)
    return RowChange(
        ChangeOp.UPDATE,
        {**partition_key, **read.values},
        version,
        position(schema),
        version // 1_000_000,
        CellChange(read.cells),
    )


def list_rejections(schema: TableSchema, key: dict[str, Any], read: RowCells) -> list[Rejection]:
    version = max(read.stamps, default=0)
    return [
        Rejection(PARSE, schema.qualified_name, ChangeOp.INSERT,
                  f"{schema.qualified_name}: {LIST_REASON.format(column=column)}",
                  position(schema), version, {**key, column: value}, not_replayable=NOT_REPLAYABLE)
        for column, value in read.lists.items()
    ]  # fmt: skip
