"""The initial load's reads from PostgreSQL: handoff position, key statistics, chunks in slices.

Values are selected as text and parsed by the same parsers as the WAL reader's, so a row loaded by
the snapshot and the same row streamed are equal value for value.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

from psycopg2 import sql

from cdc_pipeline.core.changes import ChangeOp, Rejection, RowChange
from cdc_pipeline.core.checkpoint import Checkpoint
from cdc_pipeline.core.schema import TableSchema
from cdc_pipeline.sources.postgres.change_source import PostgresChangeSource
from cdc_pipeline.sources.postgres.column_types import ValueNotDecodable, ValueParser, value_parser, why_unparseable
from cdc_pipeline.sources.postgres.positions import LogSequenceNumber
from cdc_pipeline.sources.postgres.replication_slot import LogicalDecodingError, autocommit_cursor
from cdc_pipeline.sources.snapshot_source import ChunkBounds, ChunkSlice, KeyRange, splits_by_first_key

_IN_FLIGHT_TIMEOUT_SECONDS = 300.0
_IN_FLIGHT_POLL_SECONDS = 0.05
_BIGINT_MAX = 2**63 - 1


class PostgresSnapshotReader:
    def __init__(self, source: PostgresChangeSource) -> None:
        self._source = source
        self._settings = source.settings

    def table_schema(self, table: str) -> TableSchema | None:
        return self._source.table_schema(table)

    def handoff_checkpoint(self) -> Checkpoint:
        """The WAL position streaming replays from, once nothing committed before it can be invisible.

        A commit is written to the WAL a moment before other sessions can see it. So after taking
        the position, wait until every transaction that was running then has ended: from then on,
        each transaction committed before the position is visible to the chunk reads.
        """
        self._source.ensure_slot()  # the slot must keep the WAL from the handoff on
        with autocommit_cursor(self._settings) as cursor:
            cursor.execute("SELECT pg_current_wal_flush_lsn()::text, pg_snapshot_xmax(pg_current_snapshot())::text")
            position, running_below = cursor.fetchone()
            deadline = time.monotonic() + _IN_FLIGHT_TIMEOUT_SECONDS
            while True:
                cursor.execute("SELECT pg_snapshot_xmin(pg_current_snapshot()) >= %s::xid8", (running_below,))
                if cursor.fetchone()[0]:
                    break
                if time.monotonic() > deadline:
                    raise LogicalDecodingError(
                        f"{self._settings.describe()}: transactions running at the handoff ({position}) did not end"
                        f" within {_IN_FLIGHT_TIMEOUT_SECONDS:.0f} s; end them and plan the load again"
                    )
                time.sleep(_IN_FLIGHT_POLL_SECONDS)  # polling the server's own state, with a deadline
        return Checkpoint(LogSequenceNumber.parse(position))

    def key_range(self, schema: TableSchema) -> KeyRange | None:
        if not splits_by_first_key(schema):
            return None
        key = sql.Identifier(schema.key_columns[0])
        query = sql.SQL("SELECT min({k})::bigint, max({k})::bigint, count(*) FROM {t}").format(
            k=key, t=sql.Identifier(schema.database, schema.name)
        )
        with autocommit_cursor(self._settings) as cursor:
            cursor.execute(query)
            low, high, rows = cursor.fetchone()
        return None if low is None else KeyRange(int(low), int(high), int(rows))

    def read_chunk(
        self, schema: TableSchema, bounds: ChunkBounds, version: int, slice_rows: int
    ) -> Iterator[ChunkSlice]:
        position = f"snapshot:{schema.qualified_name}"
        names = schema.column_names
        parsers = [value_parser(schema.column(name)) for name in names]
        for rows in self._select(schema, bounds, names, slice_rows):
            changes, rejections = [], []
            for row in rows:
                try:
                    values = dict(zip(names, _parse(parsers, schema, names, row), strict=True))
                except ValueNotDecodable as error:
                    raw = dict(zip(names, row, strict=True))
                    rejections.append(
                        Rejection("parse", schema.qualified_name, ChangeOp.INSERT, str(error), position, version, raw)
                    )
                    continue
                changes.append(RowChange(ChangeOp.INSERT, values, version, position, 0))
            yield ChunkSlice(changes, rejections)

    def read_chunk_keys(
        self, schema: TableSchema, bounds: ChunkBounds, slice_rows: int
    ) -> Iterator[list[tuple[Any, ...]]]:
        parsers = [value_parser(schema.column(name)) for name in schema.key_columns]
        for rows in self._select(schema, bounds, schema.key_columns, slice_rows):
            yield [_parse(parsers, schema, schema.key_columns, row) for row in rows]

    def _select(
        self, schema: TableSchema, bounds: ChunkBounds, columns: tuple[str, ...] | list[str], slice_rows: int
    ) -> Iterator[list[tuple[Any, ...]]]:
        query = sql.SQL("SELECT {} FROM {}").format(
            sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in columns),
            sql.Identifier(schema.database, schema.name),
        )
        parameters: tuple[int, ...] = ()
        if bounds.low is not None and bounds.high is not None:
            query += sql.SQL(" WHERE {} BETWEEN %s AND %s").format(sql.Identifier(schema.key_columns[0]))
            # PostgreSQL integers are signed: an open upper bound beyond bigint would compare as numeric.
            parameters = (bounds.low, min(bounds.high, _BIGINT_MAX))
        connection = self._settings.connect()
        try:
            with connection.cursor(name="cdc_snapshot_chunk") as cursor:
                cursor.itersize = slice_rows
                cursor.execute(query, parameters)
                while rows := cursor.fetchmany(slice_rows):
                    yield rows
        finally:
            connection.close()


def _parse(
    parsers: list[ValueParser | None], schema: TableSchema, names: Sequence[str], row: tuple[Any, ...]
) -> tuple[Any, ...]:
    values = []
    for parse, name, value in zip(parsers, names, row, strict=True):
        try:
            values.append(parse(value) if parse is not None and value is not None else value)
        except ValueError:
            raise ValueNotDecodable(f"column {name}: {why_unparseable(value, schema.column(name))}") from None
    return tuple(values)
