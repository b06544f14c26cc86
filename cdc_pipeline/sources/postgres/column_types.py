"""PostgreSQL column types -> the pipeline's column vocabulary, and text-format values -> Python values.

The mappers speak one vocabulary (MySQL's DATA_TYPE names plus `boolean` and `uuid`), so a
PostgreSQL column is described in it: `int4` is `int`, `timestamptz` is `timestamp` (an instant,
kept as naive UTC like MySQL's TIMESTAMP), `numeric` without a precision is `decimal` with none.
Types with no counterpart (interval, inet, arrays, ranges, ...) replicate as their text form.

Values arrive in PostgreSQL's text output with the session settings `connection.SESSION_SETTINGS`
pins (UTC, ISO dates, hex bytea, shortest exact floats), which is what the parsers below assume.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from cdc_pipeline.core.schema import ColumnSchema

# typmod = length + 4 for character types (VARHDRSZ); numeric packs ((precision << 16) | scale) + 4.
_VARHDRSZ = 4

ValueParser = Callable[[str], Any]


class ValueNotDecodable(ValueError):
    """A source value with no Python/sink representation (e.g. date 'infinity'); the row goes to the DLQ."""


@dataclass(frozen=True)
class PgType:
    """A column's type as pg_type describes it (domains resolved to their base type)."""

    oid: int
    name: str  # typname of the base type, e.g. 'int4', 'varchar', '_int4' for arrays
    is_enum: bool = False


_SAME_NAME = {
    "int2": "smallint",
    "int4": "int",
    "int8": "bigint",
    "float4": "float",
    "float8": "double",
    "bool": "boolean",
    "uuid": "uuid",
    "date": "date",
    "time": "time",
    "json": "json",
    "jsonb": "json",
    "bytea": "blob",
    "text": "text",
    "name": "text",
    "citext": "text",
    "xml": "text",
}


def column_schema(name: str, pg_type: PgType, type_modifier: int, nullable: bool) -> ColumnSchema:
    kind = pg_type.name
    if pg_type.is_enum:
        # Enums can gain members at the source; a fixed ClickHouse Enum would then refuse rows.
        return ColumnSchema(name, "varchar", f"enum {kind}", nullable)
    if kind in _SAME_NAME:
        return ColumnSchema(name, _SAME_NAME[kind], kind, nullable)
    if kind == "oid":
        return ColumnSchema(name, "int", kind, nullable, unsigned=True)
    if kind == "numeric":
        if type_modifier < _VARHDRSZ:
            return ColumnSchema(name, "decimal", "numeric", nullable)
        packed = type_modifier - _VARHDRSZ
        precision, scale = packed >> 16, packed & 0xFFFF
        return ColumnSchema(
            name, "decimal", f"numeric({precision},{scale})", nullable, precision=precision, scale=scale
        )
    if kind in ("varchar", "bpchar"):
        length = type_modifier - _VARHDRSZ if type_modifier >= _VARHDRSZ else None
        data_type = "varchar" if kind == "varchar" else "char"
        return ColumnSchema(name, data_type, kind, nullable, char_length=length)
    if kind in ("timestamp", "timestamptz"):
        precision = type_modifier if type_modifier >= 0 else 6
        data_type = "datetime" if kind == "timestamp" else "timestamp"
        return ColumnSchema(name, data_type, kind, nullable, datetime_precision=precision)
    if kind == "bit":
        return ColumnSchema(name, "bit", f"bit({type_modifier})", nullable, precision=max(type_modifier, 1))
    return ColumnSchema(name, "text", kind, nullable)


def value_parser(column: ColumnSchema) -> ValueParser | None:
    """How to turn the column's text value into the Python value the mappers expect (None: keep the text)."""
    return _PARSERS.get(column.data_type)


def _boolean(text: str) -> bool:
    return text == "t"


def _decimal(text: str) -> Decimal:
    return Decimal(text)


def _bytea(text: str) -> bytes:
    return bytes.fromhex(text[2:])  # '\x0a1b...'


def why_unparseable(text: str, column: ColumnSchema) -> str:
    """The reason a parser refused a value, for the DLQ. The parsers do not check first: they are
    the hot path, and fromisoformat already refuses what has no Python form.

    The reason never quotes the value (nor the parser's message, which does): DLQ reasons and run
    logs are not masked, only payloads are."""
    if text in ("infinity", "-infinity"):
        return f"{text!r} has no representation in the sinks"  # a keyword, not data
    if text.endswith(" BC"):
        return "a BC date has no representation in the sinks"
    return f"the value is not a {column.column_type} in PostgreSQL's text form"


def _instant(text: str) -> dt.datetime:
    # The session runs in UTC, so '+00' follows every value; stored as naive UTC, like MySQL TIMESTAMP.
    return dt.datetime.fromisoformat(text).astimezone(dt.UTC).replace(tzinfo=None)


def _time(text: str) -> dt.timedelta:
    hours, minutes, seconds = text.split(":")
    whole, _, fraction = seconds.partition(".")
    microseconds = int((fraction + "000000")[:6])
    return dt.timedelta(hours=int(hours), minutes=int(minutes), seconds=int(whole), microseconds=microseconds)


_PARSERS: dict[str, ValueParser] = {
    "boolean": _boolean,
    "smallint": int,
    "int": int,
    "bigint": int,
    "decimal": _decimal,
    "float": float,
    "double": float,
    "blob": _bytea,
    "date": dt.date.fromisoformat,
    "datetime": dt.datetime.fromisoformat,
    "timestamp": _instant,
    "time": _time,
}
