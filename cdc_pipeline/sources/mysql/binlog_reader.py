"""Reads one micro-batch of row changes from the binlog, cut only at transaction boundaries."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from typing import Any

from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.constants import NONE_SOURCE
from pymysqlreplication.event import NotImplementedEvent, QueryEvent, RotateEvent, XidEvent
from pymysqlreplication.row_event import DeleteRowsEvent, RowsEvent, UpdateRowsEvent, WriteRowsEvent

from cdc_pipeline.core.changes import ChangeBatch, ChangeOp, Rejection, RowChange, TableChanges
from cdc_pipeline.core.positions import BinlogPosition, row_version
from cdc_pipeline.core.schema import TableSchema
from cdc_pipeline.sources.mysql.catalog import MySqlCatalog
from cdc_pipeline.sources.mysql.connection import MySqlConnectionSettings
from cdc_pipeline.sources.mysql.row_decoder import CompiledRowDecoder

# MariaDB's compressed query/row events (0xA5-0xAB) and MySQL's TRANSACTION_PAYLOAD_EVENT (0x28):
# mysql-replication cannot decode them and would otherwise drop them without a word.
_COMPRESSED_EVENT_TYPES = frozenset({0x28, *range(0xA5, 0xAC)})
_ROW_EVENTS = (WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent)


class BinlogDecodeError(RuntimeError):
    """An event the reader must not skip cannot be decoded; the message names its position."""


class BinlogBatchReader:
    """Turns the binlog between a start position and a stop position into a ChangeBatch."""

    def __init__(
        self,
        source_name: str,
        settings: MySqlConnectionSettings,
        server_id: int,
        catalog: MySqlCatalog,
        compiled_decoder: bool = True,
    ) -> None:
        self._source_name = source_name
        self._use_compiled_decoder = compiled_decoder
        self._settings = settings
        self._server_id = server_id
        self._catalog = catalog
        self._normaliser_cache: dict[str, tuple[TableSchema, list[tuple[str, Callable[[Any], Any]]]]] = {}
        self._decoders: dict[tuple[int, str], tuple[TableSchema, CompiledRowDecoder | None]] = {}

    def _open_stream(self, start: BinlogPosition) -> BinLogStreamReader:
        # is_mariadb stays False: with it, mysql-replication ignores log_file/log_pos unless GTIDs are used
        # and replays from the first binlog. The MySQL protocol path resumes by file+pos on MariaDB too.
        return BinLogStreamReader(
            connection_settings=self._settings.as_pymysql_kwargs(),
            server_id=self._server_id,
            resume_stream=True,
            log_file=start.file,
            log_pos=start.pos,
            blocking=False,
            only_events=[*_ROW_EVENTS, XidEvent, QueryEvent, RotateEvent, NotImplementedEvent],
            filter_non_implemented_events=False,
        )

    def read(self, start: BinlogPosition, max_rows: int, stop_at: BinlogPosition | None = None) -> ChangeBatch:
        """Read committed transactions from `start` until `max_rows` rows or `stop_at` is reached.

        The batch ends after the last complete transaction read; a transaction is never split, so a
        single transaction larger than `max_rows` makes a larger batch.
        """
        batch = ChangeBatch(source=self._source_name, start=start, end=start)
        pending_tables: dict[str, TableChanges] = {}
        pending_rejections: list[Rejection] = []
        pending_rows = 0
        committed_rows = 0
        stream = self._open_stream(start)
        try:
            for event in stream:
                if isinstance(event, RowsEvent):
                    pending_rows += self._parse_rows_event(event, stream.log_file, pending_tables, pending_rejections)
                    continue
                if isinstance(event, NotImplementedEvent):
                    if event.packet.event_type in _COMPRESSED_EVENT_TYPES:
                        raise BinlogDecodeError(
                            f"compressed binlog event (type 0x{event.packet.event_type:02x}) at "
                            f"{stream.log_file}:{event.packet.log_pos - event.packet.event_size}: turn off "
                            "log_bin_compress / binlog_transaction_compression and re-sync the affected tables"
                        )
                    continue
                if isinstance(event, RotateEvent) or not _ends_transaction(event):
                    continue
                # A transaction (or a DDL statement, which commits implicitly) ended here.
                _merge(batch, pending_tables, pending_rejections)
                committed_rows += pending_rows
                pending_tables, pending_rejections, pending_rows = {}, [], 0
                batch.end = BinlogPosition(stream.log_file, event.packet.log_pos)
                batch.last_commit_ts = event.timestamp
                if committed_rows >= max_rows or (stop_at is not None and batch.end >= stop_at):
                    break
        finally:
            stream.close()
        # Rows of a transaction whose commit was not read yet stay out: the next batch reads them again.
        return batch

    def _normalisers(self, schema: TableSchema) -> list[tuple[str, Callable[[Any], Any]]]:
        cached = self._normaliser_cache.get(schema.qualified_name)
        if cached is None or cached[0] is not schema:
            cached = (schema, value_normalisers(schema))
            self._normaliser_cache[schema.qualified_name] = cached
        return cached[1]

    def _parse_rows_event(
        self,
        event: RowsEvent,
        log_file: str,
        tables: dict[str, TableChanges],
        rejections: list[Rejection],
    ) -> int:
        database, table_name = event.schema, event.table
        if not self._catalog.selects(database, table_name):
            return 0
        qualified = f"{database}.{table_name}"
        # The wrapper's event_size counts the header and checksum too: the event starts here.
        event_start = event.packet.log_pos - event.packet.event_size
        position = f"{log_file}:{event_start}"
        sequence = BinlogPosition(log_file, event_start).file_sequence
        schema = self._catalog.table(database, table_name)
        problem = _table_problem(schema, qualified, event)
        decoder = None
        if self._use_compiled_decoder and problem is None and schema is not None:
            decoder = self._compiled_decoder(event, schema)
        if decoder is not None:
            decoded_rows = _rows_from_images(event, decoder.decode(event))
            fixes: list[tuple[str, Callable[[Any], Any]]] = []
        else:
            decoded_rows = _decoded_rows(event, position)
            fixes = self._normalisers(schema) if schema is not None else []
        rows = 0
        for row_index, row in enumerate(decoded_rows):
            rows += 1
            version = row_version(sequence, event_start, row_index)
            images = _row_images(event, row, schema.key_columns if schema else ())
            if problem is not None or schema is None:
                for op, values, _ in images:
                    rejections.append(Rejection("parse", qualified, op, problem or "", position, version, values))
                continue
            changes = tables.setdefault(qualified, TableChanges(schema)).changes
            for op, values, none_sources in images:
                if none_sources:
                    unrepresentable = _apply_none_sources(values, none_sources)
                    if unrepresentable:
                        rejections.append(Rejection("parse", qualified, op, unrepresentable, position, version, values))
                        continue
                for column, fix in fixes:
                    values[column] = fix(values[column])
                changes.append(RowChange(op, values, version, position, event.timestamp))
        return rows

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
            {"before_values": before, "before_none_sources": before_problems, "after_values": after, "after_none_sources": after_problems}
            for (before, before_problems), (after, after_problems) in zip(images[::2], images[1::2])
        ]
    return [{"values": values, "none_sources": problems} for values, problems in images]


def _ends_transaction(event: Any) -> bool:
    if isinstance(event, XidEvent):
        return True
    if isinstance(event, QueryEvent):
        query = event.query.strip().upper()
        return query != "BEGIN" and not query.startswith("XA ")
    return False


def _table_problem(schema: TableSchema | None, qualified: str, event: RowsEvent) -> str | None:
    if schema is None:
        return f"table {qualified} no longer exists at the source, its schema is unknown"
    if not schema.key_columns:
        return (
            f"table {qualified} has no primary key: set sources.<name>.key_columns['{qualified}'] "
            "to the columns that identify a row"
        )
    event_columns = [column.name for column in event.columns]
    if event_columns != schema.column_names:
        return (
            f"table {qualified}: binlog columns {event_columns} differ from the catalog's {schema.column_names} "
            "(schema changed since this event was written)"
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


def _apply_none_sources(values: dict[str, Any], none_sources: dict[str, str]) -> str | None:
    """mysql-replication decodes an empty SET and an unrepresentable value (a zero date) as None
    too; tell them apart from NULL. Returns the reason when a value cannot be represented."""
    problems = []
    for column, reason in none_sources.items():
        if reason == NONE_SOURCE.EMPTY_SET:
            values[column] = ""
        elif reason != NONE_SOURCE.NULL:
            problems.append(f"column {column}: {reason} (e.g. a zero date), which no sink type can hold")
    return "; ".join(problems) or None


ZERO_TIME = dt.timedelta(0)
_BINARY_TYPES = frozenset({"binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob"})


def _to_bytes(value: Any) -> Any:
    # mysql-replication returns '' (str) for an empty binary value.
    return value.encode() if isinstance(value, str) else value


def _padded_binary(width: int) -> Callable[[Any], Any]:
    # BINARY(n) is stored without its trailing NUL padding, which the server adds back on read.
    def pad(value: Any) -> Any:
        return _to_bytes(value).ljust(width, b"\x00") if value is not None else None

    return pad


def _set_text(members: tuple[str, ...]) -> Callable[[Any], Any]:
    # The server's own text form: members in definition order, comma separated.
    def as_text(value: Any) -> Any:
        return ",".join(m for m in members if m in value) if isinstance(value, (set, frozenset)) else value

    return as_text


def _bits_to_int(value: Any) -> Any:
    # The library gives BIT as a string of '0'/'1'; the canonical form is the number.
    return int(value, 2) if isinstance(value, str) else value


def _json_text(value: Any) -> Any:
    # MySQL's binary JSON arrives decoded; MariaDB's JSON is text already.
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list, int, float, bool)) else value


def _negative_fractional_time(value: Any) -> Any:
    """Undo mysql-replication's TIME2 decoding of negative values with a fraction.

    The library reads the fraction bytes as a signed number after the integer part already
    borrowed one second, so -12:34:56.789012 arrives as -12:34:56.210988: the result is
    -(s + 1 - u) where the truth is -(s + u). Checked by the end-to-end type test, which fails
    if a library upgrade fixes the decoding (the dependency is pinned below 1.1 for that reason).
    """
    if isinstance(value, dt.timedelta) and value < ZERO_TIME and value.microseconds:
        return value + dt.timedelta(seconds=1) - dt.timedelta(microseconds=2 * value.microseconds)
    return value


def value_normalisers(schema: TableSchema) -> list[tuple[str, Callable[[Any], Any]]]:
    """Per-column fixes that give library-specific value shapes one canonical form."""
    fixes: list[tuple[str, Callable[[Any], Any]]] = []
    for column in schema.columns:
        if column.data_type == "binary" and column.char_length:
            fixes.append((column.name, _padded_binary(column.char_length)))
        elif column.data_type in _BINARY_TYPES:
            fixes.append((column.name, _to_bytes))
        elif column.data_type == "set":
            fixes.append((column.name, _set_text(column.enum_values)))
        elif column.data_type == "bit":
            fixes.append((column.name, _bits_to_int))
        elif column.data_type == "time" and column.datetime_precision:
            fixes.append((column.name, _negative_fractional_time))
        elif column.data_type == "json":
            fixes.append((column.name, _json_text))
    return fixes


def _merge(batch: ChangeBatch, tables: dict[str, TableChanges], rejections: list[Rejection]) -> None:
    for qualified, pending in tables.items():
        existing = batch.tables.get(qualified)
        if existing is None:
            batch.tables[qualified] = pending
        else:
            existing.changes.extend(pending.changes)
    batch.rejections.extend(rejections)
