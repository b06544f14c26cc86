"""Reads one micro-batch of row changes from the binlog, cut only at transaction boundaries."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import NotImplementedEvent, QueryEvent, RotateEvent, XidEvent
from pymysqlreplication.row_event import DeleteRowsEvent, RowsEvent, UpdateRowsEvent, WriteRowsEvent

from cdc_pipeline.core.changes import ChangeBatch, ChangeOp, Rejection, RowChange, TableChanges
from cdc_pipeline.core.positions import BinlogPosition, row_version
from cdc_pipeline.core.schema import TableSchema
from cdc_pipeline.sources.mysql.catalog import MySqlCatalog
from cdc_pipeline.sources.mysql.connection import MySqlConnectionSettings

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
    ) -> None:
        self._source_name = source_name
        self._settings = settings
        self._server_id = server_id
        self._catalog = catalog

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
                            f"{stream.log_file}:{event.packet.log_pos - event.event_size}: turn off "
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
        event_start = event.packet.log_pos - event.event_size
        position = f"{log_file}:{event_start}"
        sequence = BinlogPosition(log_file, event_start).file_sequence
        schema = self._catalog.table(database, table_name)
        problem = _table_problem(schema, qualified, event)
        rows = 0
        for row_index, row in enumerate(_decoded_rows(event, position)):
            rows += 1
            version = row_version(sequence, event_start, row_index)
            images = _row_images(event, row, schema.key_columns if schema else ())
            if problem is not None or schema is None:
                for op, values in images:
                    rejections.append(Rejection("parse", qualified, op, problem or "", position, version, values))
                continue
            changes = tables.setdefault(qualified, TableChanges(schema)).changes
            for op, values in images:
                _normalise(values)
                changes.append(RowChange(op, values, version, position, event.timestamp))
        return rows


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


def _row_images(
    event: RowsEvent, row: dict[str, Any], key_columns: tuple[str, ...]
) -> list[tuple[ChangeOp, dict[str, Any]]]:
    if isinstance(event, WriteRowsEvent):
        return [(ChangeOp.INSERT, row["values"])]
    if isinstance(event, DeleteRowsEvent):
        return [(ChangeOp.DELETE, row["values"])]
    before, after = row["before_values"], row["after_values"]
    if any(before.get(column) != after.get(column) for column in key_columns):
        # The row moved to another key: the old key must disappear from the sinks.
        return [(ChangeOp.DELETE, before), (ChangeOp.INSERT, after)]
    return [(ChangeOp.UPDATE, after)]


def _normalise(values: dict[str, Any]) -> None:
    """Give library-specific value shapes one canonical form before masking and mapping."""
    for name, value in values.items():
        if isinstance(value, set):
            values[name] = frozenset(value)
        elif isinstance(value, (dict, list)):
            # MySQL's binary JSON arrives decoded; MariaDB's JSON is text already.
            values[name] = json.dumps(value, ensure_ascii=False)


def _merge(batch: ChangeBatch, tables: dict[str, TableChanges], rejections: list[Rejection]) -> None:
    for qualified, pending in tables.items():
        existing = batch.tables.get(qualified)
        if existing is None:
            batch.tables[qualified] = pending
        else:
            existing.changes.extend(pending.changes)
    batch.rejections.extend(rejections)
