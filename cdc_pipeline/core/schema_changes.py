"""Changes to a source table's shape, read from the change log in order with the rows around them.

A source reports what its log says about a table's shape (MySQL: the DDL statements in the
binlog; PostgreSQL: a relation message whose columns differ from the last one). The rows that
follow a change carry the new shape themselves (`TableChanges.schema`); a SchemaChange adds what
the rows cannot say: that a column was renamed rather than dropped and added, the value the rows
that already existed take for an added column, that the table was truncated, renamed or dropped.

The sinks apply the changes to their tables before the rows of the same batch (sinks/schema_sync/).
A batch never holds rows of one table in two shapes: the readers end a batch before a change to a
table that already has rows in it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

# The DLQ stage of a DDL statement that holds its table (UNRECOGNISED), and of the rows a sink held
# because it could not take their table's schema change (sinks/schema_sync/).
DDL_STAGE = "ddl"
SCHEMA_STAGE = "schema"


class SchemaChangeKind(StrEnum):
    ADD_COLUMN = "add_column"
    DROP_COLUMN = "drop_column"
    RENAME_COLUMN = "rename_column"
    # A column's type changed (MODIFY, CHANGE, ALTER TYPE); the new type is in the table's shape.
    MODIFY_COLUMN = "modify_column"
    PRIMARY_KEY = "primary_key"
    CREATE_TABLE = "create_table"
    RENAME_TABLE = "rename_table"
    TRUNCATE = "truncate"
    DROP_TABLE = "drop_table"
    # A statement that changes nothing the sinks hold: an index, a comment, a table option, an
    # online-schema-change tool swapping in its copy of the table (the copy's shape comes with
    # its rows). Recorded so that the run's metadata shows the statement was seen and understood.
    NO_EFFECT = "no_effect"
    # A statement about the table that the parser could not read: the table stops (its changes go
    # to the DLQ) until an operator says how to go on (config `schema_changes.safe_statements`).
    UNRECOGNISED = "unrecognised"


# Kinds the sinks can apply without knowing the columns' types.
TYPE_FREE_KINDS = frozenset(
    {
        SchemaChangeKind.DROP_COLUMN,
        SchemaChangeKind.RENAME_COLUMN,
        SchemaChangeKind.RENAME_TABLE,
        SchemaChangeKind.TRUNCATE,
        SchemaChangeKind.DROP_TABLE,
        SchemaChangeKind.NO_EFFECT,
    }
)


class ShapeSource(StrEnum):
    """Where a batch's shape of a table comes from, which decides how much a sink may change."""

    # The rows' own shape as the log describes it (MySQL table map, PostgreSQL relation message):
    # exact for the batch, so the sink table is made to match it (columns added, dropped, retyped).
    ROWS = "rows"
    # No row of the table followed its schema changes in the batch: the shape was read from the
    # source's catalog, which may already be later than the batch. Only the columns the schema
    # changes name are added or retyped from it; nothing else is dropped or changed.
    CATALOG = "catalog"
    # A DLQ replay maps its letters with the current catalog: columns missing in the sink are
    # added, nothing is dropped or retyped (the sink may be behind the catalog).
    REPLAY = "replay"
    # An initial load or re-sync: the catalog's shape, and the backfill rewrites every row of the
    # table from the source. The table is made to match it like ROWS, and a change that would lose
    # stored values is taken too: the values it would round are about to be replaced.
    SNAPSHOT = "snapshot"


@dataclass(frozen=True, slots=True)
class SchemaChange:
    table: str  # 'db.table' (PostgreSQL: 'schema.table'); RENAME TABLE: the new name
    kind: SchemaChangeKind
    position: str  # where in the log, as RowChange.position
    # The change's place among the row versions: rows written before it have smaller versions.
    # TRUNCATE and DROP TABLE remove the sink rows older than it, so a replay of the change after
    # later rows landed removes nothing it should not.
    version: int
    # The source's DDL with its string literals replaced (MySQL: sources/mysql/ddl.py), or what the
    # relation message showed (PostgreSQL). It is logged and stored: it never carries a value.
    statement: str
    column: str | None = None  # the column added, dropped, retyped, or the new name of a renamed one
    old_name: str | None = None  # RENAME COLUMN: the old column; RENAME TABLE: the old 'db.table'
    # ADD COLUMN: the value the rows that existed before take, in the form a row change would carry
    # it (masked like one by the mask step). has_default False: they hold NULL.
    default: Any = None
    has_default: bool = False
    key_columns: tuple[str, ...] = ()  # PRIMARY_KEY: the new key

    def describe(self) -> str:
        return f"{self.kind.value} at {self.position}: {self.statement}"


def unrecognised_reason(change: SchemaChange) -> str:
    """Why a table is held by a statement the parser could not read, and what the operator does."""
    return (
        f"DDL statement at {change.position} not understood; table {change.table or '(unknown)'} is held."
        " If it changes nothing the sinks hold, add a pattern matching it to the source's safe_statements"
        " (and re-sync the table if it did change its shape), then replay the DLQ"
    )
