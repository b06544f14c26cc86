"""Connections to a PostgreSQL source, with the session settings the value parsers rely on."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg2
import psycopg2.extensions

from cdc_pipeline.sinks.postgres_session import InvalidDsn, connect

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
