"""Benchmark of the Cassandra source: `python -m cdc_pipeline.bench.cassandra_source [--rows 100000] [--runs 3]`.

Starts a Cassandra 5 node (CDC on, 32 MiB commit-log segments) in a temporary directory, and with
`--topology cluster` (or `both`, the default) a three-node cluster (replication factor 3) too, writes a
workload into a CDC table (inserts of 9-column rows with a non-frozen map, then one-cell updates of
10% and deletes of 5% of the rows), then measures, each in a fresh process (so peak RSS belongs to
one measurement) and over the same commit-log segments (nothing is released between runs):

- reference: the table's live rows read back with cassandra-driver paging (5,000 rows a page): what
  a full scan of the same data costs a client;
- capture_cold: this pipeline's commit-log capture (parse step: the Java reader + RowChange building)
  alone, in micro-batches, by a new run that finds no reader server up: it starts one (the JVM
  start, Cassandra's initialisation and a cold JIT are in the time), as after an idle spell;
- clickhouse / postgres: capture -> mask -> map -> write into chdb / PostgreSQL with checkpoints, the
  reader server up;
- capture: the capture alone by a new run while the node's reader server is up and has served the
  earlier phases' reads (its JIT keeps compiling over the first reads: a run measured right after a
  server's first read is 10-25% slower): what the runs the daemon launches pay in steady state, and a
  continuous run's rate.

On the cluster, the pipeline is one source per node (each reading its node's cdc_raw, all feeding one
sink, as a deployment runs them); every node holds a copy of every change, and the rate counts each
change once, over the time all three sources take one after the other.

Each side is timed from its connection on; module imports are not (what starting a run costs is in
the service benchmark, `bench/service.py`). Prints the median rows/s of --runs runs (row changes for
the pipeline, rows for the reference), the peak RSS of the measuring process (the nodes' and the
reader server's memory are not in it; the reader server's own peak is printed under the table) and
the ratio against the reference measured in the same invocation, on the same topology.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cassandra import ConsistencyLevel
from cassandra.concurrent import execute_concurrent_with_args

from cdc_pipeline.bench.runs import Measurement, measure_in_subprocess, print_medians
from cdc_pipeline.config.models import BatchConfig
from cdc_pipeline.local_servers.cassandra import LocalCassandra

# In this order: `capture` measures a server that has served the three reads before it.
PHASES = ("reference", "capture_cold", "clickhouse", "postgres", "capture")
KEYSPACE = "bench"
_TABLE_DDL = """CREATE TABLE bench.orders (
  customer_id int, order_id int, quantity int, unit_price decimal, total decimal, sku text, note text,
  created_at timestamp, shipped_at timestamp, attributes map<text, text>,
  PRIMARY KEY ((customer_id), order_id)) WITH cdc = true"""
_CUSTOMERS = 9973
# What a pipeline without a `batch` section uses: memory is per batch.
_DEFAULT_BATCH_ROWS: int = BatchConfig.model_fields["max_rows"].default


class BenchCassandra(LocalCassandra):
    """The test node with room for a benchmark: bigger segments and cdc_raw, a bigger heap."""

    def cassandra_yaml(self) -> dict[str, Any]:
        return {
            **super().cassandra_yaml(),
            "commitlog_segment_size": "32MiB",
            "cdc_total_space": "4096MiB",
            "memtable_heap_space": "256MiB",
        }


def _key(i: int) -> tuple[int, int]:
    return i % _CUSTOMERS, i


def generate_workload(session: Any, rows: int, replication_factor: int) -> int:
    """The table and its changes; returns how many row changes (mutations) were written."""
    session.execute(
        f"CREATE KEYSPACE {KEYSPACE} WITH replication = {{'class': 'SimpleStrategy',"
        f" 'replication_factor': {replication_factor}}}"
    )
    session.execute(_TABLE_DDL)
    insert = session.prepare(
        "INSERT INTO bench.orders (customer_id, order_id, quantity, unit_price, total, sku, note, created_at,"
        " shipped_at, attributes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    start = dt.datetime(2024, 1, 1, 12, tzinfo=dt.UTC)

    def row(i: int) -> tuple[Any, ...]:
        return (
            *_key(i),
            i % 50 + 1,
            Decimal(i % 1000) + Decimal(i % 100) / 100,
            Decimal(i * 3 % 100_000) + Decimal(i % 10_000) / 10_000,
            f"SKU-{i:08d}",
            None if i % 7 == 0 else f"note for order {i} with some text",
            start + dt.timedelta(seconds=i),
            None if i % 3 == 0 else start + dt.timedelta(days=i % 28),
            {"gift": str(i % 2 == 0).lower(), "weight": str(i % 17 / 4)},
        )

    _write_all(session, insert, (row(i) for i in range(rows)))
    update = session.prepare("UPDATE bench.orders SET note = 'updated' WHERE customer_id = ? AND order_id = ?")
    _write_all(session, update, (_key(i) for i in range(0, rows, 10)))
    delete = session.prepare("DELETE FROM bench.orders WHERE customer_id = ? AND order_id = ?")
    _write_all(session, delete, (_key(i) for i in range(1, rows, 20)))
    return rows + len(range(0, rows, 10)) + len(range(1, rows, 20))


def _write_all(session: Any, statement: Any, parameters: Any) -> None:
    # ALL: every replica holds every change before a measurement reads its cdc_raw (the nodes keep no
    # hints, so a write a busy replica dropped would never reach it).
    statement.consistency_level = ConsistencyLevel.ALL
    chunk: list[tuple[Any, ...]] = []
    for values in parameters:
        chunk.append(values)
        if len(chunk) == 5000:
            execute_concurrent_with_args(session, statement, chunk, concurrency=64, raise_on_first_error=True)
            chunk = []
    if chunk:
        execute_concurrent_with_args(session, statement, chunk, concurrency=64, raise_on_first_error=True)


# -- one measurement, in its own process --------------------------------------------------------


def measure_reference(nodes: list[dict[str, Any]]) -> int:
    from cassandra.cluster import Cluster
    from cassandra.query import SimpleStatement

    cluster = Cluster([node["host"] for node in nodes], port=nodes[0]["port"], protocol_version=5)
    try:
        session = cluster.connect()
        rows = 0
        for _ in session.execute(SimpleStatement("SELECT * FROM bench.orders", fetch_size=5000)):
            rows += 1
        return rows
    finally:
        cluster.shutdown()


def measure_pipeline(phase: str, nodes: list[dict[str, Any]], batch_rows: int, sink_target: str) -> tuple[int, float]:
    """Every node's changes through its own source into one sink, node after node; returns the row
    changes delivered, each node's copies counted once (a cluster's nodes hold the same changes), and
    the seconds the sources took."""
    if phase == "capture_cold":
        from cdc_pipeline.sources.cassandra.reader_server import stop_reader_servers

        for node in nodes:
            stop_reader_servers(under=Path(node["cassandra_yaml"]).parent)
    measured = [measure_node_source(phase, index, nodes, batch_rows, sink_target) for index in range(len(nodes))]
    delivered = {rows for rows, _ in measured}
    if len(delivered) != 1:
        raise RuntimeError(f"the nodes' sources delivered different numbers of changes: {measured}")
    return delivered.pop(), sum(seconds for _, seconds in measured)


def measure_node_source(
    phase: str, index: int, nodes: list[dict[str, Any]], batch_rows: int, sink_target: str
) -> tuple[int, float]:
    """Rows delivered and seconds taken, from the source's and sink's construction on (the modules
    are imported before: the reference's driver is imported before its clock starts too, and what
    imports cost a run is in the service benchmark's per-run latency)."""
    # Only what the phase runs is imported: capture alone needs no sink or mapping code.
    from cdc_pipeline.config.sources import CassandraSourceConfig, TableSelection
    from cdc_pipeline.core.checkpoint import Checkpoint
    from cdc_pipeline.core.gc_pause import cyclic_gc_paused
    from cdc_pipeline.sources.cassandra.change_source import CassandraChangeSource
    from cdc_pipeline.sources.cassandra.connection import CassandraSourceSettings

    writes = phase in ("clickhouse", "postgres")
    if writes or TYPE_CHECKING:
        from cdc_pipeline.config.models import MaskingConfig
        from cdc_pipeline.mapping.mapper import TypeMapper
        from cdc_pipeline.masking.masker import Masker
        from cdc_pipeline.sinks.base import Sink
        from cdc_pipeline.sinks.clickhouse.sink import ClickHouseSink
        from cdc_pipeline.sinks.postgres.sink import PostgresSink
        from cdc_pipeline.sinks.registry import sink_kind

    began = time.perf_counter()
    node_settings = nodes[index]
    name = f"bench{index}"
    config = CassandraSourceConfig(
        kind="cassandra",
        hosts=[node_settings["host"]],
        port=node_settings["port"],
        cassandra_yaml=node_settings["cassandra_yaml"],
        tables=TableSelection(include=[f"{KEYSPACE}.*"]),
        cluster="bench" if len(nodes) > 1 else None,
    )
    settings = CassandraSourceSettings(name, (node_settings["host"],), node_settings["port"])
    source = CassandraChangeSource(name, settings, config, state_dir=Path(node_settings["state_dir"]))
    sink: Sink | None = None
    mapper: TypeMapper | None = None
    masker: Masker | None = None
    if writes:
        if phase == "clickhouse":
            sink = ClickHouseSink("warehouse", sink_target, "bench")
        else:
            sink = PostgresSink("analytics", sink_target, "bench")
        masker = Masker(MaskingConfig(), "bench-key")
        mapper = TypeMapper(sink.name, sink_kind(phase).map_column, [])
    # A production batch's other limits (commit-log bytes, seconds): the config's defaults.
    limits = BatchConfig()
    source.check()  # as a run does first (it also starts the segment reader)

    def one_batch(reached: Checkpoint | None) -> tuple[int, Checkpoint | None]:
        """One batch read, masked, mapped and written: (row changes, the end reached; None at the
        log's end). Its objects are freed when this returns, inside the collector's pause, as in
        ReplicationSession.replicate_batch: a pause ended with the batch still alive has the
        collector walk all of it (about 55 ms a batch of 10,000)."""
        # Without a sink the reader's own end stands in for a checkpoint. Nothing is released: every
        # run reads the same segments.
        checkpoints = {"sink": sink.checkpoint(name) if sink is not None else reached}
        batch = source.read_batch(
            checkpoints,
            stop_at=None,
            max_rows=batch_rows,
            max_bytes=limits.max_bytes,
            max_seconds=limits.max_seconds,
        )
        if batch.row_count == 0 and not batch.rejections and batch.end.position == batch.start.position:
            return 0, None
        if batch.rejections:
            raise RuntimeError(f"the workload should decode without rejections: {batch.rejections[:3]}")
        if sink is not None and mapper is not None and masker is not None:
            sink.write(mapper.map_batch(masker.mask_batch(batch)), lambda rejections: None)
        return batch.row_count, batch.end

    def drain() -> int:
        rows = 0
        reached: Checkpoint | None = None
        while True:
            with cyclic_gc_paused():
                count, end = one_batch(reached)
            if end is None:
                return rows
            rows += count
            reached = end

    rows = drain()
    source.close()
    return rows, time.perf_counter() - began


def measure_in_this_process(args: argparse.Namespace) -> None:
    nodes = json.loads(args.nodes)
    if args.measure == "reference":
        began = time.perf_counter()
        rows = measure_reference(nodes)
        elapsed = time.perf_counter() - began
    else:
        rows, elapsed = measure_pipeline(args.measure, nodes, args.batch_rows, args.sink_target)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    measured = {"rows": rows, "seconds": elapsed, "peak_rss_mib": peak_kib / 1024}
    if args.measure != "reference":
        measured["reader_peak_rss_mib"] = reader_server_peak_mib([Path(node["cassandra_yaml"]) for node in nodes])
    print(json.dumps(measured))


def reader_server_peak_mib(cassandra_yamls: list[Path]) -> float:
    """The largest peak RSS among the nodes' reader servers (each runs beside its own node)."""
    from cdc_pipeline.sources.cassandra.reader_server import running_servers

    wanted = {str(path) for path in cassandra_yamls}
    peaks = [0.0]
    for info in running_servers():
        if info["cassandra_yaml"] not in wanted:
            continue
        try:
            status = Path(f"/proc/{info['pid']}/status").read_text()
        except FileNotFoundError:
            continue
        peaks += [int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmHWM:")]
    return max(peaks)


# -- orchestration --------------------------------------------------------------------------------


def run_benchmark(args: argparse.Namespace) -> None:
    from cdc_pipeline.local_servers.postgres import LocalPostgres
    from cdc_pipeline.sources.cassandra.reader_server import stop_reader_servers

    with tempfile.TemporaryDirectory(prefix="cdc-bench-cassandra-") as temp:
        work = Path(temp)
        postgres = LocalPostgres(work / "postgres" / "data").start()
        try:
            if args.topology in ("node", "both"):
                node = BenchCassandra(work / "cassandra", heap_mb=1024).start()
                try:
                    measure_topology("one node", [node], node.session(), args, postgres, work / "node")
                finally:
                    node.stop()
            if args.topology in ("cluster", "both"):
                from cdc_pipeline.local_servers.cassandra_cluster import LocalCassandraCluster

                ring = LocalCassandraCluster(work / "cluster", nodes=3, heap_mb=1024, node_class=BenchCassandra)
                ring.start()
                try:
                    measure_topology("three-node cluster", ring.nodes, ring.session(), args, postgres, work / "cluster")
                finally:
                    ring.stop()
        finally:
            stop_reader_servers(under=work)
            postgres.stop()


def measure_topology(
    topology: str, nodes: list[LocalCassandra], session: Any, args: argparse.Namespace, postgres: Any, work: Path
) -> None:
    """The workload written through `session` (replicated to every node), then each phase --runs times."""
    print(f"{topology}: writing {args.rows:,} rows (+10% one-cell updates, +5% deletes) ...", flush=True)
    began = time.perf_counter()
    changes = generate_workload(session, args.rows, replication_factor=len(nodes))
    print(f"  {changes:,} mutations in {time.perf_counter() - began:.0f} s", flush=True)
    live_rows = args.rows - len(range(1, args.rows, 20))
    settings = [
        {
            "host": node.host,
            "port": node.port,
            "cassandra_yaml": str(node.base_dir / "cassandra.yaml"),
            "state_dir": str(work / f"reader-state-{index}"),
        }
        for index, node in enumerate(nodes)
    ]
    phases = [phase for phase in PHASES if phase in args.phases.split(",")]
    # Printed with the two captures together.
    shown = sorted(phases, key=("reference", "capture_cold", "capture", "clickhouse", "postgres").index)
    results: dict[str, list[Measurement]] = {phase: [] for phase in shown}
    for run in range(args.runs):
        for phase in phases:
            target = ""
            if phase == "clickhouse":
                target = f"chdb://{work / f'chdb-{run}'}"
            elif phase == "postgres":
                target = postgres.create_database(f"bench_sink_{work.name}_{run}")
            arguments = [
                "--nodes", json.dumps(settings), "--batch-rows", str(args.batch_rows), "--sink-target", target,
            ]  # fmt: skip
            expected = live_rows if phase == "reference" else changes
            results[phase].append(
                measure_in_subprocess("cdc_pipeline.bench.cassandra_source", phase, arguments, expected, run)
            )
    print(
        f"\n{topology}: {changes:,} mutations, {live_rows:,} live rows; batch size {args.batch_rows:,};"
        f" median of {args.runs} runs"
    )
    print_medians(results, _LABELS, "reference")
    readers = [m["reader_peak_rss_mib"] for phase in phases if phase != "reference" for m in results[phase]]
    if readers:
        print(f"the reader server (a JVM beside each node, not in the figures above): peak RSS {max(readers):.0f} MiB")
    print(flush=True)


_LABELS = {
    "reference": "live rows read back (driver paging)",
    "capture_cold": "capture, a run that starts the reader",
    "capture": "capture, reader server up (steady state)",
    "clickhouse": "end to end into ClickHouse (chdb)",
    "postgres": "end to end into PostgreSQL",
}


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m cdc_pipeline.bench.cassandra_source", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--batch-rows", type=int, default=_DEFAULT_BATCH_ROWS, help="row changes per batch (default: the config's)"
    )
    parser.add_argument("--phases", default=",".join(PHASES), help="comma-separated subset of " + ", ".join(PHASES))
    parser.add_argument("--measure", choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument(
        "--topology", choices=("node", "cluster", "both"), default="both", help="one node, a 3-node cluster, or both"
    )
    parser.add_argument("--nodes", help=argparse.SUPPRESS)
    parser.add_argument("--sink-target", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure_in_this_process(args)
    else:
        run_benchmark(args)


if __name__ == "__main__":
    main()
