"""ClickHouse sink (server over HTTP, or embedded chdb): ReplacingMergeTree rows, then the checkpoint.

ClickHouse has no transactions, so the order is what makes a crash safe: data first, checkpoint
after. A crash in between replays the batch, whose rows carry the same `_version` and collapse.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError, DataError, OperationalError, ProgrammingError

from cdc_pipeline.core.changes import Rejection, RowChange
from cdc_pipeline.core.checkpoint import NOT_FROM_THE_LOG_CHECKPOINT, Checkpoint
from cdc_pipeline.core.fault_injection import crash_point
from cdc_pipeline.core.key_digest import canonical_key_part
from cdc_pipeline.core.schema_changes import ShapeSource
from cdc_pipeline.core.sink_names import sink_table_name
from cdc_pipeline.mapping.mapper import MappedBatch, MappedTable
from cdc_pipeline.mapping.sink_types import DELETED_COLUMN, LIVENESS_COLUMN, VERSION_COLUMN, SinkTableLayout
from cdc_pipeline.sinks.availability import outside_the_sink, translates_outages, unavailable_as
from cdc_pipeline.sinks.base import SinkNameTaken, TableStats, WriteResult, refuse_cell_table_resync
from cdc_pipeline.sinks.batch_write import RejectChange, write_batch
from cdc_pipeline.sinks.checkpoint_rows import checkpoint_from_row, checkpoint_row
from cdc_pipeline.sinks.clickhouse.cell_tables import (
    MERGED_VIEW_SUFFIX,
    ClickHouseCellTableWriter,
    cell_table_ddl,
    convert_state_table,
    live_condition,
    upgrade_state_table,
)
from cdc_pipeline.sinks.clickhouse.chdb_footprint import prepare_allocator, release_startup_pages
from cdc_pipeline.sinks.clickhouse.chdb_waiters import announce_waiting
from cdc_pipeline.sinks.clickhouse.identifiers import quote_identifier
from cdc_pipeline.sinks.clickhouse.outages import clickhouse_server_refuses
from cdc_pipeline.sinks.clickhouse.row_tables import fill_tombstones, row_table_ddl, tombstone_defaults
from cdc_pipeline.sinks.clickhouse.shaper import ClickHouseShaper
from cdc_pipeline.sinks.schema_sync.sync import SchemaSync, SchemaSyncResult, table_name_conflict

CHECKPOINT_TABLE = "_cdc_checkpoints"
COLUMN_DROPS_TABLE = "_cdc_column_drops"
CURRENT_VIEW_SUFFIX = "_current"
_INSERT_CHUNK_ROWS = 100_000
_BUSY_POLL_SECONDS = 0.5
_log = logging.getLogger(__name__)


class ClickHouseSinkUnavailable(RuntimeError):
    """The ClickHouse sink cannot be reached or opened; the run fails and is retried, no row is lost."""


def _is_unavailable(error: BaseException) -> bool:
    """The server is unreachable, busy (chdb path), read-only, full, or refuses the account."""
    return isinstance(error, (OperationalError, ClickHouseSinkUnavailable)) or clickhouse_server_refuses(error)


def _is_data_error(error: Exception) -> bool:
    # Client-side serialisation errors and server-side parse errors are about the rows; a refused
    # connection (OperationalError), or a server error such as READONLY, ACCESS_DENIED or
    # NOT_ENOUGH_SPACE, is about the server: bisecting it would send every row to the DLQ.
    if _is_unavailable(error):
        return False
    return isinstance(error, (DataError, DatabaseError, TypeError, ValueError, OverflowError, struct.error))


class ClickHouseSink:
    def __init__(self, name: str, dsn: str, database: str, busy_timeout_seconds: float = 60.0) -> None:
        self.name = name
        self._dsn = dsn
        self._database = database
        self._busy_timeout_seconds = busy_timeout_seconds
        self._client: Client | None = None
        self._created: set[str] = set()
        self._created_with: set[tuple[str, ...]] = set()
        self._tombstone_fills: dict[str, list[tuple[int, Any]]] = {}
        self._schema_sync = SchemaSync(name)
        self._shaper = ClickHouseShaper(
            lambda: self.client, _is_unavailable, database, self.qualified, quote_identifier, CURRENT_VIEW_SUFFIX
        )

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = self._open_client()
            self._client.command(f"CREATE DATABASE IF NOT EXISTS {quote_identifier(self._database)}")
            self._client.command(
                f"CREATE TABLE IF NOT EXISTS {self.qualified(CHECKPOINT_TABLE)}"
                " (source String, position String, gtid Nullable(String), server_id Nullable(UInt64),"
                " progress UInt64, updated_at DateTime64(6, 'UTC') DEFAULT now64(6))"
                " ENGINE = ReplacingMergeTree(progress) ORDER BY source"
            )
            # The current form (sinks/checkpoint_rows.py): `position_order`; rows of the form before
            # (it is NULL there) are read as they are. `progress` holds the version floor.
            self._client.command(
                f"ALTER TABLE {self.qualified(CHECKPOINT_TABLE)}"
                " ADD COLUMN IF NOT EXISTS position_order Nullable(UInt128)"
            )
        return self._client

    def _open_client(self) -> Client:
        if not self._dsn.startswith("chdb:"):
            return clickhouse_connect.get_client(dsn=self._dsn)
        # chdb serves an on-disk path to one process at a time (the engine locks it; a second
        # process cannot corrupt it). Wait for the other process to let go, then say so plainly
        # instead of the engine's bare "Error initializing EmbeddedServer".
        path = self._dsn.removeprefix("chdb://")
        try:
            return self._open_embedded()
        except ProgrammingError:
            _log.warning(
                "sink '%s': the embedded ClickHouse at %s is busy in another process; waiting up to %gs",
                self.name,
                path,
                self._busy_timeout_seconds,
            )
        # While it waits, a streaming run holding the path lets go at its next batch boundary.
        with announce_waiting(path):
            deadline = time.monotonic() + self._busy_timeout_seconds
            while True:
                time.sleep(_BUSY_POLL_SECONDS)
                try:
                    return self._open_embedded()
                except ProgrammingError as error:
                    if time.monotonic() >= deadline:
                        raise ClickHouseSinkUnavailable(
                            f"sink '{self.name}': the embedded ClickHouse at {path} stayed busy for"
                            f" {self._busy_timeout_seconds:g}s. chdb serves a path to one process at a time:"
                            " another run (or a check) is using it; retry when it ends, or use a ClickHouse"
                            f" server. ({error})"
                        ) from error

    def _open_embedded(self) -> Client:
        prepare_allocator()
        client = clickhouse_connect.get_client(dsn=self._dsn)
        release_startup_pages()
        return client

    def qualified(self, table: str) -> str:
        return f"{quote_identifier(self._database)}.{quote_identifier(table)}"

    def unavailable_as_sink_error(self) -> AbstractContextManager[None]:
        return unavailable_as(self.name, self._dsn, _is_unavailable)

    @translates_outages
    def checkpoint(self, source: str) -> Checkpoint | None:
        return self._checkpoint(source)

    def _checkpoint(self, source: str) -> Checkpoint | None:
        # Checkpoint rows are only ever added further along: the one with the most progress (its
        # version floor, which grows with the log, across a failover too) is the current one. A
        # Cassandra checkpoint's floor is always 0 (its versions are write times): among equal
        # floors the newest row is the current one, as the table's merges keep it.
        rows = self.client.query(
            f"SELECT position, position_order, progress, gtid, server_id FROM {self.qualified(CHECKPOINT_TABLE)}"
            " WHERE source = {source:String}"
            " ORDER BY progress DESC, position_order DESC NULLS LAST, updated_at DESC LIMIT 1",
            parameters={"source": source},
        ).result_rows
        if not rows:
            return None
        position, order, progress, gtid, server_id = rows[0]
        return checkpoint_from_row(position, order, progress if order is not None else None, gtid, server_id)

    @translates_outages
    def adopt_checkpoint(self, source: str, checkpoint: Checkpoint) -> Checkpoint:
        existing = self._checkpoint(source)
        if existing is not None:
            return existing
        self._insert_checkpoint(source, checkpoint)
        return checkpoint

    def _insert_checkpoint(self, source: str, checkpoint: Checkpoint) -> None:
        self.client.insert(
            self.qualified(CHECKPOINT_TABLE),
            [[source, *checkpoint_row(checkpoint)]],
            column_names=["source", "position", "position_order", "progress"],
        )

    def ensure_table(self, layout: SinkTableLayout, source: str | None = None) -> None:
        """Create or update the table; `source` (a batch's) claims a cell table's name for it."""
        created_with = (source or "", *layout.ddl_signature)
        if layout.table_name in self._created or created_with in self._created_with:
            return
        if layout.cell_schema is not None:
            # Row tables are checked by the schema sync; cell tables come here first.
            conflict = (
                self._shaper.name_conflict(layout.table_name)
                if source is None
                else table_name_conflict(self._shaper, layout.table_name, source, layout.source_table)
            )
            if conflict is not None:
                raise SinkNameTaken(conflict)
            drops = self._new_column_drops(layout.table_name, layout.cell_schema.dropped_columns)
            dropping = sorted({column for column, _ in drops})
            upgrading = upgrade_state_table(self.client, self._database, self.qualified, layout)
            for statement in cell_table_ddl(
                self.qualified, quote_identifier, layout, layout.table_name + CURRENT_VIEW_SUFFIX, dropping
            ):
                self.client.command(statement)
            if upgrading:
                rows = convert_state_table(self.client, self._database, self.qualified, quote_identifier, layout)
                _log.info(
                    "sink '%s': table %s converted to stamped cells (%d rows)", self.name, layout.table_name, rows
                )
            if drops:  # after the DDL: a crash before it re-applies the drops, which is harmless
                self.client.insert(
                    self.qualified(COLUMN_DROPS_TABLE),
                    [[layout.table_name, column, at] for column, at in drops],
                    column_names=["table_name", "column_name", "dropped_at"],
                )
            # Remembered with its columns and types: a column added at the source, or a type override
            # (an operator's fix), makes the DDL run again.
            self._created_with.add(created_with)
            return
        for statement in row_table_ddl(self.qualified, layout, CURRENT_VIEW_SUFFIX):
            self.client.command(statement)
        self._created.add(layout.table_name)

    @translates_outages
    def take_shape(self, source: str, layout: SinkTableLayout, shape: ShapeSource) -> str | None:
        """Bring one table to `layout` outside a batch (before the initial load pulls rows into it);
        None when it took it, else why not."""
        position = NOT_FROM_THE_LOG_CHECKPOINT  # no checkpoint moves
        batch = MappedBatch(self.name, source, position, position, None)
        batch.tables[layout.source_table] = MappedTable(layout, shape)
        return self._sync_schema(batch, 0).refused.get(layout.source_table)

    @translates_outages
    def release_schema_hold(self, source: str, source_table: str) -> bool:
        """Release a table held by a DDL statement (the operator marked it safe); True if it was held."""
        return self._shaper.release(source, source_table)

    def _sync_schema(self, batch: MappedBatch, floor: int) -> SchemaSyncResult:
        """Bring the batch's tables to its shape; forget what this process cached of reshaped tables."""
        schema = self._schema_sync.sync_batch(self._shaper, batch, floor, self._create_table)
        for table_name in schema.reshaped:
            self._created.discard(table_name)
            self._tombstone_fills.pop(table_name, None)
        return schema

    def _create_table(self, layout: SinkTableLayout) -> None:
        """Create the table (and its view) even if this process created one of that name before:
        the source may have dropped or renamed it since."""
        self._created.discard(layout.table_name)
        self.ensure_table(layout)

    def _new_column_drops(self, table_name: str, dropped_columns: tuple[tuple[str, int], ...]) -> list[tuple[str, int]]:
        """The source's column drops (Cassandra) this sink table has not applied yet."""
        if not dropped_columns:
            return []
        self.client.command(
            f"CREATE TABLE IF NOT EXISTS {self.qualified(COLUMN_DROPS_TABLE)}"
            " (table_name String, column_name String, dropped_at Int64)"
            " ENGINE = ReplacingMergeTree ORDER BY (table_name, column_name, dropped_at)"
        )
        rows = self.client.query(
            f"SELECT column_name, dropped_at FROM {self.qualified(COLUMN_DROPS_TABLE)} WHERE table_name = {{t:String}}",
            parameters={"t": table_name},
        ).result_rows
        applied = {(str(c), int(at)) for c, at in rows}
        return [drop for drop in dropped_columns if drop not in applied]

    @translates_outages
    def write(
        self,
        batch: MappedBatch,
        record_rejections: Callable[[list[Rejection]], None],
        advance_checkpoint: bool = True,
    ) -> WriteResult:
        steps = _ClickHouseBatchSteps(self)
        return write_batch(self.name, steps, batch, outside_the_sink(record_rejections), advance_checkpoint)

    def _fill_tombstones(self, layout: SinkTableLayout, rows: list[list[Any]]) -> None:
        fill = self._tombstone_fills.get(layout.table_name)
        if fill is None:
            fill = self._tombstone_fills[layout.table_name] = tombstone_defaults(self.client, layout)
        fill_tombstones(layout, rows, fill)

    def _live_rows(self, table: str) -> tuple[str, str]:
        """(what to read, the condition): the rows the `_current` view shows. A cell table's rows are
        read through its `__merged` view, which applies shadowing and TTLs."""
        is_cell_table = self.client.query(
            "SELECT count() FROM system.columns WHERE database = {db:String} AND table = {t:String}"
            " AND name = {c:String}",
            parameters={"db": self._database, "t": table, "c": LIVENESS_COLUMN},
        ).result_rows[0][0]
        if is_cell_table:
            return self.qualified(table + MERGED_VIEW_SUFFIX), live_condition(quote_identifier)
        return f"{self.qualified(table)} FINAL", f"{quote_identifier(DELETED_COLUMN)} = 0"

    def table_note(self, source_table: str) -> str | None:
        return None

    @translates_outages
    def table_stats(self, source_table: str) -> TableStats | None:
        table = sink_table_name(source_table)
        exists = self.client.query(
            "SELECT count() FROM system.tables WHERE database = {db:String} AND name = {t:String}",
            parameters={"db": self._database, "t": table},
        ).result_rows[0][0]
        if not exists:
            return None
        rows, condition = self._live_rows(table)
        live, version_sum = self.client.query(
            f"SELECT count(), sum(toUInt128({quote_identifier(VERSION_COLUMN)})) FROM {rows} WHERE {condition}"
        ).result_rows[0]
        return TableStats(int(live), int(version_sum))

    @translates_outages
    def live_keys(self, source_table: str, key_columns: tuple[str, ...]) -> Iterator[tuple[Any, ...]]:
        columns = ", ".join(quote_identifier(k) for k in key_columns)
        table = sink_table_name(source_table)
        rows, condition = self._live_rows(table)
        with self.client.query_row_block_stream(f"SELECT {columns} FROM {rows} WHERE {condition}") as blocks:
            for block in blocks:
                yield from (tuple(row) for row in block)

    @translates_outages
    def older_live_keys(
        self, layout: SinkTableLayout, key_range: tuple[int, int] | None, version: int
    ) -> set[tuple[str, ...]]:
        refuse_cell_table_resync(layout)
        self.ensure_table(layout)
        where, parameters = self._older_live(layout, key_range, version)
        columns = ", ".join(quote_identifier(k) for k in layout.key_columns)
        rows = self.client.query(
            f"SELECT {columns} FROM {self.qualified(layout.table_name)} FINAL WHERE {where}", parameters=parameters
        ).result_rows
        return {tuple(canonical_key_part(part) for part in row) for row in rows}

    def _older_live(
        self, layout: SinkTableLayout, key_range: tuple[int, int] | None, version: int
    ) -> tuple[str, dict[str, int]]:
        where = f"{quote_identifier(DELETED_COLUMN)} = 0 AND {quote_identifier(VERSION_COLUMN)} < {int(version)}"
        if key_range is None:
            return where, {}
        where += f" AND {quote_identifier(layout.key_columns[0])} BETWEEN {{low:Int256}} AND {{high:Int256}}"
        return where, {"low": key_range[0], "high": key_range[1]}

    @translates_outages
    def tombstone_missing(
        self, layout: SinkTableLayout, key_range: tuple[int, int] | None, present: set[tuple[str, ...]], version: int
    ) -> int:
        refuse_cell_table_resync(layout)
        self.ensure_table(layout)
        columns = [*layout.column_names, VERSION_COLUMN, DELETED_COLUMN]
        where, parameters = self._older_live(layout, key_range, version)
        rows = self.client.query(
            f"SELECT {', '.join(quote_identifier(c) for c in columns)} FROM {self.qualified(layout.table_name)}"
            f" FINAL WHERE {where}",
            parameters=parameters,
        ).result_rows
        key_indexes = [layout.column_names.index(k) for k in layout.key_columns]
        gone = [
            [*row[: len(layout.column_names)], version, 1]
            for row in rows
            if tuple(canonical_key_part(row[i]) for i in key_indexes) not in present
        ]
        if gone:
            # A tombstone row with a newer version: FINAL then hides the row.
            self.client.insert(self.qualified(layout.table_name), gone, column_names=columns)
        return len(gone)


class _ClickHouseBatchSteps:
    """The ClickHouse primitives of the write algorithm (sinks/batch_write.py). No transactions:
    each step is safe to repeat, the rows' versions decide what a replay changes."""

    crash_prefix = "clickhouse"
    insert_chunk_rows: int | None = _INSERT_CHUNK_ROWS

    def __init__(self, sink: ClickHouseSink) -> None:
        self.sink = sink

    def stored_checkpoint(self, batch: MappedBatch) -> Checkpoint | None:
        return self.sink._checkpoint(batch.source)

    def sync_schema(self, batch: MappedBatch, floor: int) -> SchemaSyncResult:
        return self.sink._sync_schema(batch, floor)

    def ensure_table(self, layout: SinkTableLayout, source: str) -> None:
        self.sink.ensure_table(layout, source=source)

    def row_inserter(self, layout: SinkTableLayout, rows: list[list[Any]]) -> Callable[[list[list[Any]]], None]:
        self.sink._fill_tombstones(layout, rows)
        target = self.sink.qualified(layout.table_name)
        column_names = [*layout.column_names, VERSION_COLUMN, DELETED_COLUMN]
        client = self.sink.client

        def insert(chunk: list[list[Any]]) -> None:
            client.insert(target, chunk, column_names=column_names)

        return insert

    def is_data_error(self, error: Exception) -> bool:
        return _is_data_error(error)

    def write_cells(
        self, layout: SinkTableLayout, rows: list[list[Any]], changes: list[RowChange], reject: RejectChange
    ) -> None:
        sink = self.sink
        ClickHouseCellTableWriter(sink.client, sink.qualified, quote_identifier, layout, _is_data_error).write(
            rows, changes, reject
        )

    def advance_checkpoint(self, batch: MappedBatch, stored: Checkpoint | None) -> None:
        crash_point("clickhouse_before_checkpoint")
        self.sink._insert_checkpoint(batch.source, batch.end)
