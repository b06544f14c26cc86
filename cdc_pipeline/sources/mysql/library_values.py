"""Canonical values from mysql-replication's own row decoding (the fallback path).

The compiled decoder produces canonical values directly; rows the library decodes need these
fixes first, so that both paths hand the same values to masking and mapping (a test checks it).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

from pymysqlreplication.constants import NONE_SOURCE

from cdc_pipeline.core.schema import TableSchema
from cdc_pipeline.core.type_families import BINARY_TYPES
from cdc_pipeline.sources.mysql.row_decoder import Unrepresentable

ValueFix = Callable[[Any], Any]


ZERO_TIME = dt.timedelta(0)


def _to_bytes(value: Any) -> Any:
    # mysql-replication returns '' (str) for an empty binary value.
    return value.encode() if isinstance(value, str) else value


def _padded_binary(width: int) -> Callable[[Any], Any]:
    # BINARY(n) is stored without its trailing NUL padding, which the server adds back on read.
    def pad(value: Any) -> Any:
        return _to_bytes(value).ljust(width, b"\x00") if value is not None else None

    return pad


def _set_text(members: tuple[str, ...]) -> Callable[[Any], Any]:
    # The server's own text form: members in definition order, comma separated.
    def as_text(value: Any) -> Any:
        return ",".join(m for m in members if m in value) if isinstance(value, (set, frozenset)) else value

    return as_text


def _bits_to_int(value: Any) -> Any:
    # The library gives BIT as a string of '0'/'1'; the canonical form is the number.
    return int(value, 2) if isinstance(value, str) else value


def _json_text(value: Any) -> Any:
    # MySQL's binary JSON arrives decoded; MariaDB's JSON is text already.
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list, int, float, bool)) else value


def _negative_fractional_time(value: Any) -> Any:
    """Undo mysql-replication's TIME2 decoding of negative values with a fraction.

    The library reads the fraction bytes as a signed number after the integer part already
    borrowed one second, so -12:34:56.789012 arrives as -12:34:56.210988: the result is
    -(s + 1 - u) where the truth is -(s + u). Checked by the end-to-end type test, which fails
    if a library upgrade fixes the decoding (the dependency is pinned below 1.1 for that reason).
    """
    if isinstance(value, dt.timedelta) and value < ZERO_TIME and value.microseconds:
        return value + dt.timedelta(seconds=1) - dt.timedelta(microseconds=2 * value.microseconds)
    return value


def value_normalisers(schema: TableSchema) -> list[tuple[str, ValueFix]]:
    """Per-column fixes that give library-specific value shapes one canonical form."""
    fixes: list[tuple[str, ValueFix]] = []
    for column in schema.columns:
        if column.data_type == "binary" and column.char_length:
            fixes.append((column.name, _padded_binary(column.char_length)))
        elif column.data_type in BINARY_TYPES:
            fixes.append((column.name, _to_bytes))
        elif column.data_type == "set":
            fixes.append((column.name, _set_text(column.enum_values)))
        elif column.data_type == "bit":
            fixes.append((column.name, _bits_to_int))
        elif column.data_type == "time" and column.datetime_precision:
            fixes.append((column.name, _negative_fractional_time))
        elif column.data_type == "json":
            fixes.append((column.name, _json_text))
    return fixes


def apply_none_sources(values: dict[str, Any], none_sources: dict[str, str]) -> str | None:
    """mysql-replication decodes an empty SET and an unrepresentable value (a zero date) as None
    too; tell them apart from NULL. Returns the reason when a value cannot be represented."""
    problems = []
    for column, reason in none_sources.items():
        if reason == NONE_SOURCE.EMPTY_SET:
            values[column] = ""
        elif reason != NONE_SOURCE.NULL:
            problems.append(f"column {column}: {reason} (e.g. a zero date), which no sink type can hold")
            if values.get(column) is None:
                # The library gave None and not the source's text: the letter must never pass for NULL.
                values[column] = Unrepresentable(f"<{reason}>")
    return "; ".join(problems) or None
