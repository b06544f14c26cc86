"""Service benchmark: `python -m cdc_pipeline.bench.service [--sources mysql,postgres,cassandra] [--runs 3]`.

Measures the pipeline the way users run it: `dagster-daemon run` on the project's code location (the
daemon starts the code server, which launches each run in a process of its own), the replication
sensor switched on, a MariaDB, PostgreSQL or Cassandra source and both sinks (chdb and PostgreSQL; with
--no-clickhouse only PostgreSQL, so the run's memory is measured without chdb's engine in its process,
as with a ClickHouse server). Per source and run, on a fresh table, sinks and Dagster instance:

- reference: the same engine in this process, without Dagster (ReplicationSession over the backlog);
- drain:     a backlog written before the service starts, drained by the streaming run (rows/s, peak
             memory of the run's process);
- latency:   one row a second; commit -> visible in PostgreSQL (polled every 50 ms) and in ClickHouse
             (the run's measured progress, which it keeps every 0.5 s), p50/p95/max;
- storage:   Dagster's storage growth over the latency phase, per day;
- rates:     steady writers at --rates rows/s in 20 transactions a second; replicated rows/s and the
             lag (commit -> visible in PostgreSQL) over the first and second half: bounded or growing;
- per_run:   the latency phase again with `replication.mode: per_run` (a run that drains to the
             sensor's high-water mark, then ends).

Prints every run, then medians, and ratios against the reference measured in the same invocation.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import tempfile
import threading
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import yaml

from cdc_pipeline.bench.dagster_service import DagsterService, wait_for
from cdc_pipeline.bench.rate_writer import (
    TABLE,
    CassandraWriter,
    MySqlWriter,
    PostgresWriter,
    SourceWriter,
    max_id,
    write_backlog,
)
from cdc_pipeline.bench.service_figures import RunFigures, report
from cdc_pipeline.bench.service_probes import (
    CH_SINK,
    PG_SINK,
    SINK_SCHEMA,
    MemorySampler,
    measure_latency,
    measure_rate,
    percentile,
    streaming_run_pid,
)
from cdc_pipeline.config.loading import parse_pipeline_config
from cdc_pipeline.config.models import PipelineConfig
from cdc_pipeline.config.sinks import ClickHouseSinkConfig
from cdc_pipeline.config.sources import CassandraSourceConfig, PostgresSourceConfig
from cdc_pipeline.core.sink_names import sink_table_name
from cdc_pipeline.defs.replication.progress import read_progress
from cdc_pipeline.delivery.limits import BatchLimits
from cdc_pipeline.delivery.loop import ReplicationLoop
from cdc_pipeline.delivery.session import ReplicationSession
from cdc_pipeline.dlq.store import DeadLetterStore
from cdc_pipeline.local_servers.cassandra import LocalCassandra
from cdc_pipeline.local_servers.mariadb import LocalMariaDb
from cdc_pipeline.local_servers.postgres import LocalPostgres
from cdc_pipeline.masking.masker import Masker
from cdc_pipeline.sinks.base import Sink
from cdc_pipeline.sinks.clickhouse.sink import ClickHouseSink
from cdc_pipeline.sinks.postgres.sink import PostgresSink
from cdc_pipeline.sources.cassandra.change_source import CassandraChangeSource
from cdc_pipeline.sources.cassandra.connection import CassandraSourceSettings
from cdc_pipeline.sources.cassandra.reader_server import stop_reader_servers
from cdc_pipeline.sources.change_source import ChangeSource
from cdc_pipeline.sources.mysql.change_source import MySqlChangeSource
from cdc_pipeline.sources.mysql.connection import MySqlConnectionSettings
from cdc_pipeline.sources.postgres.change_source import PostgresChangeSource

SOURCE_DSN_ENV, SINK_DSN_ENV = "CDC_BENCH_SOURCE_DSN", "CDC_BENCH_SINK_DSN"
MASKING_KEY = "bench-masking-key"


# -- the source side ---------------------------------------------------------------------------------


@dataclass
class SourceServer:
    kind: str
    work: Path
    mariadb: LocalMariaDb | None = None
    postgres: LocalPostgres | None = None
    cassandra: LocalCassandra | None = None
    dsn: str = ""

    def start(self) -> SourceServer:
        if self.kind == "mysql":
            self.mariadb = LocalMariaDb(self.work / "mariadb").start()
        elif self.kind == "cassandra":
            from cdc_pipeline.bench.cassandra_source import BenchCassandra

            self.cassandra = BenchCassandra(self.work / "cassandra", heap_mb=1024).start()
        else:
            self.postgres = LocalPostgres(self.work / "source-postgres" / "data").start()
            self.dsn = self.postgres.create_database("shop")
        return self

    def stop(self) -> None:
        if self.mariadb is not None:
            self.mariadb.stop()
        if self.postgres is not None:
            self.postgres.stop()
        if self.cassandra is not None:
            stop_reader_servers(under=self.cassandra.base_dir)
            self.cassandra.stop()

    @property
    def address(self) -> SourceAddress:
        cassandra = None
        if self.cassandra is not None:
            cassandra = (self.cassandra.host, self.cassandra.port, str(self.cassandra.base_dir / "cassandra.yaml"))
        return SourceAddress(self.mariadb.port if self.mariadb is not None else None, self.dsn, cassandra)

    @property
    def log_name(self) -> str:
        """What the source's sensor is named after (`<source>_<log>_sensor`)."""
        return {"mysql": "binlog", "postgres": "wal", "cassandra": "commitlog"}[self.kind]

    @property
    def keeps_old_changes(self) -> bool:
        """A new source's sinks start at the log's beginning (binlog, cdc_raw), not where a new slot starts."""
        return self.postgres is None

    def namespace(self, run: int, reference: bool = False) -> str:
        """The run's own database (MySQL), schema (PostgreSQL) or keyspace (Cassandra). Cassandra's
        reference has one of its own: it releases the cdc_raw segments it read, so the service's
        backlog is written after it, into another keyspace."""
        return f"ref{run}" if reference and self.separate_reference else f"bench{run}"

    @property
    def separate_reference(self) -> bool:
        return self.cassandra is not None

    def writer(self, run: int, reference: bool = False) -> SourceWriter:
        namespace = self.namespace(run, reference)
        if self.mariadb is not None:
            return MySqlWriter(self.mariadb.settings, namespace)
        if self.cassandra is not None:
            return CassandraWriter(self.cassandra.session(), namespace)
        return PostgresWriter(self.dsn, namespace)

    def source_config(self, run: int, reference: bool = False) -> dict[str, Any]:
        table = f"{self.namespace(run, reference)}.{TABLE}"
        if self.mariadb is not None:
            return {"host": "127.0.0.1", "port": self.mariadb.port, "user": "root", "tables": {"include": [table]}}
        if self.cassandra is not None:
            node = self.cassandra
            return {
                "kind": "cassandra",
                "hosts": [node.host],
                "port": node.port,
                "cassandra_yaml": str(node.base_dir / "cassandra.yaml"),
                "tables": {"include": [table]},
            }
        return {"kind": "postgres", "dsn_env": SOURCE_DSN_ENV, "tables": {"include": [table]}}

    def reset_log(self) -> None:
        if self.mariadb is not None:
            with self.mariadb.settings.connect() as connection, connection.cursor() as cursor:
                cursor.execute("RESET MASTER")  # a new run's sinks start at the beginning: keep it short

    def drop_slots(self) -> None:
        if self.postgres is not None:
            with closing(psycopg2.connect(self.dsn)) as connection, connection.cursor() as cursor:
                connection.autocommit = True
                cursor.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots")


def pipeline_config(
    server: SourceServer, source_name: str, run: int, chdb_path: Path | None, mode: str, reference: bool = False
) -> dict[str, Any]:
    """Both sinks, or only PostgreSQL when `chdb_path` is None."""
    sinks: dict[str, Any] = {PG_SINK: {"kind": "postgres", "dsn_env": SINK_DSN_ENV, "schema": SINK_SCHEMA}}
    if chdb_path is not None:
        sinks[CH_SINK] = {"kind": "clickhouse", "dsn": f"chdb://{chdb_path}", "database": SINK_SCHEMA}
    return {
        "sources": {source_name: server.source_config(run, reference)},
        "sinks": sinks,
        "dlq": {"dsn_env": SINK_DSN_ENV, "schema": "dlq"},
        "masking": {"hmac_key_env": "CDC_MASKING_KEY"},
        "replication": {"mode": mode},
    }


@dataclass(frozen=True)
class SourceAddress:
    """Where a source server answers: what a measurement in another process needs of it."""

    mysql_port: int | None
    dsn: str
    cassandra: tuple[str, int, str] | None = None  # host, port, the node's cassandra.yaml


def open_source(address: SourceAddress, source_name: str, pipeline: PipelineConfig) -> ChangeSource:
    config = pipeline.sources[source_name]
    if address.mysql_port is not None:
        settings = MySqlConnectionSettings("127.0.0.1", address.mysql_port, "root")
        return MySqlChangeSource(source_name, settings, 4379 + len(source_name), config)  # type: ignore[arg-type]
    if address.cassandra is not None:
        assert isinstance(config, CassandraSourceConfig)
        host, port, _ = address.cassandra
        return CassandraChangeSource(source_name, CassandraSourceSettings(source_name, (host,), port), config)
    assert isinstance(config, PostgresSourceConfig)
    return PostgresChangeSource(source_name, address.dsn, config)


# -- measurements ----------------------------------------------------------------------------------


def measure_reference(address: SourceAddress, config_yaml: str, source_name: str, sink_dsn: str, rows: int) -> float:
    """The engine alone, in a process of its own (chdb serves one path per process): the backlog through
    the same session and loop as a streaming run, without Dagster."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return float(pool.apply(_reference_rate, (address, config_yaml, source_name, sink_dsn, rows)))


def _reference_rate(address: SourceAddress, config_yaml: str, source_name: str, sink_dsn: str, rows: int) -> float:
    pipeline = parse_pipeline_config(config_yaml)
    source = open_source(address, source_name, pipeline)
    sinks: dict[str, Sink] = {PG_SINK: PostgresSink(PG_SINK, sink_dsn, SINK_SCHEMA)}
    chdb = pipeline.sinks.get(CH_SINK)
    if isinstance(chdb, ClickHouseSinkConfig):
        sinks[CH_SINK] = ClickHouseSink(CH_SINK, chdb.dsn, SINK_SCHEMA)
    session = ReplicationSession(
        source_name,
        pipeline,
        source,
        sinks,
        DeadLetterStore(sink_dsn, "dlq"),
        Masker(pipeline.masking, MASKING_KEY),
        print,
    )
    loop = ReplicationLoop(
        session, BatchLimits.from_config(pipeline.batch), 0.05, lambda *_: None, lambda *_: None, threading.Event()
    )
    started = time.perf_counter()
    loop.run(None, until_caught_up=True)
    elapsed = time.perf_counter() - started
    session.close()
    return rows / elapsed


# -- one run -----------------------------------------------------------------------------------------


def one_run(server: SourceServer, sink: LocalPostgres, work: Path, run: int, args: argparse.Namespace) -> RunFigures:
    figures = RunFigures()
    server.reset_log()
    namespace = server.namespace(run)
    table = sink_table_name(f"{namespace}.{TABLE}")
    writer = server.writer(run)
    writer.create_table()
    reference_dsn = sink.create_database(f"{server.kind}_ref{run}")
    service_dsn = sink.create_database(f"{server.kind}_service{run}")

    def chdb_path(name: str) -> Path | None:
        return work / name if args.clickhouse else None

    reference_yaml = yaml.safe_dump(
        pipeline_config(server, f"ref{run}", run, chdb_path(f"chdb-ref{run}"), "continuous", reference=True)
    )
    reference_config = parse_pipeline_config(reference_yaml)
    service_yaml = pipeline_config(server, f"bench{run}", run, chdb_path(f"chdb-service{run}"), "continuous")
    service_config = parse_pipeline_config(yaml.safe_dump(service_yaml))
    if server.postgres is not None:  # slots first: changes before a slot exists are not in its stream
        for name, config in ((f"ref{run}", reference_config), (f"bench{run}", service_config)):
            source = open_source(server.address, name, config)
            assert isinstance(source, PostgresChangeSource)
            source.ensure_slot()
    reference_writer = server.writer(run, reference=True) if server.separate_reference else writer
    if server.separate_reference:
        reference_writer.create_table()
    write_backlog(reference_writer, args.backlog)
    next_id = args.backlog
    os.environ[SINK_DSN_ENV] = reference_dsn
    figures.reference_rate = measure_reference(server.address, reference_yaml, f"ref{run}", reference_dsn, args.backlog)
    print(f"  run {run + 1} reference (in process, no Dagster): {figures.reference_rate:,.0f} rows/s", flush=True)
    if server.separate_reference:
        write_backlog(writer, args.backlog)

    config_path = work / f"pipeline-{run}.yaml"
    config_path.write_text(yaml.safe_dump(service_yaml))
    env = {**os.environ, SINK_DSN_ENV: service_dsn, SOURCE_DSN_ENV: server.dsn, "CDC_MASKING_KEY": MASKING_KEY}
    service = DagsterService(work / f"dagster-{run}", config_path, env)
    service.start([f"bench{run}_{server.log_name}_sensor"])
    try:
        pid, run_started = streaming_run_pid(service)
        memory = MemorySampler(pid)
        done = wait_for(lambda: max_id(service_dsn, SINK_SCHEMA, table) >= args.backlog - 1, 600, "the drain", 0.1)
        memory.stop()
        figures.drain_rate = args.backlog / (done - run_started)
        figures.drain_peak_rss_mib = memory.peak_rss / 2**20
        figures.drain_peak_private_mib = memory.peak_private / 2**20
        print(
            f"  run {run + 1} drain through the service: {figures.drain_rate:,.0f} rows/s, peak RSS"
            f" {figures.drain_peak_rss_mib:.0f} MiB ({figures.drain_peak_private_mib:.0f} MiB without mapped files)",
            flush=True,
        )
        instance = service.instance()
        storage_before, storage_at = service.storage_bytes(), time.time()
        figures.latency = measure_latency(
            writer,
            next_id,
            args.latency_seconds,
            service_dsn,
            table,
            (lambda: p.applied_through if (p := read_progress(instance, f"bench{run}", CH_SINK)) else 0.0)
            if args.clickhouse
            else None,
        )
        next_id += int(args.latency_seconds) + 2
        storage_after, elapsed = service.storage_bytes(), time.time() - storage_at
        figures.storage_bytes_per_day = {
            part: (storage_after[part] - storage_before[part]) / elapsed * 86400 for part in storage_after
        }
        for sink_name, values in figures.latency.items():
            print(
                f"  run {run + 1} latency at 1 row/s into {sink_name}: p50 {statistics.median(values):.2f} s,"
                f" p95 {percentile(values, 95):.2f} s, max {max(values):.2f} s",
                flush=True,
            )
        print(
            f"  run {run + 1} Dagster storage growth at 1 row/s: events"
            f" {figures.storage_bytes_per_day['events'] / 2**20:.1f} MiB/day, sensor ticks"
            f" {figures.storage_bytes_per_day['ticks'] / 2**20:.1f} MiB/day"
        )
        for rate in args.rates:
            before, at = service.storage_bytes(), time.time()
            figures.rates[rate] = measure_rate(writer, rate, args.rate_seconds, next_id, service_dsn, table)
            after = service.storage_bytes()
            figures.rates[rate]["events_bytes_per_day"] = (
                (after["events"] - before["events"]) / (time.time() - at) * 86400
            )
            next_id += rate * int(args.rate_seconds) * 2
            measured = figures.rates[rate]
            print(
                f"  run {run + 1} writer at {rate:,} rows/s (wrote {measured['written_per_second']:,.0f}/s):"
                f" replicated {measured['replicated_per_second']:,.0f}/s, lag p95 first half"
                f" {measured['lag_first_half_p95']:.1f} s, second half {measured['lag_second_half_p95']:.1f} s;"
                f" Dagster events {measured['events_bytes_per_day'] / 2**20:.1f} MiB/day",
                flush=True,
            )
        # Everything written so far arrived: the per-run phase's first run catches up to here.
        written_through = max_id(service_dsn, SINK_SCHEMA, table)
    finally:
        service.stop()
    if args.per_run:
        figures.per_run_latency = per_run_latency(server, sink, work, run, writer, written_through, next_id, args)
    writer.close()
    server.drop_slots()
    return figures


def per_run_latency(
    server: SourceServer,
    sink: LocalPostgres,
    work: Path,
    run: int,
    writer: SourceWriter,
    written_through: int,
    next_id: int,
    args: argparse.Namespace,
) -> list[float]:
    """The latency phase with a run per batch (the sensor's default 5 s poll), after the first runs
    caught up with what the earlier phases wrote."""
    dsn = sink.create_database(f"{server.kind}_per_run{run}")
    name = f"perrun{run}"
    yaml_config = pipeline_config(
        server, name, run, work / f"chdb-per-run{run}" if args.clickhouse else None, "per_run"
    )
    if server.postgres is not None:
        source = open_source(server.address, name, parse_pipeline_config(yaml.safe_dump(yaml_config)))
        assert isinstance(source, PostgresChangeSource)
        source.ensure_slot()
    path = work / f"pipeline-per-run-{run}.yaml"
    path.write_text(yaml.safe_dump(yaml_config))
    env = {**os.environ, SINK_DSN_ENV: dsn, SOURCE_DSN_ENV: server.dsn, "CDC_MASKING_KEY": MASKING_KEY}
    service = DagsterService(work / f"dagster-per-run-{run}", path, env)
    service.start([f"{name}_{server.log_name}_sensor"])
    table = sink_table_name(f"{server.namespace(run)}.{TABLE}")
    try:
        # The first run copies everything so far; latency is measured after it.
        if server.keeps_old_changes:  # its sinks start at the log's beginning; a new slot starts now
            wait_for(lambda: max_id(dsn, SINK_SCHEMA, table) >= written_through, 600, "the per-run catch-up", 0.2)
        values = measure_latency(writer, next_id, args.latency_seconds, dsn, table, None)[PG_SINK]
    finally:
        service.stop()
    print(
        f"  run {run + 1} per-run mode latency into {PG_SINK}: p50 {statistics.median(values):.2f} s,"
        f" p95 {percentile(values, 95):.2f} s, max {max(values):.2f} s",
        flush=True,
    )
    return values


# -- orchestration ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m cdc_pipeline.bench.service", description=__doc__.split("\n")[0])
    parser.add_argument("--sources", default="mysql,postgres", help="comma-separated: mysql, postgres, cassandra")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backlog", type=int, default=200_000, help="rows written before the service starts")
    parser.add_argument("--latency-seconds", type=float, default=30)
    parser.add_argument("--rates", default="1000,5000,20000", help="steady writer rates, rows/s")
    parser.add_argument("--rate-seconds", type=float, default=20)
    parser.add_argument("--no-per-run", dest="per_run", action="store_false", help="skip the per-run mode latency")
    parser.add_argument(
        "--no-clickhouse",
        dest="clickhouse",
        action="store_false",
        help="the PostgreSQL sink only: no chdb engine in the run's process (as with a ClickHouse server)",
    )
    args = parser.parse_args()
    args.rates = [int(rate) for rate in args.rates.split(",") if rate]
    with tempfile.TemporaryDirectory(prefix="cdc-service-bench-") as temp:
        work = Path(temp)
        sink = LocalPostgres(work / "sink-postgres" / "data").start()
        try:
            for kind in args.sources.split(","):
                server = SourceServer(kind, work / kind).start()
                try:
                    print(f"{kind} source:", flush=True)
                    runs = [one_run(server, sink, work / kind, run, args) for run in range(args.runs)]
                finally:
                    server.stop()
                report(kind, runs, args)
        finally:
            sink.stop()


if __name__ == "__main__":
    main()
