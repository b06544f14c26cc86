"""The small tokenizer for the parts of MySQL/MariaDB DDL that sqlglot does not read.

Only what sqlglot does not read goes through it: the leading keywords that say what a statement is
about, RENAME TABLE, and the table names of statements sqlglot gave up on. The comment and quoting
rules live here too, for the statement text itself: leading comments and `/*!NNNNN ... */` wrappers
are removed before a statement is classified, and its string literals are hidden before it is stored.
Nothing here knows about tables or schema changes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Token:
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


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
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
                tokens.append(Token(body.replace("``", "`"), i, end, quoted=True))
            else:
                tokens.append(Token(body, i, end, string=True))
            i = end
        elif _is_word_char(char):
            end = i
            while end < len(text) and _is_word_char(text[end]):
                end += 1
            tokens.append(Token(text[i:end], i, end))
            i = end
        else:
            tokens.append(Token(char, i, i + 1))
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
    for token in tokenize(statement):
        if token.string:
            parts.append(statement[at : token.start] + "'?'")
            at = token.end
    return "".join(parts) + statement[at:]


def strip_leading_comments(statement: str) -> str:
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
