"""A ClickHouse table's sorting key as `system.tables.sorting_key` gives it back: the key column names.

(The shaper compares it with the key a table should have: shaper.py.)
"""

from __future__ import annotations

# Why a parser, not split(","): ClickHouse writes `system.tables.sorting_key` back in its own formatting. A
# one-column `ORDER BY (id)` comes back as `(id)`, parentheses kept, while `ORDER BY (id, k)` comes back as
# `id, k`; a name that needs quoting comes back-quoted, with a backtick or backslash in it escaped by a backslash
# (quote_identifier), and may hold a comma. Reading `(id)` as no key made every new process (every run under
# the Dagster daemon) plan a key change: a copy of the whole table into a re-keyed one, dropping its tombstones.
_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "0": "\0", "a": "\a", "v": "\v", "e": "\x1b"}
_QUOTES = "`\"'"
_OPENING = {"(": ")", "[": "]", "{": "}"}


def parse_sorting_key(expression: str) -> tuple[str, ...]:
    """The parts of a ClickHouse sorting key expression, in order: `(id)`, `id` -> ("id",); `id, k`,
    `(id, k)` -> ("id", "k"). A part that is one back-quoted or double-quoted identifier is unquoted; any
    other part (an expression such as `toDate(ts)`) is returned as written, without surrounding spaces."""
    text = expression.strip()
    if text.startswith("(") and _closing_bracket(text, 0) == len(text) - 1:
        text = text[1:-1]  # one pair around the whole expression: the tuple of a one-column ORDER BY (id)
    parts: list[str] = []
    start = 0
    index = 0
    while index < len(text):
        char = text[index]
        if char in _QUOTES:
            index = _unquoted(text, index)[1]
            continue
        if char in _OPENING:
            index = _closing_bracket(text, index) + 1
            continue
        if char == ",":
            parts.append(text[start:index])
            start = index + 1
        index += 1
    parts.append(text[start:])
    return tuple(_identifier(part.strip()) for part in parts if part.strip())


def _identifier(part: str) -> str:
    """The name a part quotes, when the whole part is one quoted identifier; else the part as written."""
    if part[0] in '`"':
        name, end = _unquoted(part, 0)
        if end == len(part):
            return name
    return part


def _unquoted(text: str, start: int) -> tuple[str, int]:
    """The content of the quoted string opening at `start`, unescaped, and the index just after it (the end of
    `text` when it is not closed). As ClickHouse reads it: a backslash escapes the next character (\\n, \\t,
    \\0 ... as in C; \\xHH is a byte of the UTF-8 text); a doubled quote is one quote character."""
    quote = text[start]
    content = bytearray()
    index = start + 1
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text):
            escaped = text[index + 1]
            digits = text[index + 2 : index + 4]
            if escaped == "x" and len(digits) == 2 and all(d in "0123456789abcdefABCDEF" for d in digits):
                content.append(int(digits, 16))
                index += 4
                continue
            content += _ESCAPES.get(escaped, escaped).encode()
            index += 2
        elif char == quote:
            if text[index + 1 : index + 2] == quote:
                content += quote.encode()
                index += 2
            else:
                return content.decode(errors="replace"), index + 1
        else:
            content += char.encode()
            index += 1
    return content.decode(errors="replace"), len(text)


def _closing_bracket(text: str, start: int) -> int:
    """The index of the bracket that closes the one at `start`, skipping quoted strings and nested brackets
    (len(text) when it is not closed)."""
    expected = [_OPENING[text[start]]]
    index = start + 1
    while index < len(text):
        char = text[index]
        if char in _QUOTES:
            index = _unquoted(text, index)[1]
            continue
        if char in _OPENING:
            expected.append(_OPENING[char])
        elif char == expected[-1]:
            expected.pop()
            if not expected:
                return index
        index += 1
    return len(text)
