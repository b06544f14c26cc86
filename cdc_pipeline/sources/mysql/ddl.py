"""MySQL/MariaDB DDL from the binlog, read into the schema changes the sinks apply (core/schema_changes.py).

The rows that follow a DDL statement carry the table's new shape themselves; what they cannot say is
whether a column was renamed rather than dropped and added, which value the rows that already existed
took for an added column, or that a table was truncated, renamed or dropped. This module reads that
from the statement text of a QueryEvent. sqlglot (read="mysql") parses the statements; the few forms
it does not read (RENAME TABLE, a bare `ALTER TABLE t`, ENABLE/DISABLE KEYS, some index statements)
are read with a small tokenizer of our own. A statement about a replicated table that neither can
read becomes UNRECOGNISED, which stops that table until an operator decides: guessing wrong would
corrupt the sink silently. Nothing here does I/O.

This module holds the entry point, parse_ddl; the work is in its siblings:
ddl_tokens.py (the tokenizer, comments, string literals), ddl_targets.py (what a statement is about,
table names, RENAME TABLE pairs), ddl_sqlglot.py (the statement put in a form sqlglot reads, and
parsed), ddl_reader.py (a parsed or tokenized statement into schema changes), ddl_alter.py (ALTER
TABLE's actions) and ddl_columns.py (the value existing rows take in an added column).
"""

from __future__ import annotations

from dataclasses import dataclass

from cdc_pipeline.core.schema_changes import SchemaChange, SchemaChangeKind
from cdc_pipeline.sources.mysql.ddl_columns import CURRENT_TIMESTAMP
from cdc_pipeline.sources.mysql.ddl_reader import Reader, Selects
from cdc_pipeline.sources.mysql.ddl_sqlglot import for_sqlglot, parse
from cdc_pipeline.sources.mysql.ddl_targets import DDL_VERBS, Object, is_temporary, object_of, rename_pairs
from cdc_pipeline.sources.mysql.ddl_tokens import strip_leading_comments, tokenize, without_string_literals

__all__ = ["CURRENT_TIMESTAMP", "DdlOutcome", "parse_ddl"]


@dataclass(frozen=True, slots=True)
class DdlOutcome:
    changes: list[SchemaChange]
    # False for statements that do not change a table at all (transactions, grants, SET, views,
    # routines, databases, ...): the reader passes them by without ending its batch.
    is_ddl: bool


def parse_ddl(statement: str, default_database: str, position: str, version: int, selects: Selects) -> DdlOutcome:
    """The schema changes one binlog DDL statement makes to the selected tables.

    `default_database` is the QueryEvent's current database (names without a qualifier are in it);
    `selects(database, table)` says whether a table is replicated. An UNRECOGNISED change with table
    "" means the statement is DDL the parser could not attribute to any table: the caller decides
    whether that stops everything or is logged and passed by.
    """
    text = strip_leading_comments(statement)
    tokens = tokenize(text)
    if not tokens or tokens[0].quoted or tokens[0].upper not in DDL_VERBS:
        return DdlOutcome([], False)
    target = object_of(tokens)
    if target is Object.OTHER:
        return DdlOutcome([], False)
    if target is Object.TABLE and tokens[0].upper in ("CREATE", "DROP") and is_temporary(tokens):
        return DdlOutcome([], True)  # a temporary table is the session's own: never replicated
    reader = Reader(without_string_literals(statement), default_database, position, version, selects)
    if target is Object.UNKNOWN:
        return DdlOutcome([reader.change("", SchemaChangeKind.UNRECOGNISED)], True)
    if tokens[0].upper == "RENAME":
        pairs = rename_pairs(tokens, default_database)
        if pairs is not None:
            return DdlOutcome(reader.rename_tables(pairs), True)
        return DdlOutcome(reader.fallback(tokens), True)
    rewritten = for_sqlglot(text, tokens)
    changes = reader.parsed(parse(rewritten))
    if changes is None:
        changes = reader.fallback(tokenize(rewritten))
    return DdlOutcome(changes, True)
