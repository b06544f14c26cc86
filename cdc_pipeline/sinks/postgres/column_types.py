"""Source column types (the pipeline's vocabulary, see core/schema.py) -> PostgreSQL types, converters to COPY text."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from cdc_pipeline.core.schema import ColumnSchema
from cdc_pipeline.core.type_families import BINARY_TYPES, SPATIAL_TYPES, TEXT_BLOB_TYPES
from cdc_pipeline.mapping.sink_types import Converter, SinkColumn, TypeNotMappable, ValueNotMappable

_TEXT = TEXT_BLOB_TYPES | {"enum", "set"}
# signed, unsigned
_INTEGER_TYPES = {
    "tinyint": ("smallint", "smallint"),
    "smallint": ("smallint", "integer"),
    "mediumint": ("integer", "integer"),
    "int": ("integer", "bigint"),
    "integer": ("integer", "bigint"),
    "bigint": ("bigint", "numeric(20)"),
}
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def copy_text(value: str) -> str:
    """Escape text for COPY's text format; PostgreSQL text cannot hold NUL at all."""
    if "\x00" in value:
        raise ValueNotMappable("text contains a NUL character, which PostgreSQL text cannot store")
    # Most texts hold nothing to escape: four substring scans cost 0.1 µs where a translate, which
    # looks every character up in the table, costs 0.6 µs (12 characters) to 2.2 µs (a row state's
    # 100); a cell table's row has ten such values.
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return value.translate(_COPY_ESCAPES)
    return value


def _text(value: Any) -> str:
    if isinstance(value, frozenset):
        return copy_text(",".join(sorted(value)))
    if isinstance(value, bytes):
        raise ValueNotMappable("binary value in a text column")
    return copy_text(str(value))


def _bytea(value: bytes) -> str:
    # COPY text format: the bytea hex form "\x..." with its backslash escaped.
    return "\\\\x" + value.hex()


def _plain(value: Any) -> str:
    return str(value)


def _boolean(value: Any) -> str:
    return "t" if value else "f"


def _datetime(value: dt.datetime) -> str:
    return value.isoformat(sep=" ")


def _timestamp_utc(value: dt.datetime) -> str:
    return value.isoformat(sep=" ") + "+00"


def _interval(value: dt.timedelta) -> str:
    # One microsecond count keeps the interval in its time part: '-838:59:59', not '-35 days +01:00:01'.
    micros = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    return f"{micros} microseconds"


def _bits(width: int) -> Converter:
    def convert(value: Any) -> str:
        number = int(value, 2) if isinstance(value, str) else int(value)
        return format(number, f"0{width}b")

    return convert


def _decimal(precision: int, scale: int) -> Converter:
    limit = Decimal(10) ** (precision - scale)

    def convert(value: Decimal) -> str:
        if not value.is_finite():
            return str(value)  # numeric(p,s) holds NaN and ±Infinity as they are
        if value.copy_abs() >= limit:  # abs() would round to the context's 28 digits
            raise ValueNotMappable(f"{value} does not fit numeric({precision},{scale})")
        return str(value)

    return convert


def base_type(column: ColumnSchema) -> tuple[str, Converter]:
    kind = column.data_type
    if column.masked_as_text:
        return "text", _text
    if kind in _INTEGER_TYPES:
        signed, unsigned = _INTEGER_TYPES[kind]
        return (unsigned if column.unsigned else signed), _plain
    if kind in ("decimal", "numeric"):
        if column.precision is None:
            return "numeric", _plain  # PostgreSQL's own unconstrained numeric (NaN included)
        precision, scale = column.precision, column.scale or 0
        return f"numeric({precision},{scale})", _decimal(precision, scale)
    if kind == "float":
        return "real", _plain
    if kind in ("double", "real"):
        return "double precision", _plain
    if kind == "datetime":
        return "timestamp(6)", _datetime
    if kind == "timestamp":
        return "timestamptz(6)", _timestamp_utc
    if kind == "date":
        return "date", _plain
    if kind == "time":
        return "interval", _interval
    if kind == "year":
        return "smallint", _plain
    if kind in ("char", "varchar"):
        return (f"varchar({column.char_length})" if column.char_length else "text"), _text
    if kind in _TEXT:
        return "text", _text
    if kind == "json":
        return "jsonb", _text
    if kind == "bit":
        width = column.precision or 1
        return f"bit({width})", _bits(width)
    if kind in BINARY_TYPES:
        return "bytea", _bytea
    if kind == "boolean":
        return "boolean", _boolean
    if kind == "uuid":
        return "uuid", _plain
    if kind in SPATIAL_TYPES:
        raise TypeNotMappable(
            f"spatial type {kind} has no PostgreSQL mapping; add a type_overrides entry (e.g. type: bytea, "
            "which stores the source's internal WKB bytes) to replicate it"
        )
    raise TypeNotMappable(f"type {column.column_type} has no PostgreSQL mapping; add a type_overrides entry")


def postgres_column(column: ColumnSchema, is_key: bool, override: str | None) -> SinkColumn:
    if override is not None:
        return SinkColumn(column.name, override, _override_converter(override), overridden=True)
    sink_type, convert = base_type(column)
    return SinkColumn(column.name, sink_type, convert)


def _override_converter(sink_type: str) -> Converter:
    if sink_type.lower() == "bytea":
        return lambda v: _bytea(v if isinstance(v, bytes) else str(v).encode())
    return lambda v: _text(v.isoformat(sep=" ") if isinstance(v, dt.datetime) else v)
