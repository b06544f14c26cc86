"""Row tables in PostgreSQL: one row per key carrying its newest `_version`, deletes kept as
tombstones; written by COPY into a staging table and one version-guarded merge per chunk.

(Cassandra's cell tables, merged cell by cell, are in cell_tables.py.)
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import psycopg2.extensions
from psycopg2 import sql

from cdc_pipeline.mapping.sink_types import DELETED_COLUMN, VERSION_COLUMN, SinkTableLayout
from cdc_pipeline.sinks.postgres import names as postgres_names

# The schema-qualified relation for a table name (names.relation bound to the sink's schema).
Qualify = Callable[[str], sql.Composed]


def row_table_ddl(qualified: Qualify, layout: SinkTableLayout, view_suffix: str) -> list[sql.Composable]:
    """The table and its `_current` view (the live rows), both made if missing."""
    key = set(layout.key_columns)
    column_sql = [
        sql.SQL("{} {}{}").format(
            sql.Identifier(c.name), sql.SQL(c.sink_type), sql.SQL(" NOT NULL" if c.name in key else "")
        )
        for c in layout.columns
    ]
    column_sql.append(sql.SQL("{} bigint NOT NULL").format(sql.Identifier(VERSION_COLUMN)))
    column_sql.append(sql.SQL("{} boolean NOT NULL DEFAULT false").format(sql.Identifier(DELETED_COLUMN)))
    column_sql.append(sql.SQL("PRIMARY KEY ({})").format(sql.SQL(", ").join(map(sql.Identifier, layout.key_columns))))
    create_table = sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(
        qualified(layout.table_name), sql.SQL(", ").join(column_sql)
    )
    # Deleted rows stay as tombstones (so a late replay cannot resurrect them); the view hides them.
    create_view = sql.SQL("CREATE OR REPLACE VIEW {} AS SELECT {} FROM {} WHERE NOT {}").format(
        qualified(layout.table_name + view_suffix),
        sql.SQL(", ").join(map(sql.Identifier, layout.column_names)),
        qualified(layout.table_name),
        sql.Identifier(DELETED_COLUMN),
    )
    return [create_table, create_view]


def row_inserter(
    cursor: psycopg2.extensions.cursor, qualified: Qualify, layout: SinkTableLayout
) -> Callable[[list[list[Any]]], None]:
    """What writes a chunk of rows all-or-nothing, inside a savepoint of the batch's transaction."""
    staging = postgres_names.staging_table_name(layout.table_name)
    cursor.execute(
        sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {}) ON COMMIT DROP").format(
            sql.Identifier(staging), qualified(layout.table_name)
        )
    )
    merge = _merge_statement(qualified, layout, staging)
    copy = (
        sql.SQL("COPY {} ({}) FROM STDIN")
        .format(
            sql.Identifier(staging),
            sql.SQL(", ").join(map(sql.Identifier, [*layout.column_names, VERSION_COLUMN, DELETED_COLUMN])),
        )
        .as_string(cursor)
    )
    truncate = sql.SQL("TRUNCATE {}").format(sql.Identifier(staging))

    def insert(chunk: list[list[Any]]) -> None:
        cursor.execute("SAVEPOINT cdc_chunk")
        try:
            cursor.execute(truncate)
            cursor.copy_expert(copy, io.StringIO("\n".join(map(_copy_line, chunk)) + "\n"))
            cursor.execute(merge)
        except Exception:
            cursor.execute("ROLLBACK TO SAVEPOINT cdc_chunk")
            raise
        cursor.execute("RELEASE SAVEPOINT cdc_chunk")

    return insert


def _copy_line(row: list[Any]) -> str:
    return "\t".join("\\N" if value is None else str(value) for value in row)


def _merge_statement(qualified: Qualify, layout: SinkTableLayout, staging: str) -> sql.Composed:
    all_columns = [*layout.column_names, VERSION_COLUMN, DELETED_COLUMN]
    target = qualified(layout.table_name)
    updates = [
        sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in all_columns if c not in layout.key_columns
    ]
    return sql.SQL(
        # Rows in key order: concurrent writers (a replication run beside backfill chunks) then
        # lock rows in the same order and do not deadlock each other.
        "INSERT INTO {target} AS t ({columns}) SELECT {columns} FROM {staging} ORDER BY {keys}"
        " ON CONFLICT ({keys}) DO UPDATE SET {updates} WHERE t.{version} < EXCLUDED.{version}"
    ).format(
        target=target,
        columns=sql.SQL(", ").join(map(sql.Identifier, all_columns)),
        staging=sql.Identifier(staging),
        keys=sql.SQL(", ").join(map(sql.Identifier, layout.key_columns)),
        updates=sql.SQL(", ").join(updates),
        version=sql.Identifier(VERSION_COLUMN),
    )
