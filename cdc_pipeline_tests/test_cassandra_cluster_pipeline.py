"""The pipeline over a real three-node Cassandra cluster: one source per node reads that node's cdc_raw,
and all of them feed the same sink tables. With replication factor 3 every write reaches the sinks once
per replica; the sinks must end equal to what the cluster shows at consistency ALL, each change applied
once in effect, through a node stopped and restarted mid-stream and a node whose pipeline stayed down
until its cdc_raw was full."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from cassandra import ConsistencyLevel, WriteFailure

from cdc_pipeline.local_servers.cassandra_cluster import LocalCassandraCluster
from cdc_pipeline.local_servers.postgres import LocalPostgres
from cdc_pipeline.sinks.clickhouse.resource import ClickHouseSinkResource
from cdc_pipeline_tests.cassandra_cluster_pipeline import ClusterPipelineHarness
from cdc_pipeline_tests.harness import MASKING_KEY, assert_same_rows, run_summary
from cdc_pipeline_tests.polling import wait_until

# One worker runs every test of the cluster, so the session starts one three-node cluster, not one per worker.
pytestmark = pytest.mark.xdist_group("cassandra_cluster")
_keyspace_numbers = itertools.count()
QUORUM = ConsistencyLevel.QUORUM
ALL = ConsistencyLevel.ALL


@pytest.fixture
def cluster_pipeline(
    cassandra_cluster: LocalCassandraCluster,
    postgres: LocalPostgres,
    chdb_dsn: str,
    worker_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[ClusterPipelineHarness]:
    """A keyspace of the test's own on all three nodes, a PostgreSQL sink database and a chdb database."""
    keyspace = f"cp_{worker_name}_{next(_keyspace_numbers)}"
    cassandra_cluster.session().execute(
        f"CREATE KEYSPACE {keyspace} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': 3}}"
    )
    sink_dsn = postgres.create_database(keyspace)
    monkeypatch.setenv("CDC_TEST_PG_DSN", sink_dsn)
    monkeypatch.setenv("CDC_MASKING_KEY", MASKING_KEY)
    harness = ClusterPipelineHarness(
        cassandra_cluster.nodes[0], keyspace, sink_dsn, chdb_dsn, tmp_path, cluster=cassandra_cluster
    )
    yield harness
    for index in range(len(cassandra_cluster.nodes)):
        if index not in cassandra_cluster.running:
            cassandra_cluster.start_node(index)  # a test that failed half way leaves the next a whole ring
    cassandra_cluster.session().execute(f"DROP KEYSPACE IF EXISTS {keyspace}")
    for node in cassandra_cluster.nodes:
        node.discard_completed_cdc_segments()
    postgres.drop_database(keyspace)
    ClickHouseSinkResource(dsn=chdb_dsn, database=harness.clickhouse_database).sink("cleanup").client.command(
        f"DROP DATABASE IF EXISTS `{harness.clickhouse_database}`"
    )


def _assert_sinks_equal_the_cluster(pipeline: ClusterPipelineHarness, table: str) -> int:
    source = pipeline.source_rows(table)
    assert_same_rows(pipeline.postgres_rows(table), source, f"PostgreSQL {table}")
    assert_same_rows(pipeline.clickhouse_rows(table), source, f"ClickHouse {table}")
    return len(source)


def _step_errors(result: object) -> str:
    events = result.all_events
    return " ".join(e.event_specific_data.error.to_string() for e in events if e.is_step_failure)


def test_every_node_feeds_the_same_tables_through_a_node_restart(cluster_pipeline: ClusterPipelineHarness) -> None:
    pipeline = cluster_pipeline
    ring, ks = pipeline.ring, pipeline.keyspace
    ring.execute(
        f"CREATE TABLE {ks}.orders (customer int, id int, note text, amount decimal, tags map<text, text>,"
        " PRIMARY KEY ((customer), id)) WITH cdc = true"
    )
    # The node sources share the cluster's tables; chdb cannot take two runs' merges at once, so their
    # runs take turns (one tag value for all three).
    tags = {pipeline.shared_tables_tag(index) for index in range(3)}
    assert len(tags) == 1 and None not in tags, tags

    # At ALL: every replica's cdc_raw holds every change.
    for customer in range(1, 6):
        for order in range(1, 11):
            ring.execute(
                f"INSERT INTO {ks}.orders (customer, id, note, amount, tags) VALUES (%s, %s, %s, %s, %s)",
                [customer, order, f"order {customer}/{order}", Decimal(f"{order}.50"), {"size": str(order % 3)}],
                ALL,
            )
    ring.execute(f"UPDATE {ks}.orders SET note = 'changed' WHERE customer = 1 AND id = 2", None, ALL)
    ring.execute(f"UPDATE {ks}.orders SET tags['gift'] = 'yes' WHERE customer = 2 AND id = 3", None, ALL)
    ring.execute(f"DELETE FROM {ks}.orders WHERE customer = 3 AND id = 4", None, ALL)
    ring.execute(f"DELETE FROM {ks}.orders WHERE customer = 4 AND id < 5", None, ALL)
    ring.execute(f"DELETE FROM {ks}.orders WHERE customer = 5", None, ALL)

    # Node 0 delivers everything; nodes 1 and 2 have not read theirs yet.
    first = run_summary(pipeline.replicate_node(0))
    assert first["rows"] >= 55, first
    assert _assert_sinks_equal_the_cluster(pipeline, "orders") == 50 - 1 - 4 - 10

    # Node 1 stops with its copies unread; the cluster goes on at QUORUM without it.
    ring.stop_node(1)
    ring.execute(f"INSERT INTO {ks}.orders (customer, id, note) VALUES (6, 1, 'while node1 was down')", None, QUORUM)
    ring.execute(f"UPDATE {ks}.orders SET amount = 99.99 WHERE customer = 1 AND id = 1", None, QUORUM)
    ring.execute(f"DELETE tags['size'] FROM {ks}.orders WHERE customer = 2 AND id = 3", None, QUORUM)
    down = pipeline.replicate_node(1, raise_on_error=False)
    assert not down.success
    assert ring.addresses[1] in _step_errors(down), _step_errors(down)
    # Node 2's source delivers its copies of everything, the writes node 1 missed included.
    pipeline.replicate_node(2)

    # Node 1 is back: its source resumes at its own checkpoint (none yet) and delivers its copies of
    # the first writes again, which changes nothing in the sinks.
    ring.start_node(1)
    again = run_summary(pipeline.replicate_node(1))
    assert again["rows"] >= 55, again
    # The read at ALL also repairs node 1 (the missed writes reach its cdc_raw now, old write times).
    assert _assert_sinks_equal_the_cluster(pipeline, "orders") == 50 - 1 - 4 - 10 + 1
    for index in range(3):
        pipeline.replicate_node(index)
    assert _assert_sinks_equal_the_cluster(pipeline, "orders") == 50 - 1 - 4 - 10 + 1


def test_a_node_whose_pipeline_stayed_down_until_its_cdc_raw_filled_catches_up(
    cluster_pipeline: ClusterPipelineHarness,
) -> None:
    pipeline = cluster_pipeline
    ring, ks = pipeline.ring, pipeline.keyspace
    ring.execute(f"CREATE TABLE {ks}.blobs (id int PRIMARY KEY, payload blob) WITH cdc = true")
    insert = f"INSERT INTO {ks}.blobs (id, payload) VALUES (%s, %s)"
    payload = os.urandom(200 * 1024)
    # No pipeline has run: each node's cdc_raw (32 MiB, about 160 such rows) fills, and a write at ALL
    # then fails; twice that bounds the loop.
    written = 0
    with pytest.raises(WriteFailure):
        for row in range(320):
            ring.execute(insert, [row, payload], ALL)
            written += 1
    assert written > 40

    def write_while_running(row: int, consistency: int, pipelines: tuple[int, ...]) -> bool:
        """Write the row; when a node refuses it (its cdc_raw is full), the running pipelines read and
        free theirs, and the write is tried again. A node frees a segment once it has completed it (after
        a memtable flush), so a pipeline that keeps up still sees its node refuse writes now and then."""
        try:
            ring.execute(insert, [row, payload], consistency)
            return True
        except WriteFailure:
            for index in pipelines:
                pipeline.replicate_node(index)
            return False

    # The pipelines of nodes 0 and 1 run again and keep up; node 2's stays down, its cdc_raw full. Writes
    # at QUORUM go on through nodes 0 and 1.
    for row in range(1000, 1011):
        wait_until(lambda row=row: write_while_running(row, QUORUM, (0, 1)), 120, f"row {row} at QUORUM", 0.1)
    with pytest.raises(WriteFailure) as refused:  # node 2 still refuses CDC writes: its cdc_raw is full
        ring.execute(insert, [2000, payload], ALL)
    assert ring.addresses[2] in refused.value.error_code_map, refused.value

    # Node 2's pipeline comes back: it drains its cdc_raw in batches and frees it, and writes at ALL
    # are taken again.
    caught_up = run_summary(pipeline.replicate_node(2))
    assert caught_up["batches"] >= 2, caught_up
    wait_until(lambda: write_while_running(2000, ALL, (0, 1, 2)), 120, "a write at ALL once node 2 caught up", 0.1)

    # Every source delivers what it holds: nodes 0 and 1 the rows node 2 refused.
    for index in range(3):
        pipeline.replicate_node(index)
    # The rows written at ALL, the 11 at QUORUM and row 2000; plus, maybe, the row whose write at ALL
    # first failed, if a replica with room took it.
    expected = written + 11 + 1
    assert _assert_sinks_equal_the_cluster(pipeline, "blobs") in (expected, expected + 1)
    # That read at ALL repaired node 2 with the rows it refused: they reach its cdc_raw now, and its
    # source delivers them once more, which changes nothing.
    repaired = run_summary(pipeline.replicate_node(2))
    assert repaired["rows"] >= 1, repaired
    assert _assert_sinks_equal_the_cluster(pipeline, "blobs") in (expected, expected + 1)


def test_node_sources_in_processes_of_their_own_resume_each_from_its_checkpoint(
    cluster_pipeline: ClusterPipelineHarness, tmp_path: Path
) -> None:
    """As the daemon runs them: every run a new process, which finds the node's checkpoint and the
    cluster's claim on the tables in the sinks, not in memory."""
    pipeline = cluster_pipeline
    pipeline.use_private_clickhouse()
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    ring, ks = pipeline.ring, pipeline.keyspace
    ring.execute(f"CREATE TABLE {ks}.events (id int PRIMARY KEY, kind text, score int) WITH cdc = true")
    for event in range(30):
        ring.execute(f"INSERT INTO {ks}.events (id, kind, score) VALUES (%s, %s, %s)", [event, "a", event], ALL)
    pipeline.replicate_node_in_own_process(0, dagster_home)
    pipeline.replicate_node_in_own_process(1, dagster_home)
    for event in range(0, 30, 3):
        ring.execute(f"UPDATE {ks}.events SET score = -1 WHERE id = %s", [event], ALL)
    ring.execute(f"DELETE FROM {ks}.events WHERE id = 1", None, ALL)
    # Node 2 brings everything once; node 1 only what came after its checkpoint (its copies).
    pipeline.replicate_node_in_own_process(2, dagster_home)
    pipeline.replicate_node_in_own_process(1, dagster_home)
    assert _assert_sinks_equal_the_cluster(pipeline, "events") == 29
