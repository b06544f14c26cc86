"""Short PostgreSQL sessions: a transaction that always closes its connection, and safe DDL.

`CREATE ... IF NOT EXISTS` is not safe under concurrency (parallel backfill runs, a replay beside a
run): two sessions can both find the object missing and one fails on the catalog's unique index.
Each DDL step therefore runs in a short transaction of its own, serialised by an advisory lock, and
never inside a batch's transaction (which would hold the lock for the whole batch).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2
from psycopg2 import sql

_LOCK_NAMESPACE = "cdc_pipeline_ddl"


class InvalidDsn(ValueError):
    """A DSN libpq cannot parse. Its text is never repeated: it may hold a password."""


def connect(dsn: str, **options: str) -> psycopg2.extensions.connection:
    """psycopg2.connect, except that a malformed DSN's error does not quote it (libpq quotes the
    token it chokes on, which can be a password typed without its `=`)."""
    try:
        return psycopg2.connect(dsn, **options)
    except psycopg2.ProgrammingError as error:
        if "invalid dsn" not in str(error):
            raise
        raise InvalidDsn(
            "a PostgreSQL DSN from the environment is not a valid libpq connection string"
            " ('key=value ...' or 'postgresql://...'); its text is not shown here, it may hold a password"
        ) from None


@contextmanager
def transaction(dsn: str) -> Iterator[psycopg2.extensions.cursor]:
    """A cursor in one transaction, committed on success; the connection is closed either way."""
    connection = connect(dsn)
    try:
        with connection, connection.cursor() as cursor:
            yield cursor
    finally:
        connection.close()


@contextmanager
def ddl_transaction(dsn: str, lock_name: str) -> Iterator[psycopg2.extensions.cursor]:
    """A transaction that holds `lock_name`'s DDL lock: the schema changes of one name take turns."""
    with transaction(dsn) as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{_LOCK_NAMESPACE}:{lock_name}",))
        yield cursor


def run_ddl(dsn: str, lock_name: str, statements: list[sql.Composable]) -> None:
    with ddl_transaction(dsn, lock_name) as cursor:
        for statement in statements:
            cursor.execute(statement)
