"""MySQL/MariaDB DDL from the binlog, read into the schema changes the sinks apply (core/schema_changes.py).

The rows that follow a DDL statement carry the table's new shape themselves; what they cannot say is
whether a column was renamed rather than dropped and added, which value the rows that already existed
took for an added column, or that a table was truncated, renamed or dropped. This module reads that
from the statement text of a QueryEvent. sqlglot (read="mysql") parses the statements; the few forms
it does not read (RENAME TABLE, a bare `ALTER TABLE t`, ENABLE/DISABLE KEYS, some index statements)
are read with a small tokenizer of our own. A statement about a replicated table that neither can
read becomes UNRECOGNISED, which stops that table until an operator decides: guessing wrong would
corrupt the sink silently. Nothing here does I/O.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

import sqlglot
from sqlglot import exp

from cdc_pipeline.core.schema import qualify
from cdc_pipeline.core.schema_changes import SchemaChange, SchemaChangeKind

__all__ = ["CURRENT_TIMESTAMP", "DdlOutcome", "parse_ddl"]

# The default an added column takes when it is the time of the ALTER: the existing rows hold the
# moment the statement ran, which only the sink's writer can turn into a value (the event's time).
CURRENT_TIMESTAMP = "CURRENT_TIMESTAMP"


@dataclass(frozen=True, slots=True)
class DdlOutcome:
    changes: list[SchemaChange]
    # False for statements that do not change a table at all (transactions, grants, SET, views,
    # routines, databases, ...): the reader passes them by without ending its batch.
    is_ddl: bool


Selects = Callable[[str, str], bool]


def parse_ddl(statement: str, default_database: str, position: str, version: int, selects: Selects) -> DdlOutcome:
    """The schema changes one binlog DDL statement makes to the selected tables.

    `default_database` is the QueryEvent's current database (names without a qualifier are in it);
    `selects(database, table)` says whether a table is replicated. An UNRECOGNISED change with table
    "" means the statement is DDL the parser could not attribute to any table: the caller decides
    whether that stops everything or is logged and passed by.
    """
    text = _strip_leading_comments(statement)
    tokens = _tokenize(text)
    if not tokens or tokens[0].quoted or tokens[0].upper not in _DDL_VERBS:
        return DdlOutcome([], False)
    target = _object_of(tokens)
    if target is _Object.OTHER:
        return DdlOutcome([], False)
    if target is _Object.TABLE and tokens[0].upper in ("CREATE", "DROP") and _is_temporary(tokens):
        return DdlOutcome([], True)  # a temporary table is the session's own: never replicated
    reader = _Reader(without_string_literals(statement), default_database, position, version, selects)
    if target is _Object.UNKNOWN:
        return DdlOutcome([reader.change("", SchemaChangeKind.UNRECOGNISED)], True)
    if tokens[0].upper == "RENAME":
        pairs = _rename_pairs(tokens, default_database)
        if pairs is not None:
            return DdlOutcome(reader.rename_tables(pairs), True)
        return DdlOutcome(reader.fallback(tokens), True)
    rewritten = _for_sqlglot(text, tokens)
    changes = reader.parsed(_parse(rewritten))
    if changes is None:
        changes = reader.fallback(_tokenize(rewritten))
    return DdlOutcome(changes, True)


# --- sqlglot ---------------------------------------------------------------------------------------

# sqlglot logs a warning each time it falls back to exp.Command (RENAME TABLE, CONVERT TO, ...).
# For us that is an expected outcome handled below, not news for the pipeline's log; the filter
# drops those records only while parse_ddl is parsing, in this thread or task.
_quiet_sqlglot: ContextVar[bool] = ContextVar("cdc_quiet_sqlglot", default=False)


class _QuietSqlglot(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _quiet_sqlglot.get()


_QUIET_FILTER = _QuietSqlglot()
logging.getLogger("sqlglot").addFilter(_QUIET_FILTER)


@contextmanager
def _sqlglot_quiet() -> Iterator[None]:
    token = _quiet_sqlglot.set(True)
    try:
        yield
    finally:
        _quiet_sqlglot.reset(token)


def _parse(text: str) -> exp.Expr | None:
    """The one statement sqlglot reads in `text`, or None when it cannot read exactly one."""
    try:
        with _sqlglot_quiet():
            parsed = [e for e in sqlglot.parse(text, read="mysql") if e is not None]
    except Exception:  # any failure on an odd statement must become UNRECOGNISED, never stop the reader
        return None
    return parsed[0] if len(parsed) == 1 else None


# --- the tokenizer -----------------------------------------------------------------------------------
# Only what sqlglot does not read goes through it: the leading keywords that say what a statement is
# about, RENAME TABLE, and the table names of statements sqlglot gave up on.


@dataclass(frozen=True, slots=True)
class _Token:
    text: str  # an identifier unquoted and unescaped; a string literal's body
    start: int
    end: int
    quoted: bool = False  # a `backtick` identifier: never a keyword
    string: bool = False  # a '...' or "..." literal

    @property
    def upper(self) -> str:
        return "" if self.quoted or self.string else self.text.upper()

    @property
    def is_name(self) -> bool:
        return self.quoted or (not self.string and _is_word_char(self.text[0]))


def _is_word_char(char: str) -> bool:
    # MySQL's unquoted identifiers: letters, digits, _ and $, and any character beyond ASCII.
    return char.isalnum() or char in "_$" or ord(char) > 127


def _skip_comment(text: str, i: int) -> int:
    """The index after the comment at `i`, or `i` when there is none."""
    if text.startswith("/*", i):
        end = text.find("*/", i + 2)
        return len(text) if end < 0 else end + 2
    if text.startswith("#", i) or (text.startswith("--", i) and (i + 2 == len(text) or text[i + 2].isspace())):
        end = text.find("\n", i)
        return len(text) if end < 0 else end + 1
    return i


def _quoted_end(text: str, i: int, quote: str) -> int:
    """The index after the quoted token starting at `i` (doubled quotes, and backslashes in strings)."""
    j = i + 1
    while j < len(text):
        if text[j] == "\\" and quote != "`":
            j += 2
        elif text[j] == quote:
            if text.startswith(quote * 2, j):
                j += 2
            else:
                return j + 1
        else:
            j += 1
    return len(text)  # unterminated: the rest of the text


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    executable = False
    while i < len(text):
        char = text[i]
        if char.isspace():
            i += 1
            continue
        # MySQL runs the body of `/*!NNNNN ... */`: `DROP /*!40005 TEMPORARY */ TABLE t` drops a
        # temporary table, so the body's words are tokens like any others.
        if text.startswith("/*!", i) or text.startswith("/*M!", i):
            i = text.index("!", i) + 1
            while i < len(text) and text[i].isdigit():
                i += 1
            executable = True
            continue
        if executable and text.startswith("*/", i):
            i += 2
            executable = False
            continue
        after_comment = _skip_comment(text, i)
        if after_comment != i:
            i = after_comment
            continue
        if char in "`'\"":
            end = _quoted_end(text, i, char)
            body = text[i + 1 : end - 1] if end - i >= 2 and text[end - 1] == char else text[i + 1 : end]
            if char == "`":
                tokens.append(_Token(body.replace("``", "`"), i, end, quoted=True))
            else:
                tokens.append(_Token(body, i, end, string=True))
            i = end
        elif _is_word_char(char):
            end = i
            while end < len(text) and _is_word_char(text[end]):
                end += 1
            tokens.append(_Token(text[i:end], i, end))
            i = end
        else:
            tokens.append(_Token(char, i, i + 1))
            i += 1
    while tokens and tokens[-1].text == ";" and not tokens[-1].string and not tokens[-1].quoted:
        tokens.pop()
    return tokens


def without_string_literals(statement: str) -> str:
    """The statement with each string literal replaced by '?'.

    The statement is logged, stored in the DLQ and matched by `safe_statements`; a literal (a
    DEFAULT, a COMMENT) may hold a value that masking would have hidden in a row, so none is kept.
    The values the pipeline needs (an added column's default) are read from the full text.
    """
    parts: list[str] = []
    at = 0
    for token in _tokenize(statement):
        if token.string:
            parts.append(statement[at : token.start] + "'?'")
            at = token.end
    return "".join(parts) + statement[at:]


def _strip_leading_comments(statement: str) -> str:
    """The statement without the comments before it; a `/*!NNNNN ... */` at the start is unwrapped.

    MySQL runs the body of an executable comment (`/*!40000 ALTER TABLE t DISABLE KEYS */`, MariaDB's
    `/*M!100100 ...*/`), so its body is the statement; any other comment is only a comment.
    """
    text = statement
    while True:
        text = text.lstrip()
        if text.startswith("/*!") or text.startswith("/*M!"):
            end = text.find("*/")
            body = text[text.index("!") + 1 : end if end >= 0 else len(text)]
            text = body.lstrip("0123456789") + " " + (text[end + 2 :] if end >= 0 else "")
            continue
        skipped = _skip_comment(text, 0)
        if skipped == 0:
            return text.rstrip().rstrip(";").rstrip()
        text = text[skipped:]


def _for_sqlglot(text: str, tokens: list[_Token]) -> str:
    """The statement with two spellings sqlglot 30 does not read put in ones it does.

    `ALTER TABLE t RENAME AS u` (sqlglot reads only `RENAME [TO] u`) and MariaDB's `ALTER ONLINE TABLE`
    (ONLINE only asks for no locking). ALTER IGNORE is not rewritten: it deletes the rows that break a
    new unique key, so it stays unread (UNRECOGNISED).
    """
    if len(tokens) > 2 and tokens[0].upper == "ALTER" and tokens[1].upper in ("ONLINE", "OFFLINE"):
        without = text[: tokens[1].start] + text[tokens[1].end :]
        return _for_sqlglot(without, _tokenize(without))
    for before, token in zip(tokens, tokens[1:], strict=False):
        if before.upper == "RENAME" and token.upper == "AS":
            without = text[: token.start] + "TO" + text[token.end :]
            return _for_sqlglot(without, _tokenize(without))
    return _alter_actions_for_sqlglot(text, tokens)


# --- ALTER TABLE action lists ------------------------------------------------------------------------
# MariaDB accepts spellings sqlglot 30 does not read, and actions that change nothing a sink holds
# beside ones that do (Debezium's and MariaDB's DDL suites are full of both). Each action of the list
# is rewritten on its own: the ones that leave the columns and the key as they are (index hints,
# ENABLE/DISABLE KEYS, CONVERT TO CHARACTER SET, CHECK constraints, table options) are left out, and
# the rest put in a form sqlglot reads. What is left is then read as any statement.

# Table options MariaDB takes with or without `=` (`MAX_ROWS 100`): none changes a column or the key.
_TABLE_OPTIONS = frozenset(
    {
        *("AUTO_INCREMENT", "AVG_ROW_LENGTH", "CHECKSUM", "TABLE_CHECKSUM", "COMPRESSION", "CONNECTION"),
        *("DATA", "INDEX", "DELAY_KEY_WRITE", "ENCRYPTED", "ENCRYPTION", "ENCRYPTION_KEY_ID", "ENGINE"),
        *("IETF_QUOTES", "INSERT_METHOD", "KEY_BLOCK_SIZE", "MAX_ROWS", "MIN_ROWS", "PACK_KEYS"),
        *("PAGE_CHECKSUM", "PAGE_COMPRESSED", "PAGE_COMPRESSION_LEVEL", "PASSWORD", "ROW_FORMAT"),
        *("SEQUENCE", "STATS_AUTO_RECALC", "STATS_PERSISTENT", "STATS_SAMPLE_PAGES", "TRANSACTIONAL"),
        *("UNION", "WITH_SYSTEM_VERSIONING_NOT_SUPPORTED", "STORAGE", "SECONDARY_ENGINE", "AUTOEXTEND_SIZE"),
    }
)
# Actions whose `IF [NOT] EXISTS` sqlglot does not read; dropping it changes nothing for the sinks,
# whose plan applies a change only to a column (or key) that is there.
_ACTIONS_WITH_OPTIONAL_EXISTENCE = frozenset({"ADD", "MODIFY", "CHANGE", "DROP", "RENAME"})
# Partition maintenance that moves no row in or out of the table (DROP, TRUNCATE and EXCHANGE
# PARTITION do, and stay unread).
_PARTITION_UPKEEP = frozenset(
    {
        ("ADD", "PARTITION"),
        ("REORGANIZE", "PARTITION"),
        ("COALESCE", "PARTITION"),
        ("PARTITION", "BY"),
        ("REMOVE", "PARTITIONING"),
        ("ANALYZE", "PARTITION"),
        ("CHECK", "PARTITION"),
        ("OPTIMIZE", "PARTITION"),
        ("REBUILD", "PARTITION"),
        ("REPAIR", "PARTITION"),
    }
)


def _alter_actions_for_sqlglot(text: str, tokens: list[_Token]) -> str:
    """An ALTER TABLE with its action list rewritten (see above); other statements as they are."""
    if len(tokens) < 3 or tokens[0].upper != "ALTER" or tokens[1].upper != "TABLE":
        return text
    read = _read_name(tokens, _skip_if_exists(tokens, 2), "")
    if read is None:
        return text
    head_end, start = tokens[read[1] - 1].end, read[1]
    if start < len(tokens) and tokens[start].upper == "NOWAIT":
        start += 1
    elif start + 1 < len(tokens) and tokens[start].upper == "WAIT":
        start += 2  # WAIT n: how long to wait for the table's lock
    actions = [_action_for_sqlglot(text, action) for action in _split_actions(tokens[start:])]
    kept = [action for action in actions if action]
    return text[:head_end] + (" " + ", ".join(kept) if kept else "")


def _split_actions(tokens: list[_Token]) -> list[list[_Token]]:
    """The actions of an ALTER TABLE: the tokens between the commas outside parentheses."""
    actions: list[list[_Token]] = [[]]
    depth = 0
    for token in tokens:
        plain = not token.quoted and not token.string
        if plain and token.text == "(":
            depth += 1
        elif plain and token.text == ")":
            depth -= 1
        elif plain and token.text == "," and depth == 0:
            actions.append([])
            continue
        actions[-1].append(token)
    return [action for action in actions if action]


def _action_for_sqlglot(text: str, action: list[_Token]) -> str | None:
    """One action as sqlglot reads it, or None when it changes nothing a sink holds."""
    words = [token.upper for token in action]
    if words in (["DISABLE", "KEYS"], ["ENABLE", "KEYS"]):
        return None
    if words[:2] == ["CONVERT", "TO"] and "BINARY" not in words:
        # Text stays text (TEXT may become MEDIUMTEXT: one sink type); to `binary` it becomes bytes,
        # which stays unread.
        return None
    if words[:1] == ["ALTER"] and words[1:2] in (["INDEX"], ["KEY"]) and words[-1] == "IGNORED":
        return None
    if words[0] == "ADD" and "CHECK" in words[1:4] and not {"PRIMARY", "UNIQUE", "FOREIGN"} & set(words[1:4]):
        return None  # a CHECK constraint, named or not
    if words[0] == "ALTER" and words[1:2] in (["CHECK"], ["CONSTRAINT"]) and words[-1] == "ENFORCED":
        return None
    if tuple(words[:2]) in _PARTITION_UPKEEP:
        return None
    if words[0] in _TABLE_OPTIONS and words[1:2] != ["BY"]:  # not `ORDER BY`-like clauses
        return None
    cut = _existence_test(words) if words[0] in _ACTIONS_WITH_OPTIONAL_EXISTENCE else None
    if cut is None:
        columns = _parenthesised_columns(text, action, words)
        return text[action[0].start : action[-1].end] if columns is None else _added_one_by_one(columns)
    # The action without its `IF [NOT] EXISTS`; the other tokens keep their spelling.
    first, after = cut
    kept = [*action[:first], *action[after:]]
    columns = _parenthesised_columns(text, kept, [token.upper for token in kept])
    if columns is not None:
        return _added_one_by_one(columns)
    return text[action[0].start : action[first].start] + text[action[after].start : action[-1].end]


def _added_one_by_one(columns: list[str]) -> str:
    return ", ".join(columns)


# Words that start an index or a constraint in a parenthesised ADD list, never a column.
_NOT_COLUMN_DEFINITIONS = frozenset(
    {"PRIMARY", "UNIQUE", "KEY", "INDEX", "FULLTEXT", "SPATIAL", "CONSTRAINT", "FOREIGN", "CHECK", "PERIOD"}
)


def _existence_test(words: list[str]) -> tuple[int, int] | None:
    """Where the action's `IF [NOT] EXISTS` is (its first token, the one after it), unless sqlglot
    reads it there (`ADD [COLUMN] IF NOT EXISTS`, `DROP [COLUMN] IF EXISTS`)."""
    for i in range(1, min(len(words) - 1, 7)):
        if words[i] != "IF":
            continue
        length = 3 if words[i + 1 : i + 3] == ["NOT", "EXISTS"] else 2 if words[i + 1] == "EXISTS" else 0
        if length == 0 or i + length >= len(words):
            return None
        if words[0] in ("ADD", "DROP") and words[1:i] in (["COLUMN"], []):
            return None
        if "PRIMARY" in words[1:i]:
            return None  # a key set only if there is none: what the table's key becomes is unknown
        return i, i + length
    return None


def _parenthesised_columns(text: str, action: list[_Token], words: list[str]) -> list[str] | None:
    """`ADD [COLUMN] [IF NOT EXISTS] (a INT, b INT)` as one `ADD COLUMN` per column, or None for any
    other ADD (a list that also holds an index or a key stays as it is, and unread)."""
    i = 2 if words[1:2] == ["COLUMN"] else 1
    existence = ""
    if words[i : i + 3] == ["IF", "NOT", "EXISTS"]:
        existence, i = "IF NOT EXISTS ", i + 3
    if i >= len(action) or action[i].text != "(" or action[i].quoted or action[i].string or action[-1].text != ")":
        return None
    definitions = _split_actions(action[i + 1 : -1])
    if any(d[0].upper in _NOT_COLUMN_DEFINITIONS for d in definitions):
        return None
    return [f"ADD COLUMN {existence}{text[d[0].start : d[-1].end]}" for d in definitions]


class _Object:
    TABLE = "table"
    INDEX = "index"
    OTHER = "other"  # not about a table: not DDL for the pipeline
    UNKNOWN = "unknown"  # a DDL verb before something we do not know


_DDL_VERBS = frozenset({"ALTER", "CREATE", "DROP", "RENAME", "TRUNCATE"})
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


def _object_of(tokens: list[_Token]) -> str:
    if tokens[0].upper == "TRUNCATE":
        return _Object.TABLE  # TRUNCATE [TABLE] t: nothing else can be truncated
    i = 1
    while i < len(tokens):
        word = tokens[i].upper
        if word in ("TABLE", "TABLES"):
            return _Object.TABLE
        if word == "INDEX":
            return _Object.INDEX
        if word in _NOT_TABLES:
            return _Object.OTHER
        if word == "SPATIAL":  # CREATE SPATIAL INDEX, or CREATE SPATIAL REFERENCE SYSTEM
            nxt = tokens[i + 1].upper if i + 1 < len(tokens) else ""
            return _Object.INDEX if nxt in ("INDEX", "KEY") else _Object.OTHER
        if word in ("DEFINER", "ALGORITHM") and i + 1 < len(tokens) and tokens[i + 1].text == "=":
            i = _skip_assignment(tokens, i)
            continue
        if word in _MODIFIERS:
            i += 1
            continue
        return _Object.UNKNOWN
    return _Object.UNKNOWN


def _is_temporary(tokens: list[_Token]) -> bool:
    """TEMPORARY before the TABLE keyword (sqlglot does not see it inside `/*!40005 TEMPORARY */`)."""
    for token in tokens[1:]:
        if token.upper in ("TABLE", "TABLES"):
            return False
        if token.upper == "TEMPORARY":
            return True
    return False


def _skip_assignment(tokens: list[_Token], i: int) -> int:
    """Past `DEFINER = user@host` / `DEFINER = CURRENT_USER()` / `ALGORITHM = MERGE` (the `=` is at i + 1)."""
    i += 3  # the value (a user, a quoted user, CURRENT_USER, an algorithm)
    while i < len(tokens) and tokens[i].text in ("@", "(", ")") and not tokens[i].string:
        i += 2 if tokens[i].text == "@" else 1
    return i


def _read_name(tokens: list[_Token], i: int, default_database: str) -> tuple[tuple[str, str], int] | None:
    """The `db.table` or `table` at `i`, and the index after it."""
    if i >= len(tokens) or not tokens[i].is_name:
        return None
    first = tokens[i].text
    if i + 2 < len(tokens) and tokens[i + 1].text == "." and tokens[i + 2].is_name:
        return (first, tokens[i + 2].text), i + 3
    return (default_database, first), i + 1


def _skip_if_exists(tokens: list[_Token], i: int) -> int:
    words = [t.upper for t in tokens[i : i + 3]]
    if words[:2] == ["IF", "EXISTS"]:
        return i + 2
    if words == ["IF", "NOT", "EXISTS"]:
        return i + 3
    return i


def _rename_pairs(tokens: list[_Token], default_database: str) -> list[tuple[tuple[str, str], tuple[str, str]]] | None:
    """`RENAME TABLE[S] [IF EXISTS] a [WAIT n | NOWAIT] TO b[, c TO d ...]`, or None if it is not that.

    sqlglot 30 reads RENAME TABLE as an opaque exp.Command, so the pairs are read here.
    """
    if len(tokens) < 2 or tokens[1].upper not in ("TABLE", "TABLES"):
        return None
    i = _skip_if_exists(tokens, 2)
    pairs: list[tuple[tuple[str, str], tuple[str, str]]] = []
    while True:
        old = _read_name(tokens, i, default_database)
        if old is None:
            return None
        i = old[1]
        if i < len(tokens) and tokens[i].upper == "NOWAIT":  # MariaDB's lock wait options
            i += 1
        elif i + 1 < len(tokens) and tokens[i].upper == "WAIT":
            i += 2
        if i >= len(tokens) or tokens[i].upper != "TO":
            return None
        new = _read_name(tokens, i + 1, default_database)
        if new is None:
            return None
        pairs.append((old[0], new[0]))
        i = new[1]
        if i == len(tokens):
            return pairs
        if tokens[i].text != "," or tokens[i].quoted or tokens[i].string:
            return None
        i += 1


# --- reading a parsed statement --------------------------------------------------------------------


def _name_of(node: exp.Expr | None) -> str | None:
    """A column name in a column list: an identifier, a column, or either ordered."""
    if isinstance(node, exp.Ordered):
        node = node.this
    if isinstance(node, exp.Identifier | exp.Column):
        return node.name
    return None


_TIMESTAMP_FUNCTIONS = frozenset({"NOW", "CURRENT_TIMESTAMP", "LOCALTIME", "LOCALTIMESTAMP"})


class _Unknowable(Exception):
    """The value the existing rows took is not in the statement."""


def _default_of(value: exp.Expr) -> tuple[bool, str | None]:
    """(has_default, default) of an added column's DEFAULT, as text; raises _Unknowable."""
    while isinstance(value, exp.Paren):  # MySQL 8 expression defaults: (5) is 5
        value = value.this
    if isinstance(value, exp.Introducer):  # _utf8mb4'x': the charset does not change the value
        value = value.expression
    if isinstance(value, exp.Null):
        return False, None
    if isinstance(value, exp.Literal):
        return True, str(value.this)  # a number keeps its text: '1.50' stays '1.50'
    if isinstance(value, exp.Neg) and isinstance(value.this, exp.Literal) and not value.this.is_string:
        return True, f"-{value.this.this}"
    if isinstance(value, exp.Boolean):
        return True, "1" if value.this else "0"  # MySQL's TRUE and FALSE are the numbers 1 and 0
    if isinstance(value, exp.CurrentTimestamp | exp.Localtimestamp | exp.Localtime):
        return True, CURRENT_TIMESTAMP
    if isinstance(value, exp.Anonymous) and str(value.this).upper() in _TIMESTAMP_FUNCTIONS:
        return True, CURRENT_TIMESTAMP
    # Any other expression (UUID(), b'1', 0x1F, a computation): its value in the existing rows is
    # only in the source's table, which the sink cannot ask for the rows it already holds.
    raise _Unknowable


def _modified_column(action: exp.ModifyColumn) -> str | None:
    """The lower-case name of the column a MODIFY or CHANGE acts on (CHANGE: its old name)."""
    if not isinstance(action.this, exp.ColumnDef):
        return None
    name = _name_of(action.args.get("rename_from") or action.this.this)
    return name.lower() if name is not None else None


def _added_column(coldef: exp.ColumnDef) -> tuple[bool, str | None, bool]:
    """(has_default, default, in_primary_key) of an added column; raises _Unknowable."""
    has_default: bool = False
    default: str | None = None
    in_key = False
    not_null = False
    kind_of_column = coldef.args.get("kind")
    if isinstance(kind_of_column, exp.DataType) and kind_of_column.this in _NUMBERED_TYPES:
        raise _Unknowable  # SERIAL: BIGINT AUTO_INCREMENT, the existing rows got numbers
    for constraint in coldef.args.get("constraints") or []:
        kind = constraint.args.get("kind")
        if isinstance(kind, exp.DefaultColumnConstraint):
            has_default, default = _default_of(kind.this)
            if not has_default:
                return False, None, in_key or _in_key(coldef)  # DEFAULT NULL
        elif isinstance(
            kind,
            exp.AutoIncrementColumnConstraint | exp.ComputedColumnConstraint | exp.GeneratedAsIdentityColumnConstraint,
        ):
            # The existing rows got numbers or computed values the statement does not hold.
            raise _Unknowable
        elif isinstance(kind, exp.PrimaryKeyColumnConstraint):
            in_key = True
        elif isinstance(kind, exp.NotNullColumnConstraint) and not kind.args.get("allow_null"):
            not_null = True
    if not has_default and not_null:
        # NOT NULL without a DEFAULT: MySQL gives the existing rows the type's implicit default.
        has_default, default = True, _implicit_default(coldef.args.get("kind"))
    return has_default, default, in_key


_NUMBERED_TYPES = frozenset({exp.DataType.Type.SERIAL, exp.DataType.Type.SMALLSERIAL, exp.DataType.Type.BIGSERIAL})

# The implicit default of NOT NULL columns added without one, by type family (MySQL's manual,
# "Data Type Default Values"): zero for numbers, the empty string, an enum's first member.
_NUMERIC = {
    exp.DataType.Type.TINYINT, exp.DataType.Type.UTINYINT, exp.DataType.Type.SMALLINT, exp.DataType.Type.USMALLINT,
    exp.DataType.Type.MEDIUMINT, exp.DataType.Type.UMEDIUMINT, exp.DataType.Type.INT, exp.DataType.Type.UINT,
    exp.DataType.Type.BIGINT, exp.DataType.Type.UBIGINT, exp.DataType.Type.DECIMAL, exp.DataType.Type.UDECIMAL,
    exp.DataType.Type.FLOAT, exp.DataType.Type.DOUBLE, exp.DataType.Type.BIT, exp.DataType.Type.YEAR,
    exp.DataType.Type.BOOLEAN,
}  # fmt: skip
_TEXTUAL = {
    exp.DataType.Type.CHAR, exp.DataType.Type.VARCHAR, exp.DataType.Type.NCHAR, exp.DataType.Type.NVARCHAR,
    exp.DataType.Type.TEXT, exp.DataType.Type.TINYTEXT, exp.DataType.Type.MEDIUMTEXT, exp.DataType.Type.LONGTEXT,
    exp.DataType.Type.BINARY, exp.DataType.Type.VARBINARY, exp.DataType.Type.BLOB, exp.DataType.Type.TINYBLOB,
    exp.DataType.Type.MEDIUMBLOB, exp.DataType.Type.LONGBLOB, exp.DataType.Type.SET,
}  # fmt: skip


def _implicit_default(kind: exp.Expr | None) -> str:
    if not isinstance(kind, exp.DataType):
        raise _Unknowable
    if kind.this in _NUMERIC:
        return "0"
    if kind.this in _TEXTUAL:
        return ""
    if kind.this is exp.DataType.Type.ENUM and kind.expressions:
        first = kind.expressions[0]
        if isinstance(first, exp.Literal):
            return str(first.this)
    if kind.this is exp.DataType.Type.TIME:
        return "00:00:00"
    # Zero dates ('0000-00-00') have no sink form; JSON and spatial types: not worth guessing.
    raise _Unknowable


def _in_key(coldef: exp.ColumnDef) -> bool:
    return any(
        isinstance(c.args.get("kind"), exp.PrimaryKeyColumnConstraint) for c in coldef.args.get("constraints") or []
    )


# Actions of an ALTER TABLE that change neither the columns, the key nor the rows the sinks hold.
_NO_EFFECT_ACTIONS = (exp.RenameIndex, exp.AlterIndex, exp.ForceProperty)
_NO_EFFECT_CONSTRAINTS = (
    exp.IndexColumnConstraint,
    exp.UniqueColumnConstraint,
    exp.ForeignKey,
    exp.CheckColumnConstraint,
)
_NO_EFFECT_DROPS = frozenset({"INDEX", "KEY", "FOREIGN KEY", "CHECK", "CONSTRAINT"})


@dataclass
class _AlterResult:
    changes: list[SchemaChange] = field(default_factory=list)
    unrecognised_column: str | None = None
    unrecognised: bool = False
    rename_to: tuple[str, str] | None = None


@dataclass(frozen=True)
class _Reader:
    statement: str
    default_database: str
    position: str
    version: int
    selects: Selects

    def change(
        self,
        table: str,
        kind: SchemaChangeKind,
        column: str | None = None,
        old_name: str | None = None,
        default: str | None = None,
        has_default: bool = False,
        key_columns: tuple[str, ...] = (),
    ) -> SchemaChange:
        return SchemaChange(
            table,
            kind,
            self.position,
            self.version,
            self.statement,
            column,
            old_name,
            default,
            has_default,
            key_columns,
        )

    def name(self, table: exp.Table) -> tuple[str, str] | None:
        if not isinstance(table, exp.Table) or table.args.get("catalog") is not None or not table.name:
            return None
        return (table.db or self.default_database, table.name)

    def selected(self, name: tuple[str, str]) -> bool:
        return self.selects(*name)

    # Statements sqlglot read.

    def parsed(self, expression: exp.Expr | None) -> list[SchemaChange] | None:
        """The changes of a statement sqlglot read, or None to fall back to the tokenizer."""
        kind = str(expression.args.get("kind") or "").upper() if expression is not None else ""
        if isinstance(expression, exp.Alter) and kind == "TABLE":
            return self.alter(expression)
        if isinstance(expression, exp.Create) and kind == "TABLE":
            return self.create_table(expression)
        if isinstance(expression, exp.Create) and kind == "INDEX":
            index = expression.this
            return self.no_effect(index.args.get("table") if isinstance(index, exp.Index) else None)
        if isinstance(expression, exp.Drop) and kind == "TABLE":
            tables = expression.args.get("tables") or []
            return self.each_table(tables, SchemaChangeKind.DROP_TABLE, expression.args.get("temporary"))
        if isinstance(expression, exp.Drop) and kind == "INDEX":
            on = expression.args.get("cluster")
            table = on.this if isinstance(on, exp.OnProperty) else None
            dropped = [t.name.upper() for t in expression.args.get("tables") or [] if isinstance(t, exp.Table)]
            if dropped == ["PRIMARY"]:
                return self.primary_key_dropped(table)
            return self.no_effect(table)
        if isinstance(expression, exp.TruncateTable):
            return self.each_table(expression.expressions, SchemaChangeKind.TRUNCATE, False)
        return None

    def each_table(
        self, tables: list[exp.Expr], kind: SchemaChangeKind, temporary: object
    ) -> list[SchemaChange] | None:
        if temporary:
            return []  # a temporary table is the session's own: never replicated
        changes: list[SchemaChange] = []
        for table in tables:
            name = self.name(table) if isinstance(table, exp.Table) else None
            if name is None:
                return None
            if self.selected(name):
                changes.append(self.change(qualify(*name), kind))
        return changes

    def primary_key_dropped(self, table: object) -> list[SchemaChange] | None:
        """`DROP INDEX `PRIMARY` ON t`: the primary key's index is named PRIMARY; the key is gone."""
        name = self.name(table) if isinstance(table, exp.Table) else None
        if name is None:
            return None
        if not self.selected(name):
            return []
        return [self.change(qualify(*name), SchemaChangeKind.PRIMARY_KEY, key_columns=())]

    def no_effect(self, table: object) -> list[SchemaChange] | None:
        name = self.name(table) if isinstance(table, exp.Table) else None
        if name is None:
            return None
        return [self.change(qualify(*name), SchemaChangeKind.NO_EFFECT)] if self.selected(name) else []

    def create_table(self, create: exp.Create) -> list[SchemaChange] | None:
        target = create.this.this if isinstance(create.this, exp.Schema) else create.this
        name = self.name(target) if isinstance(target, exp.Table) else None
        if name is None:
            return None
        properties = create.args.get("properties")
        if properties is not None and any(isinstance(p, exp.TemporaryProperty) for p in properties.expressions):
            return []
        if not self.selected(name):
            return []
        table = qualify(*name)
        created = self.change(table, SchemaChangeKind.CREATE_TABLE)
        if create.args.get("replace"):
            # MariaDB's CREATE OR REPLACE drops the table it replaces: its rows go with it.
            return [self.change(table, SchemaChangeKind.DROP_TABLE), created]
        return [created]

    def alter(self, alter: exp.Alter) -> list[SchemaChange] | None:
        name = self.name(alter.this)
        if name is None:
            return None
        table = qualify(*name)
        result = self.alter_actions(table, alter.args.get("actions") or [])
        for option in alter.args.get("options") or []:
            # Table options (ENGINE, COMMENT, ROW_FORMAT, AUTO_INCREMENT, CHARSET, KEY_BLOCK_SIZE, ...),
            # ALGORITHM, LOCK and ORDER BY change nothing the sinks hold.
            if not isinstance(option, exp.Property | exp.Order):
                result.unrecognised = True
        selected = self.selected(name)
        changes: list[SchemaChange] = []
        if result.unrecognised:
            if selected:
                changes.append(self.change(table, SchemaChangeKind.UNRECOGNISED, column=result.unrecognised_column))
            if result.rename_to is not None and self.selected(result.rename_to) and result.rename_to != name:
                changes.append(self.change(qualify(*result.rename_to), SchemaChangeKind.UNRECOGNISED))
            return changes
        if selected:
            changes.extend(result.changes)
        if result.rename_to is not None and result.rename_to != name:
            changes.extend(self.rename_tables([(name, result.rename_to)]))
        elif selected and not changes:
            changes.append(self.change(table, SchemaChangeKind.NO_EFFECT))
        return changes

    def alter_actions(self, table: str, actions: list[exp.Expr]) -> _AlterResult:
        result = _AlterResult()
        changes = result.changes
        new_key: tuple[str, ...] | None = None
        key_slot = 0  # the key change goes after the last key action, where its columns exist

        def set_key(columns: tuple[str, ...]) -> None:
            nonlocal new_key, key_slot
            new_key, key_slot = columns, len(changes)

        # Columns this statement adds (lower-case name -> index of their ADD change, definition so
        # far): MySQL applies a statement's clauses at once, so a later clause on an added column
        # (SET/DROP DEFAULT, MODIFY, CHANGE) decides what the existing rows hold in it.
        added: dict[str, tuple[int, exp.ColumnDef]] = {}

        def define_added(index: int | None, coldef: exp.ColumnDef) -> bool:
            """Record (or redo) an added column's ADD change from its definition; False: unknowable."""
            try:
                has_default, default, in_key = _added_column(coldef)
            except _Unknowable:
                result.unrecognised, result.unrecognised_column = True, coldef.name
                return False
            change = self.change(
                table, SchemaChangeKind.ADD_COLUMN, column=coldef.name, default=default, has_default=has_default
            )
            if index is None:
                index = len(changes)
                changes.append(change)
            else:
                changes[index] = change
            added[coldef.name.lower()] = (index, coldef)
            if in_key:
                set_key((coldef.name,))
            return True

        for action in actions:
            if isinstance(action, exp.ColumnDef):
                if not define_added(None, action):
                    return result
            elif isinstance(action, exp.ModifyColumn) and _modified_column(action) in added:
                # MODIFY/CHANGE of a column this statement adds: its final definition is the added one.
                index, _ = added.pop(_modified_column(action) or "")
                if not define_added(index, action.this):
                    return result
            elif (
                isinstance(action, exp.AlterColumn)
                and action.name.lower() in added
                and action.args.get("dtype") is None
            ):
                index, coldef = added[action.name.lower()]
                kept = [
                    c
                    for c in coldef.args.get("constraints") or []
                    if not isinstance(c.args.get("kind"), exp.DefaultColumnConstraint)
                ]
                if action.args.get("default") is not None:  # SET DEFAULT x; else DROP DEFAULT
                    kept.append(exp.ColumnConstraint(kind=exp.DefaultColumnConstraint(this=action.args["default"])))
                redefined = coldef.copy()
                redefined.set("constraints", kept)
                if not define_added(index, redefined):
                    return result
            elif isinstance(action, exp.ModifyColumn) and isinstance(action.this, exp.ColumnDef):
                column = action.this.name
                old = action.args.get("rename_from")
                if isinstance(old, exp.Identifier) and old.name != column:
                    changes.append(self.change(table, SchemaChangeKind.RENAME_COLUMN, column=column, old_name=old.name))
                changes.append(self.change(table, SchemaChangeKind.MODIFY_COLUMN, column=column))
                if _in_key(action.this):
                    set_key((column,))
            elif isinstance(action, exp.RenameColumn):
                old_name, new_name = _name_of(action.this), _name_of(action.args.get("to"))
                if old_name is None or new_name is None:
                    result.unrecognised = True
                    return result
                changes.append(self.change(table, SchemaChangeKind.RENAME_COLUMN, column=new_name, old_name=old_name))
            elif isinstance(action, exp.Drop):
                kind = str(action.args.get("kind") or "").upper()
                dropped = [t.name for t in action.args.get("tables") or []]
                if kind == "COLUMN":
                    changes.extend(self.change(table, SchemaChangeKind.DROP_COLUMN, column=c) for c in dropped)
                elif kind in ("INDEX", "KEY", "CONSTRAINT") and [d.upper() for d in dropped] == ["PRIMARY"]:
                    set_key(new_key or ())  # the primary key's index is named PRIMARY
                elif kind not in _NO_EFFECT_DROPS:
                    result.unrecognised = True
                    return result
            elif isinstance(action, exp.DropPrimaryKey):
                set_key(new_key or ())
            elif isinstance(action, exp.AddConstraint):
                for constraint in action.expressions:
                    inner = constraint.expressions if isinstance(constraint, exp.Constraint) else [constraint]
                    for part in inner:
                        if isinstance(part, exp.PrimaryKey):
                            columns = [_name_of(c) for c in part.expressions]
                            if None in columns or not columns:
                                result.unrecognised = True
                                return result
                            set_key(tuple(c for c in columns if c is not None))
                        elif not isinstance(part, _NO_EFFECT_CONSTRAINTS):
                            result.unrecognised = True
                            return result
            elif isinstance(action, exp.AlterColumn):
                if action.args.get("dtype") is not None:
                    changes.append(self.change(table, SchemaChangeKind.MODIFY_COLUMN, column=action.name))
                # SET/DROP DEFAULT, SET VISIBLE/INVISIBLE: the existing rows keep their values.
            elif isinstance(action, exp.AlterRename):
                target = self.name(action.this)
                if target is None:
                    result.unrecognised = True
                    return result
                result.rename_to = target
            elif not isinstance(action, _NO_EFFECT_ACTIONS):
                result.unrecognised = True
                return result
        if new_key is not None:
            changes.insert(key_slot, self.change(table, SchemaChangeKind.PRIMARY_KEY, key_columns=new_key))
        return result

    # RENAME TABLE, and ALTER TABLE ... RENAME.

    def rename_tables(self, pairs: list[tuple[tuple[str, str], tuple[str, str]]]) -> list[SchemaChange]:
        """The changes a sequence of renames makes to the sink's tables, on its net effect.

        The sink holds a table for each selected name. A rename between selected names renames the
        sink's table; from a selected name to an unselected one the table leaves the replicated set
        (DROP_TABLE, unless it comes back in the same statement); from an unselected name to a
        selected one a table the sink never saw arrives (CREATE_TABLE).

        Online schema change tools (gh-ost, pt-online-schema-change) build a copy `_t_gho`/`_t_new`
        in the new shape, keep it in step with `t`, and swap it in with
        `RENAME TABLE t TO _t_del, _t_gho TO t`. Read pair by pair that would drop the sink's table and
        create an empty one, losing every row. On the net effect the selected name `t` is taken
        from its table and given to a copy in the same statement: the sink keeps its table (NO_EFFECT).
        Its rows are still right, because the copy holds the same rows with the same keys: the tool
        copied them and kept the copy in step until the swap. The copy's shape arrives with its next
        rows, which change the sink table as rows in a new shape always do.
        """
        # Where each table named in the statement now is: its current name -> the sink table that
        # holds its rows (None: the sink holds none). A name not yet seen still holds its original.
        holder: dict[tuple[str, str], tuple[str, str] | None] = {}
        seen: set[tuple[str, str]] = set()
        changes: list[SchemaChange] = []
        conflict = False

        def sink_table_of(name: tuple[str, str]) -> tuple[str, str] | None:
            if name in holder:
                return holder.pop(name)
            return name if name not in seen and self.selected(name) else None

        for old, new in pairs:
            sink_table = sink_table_of(old)
            seen.update((old, new))
            if not self.selected(new):
                holder[new] = sink_table  # if it has a sink table, that table is parked under its old name
                continue
            # Which table, now at an unselected name, still has its rows in the sink table `new`.
            parked = next((name for name, held in holder.items() if held == new and name != new), None)
            if sink_table == new:
                changes.append(self.change(qualify(*new), SchemaChangeKind.NO_EFFECT))  # back where it was
            elif sink_table is None and parked is not None:
                holder[parked] = None  # the copy takes over the sink table (see the docstring)
                changes.append(self.change(qualify(*new), SchemaChangeKind.NO_EFFECT))
            elif sink_table is None:
                changes.append(self.change(qualify(*new), SchemaChangeKind.CREATE_TABLE))
            elif parked is not None:
                # Two replicated tables swapped through a spare name: no order of renames the sink can
                # apply one by one expresses it without the spare name. Left to the operator.
                conflict = True
            else:
                changes.append(self.change(qualify(*new), SchemaChangeKind.RENAME_TABLE, old_name=qualify(*sink_table)))
            holder[new] = new
        if conflict:
            named = dict.fromkeys(name for pair in pairs for name in pair if self.selected(name))
            return [self.change(qualify(*name), SchemaChangeKind.UNRECOGNISED) for name in named]
        for name, sink_table in holder.items():
            if sink_table is not None and not self.selected(name):
                changes.append(self.change(qualify(*sink_table), SchemaChangeKind.DROP_TABLE))
        return changes

    # Statements sqlglot could not read.

    def fallback(self, tokens: list[_Token]) -> list[SchemaChange]:
        """UNRECOGNISED for each selected table a statement sqlglot could not read names.

        Two kinds of statement sqlglot 30 does not read are understood here: a CREATE/DROP INDEX
        (with FULLTEXT/SPATIAL or ALGORITHM/LOCK clauses) changes only an index; `ALTER TABLE t`
        alone or with ENABLE/DISABLE KEYS (mysqldump's wrapper around its INSERTs) changes nothing.
        """
        verb = tokens[0].upper
        if _object_of(tokens) is _Object.INDEX:
            on = next((i for i, t in enumerate(tokens) if t.upper == "ON"), None)
            read = _read_name(tokens, on + 1, self.default_database) if on is not None else None
            if read is None:
                return [self.change("", SchemaChangeKind.UNRECOGNISED)]
            if not self.selected(read[0]):
                return []
            if verb == "DROP" and on is not None and [t.text.upper() for t in tokens[on - 1 : on]] == ["PRIMARY"]:
                # DROP INDEX `PRIMARY` ON t (with ALGORITHM/LOCK): the primary key is gone.
                return [self.change(qualify(*read[0]), SchemaChangeKind.PRIMARY_KEY, key_columns=())]
            return [self.change(qualify(*read[0]), SchemaChangeKind.NO_EFFECT)]
        names = self.fallback_names(tokens)
        if names is None:
            return [self.change("", SchemaChangeKind.UNRECOGNISED)]
        rest = names[1]
        if verb == "CREATE":
            # A table created anew (a column type or an option sqlglot does not know): its body never
            # matters to the sinks, the rows bring their shape. CREATE OR REPLACE drops the old rows.
            replaced = any(t.upper == "REPLACE" for t in tokens[1:3])
            kinds = [SchemaChangeKind.DROP_TABLE] if replaced else []
            return [
                self.change(qualify(*n), kind)
                for n in dict.fromkeys(names[0])
                if self.selected(n)
                for kind in [*kinds, SchemaChangeKind.CREATE_TABLE]
            ]
        kind = SchemaChangeKind.UNRECOGNISED
        if (
            verb == "ALTER"
            and len(names[0]) == 1
            and [t.upper for t in tokens[rest:]] in ([], ["ENABLE", "KEYS"], ["DISABLE", "KEYS"])
        ):
            kind = SchemaChangeKind.NO_EFFECT
        return [self.change(qualify(*n), kind) for n in dict.fromkeys(names[0]) if self.selected(n)]

    def fallback_names(self, tokens: list[_Token]) -> tuple[list[tuple[str, str]], int] | None:
        """The tables after TABLE (or TRUNCATE), and the index after the last of them."""
        start = next((i + 1 for i, t in enumerate(tokens) if t.upper in ("TABLE", "TABLES")), None)
        if start is None and tokens[0].upper == "TRUNCATE":
            start = 1
        if start is None:
            return None
        i = _skip_if_exists(tokens, start)
        names: list[tuple[str, str]] = []
        several = tokens[0].upper in ("DROP", "TRUNCATE", "RENAME")
        while True:
            read = _read_name(tokens, i, self.default_database)
            if read is None:
                break
            names.append(read[0])
            i = read[1]
            if not several or i >= len(tokens):
                break
            if tokens[i].upper == "TO" or (tokens[i].text == "," and not tokens[i].string):
                i += 1
            elif tokens[i].upper in ("WAIT", "NOWAIT"):
                i += 2 if tokens[i].upper == "WAIT" else 1
                continue
            else:
                break
        return (names, i) if names else None
