"""Table schemas read from information_schema: exact types, keys and enum members."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pymysql
import pymysql.cursors

from cdc_pipeline.config.sources import TableSelection
from cdc_pipeline.core.schema import ColumnSchema, TableSchema, qualify
from cdc_pipeline.sources.mysql.connection import Connection, MySqlConnectionSettings

_SYSTEM_DATABASES = ("mysql", "information_schema", "performance_schema", "sys")
_ENUM_MEMBER = re.compile(r"'((?:[^']|'')*)'")


def _enum_members(column_type: str) -> tuple[str, ...]:
    if not column_type.startswith(("enum(", "set(")):
        return ()
    return tuple(member.replace("''", "'") for member in _ENUM_MEMBER.findall(column_type))


class MySqlCatalog:
    """Reads and caches the schemas of the selected tables."""

    def __init__(
        self,
        settings: MySqlConnectionSettings,
        selection: TableSelection,
        key_overrides: dict[str, list[str]] | None = None,
    ) -> None:
        self._settings = settings
        self._selection = selection
        self._key_overrides = key_overrides or {}
        self._cache: dict[tuple[str, str], TableSchema | None] = {}

    def selects(self, database: str, table: str) -> bool:
        return database not in _SYSTEM_DATABASES and self._selection.selects(database, table)

    def table(self, database: str, table: str) -> TableSchema | None:
        """The table's schema, or None when it no longer exists at the source."""
        key = (database, table)
        if key not in self._cache:
            self._cache[key] = self._read_table(database, table)
        return self._cache[key]

    def forget(self, database: str, table: str) -> None:
        """Drop a cached schema: a DDL statement in the binlog changed (or created, or dropped) the table."""
        self._cache.pop((database, table), None)

    def key_override(self, database: str, table: str) -> tuple[str, ...] | None:
        override = self._key_overrides.get(qualify(database, table))
        return tuple(override) if override is not None else None

    def selected_names(self) -> list[tuple[str, str]]:
        """(database, table) of every base table the selection takes, without reading their columns."""
        with self._settings.connect() as connection, connection.cursor() as cursor:
            cursor.execute(
                "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE'"
                " ORDER BY TABLE_SCHEMA, TABLE_NAME"
            )
            names = [(str(d), str(t)) for d, t in cursor.fetchall()]
        return [(d, t) for d, t in names if self.selects(d, t)]

    def selected_tables(self) -> list[TableSchema]:
        schemas = [self.table(d, t) for d, t in self.selected_names()]
        return [schema for schema in schemas if schema is not None]

    def _read_table(self, database: str, table: str) -> TableSchema | None:
        with self._settings.connect() as connection, connection.cursor() as cursor:
            cursor.execute(
                "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, NUMERIC_PRECISION, NUMERIC_SCALE,"
                " DATETIME_PRECISION, CHARACTER_MAXIMUM_LENGTH, COLUMN_KEY"
                " FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s"
                " ORDER BY ORDINAL_POSITION",
                (database, table),
            )
            rows = cursor.fetchall()
            cursor.execute(
                "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE"
                " WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s AND CONSTRAINT_NAME = 'PRIMARY'"
                " ORDER BY ORDINAL_POSITION",
                (database, table),
            )
            primary_key = tuple(str(r[0]) for r in cursor.fetchall())
            json_columns = _mariadb_json_columns(cursor, database, table) if rows else set()
        if not rows:
            return None
        columns = []
        for name, data_type, column_type, nullable, precision, scale, dt_precision, char_length, _ in rows:
            column_type = str(column_type).lower()
            if str(name) in json_columns and str(data_type).lower() == "longtext":
                # MariaDB's JSON: LONGTEXT with CHECK (json_valid(`name`)). The binlog's CREATE TABLE
                # and the CHECK both say JSON; so does the sinks' type (jsonb in PostgreSQL).
                data_type, column_type, char_length = "json", "json", None
            columns.append(
                ColumnSchema(
                    name=str(name),
                    data_type=str(data_type).lower(),
                    column_type=column_type,
                    nullable=nullable == "YES",
                    unsigned="unsigned" in column_type,
                    precision=int(precision) if precision is not None else None,
                    scale=int(scale) if scale is not None else None,
                    datetime_precision=int(dt_precision) if dt_precision is not None else None,
                    char_length=int(char_length) if char_length is not None else None,
                    enum_values=_enum_members(column_type),
                )
            )
        keys = tuple(self._key_overrides.get(qualify(database, table), primary_key))
        return TableSchema(database, table, tuple(columns), keys)

    def live_keys(self, schema: TableSchema) -> Iterator[tuple[Any, ...]]:
        """The table's keys, streamed with an unbuffered cursor."""
        columns = ", ".join(quote_identifier(k) for k in schema.key_columns)
        connection = Connection(**self._settings.as_pymysql_kwargs(), cursorclass=pymysql.cursors.SSCursor)
        try:
            with connection.cursor() as cursor:
                cursor.execute(
                    f"SELECT {columns} FROM {quote_identifier(schema.database)}.{quote_identifier(schema.name)}"
                )
                yield from cursor
        finally:
            connection.close()


def quote_identifier(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


_JSON_VALID = re.compile(r"^\s*json_valid\(\s*`((?:[^`]|``)+)`\s*\)\s*$", re.IGNORECASE)


def _mariadb_json_columns(cursor: Any, database: str, table: str) -> set[str]:
    """The columns MariaDB declared JSON: it stores them as LONGTEXT with CHECK (json_valid(`c`))."""
    try:
        cursor.execute(
            "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS"
            " WHERE CONSTRAINT_SCHEMA = %s AND TABLE_NAME = %s",
            (database, table),
        )
    except (pymysql.err.OperationalError, pymysql.err.ProgrammingError):
        # MySQL: no TABLE_NAME there (8.0) or no such table (5.7); its JSON is a type of its own.
        return set()
    found = set()
    for (clause,) in cursor.fetchall():
        matched = _JSON_VALID.match(str(clause))
        if matched:
            found.add(matched.group(1).replace("``", "`"))
    return found
