"""PostgreSQL tables of cell tables (Cassandra): merged states, written inside the batch's transaction.

Per batch and table: lock the touched partitions, read the stored states of the touched rows (and
of every row of a partition a deletion touched) with the partition's stored deletions, merge
(sinks/cell_merge/), then COPY the merged rows into a staging table and upsert them. The merge is
authoritative under the locks, so the upsert has no version guard: a merge that only added an
older cell keeps `_version` and must still replace the row.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import psycopg2.extensions
import psycopg2.extras
from psycopg2 import sql

from cdc_pipeline.core.changes import RowChange
from cdc_pipeline.mapping.sink_types import (
    CELL_BOOKKEEPING,
    CELLS_COLUMN,
    DELETED_COLUMN,
    EXPIRY_COLUMN,
    KEY_COLUMN,
    LIVE_UNTIL_COLUMN,
    PARTITION_COLUMN,
    VERSION_COLUMN,
    SinkTableLayout,
)
from cdc_pipeline.shared.postgres_session import transaction
from cdc_pipeline.sinks.base import bisect_failures
from cdc_pipeline.sinks.cell_merge.table_merge import (
    DELETION_COLUMN,
    DELETIONS_SUFFIX,
    TIMESTAMP_COLUMN,
    CellTableMerge,
    MergedRow,
)
from cdc_pipeline.sinks.postgres import names as postgres_names
from cdc_pipeline.sinks.postgres.column_types import copy_text

Qualify = Callable[[str], sql.Composed]
# A power of two (the bucket is the partition hash's low bits): few enough that several writers'
# locks fit a default server's shared lock table, enough that small batches rarely share one.
_PARTITION_LOCK_BUCKETS = 512


def live_condition() -> sql.Composed:
    """A row the `_current` view shows: not deleted, and not ended by TTLs (evaluated now)."""
    return sql.SQL("NOT {deleted} AND ({until} IS NULL OR {until} > extract(epoch FROM now()))").format(
        deleted=sql.Identifier(DELETED_COLUMN), until=sql.Identifier(LIVE_UNTIL_COLUMN)
    )


def existing_columns(dsn: str, schema: str, table: str) -> set[str]:
    """The columns the sink table has now (none when it does not exist yet)."""
    with transaction(dsn) as cursor:
        cursor.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s",
            (schema, postgres_names.fit(table)),
        )
        return {str(name) for (name,) in cursor.fetchall()}


def has_cell_bookkeeping(cursor: psycopg2.extensions.cursor, schema: str, table: str) -> bool:
    cursor.execute(
        "SELECT 1 FROM information_schema.columns WHERE table_schema = %s AND table_name = %s AND column_name = %s",
        (schema, postgres_names.fit(table), CELLS_COLUMN),
    )
    return cursor.fetchone() is not None


def cell_table_ddl(
    qualify: Qualify, layout: SinkTableLayout, view_name: str, existing_columns: set[str], dropping: list[str]
) -> list[sql.Composable]:
    """The table, its indexes, its deletions table and its `_current` view, brought up to `layout`.

    `dropping`: columns dropped at the source since the sink last looked; they are dropped here too
    (and added again, empty, if the source has a column of that name again: Cassandra does not show
    the values written before the drop).
    """
    key = set(layout.key_columns)
    table = qualify(layout.table_name)
    columns = [
        sql.SQL("{} {}{}").format(
            sql.Identifier(c.name), sql.SQL(c.sink_type), sql.SQL(" NOT NULL" if c.name in key else "")
        )
        for c in layout.columns
    ]
    columns += [
        sql.SQL("{} bigint NOT NULL").format(sql.Identifier(VERSION_COLUMN)),
        sql.SQL("{} boolean NOT NULL DEFAULT false").format(sql.Identifier(DELETED_COLUMN)),
        sql.SQL("{} text NOT NULL").format(sql.Identifier(CELLS_COLUMN)),
        # Indexed, not UNIQUE: the primary key already makes it unique, and TimescaleDB refuses a
        # unique index without the hypertable's time column.
        sql.SQL("{} text NOT NULL").format(sql.Identifier(KEY_COLUMN)),
        sql.SQL("{} text NOT NULL").format(sql.Identifier(PARTITION_COLUMN)),
        sql.SQL("{} jsonb NOT NULL").format(sql.Identifier(EXPIRY_COLUMN)),
        sql.SQL("{} bigint").format(sql.Identifier(LIVE_UNTIL_COLUMN)),
        sql.SQL("PRIMARY KEY ({})").format(sql.SQL(", ").join(map(sql.Identifier, layout.key_columns))),
    ]
    # A value whose TTL has passed shows as NULL; key columns never expire.
    shown = [
        sql.Identifier(c)
        if c in key
        else sql.SQL(
            "CASE WHEN ({expiry} ->> {name})::bigint <= extract(epoch FROM now()) THEN NULL ELSE {c} END AS {c}"
        ).format(expiry=sql.Identifier(EXPIRY_COLUMN), name=sql.Literal(c), c=sql.Identifier(c))
        for c in layout.column_names
    ]
    return [
        sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(table, sql.SQL(", ").join(columns)),
        sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({})").format(
            sql.Identifier(postgres_names.fit(f"{layout.table_name}{PARTITION_COLUMN}")),
            table,
            sql.Identifier(PARTITION_COLUMN),
        ),
        sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({})").format(
            sql.Identifier(postgres_names.fit(f"{layout.table_name}{KEY_COLUMN}")), table, sql.Identifier(KEY_COLUMN)
        ),
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} ({p} text NOT NULL, {d} text NOT NULL, {t} bigint NOT NULL,"
            " PRIMARY KEY ({p}, {d}))"
        ).format(
            qualify(layout.table_name + DELETIONS_SUFFIX),
            p=sql.Identifier(PARTITION_COLUMN),
            d=sql.Identifier(DELETION_COLUMN),
            t=sql.Identifier(TIMESTAMP_COLUMN),
        ),
        # Dropped and recreated, not replaced: the view's columns follow the source's, in its order
        # (and a column the view shows cannot be dropped).
        sql.SQL("DROP VIEW IF EXISTS {}").format(qualify(view_name)),
        *(sql.SQL("ALTER TABLE {} DROP COLUMN IF EXISTS {}").format(table, sql.Identifier(c)) for c in dropping),
        # Columns added at the source since the table was made (Cassandra's ALTER TABLE ADD): cells
        # written before hold nothing for them, so NULL is what Cassandra shows too. Only missing
        # ones: ALTER TABLE takes the table's exclusive lock even when there is nothing to add.
        *(
            sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
                table, sql.Identifier(c.name), sql.SQL(c.sink_type)
            )
            for c in layout.columns
            if c.name not in key and (c.name not in existing_columns or c.name in dropping)
        ),
        sql.SQL("CREATE VIEW {} AS SELECT {} FROM {} WHERE {}").format(
            qualify(view_name), sql.SQL(", ").join(shown), table, live_condition()
        ),
    ]


def _copy_value(value: Any) -> str:
    return "\\N" if value is None else str(value)


class PostgresCellTableWriter:
    """Merges one batch of one cell table into its PostgreSQL table, inside the caller's transaction."""

    def __init__(
        self,
        cursor: psycopg2.extensions.cursor,
        qualify: Qualify,
        layout: SinkTableLayout,
        is_data_error: Callable[[Exception], bool],
    ) -> None:
        assert layout.cell_schema is not None
        self._cursor = cursor
        self._qualify = qualify
        self._layout = layout
        self._schema = layout.cell_schema
        self._is_data_error = is_data_error

    def write(self, changes: list[RowChange], reject: Callable[[RowChange, str], None]) -> None:
        cursor, layout = self._cursor, self._layout
        merge = CellTableMerge(self._schema, changes)
        table = self._qualify(layout.table_name)
        deletions_table = self._qualify(layout.table_name + DELETIONS_SUFFIX)
        # Partition locks, in one order for every writer: a concurrent writer of the same partition
        # (a new row, a range deletion) waits instead of merging against a state about to change.
        # A lock per partition would need one entry each in the server's shared lock table, which a
        # default server sizes at about 10,000 for all sessions (max_locks_per_transaction 64 x
        # max_connections 100): a batch over more partitions, or a cluster's node sources writing at
        # once, failed with "out of shared memory". So partitions are locked by hash bucket, at most
        # _PARTITION_LOCK_BUCKETS a table; two partitions of one bucket take turns, which is safe.
        cursor.execute(
            "SELECT count(pg_advisory_xact_lock(hashtext(%s), bucket)) FROM"
            " (SELECT DISTINCT (hashtextextended(p, 0) & %s)::int4 AS bucket FROM unnest(%s::text[]) AS p"
            " ORDER BY 1) AS locks",
            (layout.table_name, _PARTITION_LOCK_BUCKETS - 1, merge.partitions),
        )
        cursor.execute(
            sql.SQL("SELECT {k}, {c} FROM {t} WHERE {k} = ANY(%s) OR {p} = ANY(%s) ORDER BY {k} FOR UPDATE").format(
                k=sql.Identifier(KEY_COLUMN),
                c=sql.Identifier(CELLS_COLUMN),
                t=table,
                p=sql.Identifier(PARTITION_COLUMN),
            ),
            (merge.keys, merge.deleting_partitions),
        )
        stored_states = dict(cursor.fetchall())
        cursor.execute(
            sql.SQL("SELECT {p}, {d} FROM {t} WHERE {p} = ANY(%s)").format(
                p=sql.Identifier(PARTITION_COLUMN), d=sql.Identifier(DELETION_COLUMN), t=deletions_table
            ),
            (merge.partitions,),
        )
        result = merge.merge(stored_states, cursor.fetchall())
        if result.new_deletions:
            psycopg2.extras.execute_values(
                cursor,
                sql.SQL("INSERT INTO {} ({}, {}, {}) VALUES %s ON CONFLICT DO NOTHING")
                .format(
                    deletions_table,
                    sql.Identifier(PARTITION_COLUMN),
                    sql.Identifier(DELETION_COLUMN),
                    sql.Identifier(TIMESTAMP_COLUMN),
                )
                .as_string(cursor),
                [(partition, d.to_json(), d.timestamp) for partition, d in result.new_deletions],
            )

        def refuse(row: MergedRow, error: str) -> None:
            for change in row.changes:
                reject(change, error)

        lines, merged = result.lines(self._line, refuse)
        if lines:
            bisect_failures(lines, merged, self._attempt, refuse, self._is_data_error)

    def _line(self, row: MergedRow) -> list[Any]:
        line: list[Any] = [column.converted(row.values[column.name]) for column in self._layout.columns]
        line += [
            row.version,
            "t" if row.is_deleted else "f",
            copy_text(row.state),
            copy_text(row.key),
            copy_text(row.partition),
            copy_text(row.expiry),
            row.live_until,
        ]
        return line

    def _attempt(self, lines: list[list[Any]]) -> None:
        cursor, layout = self._cursor, self._layout
        staging = postgres_names.staging_table_name(layout.table_name)
        all_columns = [*layout.column_names, VERSION_COLUMN, DELETED_COLUMN, *CELL_BOOKKEEPING]
        column_list = sql.SQL(", ").join(map(sql.Identifier, all_columns))
        keys = sql.SQL(", ").join(map(sql.Identifier, layout.key_columns))
        updates = sql.SQL(", ").join(
            sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in all_columns if c not in layout.key_columns
        )
        cursor.execute("SAVEPOINT cdc_cells")
        try:
            cursor.execute(
                sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {}) ON COMMIT DROP").format(
                    sql.Identifier(staging), self._qualify(layout.table_name)
                )
            )
            cursor.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(staging)))
            cursor.copy_expert(
                sql.SQL("COPY {} ({}) FROM STDIN").format(sql.Identifier(staging), column_list).as_string(cursor),
                io.StringIO("\n".join("\t".join(map(_copy_value, line)) for line in lines) + "\n"),
            )
            cursor.execute(
                sql.SQL(
                    "INSERT INTO {target} ({columns}) SELECT {columns} FROM {staging} ORDER BY {keys}"
                    " ON CONFLICT ({keys}) DO UPDATE SET {updates}"
                ).format(
                    target=self._qualify(layout.table_name),
                    columns=column_list,
                    staging=sql.Identifier(staging),
                    keys=keys,
                    updates=updates,
                )
            )
        except Exception:
            cursor.execute("ROLLBACK TO SAVEPOINT cdc_cells")
            raise
        cursor.execute("RELEASE SAVEPOINT cdc_cells")
