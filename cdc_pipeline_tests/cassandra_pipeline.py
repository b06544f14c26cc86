"""A per-test pipeline whose source is a keyspace of the session's Cassandra node, read from cdc_raw.

The sinks are a chdb database and a schema of the test's PostgreSQL database, as in harness.py.
Source rows are read back with the driver and brought into the sinks' comparable form, so a test
compares what Cassandra shows with what each sink's `_current` view shows, row by row.
"""

from __future__ import annotations

import datetime as dt
import json
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import psycopg2
import yaml
from cassandra.util import Date, Duration, OrderedMapSerializedKey, SortedSet, Time
from psycopg2 import sql

from cdc_pipeline.config.loading import parse_pipeline_config
from cdc_pipeline.config.models import PipelineConfig
from cdc_pipeline.core.schema import TableSchema
from cdc_pipeline.core.sink_names import sink_table_name
from cdc_pipeline.defs.resource_keys import DEAD_LETTER_QUEUE, MASKING, sink_key, source_key
from cdc_pipeline.defs.resources import DeadLetterQueueResource, MaskingResource
from cdc_pipeline.local_servers.cassandra import LocalCassandra
from cdc_pipeline.sinks.clickhouse.resource import ClickHouseSinkResource
from cdc_pipeline.sinks.postgres.resource import PostgresSinkResource
from cdc_pipeline.sources.cassandra.resource import CassandraSourceResource
from cdc_pipeline_tests.harness import (
    CH_SINK,
    MASKING_KEY,
    PG_SINK,
    PipelineRunner,
    canonical,
    read_clickhouse_rows_from,
)

SOURCE = "events"


@dataclass
class CassandraPipelineHarness(PipelineRunner):
    source_name: ClassVar[str] = SOURCE
    cassandra: LocalCassandra
    keyspace: str
    sink_dsn: str
    chdb_dsn: str
    work_dir: Path
    # True when subprocesses (the CLI, crash tests) write the chdb path: this process must not open it.
    clickhouse_in_subprocess: bool = False
    # The PostgreSQL sink's TimescaleDB setting: 'keyspace.table' -> time column.
    hypertables: dict[str, str] = field(default_factory=dict)
    type_overrides: list[dict[str, str]] = field(default_factory=list)
    # Literal table names beside the keyspace's glob: they get assets with checks.
    named_tables: list[str] = field(default_factory=list)
    # Only these tables, named literally (they get snapshot assets); None: every CDC table of the
    # keyspace (a glob), plus `named_tables`.
    tables: list[str] | None = None
    # "per_run" for tests of the per-batch sensor; continuous is the default mode.
    replication_mode: str = "continuous"

    def use_private_clickhouse(self) -> None:
        self.chdb_dsn = f"chdb://{self.work_dir / 'chdb'}"
        self.clickhouse_in_subprocess = True

    @property
    def clickhouse_database(self) -> str:
        return f"{self.keyspace}_ch"

    def config_dict(self) -> dict[str, Any]:
        return {
            "sources": {
                SOURCE: {
                    "kind": "cassandra",
                    "hosts": [self.cassandra.host],
                    "port": self.cassandra.port,
                    "cassandra_yaml": str(self.cassandra.base_dir / "cassandra.yaml"),
                    "tables": {"include": self._included_tables()},
                }
            },
            "sinks": {
                CH_SINK: {"kind": "clickhouse", "dsn": self.chdb_dsn, "database": self.clickhouse_database},
                PG_SINK: {
                    "kind": "postgres",
                    "dsn_env": "CDC_TEST_PG_DSN",
                    "schema": "replica",
                    "hypertables": self.hypertables,
                },
            },
            "dlq": {"dsn_env": "CDC_TEST_PG_DSN", "schema": "dlq"},
            "type_overrides": self.type_overrides,
            "batch": {"max_rows": 50_000, "poll_interval_seconds": 1},
            "replication": {"mode": self.replication_mode},
        }

    def _included_tables(self) -> list[str]:
        if self.tables is not None:
            return [f"{self.keyspace}.{table}" for table in self.tables]
        return [f"{self.keyspace}.*", *(f"{self.keyspace}.{table}" for table in self.named_tables)]

    def write_config_file(self) -> Path:
        path = self.work_dir / "pipeline.yaml"
        path.write_text(yaml.safe_dump(self.config_dict()))
        return path

    @property
    def pipeline(self) -> PipelineConfig:
        return parse_pipeline_config(yaml.safe_dump(self.config_dict()))

    def resources(self) -> dict[str, Any]:
        return {
            source_key(SOURCE): CassandraSourceResource(
                hosts=[self.cassandra.host],
                port=self.cassandra.port,
                cassandra_yaml=str(self.cassandra.base_dir / "cassandra.yaml"),
            ),
            sink_key(CH_SINK): ClickHouseSinkResource(dsn=self.chdb_dsn, database=self.clickhouse_database),
            sink_key(PG_SINK): PostgresSinkResource(
                dsn=self.sink_dsn, schema_name="replica", hypertables=self.hypertables
            ),
            DEAD_LETTER_QUEUE: DeadLetterQueueResource(dsn=self.sink_dsn, schema_name="dlq"),
            MASKING: MaskingResource(hmac_key=MASKING_KEY),
        }

    # -- the three sides -------------------------------------------------------------------------

    def execute(self, *statements: str) -> None:
        session = self.cassandra.session()
        for statement in statements:
            session.execute(statement)

    def schema(self, table: str) -> TableSchema:
        source = self.resources()[source_key(SOURCE)].change_source(SOURCE, self.pipeline.sources[SOURCE])
        schema = source.table_schema(f"{self.keyspace}.{table}")
        assert schema is not None, table
        return schema

    def _types(self, table: str) -> dict[str, str]:
        return {column.name: column.data_type for column in self.schema(table).columns}

    def source_rows(self, table: str) -> list[dict[str, Any]]:
        """The rows Cassandra shows now, in the sinks' comparable form, sorted by key."""
        schema = self.schema(table)
        types = {column.name: column.data_type for column in schema.columns}
        columns = ", ".join(f'"{name}"' for name in types)
        rows = self.cassandra.session().execute(f'SELECT {columns} FROM "{self.keyspace}"."{table}"')
        comparable = [{name: _comparable(types[name], getattr(row, name)) for name in types} for row in rows]
        return _sorted(comparable, schema.key_columns)

    def clickhouse_rows(self, table: str) -> list[dict[str, Any]]:
        schema = self.schema(table)
        types = {column.name: column.data_type for column in schema.columns}
        rows = read_clickhouse_rows_from(
            self.clickhouse_in_subprocess,
            self.chdb_dsn,
            self.clickhouse_database,
            f"{self.keyspace}.{table}",
            types,
            schema.key_columns[0],
        )
        return _sorted([{n: _comparable(types[n], v) for n, v in row.items()} for row in rows], schema.key_columns)

    def postgres_rows(self, table: str) -> list[dict[str, Any]]:
        schema = self.schema(table)
        types = {column.name: column.data_type for column in schema.columns}
        view = sql.Identifier("replica", f"{sink_table_name(f'{self.keyspace}.{table}')}_current")
        with closing(psycopg2.connect(self.sink_dsn)) as connection, connection.cursor() as cursor:
            cursor.execute(sql.SQL("SELECT * FROM {}").format(view))
            names = [d[0] for d in cursor.description]
            rows = cursor.fetchall()
        comparable = [
            {n: _comparable(types[n], v) for n, v in zip(names, row, strict=True) if n in types} for row in rows
        ]
        return _sorted(comparable, schema.key_columns)

    def dead_letters(self) -> list[tuple[str, str, str, str, Any]]:
        with closing(psycopg2.connect(self.sink_dsn)) as connection, connection.cursor() as cursor:
            cursor.execute("SELECT to_regclass('dlq.dead_letters')")
            if cursor.fetchone()[0] is None:
                return []
            cursor.execute(
                "SELECT source_table, sink, stage, error, payload FROM dlq.dead_letters"
                " WHERE source_table LIKE %s ORDER BY id",
                (f"{self.keyspace}.%",),
            )
            return cursor.fetchall()


def _sorted(rows: list[dict[str, Any]], key_columns: tuple[str, ...]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda row: tuple(str(row[k]) for k in key_columns))


def _comparable(data_type: str, value: Any) -> Any:
    """Driver values (Cassandra) and sink values (psycopg2, clickhouse-connect) in one form."""
    if value is None:
        return None
    if data_type == "json":
        return _json_form(json.loads(value) if isinstance(value, str) else value)
    if isinstance(value, Date):
        return value.date()
    if isinstance(value, (Time, Duration)):
        return str(value)
    if data_type == "date" and isinstance(value, dt.date):
        return value
    if data_type == "boolean":
        return bool(value)
    if data_type == "varchar" and not isinstance(value, str):
        return str(value)  # inet: ipaddress objects in psycopg2 when typed; text here
    return canonical(data_type, value)


def _json_form(value: Any) -> Any:
    """Collections, tuples and UDTs as the sinks' JSON shows them: sets and lists as arrays, maps with
    text keys as objects, UDTs as objects of their fields that hold a value (a sink only knows the
    fields that were ever written; a map holds no null values, so leaving nulls out loses nothing)."""
    if isinstance(value, (SortedSet, set, frozenset)):
        return [_json_form(v) for v in sorted(value)]
    if isinstance(value, (OrderedMapSerializedKey, dict)):
        items = [(_json_form(k), _json_form(v)) for k, v in value.items()]
        if all(isinstance(k, str) for k, _ in items):
            return {k: v for k, v in items if v is not None}
        return [[k, v] for k, v in sorted(items, key=lambda kv: json.dumps(kv[0]))]
    if hasattr(value, "_fields"):  # a UDT (the driver's named tuple): fields never written are left out
        return {field: _json_form(v) for field, v in zip(value._fields, value, strict=True) if v is not None}
    if isinstance(value, (list, tuple)):
        return [_json_form(v) for v in value]
    return value
