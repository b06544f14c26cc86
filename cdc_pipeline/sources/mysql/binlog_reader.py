"""Reads one micro-batch of row changes from the binlog, cut only at transaction boundaries.

The stream it reads is a binlog dump (binlog_dump.py) and its row events become changes in
row_events.py; this module runs the event loop that ends a batch, and reads DDL statements.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from pymysqlreplication.event import (
    HeartbeatLogEvent,
    MariadbGtidEvent,
    NotImplementedEvent,
    QueryEvent,
    RotateEvent,
    XidEvent,
)
from pymysqlreplication.row_event import RowsEvent, TableMapEvent

from cdc_pipeline.core.changes import ChangeBatch, ChangeOp, Rejection, TableChanges
from cdc_pipeline.core.checkpoint import Checkpoint
from cdc_pipeline.core.schema import split_qualified
from cdc_pipeline.core.schema_changes import (
    DDL_STAGE,
    SchemaChange,
    SchemaChangeKind,
    ShapeSource,
    unrecognised_reason,
)
from cdc_pipeline.sources.mysql.binlog_dump import BinlogDump
from cdc_pipeline.sources.mysql.catalog import MySqlCatalog
from cdc_pipeline.sources.mysql.connection import ControlConnection
from cdc_pipeline.sources.mysql.ddl import CURRENT_TIMESTAMP, parse_ddl
from cdc_pipeline.sources.mysql.gtid import Gtid
from cdc_pipeline.sources.mysql.positions import BinlogPosition, GtidPosition, as_binlog_position, gtid_of
from cdc_pipeline.sources.mysql.preflight import read_binlog_head, read_server_id
from cdc_pipeline.sources.mysql.row_events import BinlogDecodeError, RowEventTranslator, Transaction

# MariaDB's compressed query/row events (0xA5-0xAB) and MySQL's TRANSACTION_PAYLOAD_EVENT (0x28):
# mysql-replication cannot decode them and would otherwise drop them without a word.
_COMPRESSED_EVENT_TYPES = frozenset({0x28, *range(0xA5, 0xAC)})
_READS_BEFORE_GIVING_UP = 3


class BinlogBatchReader:
    """Turns the binlog between a start position and a stop position into a ChangeBatch."""

    def __init__(
        self,
        source_name: str,
        control: ControlConnection,
        server_id: int,
        catalog: MySqlCatalog,
        compiled_decoder: bool = True,
        gtid_versions: bool = False,
        marks_safe: Callable[[str], bool] = lambda statement: False,
    ) -> None:
        self._source_name = source_name
        # Versions from GTID sequence numbers (resume_by: gtid) instead of binlog offsets.
        self._gtid_versions = gtid_versions
        # The operator's word that a statement the parser cannot read changes nothing for the sinks.
        self._marks_safe = marks_safe
        self._control = control
        self._settings = control.settings
        self._server_id = server_id
        # The binlog dump of the last batch, kept open while batches follow one another.
        self._dump: BinlogDump | None = None
        self._catalog = catalog
        self._rows = RowEventTranslator(catalog, compiled_decoder, gtid_versions)

    def read(
        self,
        start: Checkpoint,
        max_rows: int,
        stop_at: BinlogPosition | None = None,
        max_bytes: int | None = None,
        max_seconds: float | None = None,
    ) -> ChangeBatch:
        """Read committed transactions from `start` until `max_rows` rows, `max_bytes` bytes of row
        events, `max_seconds` of reading, `stop_at`, or the binlog's end as it was when the read began.

        The batch ends after the last complete transaction read; a transaction is never split, so a
        single transaction larger than a limit makes a larger batch. The dump stays open for the next
        batch when that one starts where this one ended.
        """
        head = self._control.read(lambda cursor: read_binlog_head(cursor, self._settings.describe()))
        read_until = head if stop_at is None else min(head, stop_at)
        for _ in range(_READS_BEFORE_GIVING_UP):
            dump = self._dump_from(as_binlog_position(start.position))
            batch = self._read_dump(dump, start, read_until, max_rows, max_bytes, max_seconds)
            if batch.end != batch.start or not dump.interrupted:
                return batch
            # The link dropped before the first transaction: read again on a new dump, since an
            # empty batch says the log holds nothing new.
        raise BinlogDecodeError(
            f"the binlog dump from {self._settings.describe()} broke off {_READS_BEFORE_GIVING_UP} times at"
            f" {start.position} before a whole transaction arrived"
        )

    def close(self) -> None:
        if self._dump is not None:
            self._dump.close()
            self._dump = None

    def _dump_from(self, start: BinlogPosition) -> BinlogDump:
        """The kept dump when it continues at `start`; otherwise a new one opened there."""
        if self._dump is not None and self._dump.continues_at == start:
            return self._dump
        self.close()
        # Table ids name table maps of one dump; a new one may reuse them for other tables.
        self._rows.forget_table_maps()
        self._dump = BinlogDump.open(self._settings, self._server_id, start, self._control.read(read_server_id))
        return self._dump

    def _read_dump(
        self,
        dump: BinlogDump,
        start: Checkpoint,
        read_until: BinlogPosition,
        max_rows: int,
        max_bytes: int | None,
        max_seconds: float | None,
    ) -> ChangeBatch:
        deadline = time.monotonic() + max_seconds if max_seconds is not None else None
        server_id = dump.source_server_id
        start_gtid = gtid_of(start.position)
        if start_gtid is not None:
            # The dump's server: after a failover the GTID's position is looked up on the new one.
            start = Checkpoint(GtidPosition(as_binlog_position(start.position), start_gtid, server_id))
        batch = ChangeBatch(source=self._source_name, start=start, end=start)
        # Where the binlog was read through (a GTID checkpoint's position is on its server).
        batch.log_read_to = as_binlog_position(start.position)
        pending_tables: dict[str, TableChanges] = {}
        pending_rejections: list[Rejection] = []
        pending_rows = 0
        committed_rows = 0
        # Row events' sizes: what the batch's values weigh, before Python multiplies it.
        pending_bytes = 0
        committed_bytes = 0
        transaction = Transaction(start_gtid)
        # Whether nothing of an unfinished transaction was taken from the dump since the batch's
        # last commit: only then can the next batch go on reading the same dump.
        clean = True
        stream = dump.stream
        try:
            for event in stream:
                if dump.interrupted:
                    clean = False
                    break
                if isinstance(event, HeartbeatLogEvent):
                    # Sent when the server has nothing more to send; ones queued while no batch was
                    # reading carry an older position and are passed over.
                    if clean and BinlogPosition(event.ident, event.packet.log_pos) >= read_until:
                        batch.log_read_to = read_until
                        break
                    if not clean and deadline is not None and time.monotonic() >= deadline:
                        break
                    continue
                if isinstance(event, RotateEvent):
                    continue  # between files, outside any transaction
                if isinstance(event, NotImplementedEvent):
                    if event.packet.event_type in _COMPRESSED_EVENT_TYPES:
                        raise BinlogDecodeError(
                            f"compressed binlog event (type 0x{event.packet.event_type:02x}) at "
                            f"{stream.log_file}:{event.packet.log_pos - event.packet.event_size}: turn off "
                            "log_bin_compress / binlog_transaction_compression and re-sync the affected tables"
                        )
                    continue
                clean = False
                if isinstance(event, TableMapEvent):
                    self._rows.remember_table_map(event)
                    continue
                if isinstance(event, RowsEvent):
                    rows = self._rows.parse_rows_event(
                        event, stream.log_file, transaction, pending_tables, pending_rejections
                    )
                    pending_rows += rows
                    pending_bytes += event.packet.event_size
                    transaction.rows_seen += rows
                    continue
                if isinstance(event, MariadbGtidEvent):
                    transaction.begin(Gtid(event.domain_id, event.server_id, event.gtid_seq_no), self._gtid_versions)
                    continue
                if not _ends_transaction(event):
                    continue
                if isinstance(event, QueryEvent):
                    # A DDL statement commits implicitly, so nothing is pending here.
                    changes = self._schema_changes(event, stream.log_file, transaction)
                    if any(change.table in batch.tables or change.old_name in batch.tables for change in changes):
                        # The table already has rows in this batch: they keep their shape, and the
                        # next batch starts with the statement. The batch ends where it was.
                        break
                    batch.schema_changes.extend(changes)
                    batch.rejections.extend(_holds(changes))
                # A transaction (or a DDL statement, which commits implicitly) ended here.
                _merge(batch, pending_tables, pending_rejections)
                committed_rows += pending_rows
                committed_bytes += pending_bytes
                pending_tables, pending_rejections, pending_rows, pending_bytes = {}, [], 0, 0
                clean = True
                end = BinlogPosition(stream.log_file, event.packet.log_pos)
                gtid = transaction.gtid if self._gtid_versions else None
                batch.end = Checkpoint(GtidPosition(end, gtid, server_id) if gtid is not None else end)
                batch.log_read_to = end
                batch.last_commit_ts = event.timestamp
                if (
                    committed_rows >= max_rows
                    or (max_bytes is not None and committed_bytes >= max_bytes)
                    or (deadline is not None and time.monotonic() >= deadline)
                    or end >= read_until
                ):
                    break
            else:
                clean = False  # the server ended the dump
        except BaseException:
            self.close()
            raise
        if clean:
            dump.continues_at = as_binlog_position(batch.end.position)
        else:
            self.close()
        # Rows of a transaction whose commit was not read yet stay out: the next batch reads them again.
        self._shape_tables_without_rows(batch)
        return batch

    def _schema_changes(self, event: QueryEvent, log_file: str, transaction: Transaction) -> list[SchemaChange]:
        """What a statement does to the selected tables; the tables it names are read anew from the catalog."""
        event_start = event.packet.log_pos - event.packet.event_size
        position = f"{log_file}:{event_start}"
        # The statement's place among the row versions: the versions of its own (empty) first row.
        version = self._rows.version_numbering(log_file, event_start, transaction, position)(0)
        default_database = event.schema.decode() if isinstance(event.schema, bytes) else str(event.schema)
        outcome = parse_ddl(event.query, default_database, position, version, self._catalog.selects)
        changes = [
            replace(change, kind=SchemaChangeKind.NO_EFFECT)
            if change.kind is SchemaChangeKind.UNRECOGNISED and self._marks_safe(change.statement)
            else change
            for change in outcome.changes
        ]
        for change in changes:
            for qualified in (change.table, change.old_name):
                if qualified and "." in qualified:
                    self._catalog.forget(*split_qualified(qualified))
        session_zone = _session_time_zone(event)
        return [self._with_statement_time(change, event.timestamp, session_zone) for change in changes]

    def _with_statement_time(self, change: SchemaChange, statement_time: int, session_zone: str | None) -> SchemaChange:
        """ADD COLUMN ... DEFAULT CURRENT_TIMESTAMP: the existing rows took the statement's start time,
        which the event header holds (in whole seconds: finer fractions are not in the binlog).
        ADD COLUMN ts TIMESTAMP DEFAULT '<literal>': MySQL read the literal in the statement's session
        time zone; the existing rows hold that instant, which the sinks keep in UTC."""
        if change.kind is not SchemaChangeKind.ADD_COLUMN or not change.has_default or change.default is None:
            return change
        schema = self._catalog.table(*split_qualified(change.table)) if "." in change.table else None
        data_type = (
            schema.column(str(change.column)).data_type
            if schema is not None and change.column in schema.column_names
            else None
        )
        if change.default != CURRENT_TIMESTAMP:
            if data_type != "timestamp":
                return change
            return replace(change, default=self._in_utc(str(change.default), session_zone))
        is_datetime = data_type == "datetime"
        if not is_datetime:
            # TIMESTAMP: an instant, which row events carry (and the sinks hold) in UTC.
            instant = dt.datetime.fromtimestamp(statement_time, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
            return replace(change, default=instant)
        # DATETIME: the wall-clock time in the server's time zone, as the server itself renders it.
        with self._settings.connect() as connection, connection.cursor() as cursor:
            cursor.execute("SELECT DATE_FORMAT(FROM_UNIXTIME(%s), '%%Y-%%m-%%d %%H:%%i:%%s')", (statement_time,))
            return replace(change, default=str(cursor.fetchone()[0]))

    def _in_utc(self, literal: str, zone: str | None) -> str:
        """A TIMESTAMP literal read in `zone` ('+05:00', 'Europe/Paris'; None: the server's global
        zone), as UTC wall time: the server converts it, as it did for the existing rows."""
        whole, dot, fraction = literal.partition(".")
        with self._settings.connect() as connection, connection.cursor() as cursor:
            cursor.execute(
                "SELECT DATE_FORMAT(CONVERT_TZ(%s, COALESCE(%s, @@global.time_zone), '+00:00'),"
                " '%%Y-%%m-%%d %%H:%%i:%%s')",
                (whole, zone),
            )
            converted = cursor.fetchone()[0]
        if converted is None:
            # A named zone without the server's time zone tables loaded, or a literal the server
            # reads otherwise: the literal is kept as the statement wrote it.
            return literal
        return str(converted) + dot + fraction

    def _shape_tables_without_rows(self, batch: ChangeBatch) -> None:
        """A table whose shape changed with no row after it in the batch gets its shape from the
        catalog (which may be later than the batch: the sinks then only apply what the changes name)."""
        for change in batch.schema_changes:
            if change.table in batch.tables or "." not in change.table:
                continue
            if change.kind in (SchemaChangeKind.DROP_TABLE, SchemaChangeKind.TRUNCATE, SchemaChangeKind.NO_EFFECT):
                continue
            schema = self._catalog.table(*split_qualified(change.table))
            if schema is not None and schema.key_columns:
                batch.tables[change.table] = TableChanges(schema, [], ShapeSource.CATALOG)


def _ends_transaction(event: Any) -> bool:
    if isinstance(event, XidEvent):
        return True
    if isinstance(event, QueryEvent):
        query = event.query.strip().upper()
        return query != "BEGIN" and not query.startswith("XA ")
    return False


def _holds(changes: list[SchemaChange]) -> list[Rejection]:
    """A statement the parser could not read holds its table: recorded in the DLQ (stage "ddl") before
    any checkpoint passes it, for the operator; each sink keeps the hold with its checkpoint and sends
    the table's rows to the DLQ until the replay releases it."""
    return [
        Rejection(
            DDL_STAGE,
            change.table,
            ChangeOp.DDL,
            unrecognised_reason(change),
            change.position,
            change.version,
            {"statement": change.statement},
        )
        for change in changes
        if change.kind is SchemaChangeKind.UNRECOGNISED
    ]


def _merge(batch: ChangeBatch, tables: dict[str, TableChanges], rejections: list[Rejection]) -> None:
    for qualified, pending in tables.items():
        existing = batch.tables.get(qualified)
        if existing is None:
            batch.tables[qualified] = pending
        else:
            existing.changes.extend(pending.changes)
    batch.rejections.extend(rejections)


def _session_time_zone(event: QueryEvent) -> str | None:
    """The time zone the statement's session had, when it was not the server's global one (the
    binlog writes it among the event's status variables only then)."""
    zone = getattr(event, "time_zone", None)
    return zone.decode() if isinstance(zone, bytes) and zone else None
