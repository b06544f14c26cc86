"""PostgreSQL tables of cell tables (Cassandra): stamped cells merged by the upsert, inside the batch's transaction.

A row holds, per scalar column, the value of the greatest write seen, and in `_stamps` (jsonb) that
write's stamp `[timestamp, is_tombstone, expires_at]` per column, the primary-key liveness under
the empty name (sinks/cell_merge/stamped_rows.py). A non-frozen collection's column holds its
elements as jsonb: order key -> `[timestamp, is_tombstone, expires_at, fragment]`. A batch is
COPied into a staging table and upserted: on conflict each column keeps the greater stamp's value
(jsonb arrays compare element by element), `_stamps` and the collections merge key by key with
`cdc_greatest_per_key`, `_deleted_at` and `_version` with greatest(). Nothing is read back to
merge in Python.

Shadowing and TTLs are evaluated when read, by the `<table>__merged` view (visible values,
`_version`, `_is_deleted`, `_live_until`) and the `<table>_current` view (the live rows).
Partition and range deletions are kept in `<table>__deletions`; the touched partitions are locked
(by hash bucket) so that a row and a deletion of one partition written at once see each other.

Tables of the earlier form (a JSON state per row in `_cells`) are converted in place, in the
transaction that first meets them (`convert_state_rows`).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import orjson
import psycopg2.extensions
import psycopg2.extras
from psycopg2 import sql

from cdc_pipeline.core.changes import RowChange
from cdc_pipeline.mapping.sink_types import (
    CELLS_COLUMN,
    DELETED_AT_COLUMN,
    DELETED_COLUMN,
    EXPIRY_COLUMN,
    KEY_COLUMN,
    LIVE_UNTIL_COLUMN,
    PARTITION_COLUMN,
    STAMPS_COLUMN,
    VERSION_COLUMN,
    SinkTableLayout,
)
from cdc_pipeline.shared.postgres_session import transaction
from cdc_pipeline.sinks.base import bisect_failures
from cdc_pipeline.sinks.cell_merge.deletions import DELETION_COLUMN, DELETIONS_SUFFIX, TIMESTAMP_COLUMN
from cdc_pipeline.sinks.cell_merge.stamped_batch import StampedBatch, StoredKey
from cdc_pipeline.sinks.cell_merge.stamped_rows import (
    JSON_VALUES,
    NO_TIME,
    TOMBSTONE_KEY,
    collection_of_state,
    stamps_of_state,
)
from cdc_pipeline.sinks.cell_merge.state import RowState
from cdc_pipeline.sinks.postgres import names as postgres_names
from cdc_pipeline.sinks.postgres.column_types import copy_text

Qualify = Callable[[str], sql.Composed]
# A power of two (the bucket is the partition hash's low bits): few enough that several writers'
# locks fit a default server's shared lock table, enough that small batches rarely share one.
_PARTITION_LOCK_BUCKETS = 512
MERGED_VIEW_SUFFIX = "__merged"
MERGE_FUNCTION = "cdc_greatest_per_key"
_LIVENESS_NAME = ""  # the liveness stamp's name in `_stamps` (no column is named so)
_NOW = sql.SQL("extract(epoch FROM now())")
_NO_TIME = sql.Literal(NO_TIME)
_CONVERT_PAGE_ROWS = 10_000


def live_condition() -> sql.Composed:
    """A row of `<table>__merged` that the `_current` view shows: not deleted, not ended by TTLs."""
    return sql.SQL("NOT {deleted} AND ({until} IS NULL OR {until} > {now})").format(
        deleted=sql.Identifier(DELETED_COLUMN), until=sql.Identifier(LIVE_UNTIL_COLUMN), now=_NOW
    )


def existing_columns(dsn: str, schema: str, table: str) -> set[str]:
    """The columns the sink table has now (none when it does not exist yet)."""
    with transaction(dsn) as cursor:
        return _columns(cursor, schema, table)


def _columns(cursor: psycopg2.extensions.cursor, schema: str, table: str) -> set[str]:
    cursor.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s",
        (schema, postgres_names.fit(table)),
    )
    return {str(name) for (name,) in cursor.fetchall()}


def is_cell_table(cursor: psycopg2.extensions.cursor, schema: str, table: str) -> bool:
    cursor.execute(
        "SELECT 1 FROM information_schema.columns WHERE table_schema = %s AND table_name = %s AND column_name = %s",
        (schema, postgres_names.fit(table), STAMPS_COLUMN),
    )
    return cursor.fetchone() is not None


def merged_view_name(table: str) -> str:
    return table + MERGED_VIEW_SUFFIX


def _collections(layout: SinkTableLayout) -> set[str]:
    assert layout.cell_schema is not None
    return {c.name for c in layout.cell_schema.columns if c.collection is not None}


def _column_type(layout: SinkTableLayout, name: str, sink_type: str) -> sql.Composable:
    if name in _collections(layout):
        return sql.SQL("jsonb NOT NULL DEFAULT '{}'")
    return sql.SQL(sink_type + (" NOT NULL" if name in layout.key_columns else ""))


def cell_table_ddl(
    qualify: Qualify, layout: SinkTableLayout, view_name: str, existing_columns: set[str], dropping: list[str]
) -> list[sql.Composable]:
    """The table, its indexes, its deletions table, the merge function and the views, brought up to
    `layout`. `dropping`: columns dropped at the source since the sink last looked; they are dropped
    here too (and added again, empty, if the source has a column of that name again: Cassandra does
    not show the values written before the drop). The caller converts a table of the earlier form
    first (`convert_state_rows`)."""
    key = set(layout.key_columns)
    table = qualify(layout.table_name)
    columns = [
        sql.SQL("{} {}").format(sql.Identifier(c.name), _column_type(layout, c.name, c.sink_type))
        for c in layout.columns
    ]
    columns += [
        sql.SQL("{} jsonb NOT NULL DEFAULT '{{}}'").format(sql.Identifier(STAMPS_COLUMN)),
        sql.SQL("{} bigint NOT NULL DEFAULT {}").format(sql.Identifier(DELETED_AT_COLUMN), _NO_TIME),
        sql.SQL("{} bigint NOT NULL").format(sql.Identifier(VERSION_COLUMN)),
        # Not indexed: rows are found by the primary key, or by `_partition` (indexed) and `_key`.
        sql.SQL("{} text NOT NULL").format(sql.Identifier(KEY_COLUMN)),
        sql.SQL("{} text NOT NULL").format(sql.Identifier(PARTITION_COLUMN)),
        sql.SQL("PRIMARY KEY ({})").format(sql.SQL(", ").join(map(sql.Identifier, layout.key_columns))),
    ]
    merged = qualify(merged_view_name(layout.table_name))
    return [
        sql.SQL(
            "CREATE OR REPLACE FUNCTION {}(stored jsonb, incoming jsonb) RETURNS jsonb"
            " LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$"
            # Only the incoming entries are visited (an update brings one or two): each replaces
            # the stored entry of its key when greater.
            " SELECT coalesce(stored, '{{}}'::jsonb) || coalesce((SELECT jsonb_object_agg(entry.key, entry.value)"
            " FROM jsonb_each(incoming) AS entry"
            " WHERE coalesce(stored -> entry.key, '[]'::jsonb) < entry.value), '{{}}'::jsonb) $fn$"
        ).format(qualify(MERGE_FUNCTION)),
        sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(table, sql.SQL(", ").join(columns)),
        sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({})").format(
            sql.Identifier(postgres_names.fit(f"{layout.table_name}{PARTITION_COLUMN}")),
            table,
            sql.Identifier(PARTITION_COLUMN),
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
        # Dropped and recreated, not replaced: the views' columns follow the source's, in its order
        # (and a column a view shows cannot be dropped).
        sql.SQL("DROP VIEW IF EXISTS {}").format(qualify(view_name)),
        sql.SQL("DROP VIEW IF EXISTS {}").format(merged),
        *(sql.SQL("ALTER TABLE {} DROP COLUMN IF EXISTS {}").format(table, sql.Identifier(c)) for c in dropping),
        *(
            sql.SQL("UPDATE {t} SET {s} = {s} - {c} WHERE {s} ? {c}").format(
                t=table, s=sql.Identifier(STAMPS_COLUMN), c=sql.Literal(c)
            )
            for c in dropping
        ),
        # Columns added at the source since the table was made (Cassandra's ALTER TABLE ADD): cells
        # written before hold nothing for them, so NULL is what Cassandra shows too. Only missing
        # ones: ALTER TABLE takes the table's exclusive lock even when there is nothing to add.
        *(
            sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
                table, sql.Identifier(c.name), _column_type(layout, c.name, c.sink_type)
            )
            for c in layout.columns
            if c.name not in key and (c.name not in existing_columns or c.name in dropping)
        ),
        sql.SQL("CREATE VIEW {} AS {}").format(merged, _merged_view(layout, table)),
        sql.SQL("CREATE VIEW {} AS SELECT {} FROM {} WHERE {}").format(
            qualify(view_name), sql.SQL(", ").join(map(sql.Identifier, layout.column_names)), merged, live_condition()
        ),
    ]


def _live_stamp(stamp: sql.Composable, shadow: sql.Composable) -> sql.Composed:
    """A write (`[timestamp, is_tombstone, expires_at, ...]` jsonb) no deletion at or after `shadow` hides."""
    return sql.SQL("(({s} ->> 0)::bigint > {shadow} AND ({s} ->> 1) = '0')").format(s=stamp, shadow=shadow)


def _unexpired(stamp: sql.Composable) -> sql.Composed:
    return sql.SQL("(({s} ->> 2)::bigint = {no} OR ({s} ->> 2)::bigint > {now})").format(s=stamp, no=_NO_TIME, now=_NOW)


def _merged_view(layout: SinkTableLayout, table: sql.Composable) -> sql.Composed:
    """`<table>__merged`: every row, what it shows (shadowing and TTLs applied), and the bookkeeping."""
    collections = _collections(layout)
    deleted_at = sql.SQL("src.{}").format(sql.Identifier(DELETED_AT_COLUMN))
    element = sql.SQL("element.value")

    def element_horizon(name: str) -> sql.Composed:
        # The collection's own tombstone is its element with the empty key.
        return sql.SQL("greatest({d}, coalesce((src.{c} -> {t} ->> 0)::bigint, {no}))").format(
            d=deleted_at, c=sql.Identifier(name), t=sql.Literal(TOMBSTONE_KEY), no=_NO_TIME
        )

    def live_elements(name: str) -> sql.Composed:
        return sql.SQL("FROM jsonb_each(src.{c}) AS element WHERE element.key <> {t} AND {live}").format(
            c=sql.Identifier(name), t=sql.Literal(TOMBSTONE_KEY), live=_live_stamp(element, element_horizon(name))
        )

    shown: list[sql.Composable] = []
    for column in layout.columns:
        name = sql.Identifier(column.name)
        if column.name in layout.key_columns:
            shown.append(sql.SQL("src.{0} AS {0}").format(name))
        elif column.name in collections:
            kind = layout.cell_schema.column(column.name).collection if layout.cell_schema else None
            ordered = sql.SQL('ORDER BY element.key COLLATE "C"')
            aggregate = (
                sql.SQL("jsonb_agg(element.value -> 3 {})").format(ordered)
                if kind in ("list", "set")
                else sql.SQL("jsonb_object_agg(element.value -> 3 ->> 0, element.value -> 3 -> 1 {})").format(ordered)
            )
            shown.append(
                sql.SQL("(SELECT {aggregate} {elements} AND {unexpired}) AS {name}").format(
                    aggregate=aggregate, elements=live_elements(column.name), unexpired=_unexpired(element), name=name
                )
            )
        else:
            stamp = sql.SQL("(src.{} -> {})").format(sql.Identifier(STAMPS_COLUMN), sql.Literal(column.name))
            shown.append(
                sql.SQL("CASE WHEN {live} AND {unexpired} THEN src.{name} END AS {name}").format(
                    live=_live_stamp(stamp, deleted_at), unexpired=_unexpired(stamp), name=name
                )
            )
    # Every live write's expiry (TTLs aside): scalar cells and the liveness, then collection elements.
    stamp = sql.SQL("stamp.value")
    lives = [
        sql.SQL("SELECT (stamp.value ->> 2)::bigint AS until FROM jsonb_each(src.{s}) AS stamp WHERE {live}").format(
            s=sql.Identifier(STAMPS_COLUMN), live=_live_stamp(stamp, deleted_at)
        )
    ]
    lives += [
        sql.SQL("SELECT (element.value ->> 2)::bigint {}").format(live_elements(name)) for name in sorted(collections)
    ]
    return sql.SQL(
        "SELECT {shown}, src.{version} AS {version}, lives.live IS NULL AS {deleted},"
        " CASE WHEN lives.forever THEN NULL ELSE lives.until END AS {until},"
        " src.{key} AS {key}, src.{partition} AS {partition}"
        " FROM {table} AS src CROSS JOIN LATERAL ("
        "SELECT bool_or(true) AS live, bool_or(live_writes.until = {no}) AS forever, max(live_writes.until) AS until"
        " FROM ({lives}) AS live_writes) AS lives"
    ).format(
        shown=sql.SQL(", ").join(shown),
        version=sql.Identifier(VERSION_COLUMN),
        deleted=sql.Identifier(DELETED_COLUMN),
        until=sql.Identifier(LIVE_UNTIL_COLUMN),
        key=sql.Identifier(KEY_COLUMN),
        partition=sql.Identifier(PARTITION_COLUMN),
        table=table,
        no=_NO_TIME,
        lives=sql.SQL(" UNION ALL ").join(lives),
    )


def _copy_value(value: Any) -> str:
    return "\\N" if value is None else str(value)


def _json_text(value: Any) -> str:
    return copy_text(orjson.dumps(value).decode())


class PostgresCellTableWriter:
    """Upserts one batch of one cell table into its PostgreSQL table, inside the caller's transaction."""

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

    def write(self, rows: list[list[Any]], changes: list[RowChange], reject: Callable[[RowChange, str], None]) -> None:
        """`rows`: the mapper's converted rows (COPY text), beside their `changes`."""
        cursor, layout = self._cursor, self._layout
        batch = StampedBatch(self._schema, layout.column_names, rows, changes, JSON_VALUES)
        deletions_table = self._qualify(layout.table_name + DELETIONS_SUFFIX)
        # Partition locks, in one order for every writer: a row and a range deletion of one
        # partition, written at once by two writers, would otherwise each miss the other. A lock per
        # partition would need one entry each in the server's shared lock table, which a default
        # server sizes at about 10,000 for all sessions (max_locks_per_transaction 64 x
        # max_connections 100): a batch over more partitions, or a cluster's node sources writing at
        # once, failed with "out of shared memory". So partitions are locked by hash bucket, at most
        # _PARTITION_LOCK_BUCKETS a table; two partitions of one bucket take turns, which is safe.
        cursor.execute(
            "SELECT count(pg_advisory_xact_lock(hashtext(%s), bucket)) FROM"
            " (SELECT DISTINCT (hashtextextended(p, 0) & %s)::int4 AS bucket FROM unnest(%s::text[]) AS p"
            " ORDER BY 1) AS locks",
            (layout.table_name, _PARTITION_LOCK_BUCKETS - 1, batch.partitions),
        )
        cursor.execute(
            sql.SQL("SELECT {p}, {d} FROM {t} WHERE {p} = ANY(%s)").format(
                p=sql.Identifier(PARTITION_COLUMN), d=sql.Identifier(DELETION_COLUMN), t=deletions_table
            ),
            (batch.partitions,),
        )
        new_deletions = batch.deletions(cursor.fetchall())
        if new_deletions:
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
                new_deletions,
            )

        def refuse(owners: list[RowChange], error: str) -> None:
            for change in owners:
                reject(change, error)

        lines, owners = batch.fold(*batch.lines())
        if lines:
            bisect_failures(
                [self._line(batch, line) for line in lines], owners, self._attempt, refuse, self._is_data_error
            )
        if batch.deleting_partitions:
            self._record_covering_deletions(batch)

    def _line(self, batch: StampedBatch, stamped: list[Any]) -> list[Any]:
        """A stamped row as a COPY line of the table's columns."""
        line: list[Any] = stamped[: len(self._layout.key_columns)]
        stamps: dict[str, list[int]] = {}
        for name, place, kind in batch.builder.value_places:
            cell = stamped[place]
            if kind is not None:
                keys, elements = cell
                line.append(_json_text(dict(zip(keys, elements, strict=True))))
                continue
            if cell[0] != NO_TIME:
                stamps[name] = [cell[0], cell[1], cell[2]]
            line.append(cell[3])
        at = batch.builder.bookkeeping_place
        deleted_at, liveness, version, key, partition = stamped[at : at + 5]
        if liveness[0] != NO_TIME:
            stamps[_LIVENESS_NAME] = [liveness[0], 0, liveness[1]]
        line += [_json_text(stamps), deleted_at, version, copy_text(key), copy_text(partition)]
        return line

    def _record_covering_deletions(self, batch: StampedBatch) -> None:
        """A batch deletion covering stored rows: recorded in each (the rows exist: an update)."""
        cursor = self._cursor
        cursor.execute(
            sql.SQL("SELECT {k}, {p} FROM {t} WHERE {p} = ANY(%s)").format(
                k=sql.Identifier(KEY_COLUMN),
                p=sql.Identifier(PARTITION_COLUMN),
                t=self._qualify(self._layout.table_name),
            ),
            (batch.deleting_partitions,),
        )
        stored: list[StoredKey] = [(key, partition, []) for key, partition in cursor.fetchall()]
        covered = [(partition, key, deleted_at) for (key, partition, _), deleted_at, _ in batch.covered(stored)]
        if not covered:
            return
        psycopg2.extras.execute_values(
            cursor,
            sql.SQL(
                "UPDATE {t} SET {d} = greatest({t}.{d}, covered.deleted_at),"
                " {v} = greatest({t}.{v}, covered.deleted_at)"
                " FROM (VALUES %s) AS covered (partition, key, deleted_at)"
                " WHERE {t}.{p} = covered.partition AND {t}.{k} = covered.key"
            )
            .format(
                t=self._qualify(self._layout.table_name),
                d=sql.Identifier(DELETED_AT_COLUMN),
                v=sql.Identifier(VERSION_COLUMN),
                k=sql.Identifier(KEY_COLUMN),
                p=sql.Identifier(PARTITION_COLUMN),
            )
            .as_string(cursor),
            sorted(covered),
        )

    def _attempt(self, lines: list[list[Any]]) -> None:
        cursor, layout = self._cursor, self._layout
        staging = postgres_names.staging_table_name(layout.table_name)
        all_columns = [
            *layout.column_names,
            STAMPS_COLUMN,
            DELETED_AT_COLUMN,
            VERSION_COLUMN,
            KEY_COLUMN,
            PARTITION_COLUMN,
        ]
        column_list = sql.SQL(", ").join(map(sql.Identifier, all_columns))
        keys = sql.SQL(", ").join(map(sql.Identifier, layout.key_columns))
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
                    "INSERT INTO {target} AS stored ({columns}) SELECT {columns} FROM {staging} ORDER BY {keys}"
                    " ON CONFLICT ({keys}) DO UPDATE SET {updates} WHERE NOT ({unchanged})"
                ).format(
                    target=self._qualify(layout.table_name),
                    columns=column_list,
                    staging=sql.Identifier(staging),
                    keys=keys,
                    updates=self._merges(),
                    unchanged=self._unchanged(),
                )
            )
        except Exception:
            cursor.execute("ROLLBACK TO SAVEPOINT cdc_cells")
            raise
        cursor.execute("RELEASE SAVEPOINT cdc_cells")

    def _unchanged(self) -> sql.Composed:
        """The stored row already holds everything the incoming one brings (a replay, or a change
        read from another replica): the update is skipped, sparing a new row version and its index
        entries."""
        layout = self._layout
        collections = _collections(layout)
        scalars = [n for n in layout.column_names if n not in layout.key_columns and n not in collections]
        held = [
            sql.SQL("stored.{0} @> EXCLUDED.{0}").format(sql.Identifier(name))
            for name in [STAMPS_COLUMN, *sorted(collections)]
        ]
        held += [
            sql.SQL("stored.{0} >= EXCLUDED.{0}").format(sql.Identifier(name))
            for name in (DELETED_AT_COLUMN, VERSION_COLUMN)
        ]
        if scalars:
            held.append(
                sql.SQL("({}) IS NOT DISTINCT FROM ({})").format(
                    sql.SQL(", ").join(sql.SQL("stored.{}").format(sql.Identifier(n)) for n in scalars),
                    sql.SQL(", ").join(sql.SQL("EXCLUDED.{}").format(sql.Identifier(n)) for n in scalars),
                )
            )
        return sql.SQL(" AND ").join(held)

    def _merges(self) -> sql.Composed:
        """The upsert's SET: each column merged with what the table holds, as Cassandra reconciles."""
        layout = self._layout
        collections = _collections(layout)
        merge = self._qualify(MERGE_FUNCTION)
        stamps = sql.Identifier(STAMPS_COLUMN)
        merges: list[sql.Composable] = []
        for name in layout.column_names:
            if name in layout.key_columns:
                continue
            column = sql.Identifier(name)
            if name in collections:
                merges.append(sql.SQL("{c} = {f}(stored.{c}, EXCLUDED.{c})").format(c=column, f=merge))
                continue
            mine = sql.SQL("coalesce(EXCLUDED.{} -> {}, '[]')").format(stamps, sql.Literal(name))
            theirs = sql.SQL("coalesce(stored.{} -> {}, '[]')").format(stamps, sql.Literal(name))
            # The greater stamp wins; one stamp with two values (two writers in one microsecond): the greater value.
            merges.append(
                sql.SQL(
                    "{c} = CASE WHEN {mine} > {theirs} OR ({mine} = {theirs} AND EXCLUDED.{c} > stored.{c})"
                    " THEN EXCLUDED.{c} ELSE stored.{c} END"
                ).format(c=column, mine=mine, theirs=theirs)
            )
        merges.append(sql.SQL("{s} = {f}(stored.{s}, EXCLUDED.{s})").format(s=stamps, f=merge))
        for name in (DELETED_AT_COLUMN, VERSION_COLUMN):
            merges.append(sql.SQL("{0} = greatest(stored.{0}, EXCLUDED.{0})").format(sql.Identifier(name)))
        return sql.SQL(", ").join(merges)


# -- the earlier form ------------------------------------------------------------------------------


def convert_state_rows(
    cursor: psycopg2.extensions.cursor, qualify: Qualify, schema: str, layout: SinkTableLayout
) -> int:
    """Convert a table of the earlier form (a JSON state per row in `_cells`) in place, in the
    caller's transaction: its visible values stay, the states become stamps and element maps, and
    the earlier bookkeeping goes. Returns the rows converted (0: nothing of the earlier form)."""
    assert layout.cell_schema is not None
    present = _columns(cursor, schema, layout.table_name)
    if CELLS_COLUMN not in present:
        return 0
    table = qualify(layout.table_name)
    collections = sorted(_collections(layout) & present)
    kinds = {c.name: c.collection or "" for c in layout.cell_schema.columns}
    cursor.execute(sql.SQL("DROP VIEW IF EXISTS {}").format(qualify(layout.table_name + "_current")))
    cursor.execute(
        sql.SQL(
            "ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} jsonb NOT NULL DEFAULT '{{}}',"
            " ADD COLUMN IF NOT EXISTS {} bigint NOT NULL DEFAULT {}"
        ).format(table, sql.Identifier(STAMPS_COLUMN), sql.Identifier(DELETED_AT_COLUMN), _NO_TIME)
    )
    # A collection's column held its rendered JSON; it holds its elements from now on (below).
    converted = 0
    after = ""
    while True:
        cursor.execute(
            sql.SQL("SELECT {k}, {c} FROM {t} WHERE {k} > %s ORDER BY {k} LIMIT %s").format(
                k=sql.Identifier(KEY_COLUMN), c=sql.Identifier(CELLS_COLUMN), t=table
            ),
            (after, _CONVERT_PAGE_ROWS),
        )
        page = cursor.fetchall()
        if not page:
            break
        values = []
        for key, state_text in page:
            state = RowState.from_json(state_text)
            cells, liveness, deleted_at = stamps_of_state(state)
            stamps: dict[str, Any] = dict(cells)
            if liveness[0] != NO_TIME:
                stamps[_LIVENESS_NAME] = [liveness[0], 0, liveness[1]]
            elements = [
                orjson.dumps(
                    dict(zip(*collection_of_state(kinds[name], state.collections.get(name), JSON_VALUES), strict=True))
                ).decode()
                for name in collections
            ]
            values.append((key, orjson.dumps(stamps).decode(), deleted_at, *elements))
        assignments = [
            sql.SQL("{s} = converted.stamps::jsonb").format(s=sql.Identifier(STAMPS_COLUMN)),
            sql.SQL("{d} = converted.deleted_at").format(d=sql.Identifier(DELETED_AT_COLUMN)),
            *(
                sql.SQL("{c} = converted.{e}::jsonb").format(c=sql.Identifier(name), e=sql.Identifier(f"elements_{i}"))
                for i, name in enumerate(collections)
            ),
        ]
        names = sql.SQL(", ").join(
            [sql.SQL("key, stamps, deleted_at")] + [sql.Identifier(f"elements_{i}") for i in range(len(collections))]
        )
        psycopg2.extras.execute_values(
            cursor,
            sql.SQL("UPDATE {t} SET {a} FROM (VALUES %s) AS converted ({n}) WHERE {t}.{k} = converted.key")
            .format(t=table, a=sql.SQL(", ").join(assignments), n=names, k=sql.Identifier(KEY_COLUMN))
            .as_string(cursor),
            values,
            page_size=1000,
        )
        converted += len(page)
        after = page[-1][0]
    for name in (CELLS_COLUMN, DELETED_COLUMN, EXPIRY_COLUMN, LIVE_UNTIL_COLUMN):
        cursor.execute(sql.SQL("ALTER TABLE {} DROP COLUMN IF EXISTS {}").format(table, sql.Identifier(name)))
    # Its `_key` index served the earlier form's reads; stamped tables find rows by primary key.
    cursor.execute(
        sql.SQL("DROP INDEX IF EXISTS {}").format(postgres_names.relation(schema, f"{layout.table_name}{KEY_COLUMN}"))
    )
    return converted
