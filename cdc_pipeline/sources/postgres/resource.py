"""The Dagster resource of a PostgreSQL source: its DSN, from the environment."""

from __future__ import annotations

import dagster as dg

from cdc_pipeline.config.sources import PostgresSourceConfig, SourceConfig
from cdc_pipeline.sources.postgres.change_source import PostgresChangeSource
from cdc_pipeline.sources.postgres.snapshot_reader import PostgresSnapshotReader


class PostgresSourceResource(dg.ConfigurableResource):
    """A PostgreSQL database read through logical decoding; the DSN comes from the environment."""

    dsn: str

    @classmethod
    def from_config(cls, config: PostgresSourceConfig) -> PostgresSourceResource:
        return cls(dsn=dg.EnvVar(config.dsn_env))

    def change_source(self, name: str, config: SourceConfig) -> PostgresChangeSource:
        if not isinstance(config, PostgresSourceConfig):
            raise TypeError(f"source '{name}' is configured as {config.kind}, but bound to a PostgreSQL resource")
        return PostgresChangeSource(name, self.dsn, config)

    def snapshot_source(self, name: str, config: SourceConfig) -> PostgresSnapshotReader:
        return PostgresSnapshotReader(self.change_source(name, config))
