"""The Dagster resource of a MySQL/MariaDB source: where the server is, with the password from the environment."""

from __future__ import annotations

import dagster as dg

from cdc_pipeline.config.sources import MySqlSourceConfig, SourceConfig, TableSelection
from cdc_pipeline.sources.mysql.catalog import MySqlCatalog
from cdc_pipeline.sources.mysql.change_source import MySqlChangeSource
from cdc_pipeline.sources.mysql.connection import MySqlConnectionSettings
from cdc_pipeline.sources.mysql.snapshot_reader import MySqlSnapshotReader


class MySqlSourceResource(dg.ConfigurableResource):
    """A MySQL/MariaDB server whose row-based binlog is read as a replica would."""

    host: str
    port: int
    user: str
    password: str = ""
    server_id: int

    @classmethod
    def from_config(cls, config: MySqlSourceConfig) -> MySqlSourceResource:
        """Production: the password is read from `password_env` when a run starts, never stored."""
        return cls(
            host=config.host,
            port=config.port,
            user=config.user,
            password=dg.EnvVar(config.password_env) if config.password_env else "",
            server_id=config.server_id,
        )

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
