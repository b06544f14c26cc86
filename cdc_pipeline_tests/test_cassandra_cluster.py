"""A real three-node Cassandra 5 cluster on this machine: every replica captures a write in its own cdc_raw,
and the cluster keeps taking QUORUM writes with a node down, then reads at ALL again once it is back."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cassandra import ConsistencyLevel, ReadTimeout, Unavailable

from cdc_pipeline.config.sources import CassandraSourceConfig, TableSelection
from cdc_pipeline.core.changes import ChangeBatch, RowChange
from cdc_pipeline.core.checkpoint import Checkpoint
from cdc_pipeline.local_servers.cassandra import LocalCassandra
from cdc_pipeline.local_servers.cassandra_cluster import LocalCassandraCluster
from cdc_pipeline.sources.cassandra.change_source import CassandraChangeSource
from cdc_pipeline.sources.cassandra.connection import CassandraSourceSettings
from cdc_pipeline.sources.cassandra.segment_reader import READER_DIR, reader_is_built
from cdc_pipeline_tests.polling import wait_until

# One worker runs every test of the cluster, so the session starts one three-node cluster, not one per worker.
pytestmark = pytest.mark.xdist_group("cassandra_cluster")
_keyspace_numbers = itertools.count()
# A write time of the test's choosing: each replica's copy of a change carries it as its version.
WRITE_TIME_MICROS = 1_700_000_000_000_000
# A restarted node is seen by the others within a few gossip rounds; the rest is a loaded 2-core machine.
RECOVERY_SECONDS = 60.0


@pytest.fixture
def cluster_keyspace(cassandra_cluster: LocalCassandraCluster, worker_name: str) -> Iterator[str]:
    """A keyspace of the test's own, replicated to all three nodes. Afterwards it is dropped and each node's
    closed cdc_raw segments deleted (cdc_raw refuses CDC writes once full)."""
    name = f"cl_{worker_name}_{next(_keyspace_numbers)}"
    cassandra_cluster.session().execute(
        f"CREATE KEYSPACE {name} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': 3}}"
    )
    yield name
    cassandra_cluster.session().execute(f"DROP KEYSPACE IF EXISTS {name}")
    for index in cassandra_cluster.running:
        cassandra_cluster.nodes[index].discard_completed_cdc_segments()


def _change_source(node: LocalCassandra, keyspace: str, state_dir: Path) -> CassandraChangeSource:
    """The pipeline's source for one node, as a deployment runs it on each node's machine: the node's own
    cassandra.yaml (so its own cdc_raw) and the node's address as contact point."""
    config = CassandraSourceConfig(
        kind="cassandra",
        hosts=[node.host],
        port=node.port,
        cassandra_yaml=str(node.base_dir / "cassandra.yaml"),
        tables=TableSelection(include=[f"{keyspace}.*"]),
    )
    settings = CassandraSourceSettings(f"cass_{node.host}", (node.host,), node.port)
    return CassandraChangeSource(f"cass_{node.host}", settings, config, state_dir=state_dir)


def _read_everything(source: CassandraChangeSource) -> list[ChangeBatch]:
    """Batches from the start of cdc_raw until one ends where it began (one sink following each batch's end)."""
    batches: list[ChangeBatch] = []
    checkpoint: Checkpoint | None = None
    while True:
        batch = source.read_batch({"sink": checkpoint}, None, max_rows=10_000)
        batches.append(batch)
        if checkpoint is not None and batch.end == checkpoint:
            return batches
        checkpoint = batch.end


def _changes_of(batches: list[ChangeBatch], table: str) -> list[RowChange]:
    return [change for batch in batches if table in batch.tables for change in batch.tables[table].changes]


def _changes_captured_by_each_node(
    cluster: LocalCassandraCluster, keyspace: str, table: str, state_dir: Path
) -> dict[int, list[RowChange]]:
    captured: dict[int, list[RowChange]] = {}
    for index in cluster.running:
        source = _change_source(cluster.nodes[index], keyspace, state_dir / f"node{index}")
        try:
            captured[index] = _changes_of(_read_everything(source), f"{keyspace}.{table}")
        finally:
            # The source's driver session is cached per address for the process: closed here, it does not
            # go on reconnecting to a node a later test stops.
            source.settings.session().cluster.shutdown()
    return captured


def test_every_node_sees_the_others_and_a_cdc_table_is_replicated_to_all(
    cassandra_cluster: LocalCassandraCluster, cluster_keyspace: str
) -> None:
    cluster = cassandra_cluster
    rss_mib = {index: rss >> 20 for index, rss in cluster.rss_bytes().items()}
    node_seconds = [round(node.start_seconds or 0.0, 1) for node in cluster.nodes]
    print(f"cluster started in {cluster.start_seconds:.1f} s (nodes: {node_seconds} s); RSS MiB by node: {rss_mib}")
    assert cluster.running == (0, 1, 2)

    # Each node holds the token it was given, and knows the other two with theirs (the ring is fixed).
    for index, node in enumerate(cluster.nodes):
        local = node.session().execute("SELECT tokens FROM system.local").one()
        assert local is not None and set(local.tokens) == {str(cluster.tokens[index])}
        peers = {
            str(row.peer): set(row.tokens) for row in node.session().execute("SELECT peer, tokens FROM system.peers_v2")
        }
        assert peers == {
            address: {str(token)}
            for address, token in zip(cluster.addresses, cluster.tokens, strict=True)
            if address != node.host
        }
    # The driver over all nodes found all three from the contact points and holds a connection to each.
    hosts = cluster.session().cluster.metadata.all_hosts()
    assert sorted((host.address, host.is_up) for host in hosts) == [(address, True) for address in cluster.addresses]

    keyspace = cluster_keyspace
    cluster.session().execute(f"CREATE TABLE {keyspace}.orders (id int PRIMARY KEY, note text) WITH cdc = true")
    for node in cluster.nodes:
        # Each node's own schema tables: the table (with cdc on) reached every node, not only the coordinator.
        def has_cdc_table(node: LocalCassandra = node) -> bool:
            row = (
                node.session()
                .execute(
                    "SELECT cdc FROM system_schema.tables WHERE keyspace_name = %s AND table_name = 'orders'",
                    [keyspace],
                )
                .one()
            )
            return row is not None and row.cdc is True

        wait_until(has_cdc_table, 30, f"{keyspace}.orders with cdc = true on {node.host}", interval=0.2)

    # Replication factor 3 on 3 nodes: every partition has every node as replica (the key: id 42, serialized).
    replicas = cluster.session().cluster.metadata.get_replicas(keyspace, (42).to_bytes(4, "big"))
    assert sorted(host.address for host in replicas) == sorted(cluster.addresses)


def test_a_write_at_all_reaches_the_cdc_raw_of_every_node(
    cassandra_cluster: LocalCassandraCluster, cluster_keyspace: str, tmp_path: Path
) -> None:
    assert reader_is_built(), f"the segment reader is not built: run {READER_DIR / 'build.sh'}"
    cluster = cassandra_cluster
    keyspace = cluster_keyspace
    cluster.session().execute(f"CREATE TABLE {keyspace}.orders (id int PRIMARY KEY, note text) WITH cdc = true")
    # ALL: acknowledged only after every replica wrote it, and with commitlog_sync batch a replica acknowledges
    # only once its commit log (and the segment's _cdc.idx offset) is synced; so no waiting below.
    cluster.execute(
        f"INSERT INTO {keyspace}.orders (id, note) VALUES (%s, %s) USING TIMESTAMP {WRITE_TIME_MICROS}",
        [42, f"{keyspace}-written-at-all"],
        ConsistencyLevel.ALL,
    )

    captured = _changes_captured_by_each_node(cluster, keyspace, "orders", tmp_path)

    assert sorted(captured) == [0, 1, 2]
    for index, changes in captured.items():
        copies = [change for change in changes if change.values.get("id") == 42]
        assert len(copies) == 1, f"node{index} captured {changes}"
        # Every replica emits its own copy of the same change: same values, and the cell write time as version.
        assert copies[0].values == {"id": 42, "note": f"{keyspace}-written-at-all"}, f"node{index}"
        assert copies[0].version == WRITE_TIME_MICROS, f"node{index}"


def test_quorum_writes_go_on_with_a_node_down_and_all_reads_work_again_after_its_restart(
    cassandra_cluster: LocalCassandraCluster, cluster_keyspace: str, tmp_path: Path
) -> None:
    cluster = cassandra_cluster
    keyspace = cluster_keyspace
    cluster.session().execute(f"CREATE TABLE {keyspace}.orders (id int PRIMARY KEY, note text) WITH cdc = true")
    insert = f"INSERT INTO {keyspace}.orders (id, note) VALUES (%s, %s) USING TIMESTAMP {WRITE_TIME_MICROS}"
    cluster.execute(insert, [1, "before the outage"], ConsistencyLevel.ALL)

    cluster.stop_node(1)
    try:
        assert cluster.running == (0, 2)
        # Two of three replicas make a QUORUM: writes go on. (Hints are off: node1 misses them for now.)
        for row_id in (2, 3, 4):
            cluster.execute(insert, [row_id, "during the outage"], ConsistencyLevel.QUORUM)
        # ALL is refused up front: the coordinators know node1 is down (stop_node waited for the gossip).
        with pytest.raises(Unavailable):
            cluster.read_all(f"SELECT id FROM {keyspace}.orders WHERE id = 1")
    finally:
        if 1 not in cluster.running:
            cluster.start_node(1)

    assert cluster.running == (0, 1, 2)

    def rows_at_all() -> list[Any] | None:
        # A peer marks the restarted node alive after an echo round trip: until then ALL may still be refused.
        try:
            return cluster.read_all(f"SELECT id, note FROM {keyspace}.orders")
        except (Unavailable, ReadTimeout):
            return None

    rows = wait_until(rows_at_all, RECOVERY_SECONDS, "a read at ALL after node1's restart", interval=0.2)
    assert sorted((row.id, row.note) for row in rows) == [
        (1, "before the outage"),
        (2, "during the outage"),
        (3, "during the outage"),
        (4, "during the outage"),
    ]

    # That read at ALL found node1 without the outage's rows and repaired them before answering (blocking
    # read repair): so node1 now captures them in its cdc_raw too, late but with their original write time.
    captured = _changes_captured_by_each_node(cluster, keyspace, "orders", tmp_path)
    for index in (0, 1, 2):
        assert sorted(change.values["id"] for change in captured[index]) == [1, 2, 3, 4], f"node{index}"
        assert {change.version for change in captured[index]} == {WRITE_TIME_MICROS}, f"node{index}"
