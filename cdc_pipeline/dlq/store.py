"""The dead-letter table in PostgreSQL: undeliverable events, masked, with stage, error and position."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg2
import psycopg2.extras
from psycopg2 import sql

from cdc_pipeline.core.cells import CellChange
from cdc_pipeline.core.changes import ChangeOp, Rejection
from cdc_pipeline.core.value_codec import decode_row, encode_row
from cdc_pipeline.dlq.cell_change_codec import decode_cell_change, encode_cell_change
from cdc_pipeline.shared.postgres_session import run_ddl, transaction

DLQ_TABLE = "dead_letters"


@dataclass(frozen=True)
class DeadLetter:
    id: int
    source: str
    sink: str  # '' when the event failed before the per-sink steps
    table: str
    op: ChangeOp
    stage: str
    error: str
    position: str
    version: int
    values: dict[str, Any]
    cells: CellChange | None = None  # Cassandra: write times and deletions for an exact replay
    not_replayable: str | None = None  # why a replay cannot redo it (core/changes.py: Rejection)


@dataclass(frozen=True)
class LetterCount:
    table: str
    sink: str
    stage: str
    error: str
    not_replayable: str | None
    count: int


class DeadLetterStore:
    def __init__(self, dsn: str, schema: str) -> None:
        self._dsn = dsn
        self._schema = schema
        self._ready = False

    def _table(self) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(self._schema), sql.Identifier(DLQ_TABLE))

    @contextmanager
    def _transaction(self) -> Iterator[psycopg2.extensions.cursor]:
        """A cursor in one transaction, committed on success; the connection is closed either way."""
        if not self._ready:
            run_ddl(self._dsn, self._schema, self._creates())
            self._ready = True
        with transaction(self._dsn) as cursor:
            yield cursor

    def _creates(self) -> list[sql.Composable]:
        return [
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self._schema)),
            sql.SQL(
                """CREATE TABLE IF NOT EXISTS {} (
                id bigserial PRIMARY KEY,
                source text NOT NULL,
                sink text NOT NULL,
                source_table text NOT NULL,
                op text NOT NULL,
                stage text NOT NULL,
                error text NOT NULL,
                position text NOT NULL,
                version bigint NOT NULL,
                payload jsonb NOT NULL,
                first_seen timestamptz NOT NULL DEFAULT now(),
                replay_attempts integer NOT NULL DEFAULT 0,
                -- The rows of an initial-load chunk share one version: the payload tells them apart.
                payload_digest text GENERATED ALWAYS AS (md5(payload::text)) STORED,
                UNIQUE (source, sink, source_table, version, op, stage, payload_digest))"""
            ).format(self._table()),
            # Added with the Cassandra source: a table made before gets the column too.
            sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS cell_change jsonb").format(self._table()),
            sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS not_replayable text").format(self._table()),
        ]

    def record(self, source: str, rejections: Iterable[Rejection]) -> int:
        """Store rejections; recording the same event twice (a replayed batch) keeps one row."""
        rows = [
            (
                source,
                r.sink or "",
                r.table,
                r.op.value,
                r.stage,
                # An error may quote a value, and PostgreSQL text cannot hold U+0000: shown escaped.
                r.error.replace("\x00", "\\x00"),
                r.position,
                r.version,
                json.dumps(encode_row(r.payload), ensure_ascii=False),
                json.dumps(encode_cell_change(r.cells)) if r.cells is not None else None,
                r.not_replayable,
            )
            for r in rejections
        ]
        if not rows:
            return 0
        with self._transaction() as cursor:
            psycopg2.extras.execute_values(
                cursor,
                sql.SQL(
                    "INSERT INTO {} (source, sink, source_table, op, stage, error, position, version, payload,"
                    " cell_change, not_replayable)"
                    " VALUES %s ON CONFLICT DO NOTHING"
                )
                .format(self._table())
                .as_string(cursor),
                rows,
                page_size=1000,
            )
        return len(rows)

    def pending(self, source: str | None = None) -> list[DeadLetter]:
        query = sql.SQL(
            "SELECT id, source, sink, source_table, op, stage, error, position, version, payload, cell_change,"
            " not_replayable FROM {}"
            " WHERE %(source)s::text IS NULL OR source = %(source)s ORDER BY version, id"
        ).format(self._table())
        with self._transaction() as cursor:
            cursor.execute(query, {"source": source})
            rows = cursor.fetchall()
        return [
            DeadLetter(
                r[0], r[1], r[2], r[3], ChangeOp(r[4]), r[5], r[6], r[7], r[8], decode_row(r[9]),
                decode_cell_change(r[10]) if r[10] is not None else None, r[11],
            )
            for r in rows
        ]  # fmt: skip

    def count_for(self, source: str, table: str, sink: str, stages: tuple[str, ...]) -> tuple[int, str | None]:
        """How many letters of a table wait for `sink` (or for every sink) at one of `stages`, and the
        error of the latest."""
        query = sql.SQL(
            "SELECT count(*), (array_agg(error ORDER BY id DESC))[1] FROM {}"
            " WHERE source = %s AND source_table = %s AND sink IN (%s, '') AND stage = ANY(%s)"
        ).format(self._table())
        with self._transaction() as cursor:
            cursor.execute(query, (source, table, sink, list(stages)))
            count, error = cursor.fetchone()
        return int(count), error

    def resolve(self, ids: list[int]) -> None:
        if not ids:
            return
        with self._transaction() as cursor:
            cursor.execute(sql.SQL("DELETE FROM {} WHERE id = ANY(%s)").format(self._table()), (ids,))

    def mark_failed_again(self, failures: dict[int, str]) -> None:
        if not failures:
            return
        with self._transaction() as cursor:
            psycopg2.extras.execute_values(
                cursor,
                sql.SQL(
                    "UPDATE {} AS d SET error = v.error, replay_attempts = d.replay_attempts + 1"
                    " FROM (VALUES %s) AS v(id, error) WHERE d.id = v.id"
                )
                .format(self._table())
                .as_string(cursor),
                list(failures.items()),
            )

    def counts(self) -> list[LetterCount]:
        """The letters counted by table, sink, stage, error and replayability, for the asset's metadata."""
        query = sql.SQL(
            "SELECT source_table, sink, stage, error, not_replayable, count(*) FROM {}"
            " GROUP BY 1, 2, 3, 4, 5 ORDER BY 6 DESC"
        ).format(self._table())
        with self._transaction() as cursor:
            cursor.execute(query)
            rows = cursor.fetchall()
        return [LetterCount(r[0], r[1], r[2], r[3], r[4], int(r[5])) for r in rows]
