"""Source column types (the pipeline's vocabulary, see core/schema.py) -> ClickHouse types and value converters."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

from cdc_pipeline.core.schema import ColumnSchema
from cdc_pipeline.core.type_families import BINARY_TYPES, CHARACTER_TYPES, SPATIAL_TYPES, TEXT_BLOB_TYPES
from cdc_pipeline.mapping.sink_types import Converter, SinkColumn, TypeNotMappable, ValueNotMappable

_INTEGER_WIDTHS = {"tinyint": 8, "smallint": 16, "mediumint": 32, "int": 32, "integer": 32, "bigint": 64}
_TEXT = CHARACTER_TYPES | TEXT_BLOB_TYPES | {"set", "json"}
# DateTime64 and Date32 cover 1900-01-01 .. 2299-12-31; MySQL allows 1000 .. 9999.
_MIN_DATE, _MAX_DATE = dt.date(1900, 1, 1), dt.date(2299, 12, 31)


def _quote_enum_member(member: str) -> str:
    return "'" + member.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _check_date(value: dt.date, sink_type: str) -> None:
    day = value.date() if isinstance(value, dt.datetime) else value
    if not _MIN_DATE <= day <= _MAX_DATE:
        raise ValueNotMappable(
            f"{value.isoformat()} is outside {sink_type}'s range {_MIN_DATE}..{_MAX_DATE}; "
            "override the column's type to String to keep such values"
        )


def _datetime_converter(sink_type: str) -> Converter:
    utc = dt.UTC

    def convert(value: dt.datetime) -> dt.datetime:
        if not _MIN_DATE.year <= value.year <= _MAX_DATE.year:
            _check_date(value, sink_type)
        # Naive values are wall-clock times; pinning them to UTC stops the client from shifting them
        # by the local time zone.
        return value.replace(tzinfo=utc)

    return convert


def _date_converter(value: dt.date) -> dt.date:
    _check_date(value, "Date32")
    return value


def _bits_to_int(value: Any) -> int:
    return int(value, 2) if isinstance(value, str) else int(value)


def _uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def _set_to_text(value: Any) -> str:
    return value if isinstance(value, str) else ",".join(sorted(value))


def _decimal_converter(precision: int, scale: int) -> Converter:
    limit = Decimal(10) ** (precision - scale)

    def convert(value: Decimal) -> Decimal:
        if not value.is_finite():
            raise ValueNotMappable(f"{value} has no ClickHouse Decimal form")
        if value.copy_abs() >= limit:  # abs() would round to the context's 28 digits
            raise ValueNotMappable(f"{value} does not fit Decimal({precision}, {scale})")
        if value.as_tuple().exponent < -scale:  # type: ignore[operator]
            raise ValueNotMappable(
                f"{value} has more than the {scale} decimal places Decimal({precision}, {scale}) keeps"
            )
        return value

    return convert


# PostgreSQL numeric without precision: the widest ClickHouse decimal, half of it after the point.
_UNBOUNDED_DECIMAL = (76, 38)


def base_type(column: ColumnSchema) -> tuple[str, Converter | None]:
    """The non-nullable ClickHouse type for a source column, and its converter."""
    kind = column.data_type
    if column.masked_as_text or kind in _TEXT:
        return "String", (_set_to_text if kind == "set" else None)
    if kind in _INTEGER_WIDTHS:
        return f"{'UInt' if column.unsigned else 'Int'}{_INTEGER_WIDTHS[kind]}", None
    if kind in ("decimal", "numeric"):
        precision, scale = (column.precision, column.scale or 0) if column.precision else _UNBOUNDED_DECIMAL
        return f"Decimal({precision}, {scale})", _decimal_converter(precision, scale)
    if kind == "float":
        return "Float32", None
    if kind in ("double", "real"):
        return "Float64", None
    if kind in ("datetime", "timestamp"):
        sink_type = "DateTime64(6, 'UTC')"
        return sink_type, _datetime_converter(sink_type)
    if kind == "date":
        return "Date32", _date_converter
    if kind == "time":
        return "Time64(6)", None
    if kind == "year":
        return "UInt16", None
    if kind == "bit":
        return "UInt64", _bits_to_int
    if kind == "enum":
        members = ", ".join(f"{_quote_enum_member(m)} = {i}" for i, m in enumerate(column.enum_values, start=1))
        return (f"Enum8({members})" if len(column.enum_values) < 127 else f"Enum16({members})"), None
    if kind in BINARY_TYPES:
        return "String", None
    if kind == "boolean":
        return "Bool", None
    if kind == "uuid":
        return "UUID", _uuid
    if kind in SPATIAL_TYPES:
        raise TypeNotMappable(
            f"spatial type {kind} has no ClickHouse mapping; add a type_overrides entry (e.g. type: String, "
            "which stores the source's internal WKB bytes) to replicate it"
        )
    raise TypeNotMappable(f"type {column.column_type} has no ClickHouse mapping; add a type_overrides entry")


def clickhouse_column(column: ColumnSchema, is_key: bool, override: str | None) -> SinkColumn:
    if override is not None:
        return SinkColumn(column.name, override, _override_converter(override), overridden=True)
    sink_type, convert = base_type(column)
    if column.nullable and not is_key:
        sink_type = f"Nullable({sink_type})"
    return SinkColumn(column.name, sink_type, convert)


def _override_converter(sink_type: str) -> Converter | None:
    if "String" in sink_type:
        return _to_text
    return None


def _to_text(value: Any) -> str | bytes:
    if isinstance(value, (str, bytes)):
        return value
    if isinstance(value, frozenset):
        return ",".join(sorted(value))
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat(sep=" ") if isinstance(value, dt.datetime) else value.isoformat()
    return str(value)
