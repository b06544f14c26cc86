"""Turns the binlog's row events into row changes of the selected tables, in the shape their table
map gives and numbered with their versions; a row that cannot be applied becomes a rejection.

The transaction being read lives here too, since its GTID numbers the versions (resume_by: gtid),
and so does the error for an event that cannot be decoded, which the batch reader raises as well.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from pymysqlreplication.row_event import DeleteRowsEvent, RowsEvent, TableMapEvent, UpdateRowsEvent, WriteRowsEvent

from cdc_pipeline.core.changes import ChangeOp, Rejection, RowChange, TableChanges
from cdc_pipeline.core.schema import TableSchema, qualify
from cdc_pipeline.sources.mysql.catalog import MySqlCatalog
from cdc_pipeline.sources.mysql.gtid import Gtid, gtid_row_version
from cdc_pipeline.sources.mysql.library_values import ValueFix, apply_none_sources, value_normalisers
from cdc_pipeline.sources.mysql.positions import BinlogPosition, row_version
from cdc_pipeline.sources.mysql.row_decoder import CompiledRowDecoder
from cdc_pipeline.sources.mysql.table_map_shape import table_map_shape


class BinlogDecodeError(RuntimeError):
    """An event the reader must not skip cannot be decoded; the message names its position."""


class Transaction:
    """The transaction being read: its GTID and the rows it has changed so far."""

    def __init__(self, last_gtid: Gtid | None) -> None:
        self.gtid = last_gtid
        self.rows_seen = 0
        self._domain = last_gtid.domain if last_gtid is not None else None

    def begin(self, gtid: Gtid, single_domain: bool) -> None:
        if single_domain:
            if self._domain is not None and gtid.domain != self._domain:
                raise BinlogDecodeError(
                    f"GTID {gtid} is in domain {gtid.domain}, after domain {self._domain}: resume_by: gtid supports"
                    " one replication domain per source"
                )
            self._domain = gtid.domain
        self.gtid = gtid
        self.rows_seen = 0


class RowEventTranslator:
    """Turns the row events of one binlog dump into RowChanges, or Rejections, of the selected tables."""

    def __init__(self, catalog: MySqlCatalog, compiled_decoder: bool, gtid_versions: bool) -> None:
        self._catalog = catalog
        self._use_compiled_decoder = compiled_decoder
        # Versions from GTID sequence numbers (resume_by: gtid) instead of binlog offsets.
        self._gtid_versions = gtid_versions
        self._normaliser_cache: dict[str, tuple[TableSchema, list[tuple[str, ValueFix]]]] = {}
        self._decoders: dict[tuple[int, str], tuple[TableSchema, CompiledRowDecoder | None]] = {}
        # The shape of each table map's rows (table id -> the columns' nullability as the map says,
        # and the schema made of it): the binlog's own description, which may be older than the catalog.
        self._null_bitmasks: dict[int, bytes] = {}
        self._shapes: dict[int, tuple[list[Any], bytes, TableSchema | None, TableSchema]] = {}

    def remember_table_map(self, event: TableMapEvent) -> None:
        """Keep the table map's nullability: the rows events after it are written in its shape."""
        self._null_bitmasks[event.table_id] = bytes(event.null_bitmask)

    def forget_table_maps(self) -> None:
        """Table ids name table maps of one dump; a new one may reuse them for other tables."""
        self._null_bitmasks.clear()
        self._shapes.clear()
        self._decoders.clear()

    def _normalisers(self, schema: TableSchema) -> list[tuple[str, ValueFix]]:
        cached = self._normaliser_cache.get(schema.qualified_name)
        if cached is None or cached[0] is not schema:
            cached = (schema, value_normalisers(schema))
            self._normaliser_cache[schema.qualified_name] = cached
        return cached[1]

    def parse_rows_event(
        self,
        event: RowsEvent,
        log_file: str,
        transaction: Transaction,
        tables: dict[str, TableChanges],
        rejections: list[Rejection],
    ) -> int:
        database, table_name = event.schema, event.table
        if not self._catalog.selects(database, table_name):
            return 0
        qualified = qualify(database, table_name)
        # The wrapper's event_size counts the header and checksum too: the event starts here.
        event_start = event.packet.log_pos - event.packet.event_size
        position = f"{log_file}:{event_start}"
        version_of = self.version_numbering(log_file, event_start, transaction, position)
        schema = self._rows_shape(event, database, table_name, position)
        problem = _table_problem(schema, qualified)
        decoder = None
        if self._use_compiled_decoder and problem is None and schema is not None:
            decoder = self._compiled_decoder(event, schema)
        decoded_rows: Iterable[dict[str, Any]]
        if decoder is not None:
            try:
                decoded_images = decoder.decode(event)
            except (ValueError, IndexError, struct.error) as error:  # a malformed image or text in a wrong charset
                raise BinlogDecodeError(f"cannot decode rows of {qualified} at {position}: {error}") from error
            decoded_rows = _rows_from_images(event, decoded_images)
            fixes: list[tuple[str, ValueFix]] = []
        else:
            decoded_rows = _decoded_rows(event, position)
            fixes = self._normalisers(schema) if schema is not None else []
        rows = 0
        for row_index, row in enumerate(decoded_rows):
            rows += 1
            version = version_of(row_index)
            images = _row_images(event, row, schema.key_columns if schema else ())
            if problem is not None or schema is None:
                for op, values, _ in images:
                    rejections.append(Rejection("parse", qualified, op, problem or "", position, version, values))
                continue
            changes = tables.setdefault(qualified, TableChanges(schema)).changes
            for op, values, none_sources in images:
                if none_sources:
                    unrepresentable = apply_none_sources(values, none_sources)
                    if unrepresentable:
                        rejections.append(Rejection("parse", qualified, op, unrepresentable, position, version, values))
                        continue
                for column, fix in fixes:
                    values[column] = fix(values[column])
                changes.append(RowChange(op, values, version, position, event.timestamp))
        return rows

    def _rows_shape(self, event: RowsEvent, database: str, table_name: str, position: str) -> TableSchema | None:
        """The shape the event's rows were written in: the table map's (binlog_row_metadata=FULL),
        which is the catalog's own schema object whenever the two agree."""
        catalog = self._catalog.table(database, table_name)
        null_bitmask = self._null_bitmasks.get(event.table_id)
        if null_bitmask is None:
            raise BinlogDecodeError(f"row event at {position} for {database}.{table_name} without its table map")
        cached = self._shapes.get(event.table_id)
        # The library keeps one column list per table map: the same list is the same map.
        if cached is not None and cached[0] is event.columns and cached[1] == null_bitmask and cached[2] is catalog:
            return cached[3]
        try:
            shape = table_map_shape(
                database,
                table_name,
                event.columns,
                null_bitmask,
                catalog,
                self._catalog.key_override(database, table_name),
            )
        except ValueError as error:
            raise BinlogDecodeError(f"table map of {database}.{table_name} at {position}: {error}") from error
        self._shapes[event.table_id] = (event.columns, null_bitmask, catalog, shape)
        return shape

    def version_numbering(
        self, log_file: str, event_start: int, transaction: Transaction, position: str
    ) -> Callable[[int], int]:
        """row index in the event -> `_version`: from the binlog offset, or from the GTID."""
        if not self._gtid_versions:
            file_sequence = BinlogPosition(log_file, event_start).file_sequence
            return lambda row_index: row_version(file_sequence, event_start, row_index)
        if transaction.gtid is None:
            raise BinlogDecodeError(
                f"row event at {position} has no GTID before it; resume_by: gtid needs MariaDB GTIDs"
            )
        sequence, rows_before = transaction.gtid.sequence, transaction.rows_seen
        return lambda row_index: gtid_row_version(sequence, rows_before + row_index)

    def _compiled_decoder(self, event: RowsEvent, schema: TableSchema) -> CompiledRowDecoder | None:
        key = (event.table_id, schema.qualified_name)
        cached = self._decoders.get(key)
        if cached is None or cached[0] is not schema:
            cached = (schema, CompiledRowDecoder.compile(event.columns, schema))
            self._decoders[key] = cached
        decoder = cached[1]
        return decoder if decoder is not None and decoder.accepts(event) else None


def _rows_from_images(event: RowsEvent, images: list[tuple[dict[str, Any], dict[str, str]]]) -> list[dict[str, Any]]:
    """The compiled decoder's images in the library's row shape, so both paths share what follows."""
    if isinstance(event, UpdateRowsEvent):
        return [
            {
                "before_values": before,
                "before_none_sources": before_problems,
                "after_values": after,
                "after_none_sources": after_problems,
            }
            for (before, before_problems), (after, after_problems) in zip(images[::2], images[1::2], strict=False)
        ]
    return [{"values": values, "none_sources": problems} for values, problems in images]


def _table_problem(schema: TableSchema | None, qualified: str) -> str | None:
    if schema is None:
        return f"table {qualified} no longer exists at the source, its schema is unknown"
    if not schema.key_columns:
        return (
            f"table {qualified} has no primary key: set sources.<name>.key_columns['{qualified}'] "
            "to the columns that identify a row"
        )
    return None


def _decoded_rows(event: RowsEvent, position: str) -> Iterator[dict[str, Any]]:
    try:
        rows = event.rows
    except Exception as error:  # the library raises bare exceptions for undecodable rows
        raise BinlogDecodeError(f"cannot decode rows of {event.schema}.{event.table} at {position}: {error}") from error
    return iter(rows)


Image = tuple[ChangeOp, dict[str, Any], dict[str, str]]


def _row_images(event: RowsEvent, row: dict[str, Any], key_columns: tuple[str, ...]) -> list[Image]:
    """(op, values, why-None per column) for each row image the change produces."""
    if isinstance(event, WriteRowsEvent):
        return [(ChangeOp.INSERT, row["values"], row.get("none_sources", {}))]
    if isinstance(event, DeleteRowsEvent):
        return [(ChangeOp.DELETE, row["values"], row.get("none_sources", {}))]
    before, after = row["before_values"], row["after_values"]
    before_none, after_none = row.get("before_none_sources", {}), row.get("after_none_sources", {})
    if any(before.get(column) != after.get(column) for column in key_columns):
        # The row moved to another key: the old key must disappear from the sinks.
        return [(ChangeOp.DELETE, before, before_none), (ChangeOp.INSERT, after, after_none)]
    return [(ChangeOp.UPDATE, after, after_none)]
