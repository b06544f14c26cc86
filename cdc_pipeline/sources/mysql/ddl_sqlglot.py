"""The statement as sqlglot reads it: spellings it does not know rewritten, and the quiet parse.

sqlglot (read="mysql") does not read some MySQL/MariaDB spellings, and an ALTER TABLE's action list
may hold actions that change nothing a sink holds beside ones that do; they are rewritten or left
out here before the statement is parsed, so one odd action does not leave the whole statement
unread. The parse itself keeps sqlglot's expected fallback warnings out of the pipeline's log.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import sqlglot
from sqlglot import exp

from cdc_pipeline.sources.mysql.ddl_targets import read_name, skip_if_exists
from cdc_pipeline.sources.mysql.ddl_tokens import Token, tokenize

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


def parse(text: str) -> exp.Expr | None:
    """The one statement sqlglot reads in `text`, or None when it cannot read exactly one."""
    try:
        with _sqlglot_quiet():
            parsed = [e for e in sqlglot.parse(text, read="mysql") if e is not None]
    except Exception:  # any failure on an odd statement must become UNRECOGNISED, never stop the reader
        return None
    return parsed[0] if len(parsed) == 1 else None


def for_sqlglot(text: str, tokens: list[Token]) -> str:
    """The statement with two spellings sqlglot 30 does not read put in ones it does.

    `ALTER TABLE t RENAME AS u` (sqlglot reads only `RENAME [TO] u`) and MariaDB's `ALTER ONLINE TABLE`
    (ONLINE only asks for no locking). ALTER IGNORE is not rewritten: it deletes the rows that break a
    new unique key, so it stays unread (UNRECOGNISED).
    """
    if len(tokens) > 2 and tokens[0].upper == "ALTER" and tokens[1].upper in ("ONLINE", "OFFLINE"):
        without = text[: tokens[1].start] + text[tokens[1].end :]
        return for_sqlglot(without, tokenize(without))
    for before, token in zip(tokens, tokens[1:], strict=False):
        if before.upper == "RENAME" and token.upper == "AS":
            without = text[: token.start] + "TO" + text[token.end :]
            return for_sqlglot(without, tokenize(without))
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


def _alter_actions_for_sqlglot(text: str, tokens: list[Token]) -> str:
    """An ALTER TABLE with its action list rewritten (see above); other statements as they are."""
    if len(tokens) < 3 or tokens[0].upper != "ALTER" or tokens[1].upper != "TABLE":
        return text
    read = read_name(tokens, skip_if_exists(tokens, 2), "")
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


def _split_actions(tokens: list[Token]) -> list[list[Token]]:
    """The actions of an ALTER TABLE: the tokens between the commas outside parentheses."""
    actions: list[list[Token]] = [[]]
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


def _action_for_sqlglot(text: str, action: list[Token]) -> str | None:
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


def _parenthesised_columns(text: str, action: list[Token], words: list[str]) -> list[str] | None:
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
