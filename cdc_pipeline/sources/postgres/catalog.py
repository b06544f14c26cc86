"""Table schemas of a PostgreSQL source, read from pg_catalog: column types, nullability, keys."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from psycopg2 import sql

from cdc_pipeline.config.sources import TableSelection
from cdc_pipeline.core.schema import ColumnSchema, TableSchema, qualify
from cdc_pipeline.sources.postgres.column_types import PgType, column_schema, value_parser
from cdc_pipeline.sources.postgres.connection import PostgresSourceSettings

_SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")
_LIVE_KEY_BATCH = 10_000

# Domains resolve to their base type; an array's element type does not matter (text form).
_COLUMNS = """
SELECT a.attname, a.attnum, COALESCE(NULLIF(a.atttypmod, -1), base.typtypmod, -1),
       NOT a.attnotnull, COALESCE(base.oid, t.oid), COALESCE(base.typname, t.typname),
       COALESCE(base.typtype, t.typtype) = 'e'
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_type base ON t.typtype = 'd' AND base.oid = t.typbasetype
WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""
# The primary key, else the replica identity index: the columns pgoutput's old images carry.
_KEY = """
SELECT i.indisprimary, array_agg(a.attname ORDER BY array_position(i.indkey::int2[], a.attnum))
FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
WHERE i.indrelid = %s AND (i.indisprimary OR i.indisreplident)
GROUP BY i.indexrelid, i.indisprimary
ORDER BY i.indisprimary DESC
LIMIT 1
"""


# A type as a relation message names it (by oid): domains resolved like _COLUMNS does.
_TYPE = """
SELECT COALESCE(base.oid, t.oid), COALESCE(base.typname, t.typname), COALESCE(base.typtype, t.typtype) = 'e',
       COALESCE(base.typtypmod, -1)
FROM pg_type t LEFT JOIN pg_type base ON t.typtype = 'd' AND base.oid = t.typbasetype
WHERE t.oid = %s
"""
# Columns added with a constant default after rows existed: those rows read the default from
# attmissingval (PostgreSQL 11+ does not rewrite them, so the WAL never carries their value).
_MISSING_VALUES = """
SELECT a.attname, (a.attmissingval::text::text[])[1]
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped AND a.atthasmissing
"""


class PostgresCatalog:
    """Reads and caches the schemas of the selected tables ('schema.table')."""

    def __init__(
        self, settings: PostgresSourceSettings, selection: TableSelection, key_overrides: dict[str, list[str]]
    ) -> None:
        self._settings = settings
        self._selection = selection
        self._key_overrides = key_overrides
        self._cache: dict[tuple[str, str], TableSchema | None] = {}
        self._types: dict[int, tuple[PgType, int]] = {}

    def selects(self, schema: str, table: str) -> bool:
        return schema not in _SYSTEM_SCHEMAS and self._selection.selects(schema, table)

    def table(self, schema: str, table: str) -> TableSchema | None:
        key = (schema, table)
        if key not in self._cache:
            self._cache[key] = self._read_table(schema, table)
        return self._cache[key]

    def forget(self, schema: str, table: str) -> None:
        """Drop a cached schema (the source sent a changed relation description)."""
        self._cache.pop((schema, table), None)

    def key_override(self, schema: str, table: str) -> tuple[str, ...] | None:
        override = self._key_overrides.get(qualify(schema, table))
        return tuple(override) if override is not None else None

    def type_of(self, oid: int) -> tuple[PgType, int]:
        """The type a relation message names by oid, and a domain's own type modifier (-1: none)."""
        if oid not in self._types:
            with self._settings.connect() as connection, connection.cursor() as cursor:
                cursor.execute(_TYPE, (oid,))
                row = cursor.fetchone()
            connection.close()
            if row is None:
                raise ValueError(f"type oid {oid} is not in pg_type (dropped since the change was written?)")
            self._types[oid] = (PgType(int(row[0]), str(row[1]), bool(row[2])), int(row[3]))
        return self._types[oid]

    def missing_values(self, schema: str, table: str) -> dict[str, str | None]:
        """Columns whose pre-existing rows read a default the WAL never carried, with its text."""
        with self._settings.connect() as connection, connection.cursor() as cursor:
            cursor.execute(_MISSING_VALUES, (schema, table))
            rows = cursor.fetchall()
        connection.close()
        return {str(name): (None if value is None else str(value)) for name, value in rows}

    def selected_tables(self) -> list[tuple[str, str]]:
        with self._settings.connect() as connection, connection.cursor() as cursor:
            cursor.execute(
                "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY 1, 2"
            )
            names = [(str(s), str(t)) for s, t in cursor.fetchall()]
        connection.close()
        return [(s, t) for s, t in names if self.selects(s, t)]

    def _read_table(self, schema: str, table: str) -> TableSchema | None:
        connection = self._settings.connect()
        try:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')",
                    (schema, table),
                )
                found = cursor.fetchone()
                if found is None:
                    return None
                relation = found[0]
                cursor.execute(_COLUMNS, (relation,))
                rows = cursor.fetchall()
                cursor.execute(_KEY, (relation,))
                key_row = cursor.fetchone()
        finally:
            connection.close()
        columns: list[ColumnSchema] = [
            column_schema(str(name), PgType(int(oid), str(type_name), bool(is_enum)), int(modifier), bool(nullable))
            for name, _, modifier, nullable, oid, type_name, is_enum in rows
        ]
        index_key = tuple(str(c) for c in key_row[1]) if key_row is not None else ()
        keys = tuple(self._key_overrides.get(qualify(schema, table), index_key))
        return TableSchema(schema, table, tuple(columns), keys)

    def row_count(self, schema: str, table: str) -> int:
        connection = self._settings.connect()
        try:
            with connection.cursor() as cursor:
                cursor.execute(
                    sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
                )
                return int(cursor.fetchone()[0])
        finally:
            connection.close()

    def live_keys(self, schema: TableSchema) -> Iterator[tuple[Any, ...]]:
        """The table's keys, streamed through a server-side cursor, parsed like replicated values."""
        parsers = [value_parser(schema.column(k)) for k in schema.key_columns]
        query = sql.SQL("SELECT {} FROM {}.{}").format(
            sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(k)) for k in schema.key_columns),
            sql.Identifier(schema.database),
            sql.Identifier(schema.name),
        )
        connection = self._settings.connect()
        try:
            with connection.cursor(name="cdc_live_keys") as cursor:
                cursor.itersize = _LIVE_KEY_BATCH
                cursor.execute(query)
                for row in cursor:
                    yield tuple(
                        parse(value) if parse is not None and value is not None else value
                        for parse, value in zip(parsers, row, strict=True)
                    )
        finally:
            connection.close()
