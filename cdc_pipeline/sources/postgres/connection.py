"""Connections to a PostgreSQL source, with the session settings the value parsers rely on."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import psycopg2
import psycopg2.extensions

from cdc_pipeline.shared.postgres_session import InvalidDsn, connect

T = TypeVar("T")

# pgoutput renders values with the decoding session's settings: pin the ones that change the text
# (time zone of timestamptz, date order, bytea form, float digits).
SESSION_SETTINGS = {
    "TimeZone": "UTC",
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "postgres",
    "bytea_output": "hex",
    "extra_float_digits": "3",
}


@dataclass(frozen=True)
class PostgresSourceSettings:
    """Where the source database is. The DSN may hold a password: it never goes into messages."""

    dsn: str
    source_name: str

    def connect(self) -> psycopg2.extensions.connection:
        options = " ".join(f"-c {name}={value.replace(' ', '')}" for name, value in SESSION_SETTINGS.items())
        try:
            return connect(self.dsn, options=options)
        except InvalidDsn as error:
            raise InvalidDsn(f"source '{self.source_name}': {error}") from None
        except psycopg2.OperationalError as error:
            # libpq's message names host and port, never the password.
            raise ConnectionError(
                f"source '{self.source_name}': cannot connect to PostgreSQL: {error}".strip()
            ) from None

    def describe(self) -> str:
        return f"PostgreSQL source '{self.source_name}'"


class KeptConnection:
    """One connection a source keeps for its reads between batches (the WAL's end on every idle
    poll, the slot's position, the batch's decoding), instead of a new backend each time.

    A connection that died while kept (a server restart, an idle timeout) is replaced, and a read
    that may be repeated is asked once more on the new one.
    """

    def __init__(self, settings: PostgresSourceSettings) -> None:
        self.settings = settings
        self._connection: psycopg2.extensions.connection | None = None

    def run(self, query: Callable[[psycopg2.extensions.cursor], T], may_repeat: bool = True) -> T:
        """`query` on an autocommit cursor."""
        for attempt in (1, 2):
            connection = self._open()
            try:
                with connection.cursor() as cursor:
                    return query(cursor)
            except (psycopg2.OperationalError, psycopg2.InterfaceError):
                if not connection.closed:
                    raise  # the server refused the statement; the link itself is fine
                self._connection = None
                if attempt == 2 or not may_repeat:
                    raise
        raise AssertionError("unreachable")

    @contextmanager
    def transaction_cursor(self, name: str) -> Iterator[psycopg2.extensions.cursor]:
        """A server-side cursor in a transaction of its own, rolled back when done (reads only)."""
        connection = self._open()
        connection.autocommit = False
        try:
            with connection.cursor(name=name) as cursor:
                yield cursor
        finally:
            if connection.closed:
                self._connection = None
            else:
                connection.rollback()
                connection.autocommit = True

    def close(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            connection.close()

    def _open(self) -> psycopg2.extensions.connection:
        if self._connection is None or self._connection.closed:
            self._connection = self.settings.connect()
            self._connection.autocommit = True
        return self._connection
