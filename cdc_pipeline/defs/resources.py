"""Dagster resources for every source and sink; tests swap in their own isolated databases."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg

from cdc_pipeline.config.models import (
    CassandraSourceConfig,
    MaskingConfig,
    MySqlSourceConfig,
    PipelineConfig,
    PostgresSourceConfig,
    SourceConfig,
    TableSelection,
)
from cdc_pipeline.defs.resource_keys import source_key
from cdc_pipeline.dlq.store import DeadLetterStore
from cdc_pipeline.masking.masker import Masker
from cdc_pipeline.sinks.clickhouse.sink import ClickHouseSink
from cdc_pipeline.sinks.postgres.sink import PostgresSink
from cdc_pipeline.sources.cassandra.change_source import CassandraChangeSource
from cdc_pipeline.sources.cassandra.connection import CassandraSourceSettings
from cdc_pipeline.sources.cassandra.snapshot_reader import CassandraSnapshotReader
from cdc_pipeline.sources.change_source import ChangeSource
from cdc_pipeline.sources.mysql.catalog import MySqlCatalog
from cdc_pipeline.sources.mysql.change_source import MySqlChangeSource
from cdc_pipeline.sources.mysql.connection import MySqlConnectionSettings
from cdc_pipeline.sources.mysql.snapshot_reader import MySqlSnapshotReader
from cdc_pipeline.sources.postgres.change_source import PostgresChangeSource
from cdc_pipeline.sources.postgres.snapshot_reader import PostgresSnapshotReader
from cdc_pipeline.sources.snapshot_source import SnapshotSource

_CLICKHOUSE_SINKS: dict[tuple[str, str, str], ClickHouseSink] = {}


class MySqlSourceResource(dg.ConfigurableResource):
    """A MySQL/MariaDB server whose row-based binlog is read as a replica would."""

    host: str
    port: int
    user: str
    password: str = ""
    server_id: int

    @property
    def settings(self) -> MySqlConnectionSettings:
        return MySqlConnectionSettings(self.host, self.port, self.user, self.password)

    def catalog(self, selection: TableSelection, key_columns: dict[str, list[str]]) -> MySqlCatalog:
        return MySqlCatalog(self.settings, selection, key_columns)

    def change_source(self, name: str, config: SourceConfig) -> MySqlChangeSource:
        if not isinstance(config, MySqlSourceConfig):
            raise TypeError(f"source '{name}' is configured as {config.kind}, but bound to a MySQL resource")
        return MySqlChangeSource(name, self.settings, self.server_id, config)

    def snapshot_source(self, name: str, config: SourceConfig) -> MySqlSnapshotReader:
        source = self.change_source(name, config)
        return MySqlSnapshotReader(self.settings, source.catalog, source.resume_by)


class PostgresSourceResource(dg.ConfigurableResource):
    """A PostgreSQL database read through logical decoding; the DSN comes from the environment."""

    dsn: str

    def change_source(self, name: str, config: SourceConfig) -> PostgresChangeSource:
        if not isinstance(config, PostgresSourceConfig):
            raise TypeError(f"source '{name}' is configured as {config.kind}, but bound to a PostgreSQL resource")
        return PostgresChangeSource(name, self.dsn, config)

    def snapshot_source(self, name: str, config: SourceConfig) -> PostgresSnapshotReader:
        return PostgresSnapshotReader(self.change_source(name, config))


class CassandraSourceResource(dg.ConfigurableResource):
    """A Cassandra node whose CDC segments (cdc_raw, on this machine) are read; credentials from the environment."""

    hosts: list[str]
    port: int
    username: str = ""
    password: str = ""
    cassandra_yaml: str

    def change_source(self, name: str, config: SourceConfig) -> CassandraChangeSource:
        if not isinstance(config, CassandraSourceConfig):
            raise TypeError(f"source '{name}' is configured as {config.kind}, but bound to a Cassandra resource")
        settings = CassandraSourceSettings(name, tuple(self.hosts), self.port, self.username, self.password)
        # The resource's yaml path wins: tests (and deployments) may point one config at another node.
        return CassandraChangeSource(name, settings, config.model_copy(update={"cassandra_yaml": self.cassandra_yaml}))

    def snapshot_source(self, name: str, config: SourceConfig) -> CassandraSnapshotReader:
        return CassandraSnapshotReader(self.change_source(name, config))


SourceResource = MySqlSourceResource | PostgresSourceResource | CassandraSourceResource


def open_change_source(resources: Any, source_name: str, pipeline: PipelineConfig) -> ChangeSource:
    """The source behind `source_name`'s resource, as the ChangeSource the ops, sensor and checks use."""
    resource: SourceResource = getattr(resources, source_key(source_name))
    return resource.change_source(source_name, pipeline.sources[source_name])


@contextmanager
def change_source_of(resources: Any, source_name: str, pipeline: PipelineConfig) -> Iterator[ChangeSource]:
    """open_change_source for one use: closed (its kept connections let go) when the block ends."""
    source = open_change_source(resources, source_name, pipeline)
    try:
        yield source
    finally:
        source.close()


def open_snapshot_source(resources: Any, source_name: str, pipeline: PipelineConfig) -> SnapshotSource:
    """The source behind `source_name`'s resource, as the SnapshotSource the initial load uses."""
    resource: SourceResource = getattr(resources, source_key(source_name))
    return resource.snapshot_source(source_name, pipeline.sources[source_name])


class ClickHouseSinkResource(dg.ConfigurableResource):
    """A ClickHouse database: `chdb:///path` (embedded, one process per path) or an HTTP DSN."""

    dsn: str
    database: str
    busy_timeout_seconds: int = 60

    def sink(self, name: str) -> ClickHouseSink:
        # One client per process and database: chdb holds its path for the whole process anyway.
        key = (name, self.dsn, self.database)
        if key not in _CLICKHOUSE_SINKS:
            _CLICKHOUSE_SINKS[key] = ClickHouseSink(name, self.dsn, self.database, self.busy_timeout_seconds)
        return _CLICKHOUSE_SINKS[key]


class PostgresSinkResource(dg.ConfigurableResource):
    """A PostgreSQL (or TimescaleDB) schema that receives replicated tables."""

    dsn: str
    schema_name: str
    # TimescaleDB: 'database.table' -> time column (the sink config's `hypertables`).
    hypertables: dict[str, str] = {}

    def sink(self, name: str) -> PostgresSink:
        return PostgresSink(name, self.dsn, self.schema_name, self.hypertables)


class DeadLetterQueueResource(dg.ConfigurableResource):
    """The PostgreSQL schema holding the dead-letter table."""

    dsn: str
    schema_name: str

    def store(self) -> DeadLetterStore:
        return DeadLetterStore(self.dsn, self.schema_name)


class MaskingResource(dg.ConfigurableResource):
    """The HMAC key for hash and token masking, from the environment."""

    hmac_key: str | None = None

    def masker(self, config: MaskingConfig) -> Masker:
        return Masker(config, self.hmac_key)
