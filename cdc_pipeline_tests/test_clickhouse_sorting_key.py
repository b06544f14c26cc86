"""parse_sorting_key reads `system.tables.sorting_key` as ClickHouse (chdb) writes it (issue 11, item 5).

The expressions below are the ones chdb reports for the ORDER BY the sink writes (quote_identifier of each key
column, in parentheses): one column keeps its parentheses, two or more lose them.
"""

from __future__ import annotations

import pytest

from cdc_pipeline.sinks.clickhouse.identifiers import quote_identifier
from cdc_pipeline.sinks.clickhouse.sorting_key import parse_sorting_key


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("(id)", ("id",)),  # chdb's spelling of ORDER BY (id): the bug read it as no column
        ("id", ("id",)),
        ("id, k", ("id", "k")),
        ("(id, k)", ("id", "k")),
        ("  ( id ,k )  ", ("id", "k")),
        ("(`a,b`)", ("a,b",)),  # a back-quoted name holding a comma is one column
        ("`a,b`, id", ("a,b", "id")),
        ("(`we\\`ird`)", ("we`ird",)),  # a backtick inside is escaped with a backslash
        ("`we\\`ird`, `x\\\\y`", ("we`ird", "x\\y")),  # and a backslash too
        ("`a``b`", ("a`b",)),  # a doubled backtick, which ClickHouse reads too
        ("(`café`)", ("café",)),  # non-ASCII names come back-quoted
        ("`région, x`, `n\\`o`", ("région, x", "n`o")),
        ("(`a\\nb`)", ("a\nb",)),  # control characters are escaped as in C
        ("(`\\xC3\\xA9t\\xC3\\xA9`)", ("été",)),  # \xHH is a byte of the UTF-8 name
        ('"double quoted", id', ("double quoted", "id")),
        ("`sp ace`, id", ("sp ace", "id")),
        ("toDate(ts), s", ("toDate(ts)", "s")),  # an expression stays as written (not a column name)
        ("(toDate(ts, 'UTC, +1'), s)", ("toDate(ts, 'UTC, +1')", "s")),
        ("(a) + (b)", ("(a) + (b)",)),  # parentheses that do not enclose the whole expression stay
        ("", ()),
        ("tuple()", ("tuple()",)),
    ],
)
def test_parse_sorting_key(expression: str, expected: tuple[str, ...]) -> None:
    assert parse_sorting_key(expression) == expected


@pytest.mark.parametrize(
    "names",
    [
        ("id",),
        ("id", "k"),
        ("a,b",),
        ("we`ird", "x\\y"),
        ("café", "日本"),
        ("(x)", "y)"),
        ("tab\there", "new\nline"),
        ("`", "\\"),
    ],
)
def test_parse_sorting_key_reads_what_the_sink_writes(names: tuple[str, ...]) -> None:
    """The sink's ORDER BY (quote_identifier of each key column), with and without the outer parentheses."""
    written = ", ".join(quote_identifier(name) for name in names)
    assert parse_sorting_key(f"({written})") == names
    assert parse_sorting_key(written) == names
