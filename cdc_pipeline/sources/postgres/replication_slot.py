"""The source's logical decoding set-up: server settings, the publication, the replication slot.

The slot keeps the WAL the sinks still need. It only moves forward to the earliest sink
checkpoint, at the start of each batch, so WAL is freed once every sink has committed past it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2.extensions
from psycopg2 import sql

from cdc_pipeline.core.schema import qualify
from cdc_pipeline.sources.postgres.connection import KeptConnection, PostgresSourceSettings
from cdc_pipeline.sources.postgres.positions import LogSequenceNumber

PLUGIN = "pgoutput"


class LogicalDecodingError(RuntimeError):
    """The source is not set up for logical decoding, or its slot lost WAL the sinks still needed."""


@contextmanager
def autocommit_cursor(settings: PostgresSourceSettings) -> Iterator[psycopg2.extensions.cursor]:
    connection = settings.connect()
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            yield cursor
    finally:
        connection.close()


class ReplicationSlot:
    def __init__(self, settings: PostgresSourceSettings, slot: str, publication: str) -> None:
        self.settings = settings
        self.name = slot
        self.publication = publication
        # Every read of the slot, its WAL and its decoding goes through this one connection.
        self.connection = KeptConnection(settings)

    def check_server(self) -> None:
        def read(cursor: psycopg2.extensions.cursor) -> tuple[str, str]:
            cursor.execute("SELECT current_setting('wal_level'), current_setting('server_encoding')")
            wal_level, encoding = cursor.fetchone()
            return str(wal_level), str(encoding)

        wal_level, encoding = self.connection.run(read)
        problems = []
        if wal_level != "logical":
            problems.append(f"wal_level is {wal_level!r}, logical decoding needs 'logical' (set it and restart)")
        if encoding != "UTF8":
            problems.append(f"server_encoding is {encoding!r}; the reader decodes values as UTF8")
        if problems:
            raise LogicalDecodingError(f"{self.settings.describe()}: " + "; ".join(problems))

    def confirmed_position(self) -> LogSequenceNumber | None:
        """Where the slot stands (None: it does not exist)."""

        def read(cursor: psycopg2.extensions.cursor) -> tuple[str, str, bool] | None:
            cursor.execute(
                "SELECT confirmed_flush_lsn::text, plugin, database = current_database()"
                " FROM pg_replication_slots WHERE slot_name = %s",
                (self.name,),
            )
            return cursor.fetchone()  # type: ignore[no-any-return]

        row = self.connection.run(read)
        if row is None:
            return None
        position, plugin, same_database = row
        if plugin != PLUGIN or not same_database:
            raise LogicalDecodingError(
                f"{self.settings.describe()}: replication slot {self.name!r} exists but is not a {PLUGIN} slot of"
                " this database; choose another sources.<name>.slot"
            )
        return LogSequenceNumber.parse(position)

    def create(self, tables: list[tuple[str, str]]) -> LogSequenceNumber:
        """Create the publication (if missing) and then the slot; changes from here on are captured.

        The publication comes first: pgoutput reads it as of each change, so changes written
        before it existed could not be decoded.
        """

        def create(cursor: psycopg2.extensions.cursor) -> LogSequenceNumber:
            cursor.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (self.publication,))
            if cursor.fetchone() is None:
                if not tables:
                    raise LogicalDecodingError(
                        f"{self.settings.describe()}: no table matches sources.<name>.tables, so publication"
                        f" {self.publication!r} would be empty"
                    )
                cursor.execute(
                    sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(
                        sql.Identifier(self.publication),
                        sql.SQL(", ").join(sql.Identifier(schema, table) for schema, table in tables),
                    )
                )
            cursor.execute("SELECT lsn::text FROM pg_create_logical_replication_slot(%s, %s)", (self.name, PLUGIN))
            return LogSequenceNumber.parse(cursor.fetchone()[0])

        return self.connection.run(create, may_repeat=False)

    def unpublished(self, tables: list[tuple[str, str]]) -> list[str]:
        """Selected tables the publication does not carry (their changes would never arrive)."""

        def read(cursor: psycopg2.extensions.cursor) -> set[tuple[str, str]]:
            cursor.execute(
                "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s", (self.publication,)
            )
            return {(str(s), str(t)) for s, t in cursor.fetchall()}

        published = self.connection.run(read)
        return [qualify(schema, table) for schema, table in tables if (schema, table) not in published]

    def has_pending_changes(self) -> bool:
        """Whether a change to a published table committed after the slot's position (decodes up
        to the first such transaction only; progress marks are not asked for)."""

        def read(cursor: psycopg2.extensions.cursor) -> bool:
            cursor.execute(
                "SELECT count(*) FROM pg_logical_slot_peek_binary_changes(%s, NULL, 1,"
                " 'proto_version', '1', 'publication_names', %s)",
                (self.name, self.publication),
            )
            return int(cursor.fetchone()[0]) > 0

        return self.connection.run(read)

    def advance(self, to: LogSequenceNumber) -> None:
        # Advancing again to the same place changes nothing: the call may be repeated.
        self.connection.run(
            lambda cursor: cursor.execute("SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", (self.name, str(to)))
        )

    def mark_end_of_read(self, prefix: str) -> tuple[LogSequenceNumber, LogSequenceNumber]:
        """Write a (non-transactional, flushed) logical message; return its LSN and the WAL flush
        position after it.

        Decoding emits it in WAL order among the commits, so once the reader sees it, every
        transaction that committed before it has been read: the batch may end there even when
        none of those transactions touched a published table.
        """

        def mark(cursor: psycopg2.extensions.cursor) -> tuple[LogSequenceNumber, LogSequenceNumber]:
            cursor.execute("SELECT pg_logical_emit_message(false, %s, ''::text, true)::text", (prefix,))
            at = LogSequenceNumber.parse(cursor.fetchone()[0])
            cursor.execute("SELECT pg_current_wal_flush_lsn()::text")
            return at, LogSequenceNumber.parse(cursor.fetchone()[0])

        # A second mark after a lost link is harmless: the reader stops at the first it meets.
        return self.connection.run(mark)

    def flush_position(self) -> LogSequenceNumber:
        """The end of the durable WAL: the source's high-water mark."""
        return self.connection.run(_flush_position)


def _flush_position(cursor: psycopg2.extensions.cursor) -> LogSequenceNumber:
    cursor.execute("SELECT pg_current_wal_flush_lsn()::text")
    return LogSequenceNumber.parse(cursor.fetchone()[0])
