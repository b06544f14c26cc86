"""How a cell table's writes and reads scale with the table, in ClickHouse and PostgreSQL: `python -m
cdc_pipeline.bench.cell_table_scaling [--rows 100000,1000000,5000000] [--runs 5] [--batch 10000]`.

The cell sinks write a batch without reading the rows it touches (stamped cells merged by the
engine: `sinks/cell_merge/stamped_rows.py`), and apply shadowing and TTLs when the rows are read,
in the `__merged` and `_current` views. So what grows with the table is a write's index work and a
read's merge. This fills each sink's real cell table (made by the sink) with N rows of the usual
shape through SQL, about 100,000 partitions, then times, median of --runs:
- writing a batch of --batch changes through the sink (`Sink.write`, after mask and map): inserts of
  new keys, and one-cell updates of stored keys;
- reading through the `_current` view: every row (a count), and one row by its key.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg2

from cdc_pipeline.config.models import MaskingConfig
from cdc_pipeline.core.cells import CellChange, CellWrite
from cdc_pipeline.core.changes import ChangeBatch, ChangeOp, RowChange, TableChanges
from cdc_pipeline.core.checkpoint import Checkpoint
from cdc_pipeline.core.schema import ColumnSchema, TableSchema
from cdc_pipeline.local_servers.postgres import LocalPostgres
from cdc_pipeline.mapping.mapper import TypeMapper
from cdc_pipeline.masking.masker import Masker
from cdc_pipeline.sinks.base import Sink
from cdc_pipeline.sinks.clickhouse.sink import ClickHouseSink
from cdc_pipeline.sinks.postgres.sink import PostgresSink
from cdc_pipeline.sinks.registry import sink_kind
from cdc_pipeline.sources.cassandra.positions import CommitLogPosition

_PARTITIONS = 99_991
_SCHEMA = TableSchema(
    "bench",
    "orders",
    (
        ColumnSchema("customer_id", "int", "int", False),
        ColumnSchema("order_id", "bigint", "bigint", False),
        ColumnSchema("note", "text", "text", True),
        ColumnSchema("total", "decimal", "decimal", True, precision=38, scale=10),
    ),
    ("customer_id", "order_id"),
    partition_key_length=1,
)
_TABLE = "bench__orders"
_T0 = 1_700_000_000_000_000


def _change(customer: int, order: int, timestamp: int, values: dict[str, Any], insert: bool) -> RowChange:
    cells = CellChange(
        cells={name: CellWrite(timestamp) for name in values}, liveness=CellWrite(timestamp) if insert else None
    )
    op = ChangeOp.INSERT if insert else ChangeOp.UPDATE
    return RowChange(op, {"customer_id": customer, "order_id": order, **values}, timestamp, "bench", 0, cells)


def write_seconds(sink: Sink, kind: str, changes: list[RowChange]) -> float:
    """One batch through mask and map (untimed) and the sink's write (timed)."""
    batch = ChangeBatch(
        "bench",
        Checkpoint(CommitLogPosition(1, 0)),
        Checkpoint(CommitLogPosition(1, len(changes))),
        {_SCHEMA.qualified_name: TableChanges(_SCHEMA, changes)},
    )
    masked = Masker(MaskingConfig(classify_by_name=False), "bench-key").mask_batch(batch)
    mapped = TypeMapper(sink.name, sink_kind(kind).map_column, []).map_batch(masked)
    began = time.perf_counter()
    sink.write(mapped, lambda rejections: None, advance_checkpoint=False)
    return time.perf_counter() - began


def fill_clickhouse(sink: ClickHouseSink, rows: int) -> None:
    client = sink.client
    client.command(f"TRUNCATE TABLE {sink.qualified(_TABLE)}")
    stamp = f"{_T0}, 0, -9223372036854775808"
    client.command(
        f"INSERT INTO {sink.qualified(_TABLE)} (customer_id, order_id, note, total, _deleted_at, _liveness,"
        " _version, _key, _partition)"
        f" SELECT number % {_PARTITIONS}, number, ({stamp}, 'note for order'), ({stamp}, 12.5),"
        f" -9223372036854775808, ({_T0}, -9223372036854775808), {_T0},"
        f" concat('[', toString(number % {_PARTITIONS}), ',', toString(number), ']'),"
        f" concat('[', toString(number % {_PARTITIONS}), ']') FROM numbers({rows})"
    )
    client.command(f"OPTIMIZE TABLE {sink.qualified(_TABLE)} FINAL")


def fill_postgres(dsn: str, rows: int) -> None:
    stamp = f"[{_T0}, 0, -9223372036854775808]"
    with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE replica.{_TABLE}")
        cursor.execute(
            f"INSERT INTO replica.{_TABLE} (customer_id, order_id, note, total, _stamps, _deleted_at, _version,"
            " _key, _partition)"
            f" SELECT mod(n, {_PARTITIONS}), n, 'note for order', 12.5,"
            f' \'{{"note": {stamp}, "total": {stamp}, "": [{_T0}, 0, -9223372036854775808]}}\'::jsonb,'
            f" -9223372036854775808, {_T0}, '[' || mod(n, {_PARTITIONS}) || ',' || n || ']',"
            f" '[' || mod(n, {_PARTITIONS}) || ']' FROM generate_series(0, %s - 1) AS n",
            (rows,),
        )
        cursor.execute(f"ANALYZE replica.{_TABLE}")
    connection.close()


def _median_ms(measure: Callable[[], float], runs: int) -> float:
    return statistics.median(measure() for _ in range(runs)) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m cdc_pipeline.bench.cell_table_scaling", description=__doc__)
    parser.add_argument("--rows", default="100000,1000000,5000000", help="table sizes, comma-separated")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=10_000, help="changes in a batch")
    args = parser.parse_args()
    sizes = [int(size) for size in args.rows.split(",") if size]
    randomness = random.Random(7)
    clock = iter(range(_T0 + 1, _T0 + 10**12))
    with tempfile.TemporaryDirectory(prefix="cdc-bench-cell-scaling-") as temp:
        postgres = LocalPostgres(Path(temp) / "postgres" / "data").start()
        try:
            dsn = postgres.create_database("bench")
            clickhouse = ClickHouseSink("warehouse", f"chdb://{Path(temp) / 'chdb'}", "bench")
            sinks: dict[str, Sink] = {"clickhouse": clickhouse, "postgres": PostgresSink("analytics", dsn, "replica")}
            for kind, sink in sinks.items():  # the sinks make their tables, as a first batch does
                write_seconds(sink, kind, [_change(0, -1, _T0, {"note": "first"}, insert=True)])
            print(f"a batch of {args.batch:,} changes, and reads through `_current`; median of {args.runs} runs:")
            for rows in sizes:
                fill_clickhouse(clickhouse, rows)
                fill_postgres(dsn, rows)
                for kind, sink in sinks.items():
                    figures = _measure(kind, sink, rows, args, randomness, clock, dsn)
                    print(
                        f"  {rows:>11,} rows, {kind:<10}: " + ", ".join(f"{k} {v:,.0f} ms" for k, v in figures.items())
                    )
        finally:
            postgres.stop()


def _measure(
    kind: str, sink: Sink, rows: int, args: argparse.Namespace, randomness: random.Random, clock: Any, dsn: str
) -> dict[str, float]:
    def inserts() -> float:
        base = rows + randomness.randrange(10**9)
        changes = [
            _change(
                randomness.randrange(_PARTITIONS), base + i, next(clock), {"note": "new", "total": Decimal("1.5")}, True
            )
            for i in range(args.batch)
        ]
        return write_seconds(sink, kind, changes)

    def updates() -> float:
        keys = [randomness.randrange(rows) for _ in range(args.batch)]
        changes = [_change(key % _PARTITIONS, key, next(clock), {"note": "updated"}, False) for key in keys]
        return write_seconds(sink, kind, changes)

    def read_all() -> float:
        return _read_seconds(sink, dsn, "SELECT count(*) FROM {view}")

    def read_one() -> float:
        key = randomness.randrange(rows)
        where = f" WHERE customer_id = {key % _PARTITIONS} AND order_id = {key}"
        return _read_seconds(sink, dsn, "SELECT * FROM {view}" + where)

    return {
        "insert batch": _median_ms(inserts, args.runs),
        "update batch": _median_ms(updates, args.runs),
        "read all": _median_ms(read_all, args.runs),
        "read one": _median_ms(read_one, args.runs),
    }


def _read_seconds(sink: Sink, dsn: str, query: str) -> float:
    began = time.perf_counter()
    if isinstance(sink, ClickHouseSink):
        sink.client.query(query.format(view=sink.qualified(_TABLE + "_current")))
    else:
        with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
            cursor.execute(query.format(view=f"replica.{_TABLE}_current"))
            cursor.fetchall()
        connection.close()
    return time.perf_counter() - began


if __name__ == "__main__":
    main()
