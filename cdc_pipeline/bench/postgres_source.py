"""Benchmark of the PostgreSQL source: `python -m cdc_pipeline.bench.postgres_source [--rows 200000] [--runs 3]`.

Generates the same workload shape as the MySQL benchmark in an embedded PostgreSQL (a 10-column
table: inserts, then 10% updates and 5% deletes, in transactions of 1,000 rows) behind a pgoutput
slot, then measures, each in a fresh process (so peak RSS belongs to one measurement) reading
from a copy of that slot (`pg_copy_logical_replication_slot`, so every run reads the same WAL):

- reference: the slot's pgoutput messages fetched as they come (server-side decoding and transfer,
  no parsing): what any pgoutput client pays before it looks at a row;
- decode:    this pipeline's WAL reader (parse step) alone, in micro-batches;
- clickhouse / postgres: parse -> mask -> map -> write into chdb / PostgreSQL, with checkpoints.

Prints the median rows/s of --runs runs, the peak RSS and the ratio against the reference
measured in the same invocation.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from contextlib import closing
from pathlib import Path

import psycopg2

from cdc_pipeline.bench.runs import Measurement, measure_in_subprocess, print_medians
from cdc_pipeline.config.models import MaskingConfig
from cdc_pipeline.config.sources import PostgresSourceConfig, TableSelection
from cdc_pipeline.local_servers.postgres import LocalPostgres

PHASES = ("reference", "decode", "clickhouse", "postgres")
_SLOT = "bench_pristine"
_TABLE_DDL = """CREATE TABLE bench.orders (
  id integer PRIMARY KEY, customer_id integer NOT NULL, quantity smallint NOT NULL,
  unit_price numeric(12,2) NOT NULL, total numeric(16,4) NOT NULL, sku varchar(32) NOT NULL,
  note varchar(255), created_at timestamp(6) NOT NULL, shipped_at timestamp(0), attributes jsonb)"""
# %% is a literal % for psycopg2's parameter binding.
_INSERT = """INSERT INTO bench.orders SELECT i, i %% 9973, i %% 50 + 1, (i %% 1000) + (i %% 100) / 100.0,
  (i * 3 %% 100000) + (i %% 10000) / 10000.0, 'SKU-' || lpad(i::text, 8, '0'),
  CASE WHEN i %% 7 = 0 THEN NULL ELSE 'note for order ' || i || ' with some text' END,
  timestamp '2024-01-01 12:00:00' + i * interval '1.000001 second',
  CASE WHEN i %% 3 = 0 THEN NULL ELSE timestamp '2024-01-01 18:00:00' + (i %% 28) * interval '1 day' END,
  jsonb_build_object('gift', i %% 2 = 0, 'tags', '["a","b"]'::jsonb, 'weight', (i %% 17) / 4.0)
  FROM generate_series(%s, %s) i"""


def generate_workload(dsn: str, rows: int) -> int:
    """Create the table and the pristine slot, then the changes; returns how many row changes."""
    with closing(psycopg2.connect(dsn)) as connection:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("CREATE SCHEMA bench")
            cursor.execute(_TABLE_DDL)
            cursor.execute("CREATE PUBLICATION bench FOR TABLE bench.orders")
            cursor.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (_SLOT,))
        connection.autocommit = False
        with connection.cursor() as cursor:
            for start in range(0, rows, 1000):
                cursor.execute(_INSERT, (start, min(start + 1000, rows) - 1))
                connection.commit()
            for start in range(0, rows, 10_000):
                cursor.execute(
                    "UPDATE bench.orders SET quantity = quantity + 1, note = 'updated'"
                    " WHERE id >= %s AND id < %s AND id %% 10 = 0",
                    (start, start + 10_000),
                )
                cursor.execute(
                    "DELETE FROM bench.orders WHERE id >= %s AND id < %s AND id %% 20 = 1", (start, start + 10_000)
                )
                connection.commit()
    return rows + rows // 10 + rows // 20


# -- one measurement, in its own process --------------------------------------------------------


def _slot_statement(dsn: str, statement: str, *parameters: str) -> None:
    with closing(psycopg2.connect(dsn)) as connection, connection.cursor() as cursor:
        connection.autocommit = True
        cursor.execute(statement, parameters)


def measure_reference(dsn: str, slot: str) -> int:
    rows = 0
    with closing(psycopg2.connect(dsn)) as connection, connection.cursor(name="bench_reference") as cursor:
        cursor.itersize = 5000
        cursor.execute(
            "SELECT data FROM pg_logical_slot_peek_binary_changes(%s, NULL, NULL,"
            " 'proto_version', '1', 'publication_names', 'bench')",
            (slot,),
        )
        for (data,) in cursor:
            if bytes(data[:1]) in (b"I", b"U", b"D"):
                rows += 1
    return rows


def measure_pipeline(phase: str, dsn: str, slot: str, batch_rows: int, sink_target: str) -> int:
    from cdc_pipeline.mapping.mapper import TypeMapper
    from cdc_pipeline.masking.masker import Masker
    from cdc_pipeline.sinks.base import Sink
    from cdc_pipeline.sinks.clickhouse.sink import ClickHouseSink
    from cdc_pipeline.sinks.postgres.sink import PostgresSink
    from cdc_pipeline.sinks.registry import sink_kind
    from cdc_pipeline.sources.postgres.change_source import PostgresChangeSource

    config = PostgresSourceConfig(
        kind="postgres", dsn_env="UNUSED", slot=slot, publication="bench", tables=TableSelection(include=["bench.*"])
    )
    source = PostgresChangeSource("bench", dsn, config)
    masker = Masker(MaskingConfig(), "bench-key")
    sink: Sink | None = None
    if phase == "clickhouse":
        sink = ClickHouseSink("warehouse", sink_target, "bench")
    elif phase == "postgres":
        sink = PostgresSink("analytics", sink_target, "bench")
    mapper = TypeMapper(sink.name, sink_kind(phase).map_column, []) if sink else None
    rows, reached = 0, None
    while True:
        # Without a sink the reader's own end stands in for a checkpoint.
        checkpoints = {"sink": sink.checkpoint("bench") if sink is not None else reached}
        batch = source.read_batch(checkpoints, stop_at=None, max_rows=batch_rows)
        if batch.row_count == 0:
            return rows
        rows += batch.row_count
        reached = batch.end
        if sink is not None and mapper is not None:
            sink.write(mapper.map_batch(masker.mask_batch(batch)), lambda rejections: None)
        source.release({"sink": reached})


def measure_in_this_process(args: argparse.Namespace) -> None:
    slot = f"bench_{args.measure}_{args.run}"
    _slot_statement(args.dsn, "SELECT pg_copy_logical_replication_slot(%s, %s)", _SLOT, slot)
    try:
        began = time.perf_counter()
        if args.measure == "reference":
            rows = measure_reference(args.dsn, slot)
        else:
            rows = measure_pipeline(args.measure, args.dsn, slot, args.batch_rows, args.sink_target)
        elapsed = time.perf_counter() - began
    finally:
        # The server has a fixed number of slots (max_replication_slots); a copy holds WAL too.
        _slot_statement(args.dsn, "SELECT pg_drop_replication_slot(%s)", slot)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"rows": rows, "seconds": elapsed, "peak_rss_mib": peak_kib / 1024}))


# -- orchestration --------------------------------------------------------------------------------


def run_benchmark(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="cdc-bench-pg-") as temp:
        work = Path(temp)
        postgres = LocalPostgres(work / "postgres" / "data").start()
        try:
            dsn = postgres.create_database("bench_source")
            print(f"generating {args.rows:,} rows (+10% updates, +5% deletes) in PostgreSQL ...", flush=True)
            changes = generate_workload(dsn, args.rows)
            results: dict[str, list[Measurement]] = {phase: [] for phase in PHASES}
            for run in range(args.runs):
                for phase in PHASES:
                    target = ""
                    if phase == "clickhouse":
                        target = f"chdb://{work / f'chdb-{run}'}"
                    elif phase == "postgres":
                        target = postgres.create_database(f"bench_sink_{run}")
                    arguments = [
                        "--run", str(run), "--dsn", dsn, "--batch-rows", str(args.batch_rows), "--sink-target", target
                    ]  # fmt: skip
                    results[phase].append(
                        measure_in_subprocess("cdc_pipeline.bench.postgres_source", phase, arguments, changes, run)
                    )
            print(
                f"\nworkload: {changes:,} row changes; batch size {args.batch_rows:,} rows; median of {args.runs} runs"
            )
            print_medians(results, _LABELS, "reference")
        finally:
            postgres.stop()


_LABELS = {
    "reference": "pgoutput messages fetched (no parse)",
    "decode": "WAL decode (parse step) alone",
    "clickhouse": "end to end into ClickHouse (chdb)",
    "postgres": "end to end into PostgreSQL",
}


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m cdc_pipeline.bench.postgres_source", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch-rows", type=int, default=50_000)
    parser.add_argument("--measure", choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument("--run", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--dsn", help=argparse.SUPPRESS)
    parser.add_argument("--sink-target", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure_in_this_process(args)
    else:
        run_benchmark(args)


if __name__ == "__main__":
    main()
