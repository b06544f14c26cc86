"""The sink kinds' config models and the `SinkConfig` union the pipeline's `sinks` hold.

One model per kind (ClickHouse, PostgreSQL) and what they share (`_SinkConfigBase`).
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from cdc_pipeline.config.base import NAME_PATTERN, EnvVarName, StrictModel


class _SinkConfigBase(StrictModel):
    """What every sink kind's config answers; a kind overrides what applies to it."""

    # Takes a Cassandra source's cell tables (per-cell merge state, sinks/cell_merge/).
    holds_cell_tables: ClassVar[bool] = False

    @property
    def embedded_path(self) -> str | None:
        """The on-disk path of an embedded engine this sink runs in the pipeline's own process, if any."""
        return None


class ClickHouseSinkConfig(_SinkConfigBase):
    kind: Literal["clickhouse"] = "clickhouse"
    holds_cell_tables: ClassVar[bool] = True
    dsn: str = Field(default="chdb:///tmp/cdc_pipeline/chdb", description="chdb:///path or http(s)://host:port")
    dsn_env: EnvVarName | None = Field(default=None, description="read the DSN from this variable instead")
    database: str = Field(default="cdc", pattern=NAME_PATTERN)
    busy_timeout_seconds: int = Field(
        default=60, ge=0, le=3600, description="chdb: how long to wait for another process to release the path"
    )

    @property
    def embedded_path(self) -> str | None:
        """The on-disk path of an embedded (chdb) sink configured in this file, else None."""
        return self.dsn.removeprefix("chdb://") if self.dsn_env is None and self.dsn.startswith("chdb:") else None


class PostgresSinkConfig(_SinkConfigBase):
    kind: Literal["postgres"] = "postgres"
    holds_cell_tables: ClassVar[bool] = True
    dsn_env: EnvVarName = Field(description="environment variable holding the libpq DSN")
    schema_name: str = Field(default="cdc", pattern=NAME_PATTERN, alias="schema")
    hypertables: dict[str, str] = Field(
        default_factory=dict,
        description="TimescaleDB: 'database.table' -> the key column its sink table is a hypertable on"
        " (applied when the sink database has the timescaledb extension)",
    )


SinkConfig = Annotated[ClickHouseSinkConfig | PostgresSinkConfig, Field(discriminator="kind")]
