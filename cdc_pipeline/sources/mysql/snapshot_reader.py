"""The initial load's reads from MySQL/MariaDB: handoff position, key statistics, chunks in slices."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pymysql
import pymysql.cursors

from cdc_pipeline.core.changes import ChangeOp, RowChange
from cdc_pipeline.core.checkpoint import Checkpoint
from cdc_pipeline.core.schema import TableSchema, split_qualified
from cdc_pipeline.sources.mysql.catalog import MySqlCatalog, quote_identifier
from cdc_pipeline.sources.mysql.connection import Connection, MySqlConnectionSettings
from cdc_pipeline.sources.mysql.gtid import Gtid
from cdc_pipeline.sources.mysql.positions import GtidPosition
from cdc_pipeline.sources.mysql.preflight import current_binlog_position
from cdc_pipeline.sources.mysql.resume import ResumeBy
from cdc_pipeline.sources.snapshot_source import ChunkBounds, ChunkSlice, KeyRange, splits_by_first_key


class MySqlSnapshotReader:
    def __init__(self, settings: MySqlConnectionSettings, catalog: MySqlCatalog, resume_by: ResumeBy) -> None:
        # The ClickHouse fast path reads these settings to pull chunks itself.
        self.settings = settings
        self._catalog = catalog
        self._resume_by = resume_by

    def table_schema(self, table: str) -> TableSchema | None:
        database, name = split_qualified(table)
        return self._catalog.table(database, name)

    def handoff_checkpoint(self) -> Checkpoint:
        with self.settings.connect() as connection, connection.cursor() as cursor:
            cursor.execute("SELECT @@server_id")
            server_id = int(cursor.fetchone()[0])
            gtid = None
            if self._resume_by == "gtid":
                # Read before the position: a transaction committed in between is then streamed too.
                cursor.execute("SELECT @@gtid_binlog_pos")
                state = str(cursor.fetchone()[0] or "")
                gtid = Gtid.parse(state) if state else Gtid(0, server_id, 0)
        position = current_binlog_position(self.settings)
        return Checkpoint(GtidPosition(position, gtid, server_id) if gtid is not None else position)

    def key_range(self, schema: TableSchema) -> KeyRange | None:
        if not splits_by_first_key(schema):
            return None
        key = quote_identifier(schema.key_columns[0])
        with self.settings.connect() as connection, connection.cursor() as cursor:
            cursor.execute(f"SELECT MIN({key}), MAX({key}), COUNT(*) FROM {_table(schema)}")
            low, high, rows = cursor.fetchone()
        return None if low is None else KeyRange(int(low), int(high), int(rows))

    def read_chunk(
        self, schema: TableSchema, bounds: ChunkBounds, version: int, slice_rows: int
    ) -> Iterator[ChunkSlice]:
        bits = [name for name in schema.column_names if schema.column(name).data_type == "bit"]
        position = f"snapshot:{schema.qualified_name}"
        names = schema.column_names
        for rows in self._select(schema, bounds, names, slice_rows):
            changes = []
            for row in rows:
                values = dict(zip(names, row, strict=True))
                for name in bits:  # the server sends BIT as bytes; the canonical form is the number
                    if values[name] is not None:
                        values[name] = int.from_bytes(values[name], "big")
                changes.append(RowChange(ChangeOp.INSERT, values, version, position, 0))
            yield ChunkSlice(changes)

    def read_chunk_keys(
        self, schema: TableSchema, bounds: ChunkBounds, slice_rows: int
    ) -> Iterator[list[tuple[Any, ...]]]:
        yield from self._select(schema, bounds, schema.key_columns, slice_rows)

    def _select(
        self, schema: TableSchema, bounds: ChunkBounds, columns: tuple[str, ...] | list[str], slice_rows: int
    ) -> Iterator[list[tuple[Any, ...]]]:
        query = f"SELECT {', '.join(quote_identifier(c) for c in columns)} FROM {_table(schema)}"
        parameters: tuple[int, ...] = ()
        if bounds.low is not None and bounds.high is not None:
            query += f" WHERE {quote_identifier(schema.key_columns[0])} BETWEEN %s AND %s"
            parameters = (bounds.low, bounds.high)
        connection = Connection(**self.settings.as_pymysql_kwargs(), cursorclass=pymysql.cursors.SSCursor)
        try:
            with connection.cursor() as cursor:
                # TIMESTAMP values in UTC, as the binlog carries them.
                cursor.execute("SET time_zone = '+00:00'")
                cursor.execute(query, parameters)
                while rows := cursor.fetchmany(slice_rows):
                    yield list(rows)
        finally:
            connection.close()


def _table(schema: TableSchema) -> str:
    return f"{quote_identifier(schema.database)}.{quote_identifier(schema.name)}"
