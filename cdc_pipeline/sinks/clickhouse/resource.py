"""The Dagster resource of a ClickHouse sink: embedded (chdb) or a server, its DSN in the config or the environment."""

from __future__ import annotations

import dagster as dg

from cdc_pipeline.config.sinks import ClickHouseSinkConfig
from cdc_pipeline.sinks.clickhouse.sink import ClickHouseSink

# One client per process and database: chdb holds its path for the whole process anyway.
_SINKS: dict[tuple[str, str, str], ClickHouseSink] = {}


class ClickHouseSinkResource(dg.ConfigurableResource):
    """A ClickHouse database: `chdb:///path` (embedded, one process per path) or an HTTP DSN."""

    dsn: str
    database: str
    busy_timeout_seconds: int = 60

    @classmethod
    def from_config(cls, config: ClickHouseSinkConfig) -> ClickHouseSinkResource:
        dsn = dg.EnvVar(config.dsn_env) if config.dsn_env else config.dsn
        return cls(dsn=dsn, database=config.database, busy_timeout_seconds=config.busy_timeout_seconds)

    def sink(self, name: str) -> ClickHouseSink:
        key = (name, self.dsn, self.database)
        if key not in _SINKS:
            _SINKS[key] = ClickHouseSink(name, self.dsn, self.database, self.busy_timeout_seconds)
        return _SINKS[key]
