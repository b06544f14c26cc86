"""The configuration of a Cassandra cluster read by one source per node: the node sources share their
tables (claims, assets), and take turns where a sink cannot merge two runs' writes at once."""

from __future__ import annotations

import pytest

from cdc_pipeline.config.loading import PipelineConfigError, parse_pipeline_config
from cdc_pipeline.defs.asset_keys import sink_table_asset_key, snapshot_asset_key
from cdc_pipeline.defs.run_tags import SHARED_TABLES_TAG, shared_tables_tags
from cdc_pipeline.defs.sink_tables.assets import build_sink_table_specs

CLICKHOUSE = '{kind: clickhouse, dsn: "chdb:///tmp/cdc"}'
POSTGRES = "{kind: postgres, dsn_env: SINK_DSN}"


def _config(cluster_line: str = "cluster: ring", sinks: str = f"warehouse: {CLICKHOUSE}", mode: str = "per_run") -> str:
    nodes = "\n".join(
        f"  node{index}: {{kind: cassandra, hosts: [10.0.0.{index + 1}], cassandra_yaml: /etc/cassandra/cassandra.yaml,"
        f' tables: {{include: ["shop.orders"]}}, {cluster_line}}}'
        for index in range(3)
    )
    return f"sources:\n{nodes}\nsinks:\n  {sinks}\ndlq: {{dsn_env: DLQ_DSN}}\nreplication: {{mode: {mode}}}\n"


def test_the_node_sources_of_a_cluster_share_the_tables_and_their_assets() -> None:
    pipeline = parse_pipeline_config(_config())
    owners = {pipeline.sources[name].table_owner(name) for name in pipeline.sources}
    assert owners == {"cluster:ring"}
    assert pipeline.sources_sharing_tables_with("node1") == ["node0", "node1", "node2"]

    (spec,) = build_sink_table_specs(pipeline)  # one asset for the table, not one per node
    assert spec.key == sink_table_asset_key("warehouse", "shop.orders")
    assert {dep.asset_key for dep in spec.deps} == {snapshot_asset_key(f"node{i}", "shop.orders") for i in range(3)}


def test_sources_of_no_cluster_still_cannot_share_a_table() -> None:
    with pytest.raises(PipelineConfigError, match=r"would both be the sink table 'shop__orders'"):
        parse_pipeline_config(_config(cluster_line="port: 9042"))
    # Nor can two clusters.
    text = (
        _config()
        .replace("node2: {kind: cassandra", "other: {kind: cassandra")
        .replace("cluster: ring}\nsinks", "cluster: other_ring}\nsinks")
    )
    with pytest.raises(PipelineConfigError, match=r"would both be the sink table 'shop__orders'"):
        parse_pipeline_config(text)


def test_runs_take_turns_only_where_a_sink_cannot_lock_its_merges() -> None:
    with_clickhouse = parse_pipeline_config(_config(sinks=f"warehouse: {CLICKHOUSE}\n  analytics: {POSTGRES}"))
    tags = {name: shared_tables_tags(with_clickhouse, name) for name in with_clickhouse.sources}
    assert len({tag[SHARED_TABLES_TAG] for tag in tags.values()}) == 1, tags

    only_postgres = parse_pipeline_config(_config(sinks=f"analytics: {POSTGRES}", mode="continuous"))
    assert all(shared_tables_tags(only_postgres, name) == {} for name in only_postgres.sources)
    alone = parse_pipeline_config(_config(cluster_line="port: 9042").replace('"shop.orders"', '"shop.*"'))
    assert all(shared_tables_tags(alone, name) == {} for name in alone.sources)


def test_a_continuous_cluster_into_a_sink_without_merge_locks_is_refused_naming_both() -> None:
    server = "{kind: clickhouse, dsn_env: CH_DSN}"
    with pytest.raises(PipelineConfigError) as refused:
        parse_pipeline_config(_config(sinks=f"warehouse: {server}", mode="continuous"))
    message = str(refused.value)
    assert "['node0', 'node1', 'node2']" in message and "['warehouse']" in message and "per_run" in message


def test_a_cluster_name_is_an_identifier() -> None:
    with pytest.raises(PipelineConfigError, match=r"sources\.node0\.cluster"):
        parse_pipeline_config(_config(cluster_line="cluster: 'ring; drop'"))
