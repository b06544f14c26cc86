"""PostgreSQL sink: COPY into a staging table, one version-guarded merge, checkpoint in the same transaction."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Any

import psycopg2
import psycopg2.extras
from psycopg2 import sql

from cdc_pipeline.core.changes import Rejection, RowChange
from cdc_pipeline.core.checkpoint import Checkpoint
from cdc_pipeline.core.fault_injection import crash_point
from cdc_pipeline.core.key_digest import canonical_key_part
from cdc_pipeline.core.sink_names import sink_table_name
from cdc_pipeline.mapping.mapper import MappedBatch
from cdc_pipeline.mapping.sink_types import DELETED_COLUMN, VERSION_COLUMN, SinkTableLayout
from cdc_pipeline.shared.postgres_session import connect, ddl_transaction, run_ddl, transaction
from cdc_pipeline.sinks.availability import outside_the_sink, translates_outages, unavailable_as
from cdc_pipeline.sinks.base import SinkNameTaken, TableStats, WriteResult, refuse_cell_table_resync
from cdc_pipeline.sinks.batch_write import RejectChange, write_batch
from cdc_pipeline.sinks.checkpoint_rows import checkpoint_from_row, checkpoint_row
from cdc_pipeline.sinks.postgres import names as postgres_names
from cdc_pipeline.sinks.postgres.cell_tables import (
    PostgresCellTableWriter,
    cell_table_ddl,
    convert_state_rows,
    existing_columns,
    is_cell_table,
    live_condition,
    merged_view_name,
)
from cdc_pipeline.sinks.postgres.hypertables import make_hypertable
from cdc_pipeline.sinks.postgres.outages import postgres_is_unavailable
from cdc_pipeline.sinks.postgres.row_tables import row_inserter, row_table_ddl
from cdc_pipeline.sinks.postgres.shaper import HOLDS_TABLE, PostgresShaper
from cdc_pipeline.sinks.schema_sync.sync import OWNERS_TABLE, SchemaSync, SchemaSyncResult, table_name_conflict

CHECKPOINT_TABLE = "_cdc_checkpoints"
COLUMN_DROPS_TABLE = "_cdc_column_drops"
CURRENT_VIEW_SUFFIX = "_current"
_SELECT_CHECKPOINT = "SELECT position, position_order, version_floor, gtid, server_id FROM {} WHERE source = %s"
_log = logging.getLogger(__name__)


def _is_data_error(error: Exception) -> bool:
    # DataError: value out of range, bad input syntax; IntegrityError: NOT NULL, CHECK. Anything else
    # (OperationalError: server gone, disk full) is the sink's problem, not the row's.
    return isinstance(error, (psycopg2.DataError, psycopg2.IntegrityError))


class PostgresSink:
    def __init__(self, name: str, dsn: str, schema: str, hypertables: Mapping[str, str] | None = None) -> None:
        self.name = name
        self._dsn = dsn
        self._schema = schema
        # TimescaleDB: source table -> the time column its sink table is partitioned by.
        self._hypertables = dict(hypertables or {})
        # Sink table -> what became of its hypertable setting (shown in the asset metadata).
        self._table_notes: dict[str, str] = {}
        self._created: set[str] = set()
        self._created_with: set[tuple[str, ...]] = set()
        self._schema_sync = SchemaSync(name)

    def _qualified(self, table: str) -> sql.Composed:
        return postgres_names.relation(self._schema, table)

    def _ensure_bookkeeping(self) -> None:
        if CHECKPOINT_TABLE in self._created:
            return
        run_ddl(
            self._dsn,
            self._schema,
            [
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self._schema)),
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (source text PRIMARY KEY, position text NOT NULL,"
                    " gtid text, server_id bigint, updated_at timestamptz NOT NULL DEFAULT now())"
                ).format(self._qualified(CHECKPOINT_TABLE)),
                # The current form (sinks/checkpoint_rows.py); a table of the form before gains the
                # columns in place, its rows are read as they are and rewritten at the next checkpoint.
                sql.SQL(
                    "ALTER TABLE {} ADD COLUMN IF NOT EXISTS position_order numeric,"
                    " ADD COLUMN IF NOT EXISTS version_floor bigint"
                ).format(self._qualified(CHECKPOINT_TABLE)),
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (source text NOT NULL, source_table text NOT NULL,"
                    " position text NOT NULL, version bigint NOT NULL, reason text NOT NULL,"
                    " PRIMARY KEY (source, source_table))"
                ).format(self._qualified(HOLDS_TABLE)),
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (sink_table text PRIMARY KEY, source text NOT NULL,"
                    " source_table text NOT NULL)"
                ).format(self._qualified(OWNERS_TABLE)),
                # Cassandra column drops applied to the sink tables (each once).
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (table_name text NOT NULL, column_name text NOT NULL,"
                    " dropped_at bigint NOT NULL, PRIMARY KEY (table_name, column_name, dropped_at))"
                ).format(self._qualified(COLUMN_DROPS_TABLE)),
            ],
        )
        self._created.add(CHECKPOINT_TABLE)

    def unavailable_as_sink_error(self) -> AbstractContextManager[None]:
        return unavailable_as(self.name, self._dsn, postgres_is_unavailable)

    @translates_outages
    def checkpoint(self, source: str) -> Checkpoint | None:
        return self._checkpoint(source)

    def _checkpoint(self, source: str) -> Checkpoint | None:
        self._ensure_bookkeeping()
        with transaction(self._dsn) as cursor:
            cursor.execute(
                sql.SQL(_SELECT_CHECKPOINT).format(self._qualified(CHECKPOINT_TABLE)),
                (source,),
            )
            row = cursor.fetchone()
        return checkpoint_from_row(*row) if row else None

    @translates_outages
    def adopt_checkpoint(self, source: str, checkpoint: Checkpoint) -> Checkpoint:
        self._ensure_bookkeeping()
        with transaction(self._dsn) as cursor:
            cursor.execute(
                sql.SQL(
                    "INSERT INTO {} (source, position, position_order, version_floor) VALUES (%s, %s, %s, %s)"
                    " ON CONFLICT (source) DO NOTHING"
                ).format(self._qualified(CHECKPOINT_TABLE)),
                (source, *checkpoint_row(checkpoint)),
            )
        adopted = self._checkpoint(source)
        assert adopted is not None
        return adopted

    def _ensure_table(self, layout: SinkTableLayout, source: str | None = None) -> None:
        """Create or update the table; `source` (a batch's) claims a cell table's name for it."""
        created_with = (source or "", *layout.ddl_signature)
        if layout.table_name in self._created or created_with in self._created_with:
            return
        self._ensure_bookkeeping()
        if layout.cell_schema is not None:
            # Row tables are checked by the schema sync; cell tables come here first.
            with transaction(self._dsn) as cursor:
                shaper = PostgresShaper(cursor, self._schema, CURRENT_VIEW_SUFFIX)
                conflict = (
                    shaper.name_conflict(layout.table_name)
                    if source is None
                    else table_name_conflict(shaper, layout.table_name, source, layout.source_table)
                )
            if conflict is not None:
                raise SinkNameTaken(conflict)
            with ddl_transaction(self._dsn, self._schema) as cursor:
                converted = convert_state_rows(cursor, self._qualified, self._schema, layout)
            if converted:
                _log.info(
                    "sink '%s': table %s converted to stamped cells (%d rows)", self.name, layout.table_name, converted
                )
            present = existing_columns(self._dsn, self._schema, layout.table_name)
            drops = self._new_column_drops(layout.table_name, layout.cell_schema.dropped_columns)
            dropping = sorted({column for column, _ in drops} & present)
            ddl = cell_table_ddl(self._qualified, layout, layout.table_name + CURRENT_VIEW_SUFFIX, present, dropping)
            # Recorded in the same transaction: each drop is applied once.
            ddl += [
                sql.SQL(
                    "INSERT INTO {} (table_name, column_name, dropped_at) VALUES ({}, {}, {}) ON CONFLICT DO NOTHING"
                ).format(
                    self._qualified(COLUMN_DROPS_TABLE), sql.Literal(layout.table_name), sql.Literal(c), sql.Literal(at)
                )
                for c, at in drops
            ]
            run_ddl(self._dsn, self._schema, ddl)
            self._apply_hypertable(layout)
            # Remembered with its columns and types: a column added at the source, or a type override
            # (an operator's fix), makes the DDL run again.
            self._created_with.add(created_with)
            return
        run_ddl(self._dsn, self._schema, row_table_ddl(self._qualified, layout, CURRENT_VIEW_SUFFIX))
        self._apply_hypertable(layout)
        self._created.add(layout.table_name)

    @translates_outages
    def release_schema_hold(self, source: str, source_table: str) -> bool:
        """Release a table held by a DDL statement (the operator marked it safe); True if it was held."""
        self._ensure_bookkeeping()
        with transaction(self._dsn) as cursor:
            cursor.execute(
                sql.SQL("DELETE FROM {} WHERE source = %s AND source_table = %s").format(self._qualified(HOLDS_TABLE)),
                (source, source_table),
            )
            return bool(cursor.rowcount)

    def _create_table(self, layout: SinkTableLayout) -> None:
        """Create the table even if this process created one of that name before (the source may
        have dropped or renamed it since)."""
        self._created.discard(layout.table_name)
        self._ensure_table(layout)

    def _new_column_drops(self, table_name: str, dropped_columns: tuple[tuple[str, int], ...]) -> list[tuple[str, int]]:
        """The source's column drops (Cassandra) this sink table has not applied yet."""
        if not dropped_columns:
            return []
        with transaction(self._dsn) as cursor:
            cursor.execute(
                sql.SQL("SELECT column_name, dropped_at FROM {} WHERE table_name = %s").format(
                    self._qualified(COLUMN_DROPS_TABLE)
                ),
                (table_name,),
            )
            applied = {(str(c), int(at)) for c, at in cursor.fetchall()}
        return [drop for drop in dropped_columns if drop not in applied]

    def _apply_hypertable(self, layout: SinkTableLayout) -> None:
        time_column = self._hypertables.get(layout.source_table)
        if time_column is None:
            return
        setting = f"sinks.{self.name}.hypertables.{layout.source_table}"
        with transaction(self._dsn) as cursor:
            note = make_hypertable(cursor, setting, self._qualified(layout.table_name), layout, time_column)
        self._table_notes[layout.table_name] = note

    def table_note(self, source_table: str) -> str | None:
        """What became of the table's TimescaleDB setting, once this sink has written it (None: no setting)."""
        return self._table_notes.get(sink_table_name(source_table))

    @translates_outages
    def write(
        self,
        batch: MappedBatch,
        record_rejections: Callable[[list[Rejection]], None],
        advance_checkpoint: bool = True,
    ) -> WriteResult:
        self._ensure_bookkeeping()
        try:
            # One transaction: the schema changes, the rows, the rejections and the checkpoint commit together.
            with transaction(self._dsn) as cursor:
                steps = _PostgresBatchSteps(self, cursor)
                return write_batch(self.name, steps, batch, outside_the_sink(record_rejections), advance_checkpoint)
        except BaseException:
            # The transaction rolled back, with any schema change it made.
            self._schema_sync.forget()
            raise

    def _live_rows(self, cursor: psycopg2.extensions.cursor, table: str) -> tuple[sql.Composable, sql.Composable]:
        """(what to read, the condition): the rows the `_current` view shows. A cell table's rows are
        read through its `__merged` view, which applies shadowing and TTLs."""
        if is_cell_table(cursor, self._schema, table):
            return self._qualified(merged_view_name(table)), live_condition()
        return self._qualified(table), sql.SQL("NOT {}").format(sql.Identifier(DELETED_COLUMN))

    @translates_outages
    def table_stats(self, source_table: str) -> TableStats | None:
        table = self._qualified(sink_table_name(source_table))
        with transaction(self._dsn) as cursor:
            cursor.execute("SELECT to_regclass(%s)", (table.as_string(cursor),))
            if cursor.fetchone()[0] is None:
                return None
            rows, live = self._live_rows(cursor, sink_table_name(source_table))
            cursor.execute(
                sql.SQL("SELECT count(*), coalesce(sum({}), 0) FROM {} WHERE {}").format(
                    sql.Identifier(VERSION_COLUMN), rows, live
                )
            )
            live, version_sum = cursor.fetchone()
        return TableStats(int(live), int(version_sum))

    @translates_outages
    def live_keys(self, source_table: str, key_columns: tuple[str, ...]) -> Iterator[tuple[Any, ...]]:
        connection = connect(self._dsn)
        try:
            # A named (server-side) cursor streams the keys instead of loading the table.
            with connection:
                with connection.cursor() as catalog:
                    rows, live = self._live_rows(catalog, sink_table_name(source_table))
                with connection.cursor(name="cdc_live_keys") as cursor:
                    cursor.itersize = 10_000
                    cursor.execute(
                        sql.SQL("SELECT {} FROM {} WHERE {}").format(
                            sql.SQL(", ").join(map(sql.Identifier, key_columns)),
                            rows,
                            live,
                        )
                    )
                    yield from cursor
        finally:
            connection.close()

    @translates_outages
    def older_live_keys(
        self, layout: SinkTableLayout, key_range: tuple[int, int] | None, version: int
    ) -> set[tuple[str, ...]]:
        refuse_cell_table_resync(layout)
        with transaction(self._dsn) as cursor:
            self._ensure_table(layout)
            self._select_older_live_keys(cursor, layout, key_range, version)
            return {tuple(canonical_key_part(part) for part in row) for row in cursor.fetchall()}

    def _select_older_live_keys(
        self,
        cursor: psycopg2.extensions.cursor,
        layout: SinkTableLayout,
        key_range: tuple[int, int] | None,
        version: int,
    ) -> None:
        keys = [sql.Identifier(k) for k in layout.key_columns]
        condition = sql.SQL("NOT {deleted} AND {version} < %(version)s").format(
            deleted=sql.Identifier(DELETED_COLUMN), version=sql.Identifier(VERSION_COLUMN)
        )
        if key_range is not None:
            condition = sql.SQL("{} AND {} BETWEEN %(low)s AND %(high)s").format(condition, keys[0])
        cursor.execute(
            sql.SQL("SELECT {} FROM {} WHERE {}").format(
                sql.SQL(", ").join(keys), self._qualified(layout.table_name), condition
            ),
            {
                "version": version,
                "low": key_range[0] if key_range else None,
                "high": key_range[1] if key_range else None,
            },
        )

    @translates_outages
    def tombstone_missing(
        self, layout: SinkTableLayout, key_range: tuple[int, int] | None, present: set[tuple[str, ...]], version: int
    ) -> int:
        refuse_cell_table_resync(layout)
        keys = [sql.Identifier(k) for k in layout.key_columns]
        with transaction(self._dsn) as cursor:
            self._ensure_table(layout)
            self._select_older_live_keys(cursor, layout, key_range, version)
            gone = [row for row in cursor.fetchall() if tuple(canonical_key_part(v) for v in row) not in present]
            if gone:
                match = sql.SQL(" AND ").join(sql.SQL("{} = %s").format(k) for k in keys)
                psycopg2.extras.execute_batch(
                    cursor,
                    # The version guard again: a streamed change may have landed since the SELECT.
                    sql.SQL("UPDATE {} SET {} = true, {} = %s WHERE {} AND {} < %s").format(
                        self._qualified(layout.table_name),
                        sql.Identifier(DELETED_COLUMN),
                        sql.Identifier(VERSION_COLUMN),
                        match,
                        sql.Identifier(VERSION_COLUMN),
                    ),
                    [(version, *row, version) for row in gone],
                    page_size=1000,
                )
        return len(gone)


class _PostgresBatchSteps:
    """The PostgreSQL primitives of the write algorithm (sinks/batch_write.py), all in the batch's
    one transaction (`cursor`)."""

    crash_prefix = "postgres"
    insert_chunk_rows: int | None = None

    def __init__(self, sink: PostgresSink, cursor: psycopg2.extensions.cursor) -> None:
        self.sink, self.cursor = sink, cursor

    def stored_checkpoint(self, batch: MappedBatch) -> Checkpoint | None:
        """This sink's checkpoint for the batch's source (None: it had none), locked until the batch
        commits, so that two writers of one source wait for each other instead of interleaving."""
        self.cursor.execute(
            sql.SQL(
                "INSERT INTO {} (source, position, position_order, version_floor) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (source) DO NOTHING RETURNING source"
            ).format(self.sink._qualified(CHECKPOINT_TABLE)),
            (batch.source, *checkpoint_row(batch.start)),
        )
        if self.cursor.fetchone() is not None:
            return None  # the row is new, and locked by this transaction already
        self.cursor.execute(
            sql.SQL(_SELECT_CHECKPOINT + " FOR UPDATE").format(self.sink._qualified(CHECKPOINT_TABLE)),
            (batch.source,),
        )
        return checkpoint_from_row(*self.cursor.fetchone())

    def sync_schema(self, batch: MappedBatch, floor: int) -> SchemaSyncResult:
        # Schema changes run in this transaction: they commit with the rows and the checkpoint.
        shaper = PostgresShaper(self.cursor, self.sink._schema, CURRENT_VIEW_SUFFIX)
        schema = self.sink._schema_sync.sync_batch(shaper, batch, floor, self.sink._create_table)
        # The shaper made the reshaped tables' views in this transaction; another session
        # re-running their DDL now would wait for this one's locks.
        self.sink._created.update(schema.reshaped)
        return schema

    def ensure_table(self, layout: SinkTableLayout, source: str) -> None:
        self.sink._ensure_table(layout, source=source)

    def row_inserter(self, layout: SinkTableLayout, rows: list[list[Any]]) -> Callable[[list[list[Any]]], None]:
        return row_inserter(self.cursor, self.sink._qualified, layout)

    def is_data_error(self, error: Exception) -> bool:
        return _is_data_error(error)

    def write_cells(
        self, layout: SinkTableLayout, rows: list[list[Any]], changes: list[RowChange], reject: RejectChange
    ) -> None:
        PostgresCellTableWriter(self.cursor, self.sink._qualified, layout, _is_data_error).write(rows, changes, reject)

    def advance_checkpoint(self, batch: MappedBatch, stored: Checkpoint | None) -> None:
        self.cursor.execute(
            sql.SQL(
                "UPDATE {} SET position = %s, position_order = %s, version_floor = %s, gtid = NULL, server_id = NULL,"
                " updated_at = now() WHERE source = %s"
            ).format(self.sink._qualified(CHECKPOINT_TABLE)),
            (*checkpoint_row(batch.end), batch.source),
        )
        crash_point("postgres_before_commit")
