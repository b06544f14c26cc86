"""The Dagster resource of a Cassandra source: contact points, credentials from the environment, the node's yaml."""

from __future__ import annotations

import dagster as dg

from cdc_pipeline.config.sources import CassandraSourceConfig, SourceConfig
from cdc_pipeline.sources.cassandra.change_source import CassandraChangeSource
from cdc_pipeline.sources.cassandra.connection import CassandraSourceSettings
from cdc_pipeline.sources.cassandra.snapshot_reader import CassandraSnapshotReader


class CassandraSourceResource(dg.ConfigurableResource):
    """A Cassandra node whose CDC segments (cdc_raw, on this machine) are read; credentials from the environment."""

    hosts: list[str]
    port: int
    username: str = ""
    password: str = ""
    cassandra_yaml: str

    @classmethod
    def from_config(cls, config: CassandraSourceConfig) -> CassandraSourceResource:
        return cls(
            hosts=config.hosts,
            port=config.port,
            username=dg.EnvVar(config.username_env) if config.username_env else "",
            password=dg.EnvVar(config.password_env) if config.password_env else "",
            cassandra_yaml=config.cassandra_yaml,
        )

    def change_source(self, name: str, config: SourceConfig) -> CassandraChangeSource:
        if not isinstance(config, CassandraSourceConfig):
            raise TypeError(f"source '{name}' is configured as {config.kind}, but bound to a Cassandra resource")
        settings = CassandraSourceSettings(name, tuple(self.hosts), self.port, self.username, self.password)
        # The resource's yaml path wins: tests (and deployments) may point one config at another node.
        return CassandraChangeSource(name, settings, config.model_copy(update={"cassandra_yaml": self.cassandra_yaml}))

    def snapshot_source(self, name: str, config: SourceConfig) -> CassandraSnapshotReader:
        return CassandraSnapshotReader(self.change_source(name, config))
