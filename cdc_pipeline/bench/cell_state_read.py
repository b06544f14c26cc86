"""How a cell table's state read scales with the table, in ClickHouse and PostgreSQL: `python -m
cdc_pipeline.bench.cell_state_read [--rows 100000,1000000,5000000] [--runs 5] [--batch 10000]`.

Before it merges a batch, the ClickHouse cell writer (`sinks/clickhouse/cell_tables.py`) reads the
stored states of the rows the batch touches: `SELECT key, cells FROM t FINAL WHERE partition IN
(...) AND (key IN (...) OR partition IN (...))`, the table ordered by (partition, key). This fills an
embedded chdb table of the writer's shape with N rows (about 100,000 partitions, a row state of the
usual size), then times that query, with the writer's parameters, for a batch of new keys (a stream
of inserts) and for a batch of stored keys (updates), median of --runs. A batch of random partitions
touches granules all over the table, so the read grows with the table, not with the batch.

The PostgreSQL cell writer (`sinks/postgres/cell_tables.py`) reads the same states with `WHERE key =
ANY(...) OR partition = ANY(...) ORDER BY key FOR UPDATE`, through indexes on both columns: the same
table shape and query in an embedded PostgreSQL, inside a transaction rolled back after each read.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import psycopg2

from cdc_pipeline.local_servers.postgres import LocalPostgres
from cdc_pipeline.sinks.clickhouse.sink import ClickHouseSink

_PARTITIONS = 99_991
_STATE = (
    '{"cells":{"note":[1,null,"note for order",false],"total":[1,null,{"$decimal":"12.50"},false]},'
    '"collections":{},"deletion":null,"key":[1,2],"liveness":[1,null,null,false],"version":1}'
)
_READ = (
    "SELECT _key, _cells FROM {table} FINAL WHERE _partition IN {{partitions:Array(String)}}"
    " AND (_key IN {{keys:Array(String)}} OR _partition IN {{deleting:Array(String)}})"
)


def fill(sink: ClickHouseSink, table: str, rows: int) -> None:
    client = sink.client
    client.command(f"DROP TABLE IF EXISTS {table}")
    client.command(
        f"CREATE TABLE {table} (note Nullable(String), total Nullable(Decimal(38, 10)), _version UInt64,"
        " _is_deleted UInt8, _cells String, _key String, _partition String, _expiry String,"
        " _live_until Nullable(Int64)) ENGINE = ReplacingMergeTree(_version) ORDER BY (_partition, _key)"
    )
    client.command(
        f"INSERT INTO {table} SELECT 'note for order', 12.5, 1, 0, '{_STATE}',"
        f" concat('[', toString(number % {_PARTITIONS}), ',', toString(number), ']'),"
        f" concat('[', toString(number % {_PARTITIONS}), ']'), '{{}}', NULL FROM numbers({rows})"
    )


def fill_postgres(dsn: str, rows: int) -> None:
    with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS cells")
        cursor.execute(
            "CREATE TABLE cells (id bigint PRIMARY KEY, note text, total numeric, _version bigint NOT NULL,"
            " _is_deleted boolean NOT NULL, _cells text NOT NULL, _key text NOT NULL, _partition text NOT NULL,"
            " _expiry jsonb NOT NULL, _live_until bigint)"
        )
        cursor.execute(
            "INSERT INTO cells SELECT n, 'note for order', 12.5, 1, false, %s,"
            f" '[' || mod(n, {_PARTITIONS}) || ',' || n || ']', '[' || mod(n, {_PARTITIONS}) || ']', '{{}}', NULL"
            " FROM generate_series(0, %s - 1) AS n",
            (_STATE, rows),
        )
        cursor.execute("CREATE INDEX ON cells (_partition)")
        cursor.execute("CREATE INDEX ON cells (_key)")
        cursor.execute("ANALYZE cells")
    connection.close()


def postgres_read_seconds(dsn: str, keys: list[tuple[int, int]]) -> float:
    texts = sorted(f"[{partition},{row}]" for partition, row in keys)
    with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
        began = time.perf_counter()
        cursor.execute(
            "SELECT _key, _cells FROM cells WHERE _key = ANY(%s) OR _partition = ANY(%s) ORDER BY _key FOR UPDATE",
            (texts, []),
        )
        cursor.fetchall()
        elapsed = time.perf_counter() - began
        connection.rollback()
    connection.close()
    return elapsed


def read_seconds(sink: ClickHouseSink, table: str, keys: list[tuple[int, int]]) -> float:
    partitions = sorted({f"[{partition}]" for partition, _ in keys})
    texts = sorted(f"[{partition},{row}]" for partition, row in keys)
    began = time.perf_counter()
    sink.client.query(_READ.format(table=table), parameters={"partitions": partitions, "keys": texts, "deleting": []})
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m cdc_pipeline.bench.cell_state_read", description=__doc__)
    parser.add_argument("--rows", default="100000,1000000,5000000", help="table sizes, comma-separated")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=10_000, help="keys a batch touches")
    args = parser.parse_args()
    sizes = [int(size) for size in args.rows.split(",") if size]
    randomness = random.Random(7)
    with tempfile.TemporaryDirectory(prefix="cdc-bench-state-read-") as temp:
        sink = ClickHouseSink("warehouse", f"chdb://{Path(temp) / 'chdb'}", "bench")
        table = sink.qualified("cells")
        postgres = LocalPostgres(Path(temp) / "postgres" / "data").start()
        try:
            dsn = postgres.create_database("bench")
            print(f"state read of a batch of {args.batch:,} keys, median of {args.runs} runs:")
            for rows in sizes:
                fill(sink, table, rows)
                fill_postgres(dsn, rows)
                batches = {
                    "new keys": [
                        [(p, rows + randomness.randrange(10**9)) for p in _random_partitions(randomness, args.batch)]
                        for _ in range(args.runs)
                    ],
                    "stored keys": [
                        [(i % _PARTITIONS, i) for i in (randomness.randrange(rows) for _ in range(args.batch))]
                        for _ in range(args.runs)
                    ],
                }
                for kind, keyed in batches.items():
                    clickhouse = statistics.median(read_seconds(sink, table, keys) for keys in keyed)
                    postgresql = statistics.median(postgres_read_seconds(dsn, keys) for keys in keyed)
                    print(
                        f"  table of {rows:>11,} rows, {kind:<11}: ClickHouse {clickhouse * 1000:>6.0f} ms,"
                        f" PostgreSQL {postgresql * 1000:>6.0f} ms",
                        flush=True,
                    )
        finally:
            postgres.stop()


def _random_partitions(randomness: random.Random, count: int) -> list[int]:
    return [randomness.randrange(_PARTITIONS) for _ in range(count)]


if __name__ == "__main__":
    main()
