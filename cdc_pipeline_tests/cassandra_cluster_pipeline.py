"""A pipeline over the session's Cassandra cluster: one source per node, each reading its own node's
cdc_raw (as a deployment runs one beside each node), all naming one cluster and feeding the same sink
tables: a chdb database and a schema of the test's PostgreSQL database, as in cassandra_pipeline.py.

Source rows are read from the cluster at consistency ALL, so the sinks are compared with what every
replica agrees on (a read at ALL also repairs a replica that missed writes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
from cassandra import ConsistencyLevel

from cdc_pipeline.core.schema import TableSchema
from cdc_pipeline.defs.builder import build_definitions
from cdc_pipeline.defs.resource_keys import source_key
from cdc_pipeline.defs.run_tags import SHARED_TABLES_TAG
from cdc_pipeline.local_servers.cassandra_cluster import LocalCassandraCluster
from cdc_pipeline.sources.cassandra.resource import CassandraSourceResource
from cdc_pipeline_tests.cassandra_pipeline import CassandraPipelineHarness, _comparable, _sorted
from cdc_pipeline_tests.harness import run_replication_cli

CLUSTER = "ring"


def node_source(index: int) -> str:
    return f"node{index}"


@dataclass
class ClusterPipelineHarness(CassandraPipelineHarness):
    # `cassandra` (the base's) is node 0: the schema is read through it.
    cluster: LocalCassandraCluster | None = None
    # chdb and PostgreSQL both: chdb serves its path to one run at a time, so runs are per batch.
    replication_mode: str = "per_run"

    @property
    def ring(self) -> LocalCassandraCluster:
        assert self.cluster is not None
        return self.cluster

    def config_dict(self) -> dict[str, Any]:
        config = super().config_dict()
        config["sources"] = {
            node_source(index): {
                "kind": "cassandra",
                "hosts": [node.host],
                "port": node.port,
                "cassandra_yaml": str(node.base_dir / "cassandra.yaml"),
                "tables": {"include": [f"{self.keyspace}.*"]},
                "cluster": CLUSTER,
            }
            for index, node in enumerate(self.ring.nodes)
        }
        return config

    def resources(self) -> dict[str, Any]:
        resources = super().resources()
        del resources[source_key(self.source_name)]
        for index, node in enumerate(self.ring.nodes):
            resources[source_key(node_source(index))] = CassandraSourceResource(
                hosts=[node.host], port=node.port, cassandra_yaml=str(node.base_dir / "cassandra.yaml")
            )
        return resources

    def schema(self, table: str) -> TableSchema:
        source = self.resources()[source_key(node_source(0))].change_source(
            node_source(0), self.pipeline.sources[node_source(0)]
        )
        schema = source.table_schema(f"{self.keyspace}.{table}")
        assert schema is not None, table
        return schema

    def replicate_node(self, index: int, raise_on_error: bool = True) -> dg.ExecuteInProcessResult:
        """The node's per-run job in process, as the daemon would launch it: drains its cdc_raw."""
        name = node_source(index)
        job = build_definitions(self.pipeline, self.resources()).resolve_job_def(f"replicate_{name}")
        result = job.execute_in_process(raise_on_error=raise_on_error)
        assert result.success or not raise_on_error
        return result

    def replicate_node_in_own_process(self, index: int, dagster_home: Path) -> None:
        """`dagster job execute` of the node's per-run job, in a process of its own (as the daemon runs
        it); the chdb path must then be the test's own (use_private_clickhouse)."""
        assert self.clickhouse_in_subprocess, "call use_private_clickhouse() first"
        done = run_replication_cli(self.write_config_file(), dagster_home, node_source(index))
        assert done.returncode == 0, done.stderr[-3000:]

    def shared_tables_tag(self, index: int) -> str | None:
        job = build_definitions(self.pipeline, self.resources()).resolve_job_def(f"replicate_{node_source(index)}")
        return job.tags.get(SHARED_TABLES_TAG)

    def source_rows(self, table: str) -> list[dict[str, Any]]:
        """The rows every replica agrees on (read at ALL), in the sinks' comparable form, sorted by key."""
        schema = self.schema(table)
        types = {column.name: column.data_type for column in schema.columns}
        columns = ", ".join(f'"{name}"' for name in types)
        rows = self.ring.execute(f'SELECT {columns} FROM "{self.keyspace}"."{table}"', None, ConsistencyLevel.ALL)
        comparable = [{name: _comparable(types[name], getattr(row, name)) for name in types} for row in rows]
        return _sorted(comparable, schema.key_columns)
