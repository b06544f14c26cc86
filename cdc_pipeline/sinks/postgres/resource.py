"""The Dagster resource of a PostgreSQL (or TimescaleDB) sink: its DSN from the environment, its schema."""

from __future__ import annotations

import dagster as dg

from cdc_pipeline.config.sinks import PostgresSinkConfig
from cdc_pipeline.sinks.postgres.sink import PostgresSink


class PostgresSinkResource(dg.ConfigurableResource):
    """A PostgreSQL (or TimescaleDB) schema that receives replicated tables."""

    dsn: str
    schema_name: str
    # TimescaleDB: 'database.table' -> time column (the sink config's `hypertables`).
    hypertables: dict[str, str] = {}

    @classmethod
    def from_config(cls, config: PostgresSinkConfig) -> PostgresSinkResource:
        return cls(dsn=dg.EnvVar(config.dsn_env), schema_name=config.schema_name, hypertables=config.hypertables)

    def sink(self, name: str) -> PostgresSink:
        return PostgresSink(name, self.dsn, self.schema_name, self.hypertables)
