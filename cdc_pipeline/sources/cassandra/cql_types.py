"""Cassandra column types: the CQL type text parsed, described in the pipeline's type vocabulary, and
the values the segment reader prints (or the driver returns) turned into the Python values sinks expect.

The vocabulary (the sinks depend on it exactly):
text/ascii/varchar -> "text" (str); tinyint/smallint/int/bigint -> same name (int); varint -> "decimal"
scale 0, decimal -> "decimal" (Decimal); float/double (float); boolean; uuid/timeuuid -> "uuid"
(lower-case str); timestamp -> "timestamp" precision 3 (naive UTC datetime); date (datetime.date);
time/duration/inet -> "varchar" (str); blob (bytes); frozen collections, tuples, frozen UDTs and vectors
-> "json" (JSON text); non-frozen list/set/map/UDT -> "json" with `collection` set, the value a
CollectionWrite; counter -> "counter".
"""

from __future__ import annotations

import datetime
import json
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from cdc_pipeline.core.schema import ColumnSchema

_TOKEN = re.compile(r'\s*("(?:[^"]|"")*"|[A-Za-z0-9_.\-]+|[<>,])')
_EPOCH = datetime.datetime(1970, 1, 1)

COLLECTIONS = ("list", "set", "map")
_TEXT = ("text", "ascii", "varchar")
_INTEGERS = ("tinyint", "smallint", "int", "bigint")
_AS_VARCHAR = ("time", "duration", "inet")
_SCALARS = frozenset(
    (*_TEXT, *_INTEGERS, *_AS_VARCHAR, "varint", "decimal", "float", "double", "boolean", "uuid", "timeuuid",
     "timestamp", "date", "blob", "counter")
)  # fmt: skip
_STRUCTURED = frozenset((*COLLECTIONS, "tuple", "vector", "frozen"))


class CqlTypeError(ValueError):
    """A CQL type text the pipeline cannot describe."""


@dataclass(frozen=True)
class CqlType:
    """A parsed CQL type. `name` is lower-case for built-in types, the UDT's name otherwise."""

    name: str
    parameters: tuple[CqlType, ...] = ()
    frozen: bool = False
    dimension: int | None = None  # vector<float, 3>

    @property
    def is_udt(self) -> bool:
        return self.name not in _SCALARS and self.name not in _STRUCTURED


def parse_cql_type(text: str) -> CqlType:
    tokens = [match.group(1) for match in _TOKEN.finditer(text)]
    parsed, rest = _parse(tokens, text)
    if rest:
        raise CqlTypeError(f"CQL type {text!r}: unexpected {' '.join(rest)!r} at the end")
    return parsed


def _parse(tokens: list[str], text: str) -> tuple[CqlType, list[str]]:
    if not tokens or tokens[0] in "<>,":
        raise CqlTypeError(f"CQL type {text!r} is malformed")
    head, rest = tokens[0], tokens[1:]
    name = head[1:-1].replace('""', '"') if head.startswith('"') else head.lower()
    if name not in _SCALARS and name not in _STRUCTURED:
        name = head[1:-1].replace('""', '"') if head.startswith('"') else head
        name = name.rsplit(".", 1)[-1]  # a UDT may be written keyspace-qualified
    parameters: list[CqlType] = []
    dimension: int | None = None
    if rest and rest[0] == "<":
        rest = rest[1:]
        while True:
            if rest and rest[0].isdigit():
                dimension, rest = int(rest[0]), rest[1:]
            else:
                parameter, rest = _parse(rest, text)
                parameters.append(parameter)
            if not rest:
                raise CqlTypeError(f"CQL type {text!r}: missing '>'")
            separator, rest = rest[0], rest[1:]
            if separator == ">":
                break
            if separator != ",":
                raise CqlTypeError(f"CQL type {text!r}: unexpected {separator!r}")
    if name == "frozen":
        if len(parameters) != 1:
            raise CqlTypeError(f"CQL type {text!r}: frozen<> takes one type")
        inner = parameters[0]
        return CqlType(inner.name, inner.parameters, True, inner.dimension), rest
    return CqlType(name, tuple(parameters), False, dimension), rest


@dataclass(frozen=True)
class UdtFields:
    """The field names and types of one keyspace's user-defined types, by type name."""

    fields: Mapping[str, tuple[tuple[str, CqlType], ...]]

    def of(self, name: str) -> tuple[tuple[str, CqlType], ...]:
        return self.fields.get(name, ())


def column_schema(name: str, cql_type_text: str, nullable: bool) -> ColumnSchema:
    """The column in the pipeline's vocabulary (see the module docstring)."""
    cql = parse_cql_type(cql_type_text)

    def described(data_type: str, scale: int | None = None, precision: int | None = None) -> ColumnSchema:
        return ColumnSchema(
            name, data_type, cql_type_text, nullable, precision=precision, scale=scale,
            datetime_precision=3 if data_type == "timestamp" else None,
            collection=("udt" if cql.is_udt else cql.name) if data_type == "json" and is_collection else None,
        )  # fmt: skip

    is_collection = not cql.frozen and (cql.name in COLLECTIONS or cql.is_udt)
    if cql.name in _TEXT:
        return described("text")
    if cql.name == "varint":
        return described("decimal", scale=0)
    if cql.name in (*_INTEGERS, "decimal", "float", "double", "boolean", "date", "blob", "counter", "timestamp"):
        return described(cql.name)
    if cql.name in ("uuid", "timeuuid"):
        return described("uuid")
    if cql.name in _AS_VARCHAR:
        return described("varchar")
    return described("json")


ValueParser = Callable[[Any], Any]


def timestamp_micros(value: datetime.datetime) -> int:
    """A CQL timestamp the driver returned (naive, in UTC) in microseconds, Cassandra's write-time unit."""
    aware = value if value.tzinfo is not None else value.replace(tzinfo=datetime.UTC)
    return int(aware.timestamp() * 1000) * 1000


def _timestamp(milliseconds: Any) -> datetime.datetime:
    try:
        return _EPOCH + datetime.timedelta(milliseconds=int(milliseconds))
    except OverflowError:
        raise ValueError("timestamp outside Python's datetime range (years 1-9999)") from None


def _date(text: Any) -> datetime.date:
    try:
        return datetime.date.fromisoformat(str(text))
    except ValueError:
        raise ValueError("date outside Python's date range (years 1-9999)") from None


_SCALAR_PARSERS: dict[str, ValueParser] = {
    **{name: str for name in (*_TEXT, *_AS_VARCHAR)},
    **{name: int for name in (*_INTEGERS, "counter")},
    "varint": lambda value: Decimal(str(value)),
    "decimal": lambda value: Decimal(str(value)),
    # The reader prints NaN and the infinities as the strings float() reads.
    "float": float,
    "double": float,
    "boolean": bool,
    "uuid": lambda value: str(value).lower(),
    "timeuuid": lambda value: str(value).lower(),
    "timestamp": _timestamp,
    "date": _date,
    "blob": lambda value: bytes.fromhex(str(value)),
}


def value_parser(cql_type_text: str, udts: UdtFields) -> ValueParser:
    """Reader JSON value -> the column's Python value (scalar and frozen columns, and key columns)."""
    cql = parse_cql_type(cql_type_text)
    scalar = _SCALAR_PARSERS.get(cql.name)
    if scalar is not None:
        return scalar
    return lambda value: json.dumps(json_shape(value, cql, udts), separators=(",", ":"))


def json_shape(value: Any, cql: CqlType, udts: UdtFields) -> Any:
    """The reader's JSON for a structured value, with maps as objects when every key is a string
    (the reader prints every map as [key, value] pairs because keys need not be strings)."""
    if value is None:
        return None
    if cql.name == "map" and len(cql.parameters) == 2:
        key_type, value_type = cql.parameters
        pairs = [(json_shape(k, key_type, udts), json_shape(v, value_type, udts)) for k, v in value]
        if all(isinstance(k, str) for k, _ in pairs):
            return {k: v for k, v in pairs}
        return [[k, v] for k, v in pairs]
    if cql.name in ("list", "set", "vector") and cql.parameters:
        return [json_shape(item, cql.parameters[0], udts) for item in value]
    if cql.name == "tuple":
        return [json_shape(item, item_type, udts) for item, item_type in zip(value, cql.parameters, strict=False)]
    if cql.is_udt and isinstance(value, dict):
        fields = dict(udts.of(cql.name))
        return {k: json_shape(v, fields[k], udts) if k in fields else v for k, v in value.items()}
    return value


def element_path(path: Any) -> Any:
    """A collection element's path as CollectionWrite holds it: scalars as the reader gives them,
    structured ones (a frozen set element, a tuple map key) as JSON text."""
    return json.dumps(path, separators=(",", ":")) if isinstance(path, (list, dict)) else path


_EMPTY_UDTS = UdtFields({})
# Java's Double.toString of the values JSON has no number for: the reader prints these strings.
_NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def reader_json(value: Any, cql: CqlType, udts: UdtFields = _EMPTY_UDTS) -> Any:
    """A value from the driver in the segment reader's JSON form (CqlValues.java): what the reader
    prints for a cell, a collection element or its path, so driver reads and streamed changes agree."""
    if value is None:
        return None
    if cql.name == "map":
        return [[reader_json(k, cql.parameters[0], udts), reader_json(v, cql.parameters[1], udts)]
                for k, v in value.items()]  # fmt: skip
    if cql.name in ("list", "set", "vector"):
        return [reader_json(item, cql.parameters[0], udts) for item in value]
    if cql.name == "tuple":
        return [reader_json(item, item_type, udts) for item, item_type in zip(value, cql.parameters, strict=False)]
    if cql.is_udt:
        # A field the keyspace's types do not describe (yet) keeps the untyped conversion below.
        types = dict(udts.of(cql.name))
        return {
            name: reader_json(getattr(value, name, None), types.get(name, CqlType("blob")), udts)
            for name in value._fields
        }
    if isinstance(value, float) and str(value) in _NON_FINITE:
        return _NON_FINITE[str(value)]
    if isinstance(value, (uuid.UUID, Decimal)) or cql.name in ("time", "duration", "inet", "varint", "date"):
        return str(value)
    if isinstance(value, datetime.datetime):
        return int((value - _EPOCH) / datetime.timedelta(milliseconds=1))
    if isinstance(value, bytes):
        return value.hex()
    return value


def driver_value_parser(cql_type_text: str, udts: UdtFields) -> ValueParser:
    """A value the driver returned -> the same Python value a replicated change carries."""
    cql = parse_cql_type(cql_type_text)
    if cql.name in ("uuid", "timeuuid"):
        return lambda value: str(value).lower()
    if cql.name == "date":
        return lambda value: _date(str(value))
    if cql.name in _AS_VARCHAR:
        return str
    if cql.name in ("varint", "decimal"):
        return lambda value: Decimal(value)
    if cql.name in _SCALARS:
        return lambda value: value
    reader_form = value_parser(cql_type_text, udts)
    return lambda value: reader_form(reader_json(value, cql, udts))
