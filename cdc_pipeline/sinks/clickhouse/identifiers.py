"""ClickHouse identifiers in SQL text: backquoted, with backslashes and backquotes escaped.

Names come from source schemas and configs; they are always quoted, never pasted (values are bound
as query parameters instead)."""

from __future__ import annotations


def quote_identifier(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"
