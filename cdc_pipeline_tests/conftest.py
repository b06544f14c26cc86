"""Real servers, one per test session (per xdist worker); a database of their own per test."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cdc_pipeline.local_servers.cassandra import LocalCassandra
from cdc_pipeline.local_servers.cassandra_cluster import LocalCassandraCluster
from cdc_pipeline.local_servers.mariadb import LocalMariaDb
from cdc_pipeline.local_servers.postgres import LocalPostgres
from cdc_pipeline.sinks.clickhouse.resource import ClickHouseSinkResource
from cdc_pipeline.sources.cassandra.reader_server import IDLE_SECONDS_VARIABLE, stop_reader_servers
from cdc_pipeline_tests.cassandra_pipeline import CassandraPipelineHarness
from cdc_pipeline_tests.harness import MASKING_KEY, PipelineHarness
from cdc_pipeline_tests.postgres_source import PostgresSourceHarness, drop_slots

_test_numbers = itertools.count()
# Each test's schema files get a reader server of their own: idle ones go after 20 s, not the
# default 5 minutes, so that the suite does not keep dozens of JVMs (the processes it starts inherit it).
os.environ.setdefault(IDLE_SECONDS_VARIABLE, "20")


@pytest.fixture(scope="session")
def worker_name() -> str:
    """xdist's worker id ('gw0', ...) or 'main': part of every per-test database name."""
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


@pytest.fixture(scope="session")
def mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMariaDb]:
    server = LocalMariaDb(tmp_path_factory.mktemp("mariadb")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPostgres]:
    server = LocalPostgres(tmp_path_factory.mktemp("postgres") / "data").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def cassandra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCassandra]:
    """A Cassandra 5 node with CDC on, started the first time a test of this worker asks for it (about 5 s)."""
    server = LocalCassandra(tmp_path_factory.mktemp("cassandra")).start()
    yield server
    stop_reader_servers(under=server.base_dir)
    server.stop()


class ClusterTestNode(LocalCassandra):
    """A cluster node whose cdc_raw fills after 32 MiB, so that a test fills one quickly (each write
    reaches every replica). The node counts the commit-log segments its memtables still hold towards
    cdc_total_space, so memtables flush at 4 MiB (half of 8 MiB): with the single node's 64 MiB of
    memtable, a cdc_raw of 32 MiB would stay full however far the pipeline had read."""

    def cassandra_yaml(self) -> dict[str, Any]:
        return {**super().cassandra_yaml(), "cdc_total_space": "32MiB", "memtable_heap_space": "8MiB"}


@pytest.fixture(scope="session")
def cassandra_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCassandraCluster]:
    """Three Cassandra 5 nodes with CDC on, on this worker's own loopback addresses (127.0.<worker + 1>.1-3),
    started the first time a test of this worker asks for it (about 23 s on 2 cores, 430 MiB RSS a node)."""
    cluster = LocalCassandraCluster(
        tmp_path_factory.mktemp("cassandra_cluster"), nodes=3, node_class=ClusterTestNode
    ).start()
    yield cluster
    stop_reader_servers(under=cluster.base_dir)
    cluster.stop()


@pytest.fixture
def cassandra_keyspace(cassandra: LocalCassandra, worker_name: str) -> Iterator[str]:
    """A keyspace of the test's own (replication factor 1). Afterwards it is dropped and the closed segments in
    cdc_raw are deleted, as a consumer would: cdc_raw keeps them until then and refuses CDC writes when full."""
    name = f"t_{worker_name}_{next(_test_numbers)}"
    session = cassandra.session()
    session.execute(f"CREATE KEYSPACE {name} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': 1}}")
    yield name
    session.execute(f"DROP KEYSPACE IF EXISTS {name}")
    cassandra.discard_completed_cdc_segments()


@pytest.fixture(scope="session")
def chdb_dsn(tmp_path_factory: pytest.TempPathFactory) -> str:
    # chdb holds one on-disk path per process: one per worker, a database per test inside it.
    return f"chdb://{tmp_path_factory.mktemp('chdb')}"


@pytest.fixture
def harness(
    mariadb: LocalMariaDb,
    postgres: LocalPostgres,
    chdb_dsn: str,
    worker_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[PipelineHarness]:
    name = f"t_{worker_name}_{next(_test_numbers)}"
    with mariadb.settings.connect() as connection, connection.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    pg_dsn = postgres.create_database(name)
    monkeypatch.setenv("CDC_TEST_PG_DSN", pg_dsn)
    monkeypatch.setenv("CDC_MASKING_KEY", MASKING_KEY)
    harness = PipelineHarness(mariadb, name, pg_dsn, chdb_dsn, tmp_path, {})
    yield harness
    with mariadb.settings.connect() as connection, connection.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
    postgres.drop_database(name)
    if not harness.clickhouse_in_subprocess:
        harness.drop_clickhouse_database()


@pytest.fixture
def pg_source(
    postgres: LocalPostgres, chdb_dsn: str, worker_name: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[PostgresSourceHarness]:
    """A PostgreSQL source database, a PostgreSQL sink database and a chdb database of the test's own."""
    name = f"t_{worker_name}_{next(_test_numbers)}"
    source_dsn = postgres.create_database(f"{name}_src")
    sink_dsn = postgres.create_database(name)
    monkeypatch.setenv("CDC_TEST_SOURCE_DSN", source_dsn)
    monkeypatch.setenv("CDC_TEST_PG_DSN", sink_dsn)
    monkeypatch.setenv("CDC_MASKING_KEY", MASKING_KEY)
    harness = PostgresSourceHarness(postgres, source_dsn, sink_dsn, chdb_dsn, f"{name}_ch", f"cdc_{name}")
    yield harness
    drop_slots(postgres, f"{name}_src")
    postgres.drop_database(f"{name}_src")
    postgres.drop_database(name)
    ClickHouseSinkResource(dsn=chdb_dsn, database=harness.clickhouse_database).sink("cleanup").client.command(
        f"DROP DATABASE IF EXISTS `{harness.clickhouse_database}`"
    )


@pytest.fixture
def cassandra_pipeline(
    cassandra: LocalCassandra,
    cassandra_keyspace: str,
    postgres: LocalPostgres,
    chdb_dsn: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[CassandraPipelineHarness]:
    """A keyspace of the test's own read from the node's cdc_raw, a PostgreSQL sink database and a chdb database."""
    sink_dsn = postgres.create_database(cassandra_keyspace)
    monkeypatch.setenv("CDC_TEST_PG_DSN", sink_dsn)
    monkeypatch.setenv("CDC_MASKING_KEY", MASKING_KEY)
    harness = CassandraPipelineHarness(cassandra, cassandra_keyspace, sink_dsn, chdb_dsn, tmp_path)
    yield harness
    postgres.drop_database(cassandra_keyspace)
    if not harness.clickhouse_in_subprocess:
        ClickHouseSinkResource(dsn=chdb_dsn, database=harness.clickhouse_database).sink("cleanup").client.command(
            f"DROP DATABASE IF EXISTS `{harness.clickhouse_database}`"
        )
