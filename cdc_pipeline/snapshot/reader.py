"""Reads one chunk of a table at the source, in bounded slices, as change events."""

from __future__ import annotations

from collections.abc import Iterator

import pymysql
import pymysql.cursors

from cdc_pipeline.core.changes import ChangeOp, RowChange
from cdc_pipeline.core.schema import TableSchema
from cdc_pipeline.snapshot.chunks import Chunk
from cdc_pipeline.sources.mysql.catalog import quote_identifier
from cdc_pipeline.sources.mysql.connection import MySqlConnectionSettings


def read_chunk(
    settings: MySqlConnectionSettings, schema: TableSchema, chunk: Chunk, slice_rows: int = 10_000
) -> Iterator[list[RowChange]]:
    """The chunk's rows as inserts at the snapshot's version, `slice_rows` at a time (memory stays
    bounded by the slice, not the chunk), in the canonical value forms the binlog reader gives."""
    bits = [name for name in schema.column_names if schema.column(name).data_type == "bit"]
    position = f"snapshot:{schema.qualified_name}:{chunk.index}"
    names = schema.column_names
    for rows in _select(settings, schema, chunk, names, slice_rows):
        changes = []
        for row in rows:
            values = dict(zip(names, row, strict=True))
            for name in bits:  # the server sends BIT as bytes; the canonical form is the number
                if values[name] is not None:
                    values[name] = int.from_bytes(values[name], "big")  # type: ignore[arg-type]
            changes.append(RowChange(ChangeOp.INSERT, values, chunk.version, position, 0))
        yield changes


def read_chunk_keys(
    settings: MySqlConnectionSettings, schema: TableSchema, chunk: Chunk, slice_rows: int = 10_000
) -> Iterator[list[tuple[object, ...]]]:
    """Only the chunk's keys, `slice_rows` at a time."""
    yield from _select(settings, schema, chunk, schema.key_columns, slice_rows)


def _select(
    settings: MySqlConnectionSettings,
    schema: TableSchema,
    chunk: Chunk,
    columns: tuple[str, ...] | list[str],
    slice_rows: int,
) -> Iterator[list[tuple[object, ...]]]:
    table = f"{quote_identifier(schema.database)}.{quote_identifier(schema.name)}"
    query = f"SELECT {', '.join(quote_identifier(c) for c in columns)} FROM {table}"
    parameters: tuple[int, ...] = ()
    if chunk.low is not None and chunk.high is not None:
        query += f" WHERE {quote_identifier(schema.key_columns[0])} BETWEEN %s AND %s"
        parameters = (chunk.low, chunk.high)
    connection = pymysql.connect(**settings.as_pymysql_kwargs(), cursorclass=pymysql.cursors.SSCursor)
    try:
        with connection.cursor() as cursor:
            # TIMESTAMP values in UTC, as the binlog carries them.
            cursor.execute("SET time_zone = '+00:00'")
            cursor.execute(query, parameters)
            while rows := cursor.fetchmany(slice_rows):
                yield list(rows)
    finally:
        connection.close()
