"""What a DDL statement is about, and the table names it holds, read from its tokens (ddl_tokens.py).

parse_ddl (ddl.py) first decides from the leading keywords whether a statement is about a table,
an index or something the pipeline ignores (a view, a routine, a database, ...), and whether the
table is temporary. RENAME TABLE, which sqlglot does not read, has its pairs of names read here; the
readers of statements sqlglot gave up on (ddl_reader.py's fallback) read their table names here too.
"""

from __future__ import annotations

from cdc_pipeline.sources.mysql.ddl_tokens import Token


class Object:
    TABLE = "table"
    INDEX = "index"
    OTHER = "other"  # not about a table: not DDL for the pipeline
    UNKNOWN = "unknown"  # a DDL verb before something we do not know


DDL_VERBS = frozenset({"ALTER", "CREATE", "DROP", "RENAME", "TRUNCATE"})
_NOT_TABLES = frozenset(
    {
        "DATABASE",
        "SCHEMA",
        "VIEW",
        "TRIGGER",
        "PROCEDURE",
        "FUNCTION",
        "EVENT",
        "USER",
        "ROLE",
        "SERVER",
        "TABLESPACE",
        "LOGFILE",
        "RESOURCE",
        "SEQUENCE",
        "PACKAGE",
        "INSTANCE",
        "UNDO",
        "SYNONYM",
    }
)
# Words that may stand between the verb and the object: `CREATE OR REPLACE TEMPORARY TABLE`,
# `ALTER ONLINE TABLE` (MariaDB), `CREATE UNIQUE INDEX`, `CREATE DEFINER=... SQL SECURITY ... VIEW`.
_MODIFIERS = frozenset(
    {
        *("OR", "REPLACE", "TEMPORARY", "ONLINE", "OFFLINE", "IGNORE", "UNIQUE", "FULLTEXT", "AGGREGATE"),
        *("SQL", "SECURITY", "DEFINER", "INVOKER"),  # SQL SECURITY {DEFINER | INVOKER}
    }
)


def object_of(tokens: list[Token]) -> str:
    if tokens[0].upper == "TRUNCATE":
        return Object.TABLE  # TRUNCATE [TABLE] t: nothing else can be truncated
    i = 1
    while i < len(tokens):
        word = tokens[i].upper
        if word in ("TABLE", "TABLES"):
            return Object.TABLE
        if word == "INDEX":
            return Object.INDEX
        if word in _NOT_TABLES:
            return Object.OTHER
        if word == "SPATIAL":  # CREATE SPATIAL INDEX, or CREATE SPATIAL REFERENCE SYSTEM
            nxt = tokens[i + 1].upper if i + 1 < len(tokens) else ""
            return Object.INDEX if nxt in ("INDEX", "KEY") else Object.OTHER
        if word in ("DEFINER", "ALGORITHM") and i + 1 < len(tokens) and tokens[i + 1].text == "=":
            i = _skip_assignment(tokens, i)
            continue
        if word in _MODIFIERS:
            i += 1
            continue
        return Object.UNKNOWN
    return Object.UNKNOWN


def is_temporary(tokens: list[Token]) -> bool:
    """TEMPORARY before the TABLE keyword (sqlglot does not see it inside `/*!40005 TEMPORARY */`)."""
    for token in tokens[1:]:
        if token.upper in ("TABLE", "TABLES"):
            return False
        if token.upper == "TEMPORARY":
            return True
    return False


def _skip_assignment(tokens: list[Token], i: int) -> int:
    """Past `DEFINER = user@host` / `DEFINER = CURRENT_USER()` / `ALGORITHM = MERGE` (the `=` is at i + 1)."""
    i += 3  # the value (a user, a quoted user, CURRENT_USER, an algorithm)
    while i < len(tokens) and tokens[i].text in ("@", "(", ")") and not tokens[i].string:
        i += 2 if tokens[i].text == "@" else 1
    return i


def read_name(tokens: list[Token], i: int, default_database: str) -> tuple[tuple[str, str], int] | None:
    """The `db.table` or `table` at `i`, and the index after it."""
    if i >= len(tokens) or not tokens[i].is_name:
        return None
    first = tokens[i].text
    if i + 2 < len(tokens) and tokens[i + 1].text == "." and tokens[i + 2].is_name:
        return (first, tokens[i + 2].text), i + 3
    return (default_database, first), i + 1


def skip_if_exists(tokens: list[Token], i: int) -> int:
    words = [t.upper for t in tokens[i : i + 3]]
    if words[:2] == ["IF", "EXISTS"]:
        return i + 2
    if words == ["IF", "NOT", "EXISTS"]:
        return i + 3
    return i


def rename_pairs(tokens: list[Token], default_database: str) -> list[tuple[tuple[str, str], tuple[str, str]]] | None:
    """`RENAME TABLE[S] [IF EXISTS] a [WAIT n | NOWAIT] TO b[, c TO d ...]`, or None if it is not that.

    sqlglot 30 reads RENAME TABLE as an opaque exp.Command, so the pairs are read here.
    """
    if len(tokens) < 2 or tokens[1].upper not in ("TABLE", "TABLES"):
        return None
    i = skip_if_exists(tokens, 2)
    pairs: list[tuple[tuple[str, str], tuple[str, str]]] = []
    while True:
        old = read_name(tokens, i, default_database)
        if old is None:
            return None
        i = old[1]
        if i < len(tokens) and tokens[i].upper == "NOWAIT":  # MariaDB's lock wait options
            i += 1
        elif i + 1 < len(tokens) and tokens[i].upper == "WAIT":
            i += 2
        if i >= len(tokens) or tokens[i].upper != "TO":
            return None
        new = read_name(tokens, i + 1, default_database)
        if new is None:
            return None
        pairs.append((old[0], new[0]))
        i = new[1]
        if i == len(tokens):
            return pairs
        if tokens[i].text != "," or tokens[i].quoted or tokens[i].string:
            return None
        i += 1
