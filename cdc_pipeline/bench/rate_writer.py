"""Writers for the service benchmark: a 10-column table at the source, rows inserted at a steady rate in
multi-row transactions, each transaction's commit time noted for the latency measurement."""

from __future__ import annotations

import datetime as dt
import json
import time
from contextlib import closing
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg2
import psycopg2.extras

from cdc_pipeline.sources.mysql.connection import MySqlConnectionSettings

TABLE = "events"
_COLUMNS = "id, account, quantity, price, total, sku, note, created_at, shipped_at, attributes"


def row(i: int) -> tuple[Any, ...]:
    return (
        i,
        i % 9973,
        i % 50 + 1,
        f"{i % 1000}.{i % 100:02d}",
        f"{i * 3 % 100000}.{i % 10000:04d}",
        f"SKU-{i:08d}",
        None if i % 7 == 0 else f"note for event {i} with some text",
        dt.datetime(2024, i % 12 + 1, i % 28 + 1, 12, i % 60, i % 60, i % 1_000_000),
        None if i % 3 == 0 else dt.datetime(2024, i % 12 + 1, i % 28 + 1, 18),
        json.dumps({"gift": i % 2 == 0, "tags": ["a", "b"][: i % 3], "weight": i % 17 / 4}),
    )


class SourceWriter(Protocol):
    def create_table(self) -> None: ...

    def insert(self, first_id: int, count: int) -> float:
        """Insert ids first_id .. first_id+count-1 in one transaction; returns its commit time."""
        ...

    def close(self) -> None: ...


@dataclass
class Commit:
    last_id: int
    rows: int
    committed_at: float


class MySqlWriter:
    def __init__(self, settings: MySqlConnectionSettings, database: str) -> None:
        self._database = database
        self._connection = settings.connect()

    def create_table(self) -> None:
        with self._connection.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE IF NOT EXISTS `{self._database}`")
            cursor.execute(
                f"CREATE TABLE `{self._database}`.{TABLE} (id BIGINT PRIMARY KEY, account INT NOT NULL,"
                " quantity SMALLINT NOT NULL, price DECIMAL(12,2) NOT NULL, total DECIMAL(16,4) NOT NULL,"
                " sku VARCHAR(32) NOT NULL, note VARCHAR(255), created_at DATETIME(6) NOT NULL,"
                " shipped_at DATETIME, attributes JSON)"
            )

    def insert(self, first_id: int, count: int) -> float:
        with self._connection.cursor() as cursor:
            cursor.execute("BEGIN")
            cursor.executemany(
                f"INSERT INTO `{self._database}`.{TABLE} ({_COLUMNS}) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                [row(i) for i in range(first_id, first_id + count)],
            )
            cursor.execute("COMMIT")
        return time.time()

    def close(self) -> None:
        self._connection.close()


class CassandraWriter:
    """Cassandra has no transactions: a "transaction" here is `count` inserts sent concurrently, all
    acknowledged (at the session's consistency) before the commit time is taken."""

    def __init__(self, session: Any, keyspace: str) -> None:
        self._session = session
        self._keyspace = keyspace
        self._insert: Any = None

    def create_table(self) -> None:
        self._session.execute(
            f'CREATE KEYSPACE IF NOT EXISTS "{self._keyspace}"'
            " WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}"
        )
        self._session.execute(
            f'CREATE TABLE "{self._keyspace}".{TABLE} (id bigint PRIMARY KEY, account int, quantity smallint,'
            " price decimal, total decimal, sku text, note text, created_at timestamp, shipped_at timestamp,"
            " attributes text) WITH cdc = true"
        )
        self._insert = self._session.prepare(
            f'INSERT INTO "{self._keyspace}".{TABLE} ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)'
        )

    def insert(self, first_id: int, count: int) -> float:
        from cassandra.concurrent import execute_concurrent_with_args

        rows = [_cassandra_row(row(i)) for i in range(first_id, first_id + count)]
        execute_concurrent_with_args(self._session, self._insert, rows, concurrency=64, raise_on_first_error=True)
        return time.time()

    def close(self) -> None:
        pass  # the session belongs to the node's owner


def _cassandra_row(values: tuple[Any, ...]) -> tuple[Any, ...]:
    # Cassandra's driver binds decimals as Decimal and timestamps as aware or naive-UTC datetimes.
    from decimal import Decimal

    return (*values[:3], Decimal(values[3]), Decimal(values[4]), *values[5:])


class PostgresWriter:
    def __init__(self, dsn: str, schema: str) -> None:
        self._schema = schema
        self._connection = psycopg2.connect(dsn)

    def create_table(self) -> None:
        with self._connection, self._connection.cursor() as cursor:
            cursor.execute(f'CREATE SCHEMA IF NOT EXISTS "{self._schema}"')
            cursor.execute(
                f'CREATE TABLE "{self._schema}".{TABLE} (id bigint PRIMARY KEY, account int NOT NULL,'
                " quantity smallint NOT NULL, price numeric(12,2) NOT NULL, total numeric(16,4) NOT NULL,"
                " sku varchar(32) NOT NULL, note varchar(255), created_at timestamp(6) NOT NULL,"
                " shipped_at timestamp, attributes jsonb)"
            )

    def insert(self, first_id: int, count: int) -> float:
        with self._connection, self._connection.cursor() as cursor:
            psycopg2.extras.execute_values(
                cursor,
                f'INSERT INTO "{self._schema}".{TABLE} ({_COLUMNS}) VALUES %s',
                [row(i) for i in range(first_id, first_id + count)],
                page_size=1000,
            )
        return time.time()

    def close(self) -> None:
        self._connection.close()


def write_at_rate(
    writer: SourceWriter,
    rows_per_second: float,
    seconds: float,
    first_id: int,
    commits: list[Commit],
    transactions_per_second: float = 20,
) -> None:
    """Insert for `seconds` at `rows_per_second`, in `transactions_per_second` transactions a second
    (one row each when the rate is lower), appending each commit to `commits` as it happens (another
    thread watches them arrive); a writer that cannot keep up falls behind schedule."""
    per_transaction = max(1, round(rows_per_second / transactions_per_second))
    interval = per_transaction / rows_per_second
    started = time.monotonic()
    next_id = first_id
    while time.monotonic() - started < seconds:
        due = started + len(commits) * interval
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        committed_at = writer.insert(next_id, per_transaction)
        next_id += per_transaction
        commits.append(Commit(next_id - 1, per_transaction, committed_at))


def write_backlog(writer: SourceWriter, rows: int, first_id: int = 0, per_transaction: int = 1000) -> None:
    for start in range(first_id, first_id + rows, per_transaction):
        writer.insert(start, min(per_transaction, first_id + rows - start))


def max_id(dsn: str, schema: str, table: str) -> int:
    """The largest id visible in a PostgreSQL sink table (-1 while it has none or does not exist)."""
    with closing(psycopg2.connect(dsn)) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s)", (f'"{schema}"."{table}"',))
        if cursor.fetchone()[0] is None:
            return -1
        cursor.execute(f'SELECT coalesce(max(id), -1) FROM "{schema}"."{table}"')
        return int(cursor.fetchone()[0])
