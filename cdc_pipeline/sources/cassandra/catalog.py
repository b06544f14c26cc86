"""Table schemas of a Cassandra source, from the live node's schema metadata (the driver's view).

A table's key is its partition key followed by its clustering columns. Static columns belong to a
partition, not a row: they get a companion table `<table>_static` keyed by the partition key alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from cassandra.cluster import Session
from cassandra.metadata import TableMetadata

from cdc_pipeline.config.sources import TableSelection
from cdc_pipeline.core.schema import ColumnSchema, TableSchema
from cdc_pipeline.sources.cassandra.connection import CassandraSourceSettings
from cdc_pipeline.sources.cassandra.cql_types import (
    UdtFields,
    ValueParser,
    column_schema,
    driver_value_parser,
    parse_cql_type,
    timestamp_micros,
    value_parser,
)

SYSTEM_KEYSPACES = frozenset(
    ("system", "system_schema", "system_auth", "system_distributed", "system_traces", "system_views",
     "system_virtual_schema")
)  # fmt: skip
STATIC_SUFFIX = "_static"
_LIVE_KEY_PAGE = 5_000


def quote(identifier: str) -> str:
    """A CQL identifier, quoted (case and reserved words survive)."""
    return '"' + identifier.replace('"', '""') + '"'


@dataclass(frozen=True)
class TableLayout:
    """Everything decoding a table's changes needs: its schemas and a value parser per column."""

    schema: TableSchema
    static_schema: TableSchema | None  # the `<table>_static` companion, when the table has static columns
    parsers: dict[str, ValueParser]
    is_counter_table: bool


class CassandraCatalog:
    """Reads the node's schema metadata; `refresh()` re-reads it after a schema change."""

    def __init__(self, settings: CassandraSourceSettings, selection: TableSelection) -> None:
        self._settings = settings
        self._selection = selection
        self._layouts: dict[tuple[str, str], TableLayout | None] = {}

    @property
    def session(self) -> Session:
        return self._settings.session()

    def refresh(self) -> None:
        self.session.cluster.refresh_schema_metadata()
        self._layouts.clear()

    def selects(self, keyspace: str, table: str) -> bool:
        return keyspace not in SYSTEM_KEYSPACES and self._selection.selects(keyspace, table)

    def user_keyspaces(self) -> list[str]:
        return sorted(k for k in self.session.cluster.metadata.keyspaces if k not in SYSTEM_KEYSPACES)

    def _table_metadata(self, keyspace: str, table: str) -> TableMetadata | None:
        described = self.session.cluster.metadata.keyspaces.get(keyspace)
        return None if described is None else described.tables.get(table)

    def has_cdc(self, keyspace: str, table: str) -> bool:
        metadata = self._table_metadata(keyspace, table)
        return metadata is not None and bool(metadata.options.get("cdc"))

    def exists(self, keyspace: str, table: str) -> bool:
        return self._table_metadata(keyspace, table) is not None

    def selected_cdc_tables(self) -> list[tuple[str, str]]:
        metadata = self.session.cluster.metadata
        return [
            (keyspace, table)
            for keyspace in self.user_keyspaces()
            for table in sorted(metadata.keyspaces[keyspace].tables)
            if self.selects(keyspace, table) and self.has_cdc(keyspace, table)
        ]

    def udts(self, keyspace: str) -> UdtFields:
        described = self.session.cluster.metadata.keyspaces.get(keyspace)
        types = {} if described is None else described.user_types
        return UdtFields(
            {
                name: tuple(
                    (field_name, parse_cql_type(field_type))
                    for field_name, field_type in zip(udt.field_names, udt.field_types, strict=True)
                )
                for name, udt in types.items()
            }
        )

    def layout(self, keyspace: str, table: str) -> TableLayout | None:
        key = (keyspace, table)
        if key not in self._layouts:
            self._layouts[key] = self._read_layout(keyspace, table)
        return self._layouts[key]

    def _read_layout(self, keyspace: str, table: str) -> TableLayout | None:
        metadata = self._table_metadata(keyspace, table)
        if metadata is None:
            return None
        partition_key = [column.name for column in metadata.partition_key]
        clustering = [column.name for column in metadata.clustering_key]
        keys = {*partition_key, *clustering}
        columns: dict[str, ColumnSchema] = {}
        for column in metadata.columns.values():
            described = column_schema(column.name, column.cql_type, nullable=column.name not in keys)
            if column.is_reversed:
                described = ColumnSchema(**{**described.__dict__, "descending": True})
            columns[column.name] = described
        static = [name for name, column in metadata.columns.items() if column.is_static]
        ordered = [*partition_key, *clustering, *(n for n in columns if n not in keys and n not in static)]
        dropped = self._dropped_columns(keyspace, table)
        schema = TableSchema(
            keyspace,
            table,
            tuple(columns[name] for name in ordered),
            (*partition_key, *clustering),
            partition_key_length=len(partition_key),
            dropped_columns=dropped,
        )
        static_schema = None
        if static:
            static_schema = TableSchema(
                keyspace,
                table + STATIC_SUFFIX,
                tuple(columns[name] for name in (*partition_key, *static)),
                tuple(partition_key),
                partition_key_length=len(partition_key),
                dropped_columns=dropped,
            )
        udts = self.udts(keyspace)
        parsers = {name: value_parser(column.cql_type, udts) for name, column in metadata.columns.items()}
        is_counter = any(column.data_type == "counter" for column in columns.values())
        return TableLayout(schema, static_schema, parsers, is_counter)

    def _dropped_columns(self, keyspace: str, table: str) -> tuple[tuple[str, int], ...]:
        rows = self.session.execute(
            "SELECT column_name, dropped_time FROM system_schema.dropped_columns"
            " WHERE keyspace_name = %s AND table_name = %s",
            (keyspace, table),
        )
        return tuple(sorted((row.column_name, timestamp_micros(row.dropped_time)) for row in rows))

    def table(self, keyspace: str, table: str) -> TableSchema | None:
        """The table's schema; `<table>_static` names the static-column companion of `<table>`."""
        layout = self.layout(keyspace, table)
        if layout is not None:
            return layout.schema
        if table.endswith(STATIC_SUFFIX):
            base = self.layout(keyspace, table.removesuffix(STATIC_SUFFIX))
            if base is not None:
                return base.static_schema
        return None

    def row_count(self, keyspace: str, table: str) -> int:
        schema = self.table(keyspace, table)
        if schema is None:
            raise LookupError(f"{self._settings.describe()}: table {keyspace}.{table} does not exist")
        if table.endswith(STATIC_SUFFIX) and self.layout(keyspace, table) is None:
            return sum(1 for _ in self.live_keys(schema))
        row = self.session.execute(f"SELECT count(*) FROM {quote(keyspace)}.{quote(table)}").one()
        return int(row[0]) if row is not None else 0

    def live_keys(self, schema: TableSchema) -> Iterator[tuple[Any, ...]]:
        """Every key, paged by the driver, as replicated changes carry them. For a static companion:
        the partitions whose static columns hold a value."""
        base = schema.name.removesuffix(STATIC_SUFFIX) if self.layout(schema.database, schema.name) is None else None
        udts = self.udts(schema.database)
        parsers = [driver_value_parser(schema.column(k).column_type, udts) for k in schema.key_columns]
        table = base if base is not None else schema.name
        selected = list(schema.key_columns)
        if base is not None:
            statics = [c for c in schema.column_names if c not in schema.key_columns]
            selected += statics
            query = f"SELECT DISTINCT {', '.join(map(quote, selected))} FROM {quote(schema.database)}.{quote(table)}"
        else:
            query = f"SELECT {', '.join(map(quote, selected))} FROM {quote(schema.database)}.{quote(table)}"
        statement = self.session.prepare(query)
        statement.fetch_size = _LIVE_KEY_PAGE
        width = len(schema.key_columns)
        for row in self.session.execute(statement):
            if base is not None and all(value is None for value in row[width:]):
                continue
            yield tuple(parse(value) for parse, value in zip(parsers, row[:width], strict=True))
