"""How a ClickHouse cell table's state read scales with the table: `python -m
cdc_pipeline.bench.cell_state_read [--rows 100000,1000000,5000000] [--runs 5] [--batch 10000]`.

Before it merges a batch, the ClickHouse cell writer (`sinks/clickhouse/cell_tables.py`) reads the
stored states of the rows the batch touches: `SELECT key, cells FROM t FINAL WHERE partition IN
(...) AND (key IN (...) OR partition IN (...))`, the table ordered by (partition, key). This fills an
embedded chdb table of the writer's shape with N rows (about 100,000 partitions, a row state of the
usual size), then times that query, with the writer's parameters, for a batch of new keys (a stream
of inserts) and for a batch of stored keys (updates), median of --runs. A batch of random partitions
touches granules all over the table, so the read grows with the table, not with the batch.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

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
        print(f"state read of a batch of {args.batch:,} keys, median of {args.runs} runs:")
        for rows in sizes:
            fill(sink, table, rows)
            new = [
                read_seconds(sink, table, [(p, rows + randomness.randrange(10**9)) for p in _random_partitions(
                    randomness, args.batch)])
                for _ in range(args.runs)
            ]  # fmt: skip
            stored = []
            for _ in range(args.runs):
                ids = [randomness.randrange(rows) for _ in range(args.batch)]
                stored.append(read_seconds(sink, table, [(i % _PARTITIONS, i) for i in ids]))
            print(
                f"  table of {rows:>11,} rows: new keys {statistics.median(new) * 1000:>6.0f} ms,"
                f" stored keys {statistics.median(stored) * 1000:>6.0f} ms",
                flush=True,
            )


def _random_partitions(randomness: random.Random, count: int) -> list[int]:
    return [randomness.randrange(_PARTITIONS) for _ in range(count)]


if __name__ == "__main__":
    main()
