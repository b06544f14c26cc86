"""Row values <-> JSON keeping the Python types exact (Decimal, datetimes, bytes, NUL-holding text):
the DLQ payloads and the cell tables' merge state both use it."""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal
from typing import Any

from cdc_pipeline.core.cells import CollectionWrite, ElementWrite

_TAG = "$type"


def encode_value(value: Any) -> Any:
    # The common exact types first: a batch encodes every cell it merges.
    kind = type(value)
    if kind is int or value is None:
        return value
    if kind is str:
        return value if "\x00" not in value else {_TAG: "text_with_nul", "v": value.split("\x00")}
    if kind is Decimal:
        return {_TAG: "decimal", "v": str(value)}
    if kind is dt.datetime:
        return {_TAG: "datetime", "v": value.isoformat()}
    return _encode_other(value)


def _encode_other(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return {_TAG: "float", "v": str(value)}  # JSON has no NaN/Infinity (PostgreSQL jsonb refuses them)
    if isinstance(value, str) and "\x00" in value:
        # PostgreSQL's jsonb (and text) cannot hold U+0000, which MySQL and Cassandra text can: the
        # text is kept as the parts between its NULs.
        return {_TAG: "text_with_nul", "v": value.split("\x00")}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Decimal):
        return {_TAG: "decimal", "v": str(value)}
    if isinstance(value, dt.datetime):
        return {_TAG: "datetime", "v": value.isoformat()}
    if isinstance(value, dt.date):
        return {_TAG: "date", "v": value.isoformat()}
    if isinstance(value, dt.timedelta):
        return {_TAG: "timedelta", "v": [value.days, value.seconds, value.microseconds]}
    if isinstance(value, bytes):
        return {_TAG: "bytes", "v": value.hex()}
    if isinstance(value, (set, frozenset)):
        return {_TAG: "set", "v": [encode_value(member) for member in sorted(value)]}
    if isinstance(value, CollectionWrite):  # a Cassandra collection write: its elements are JSON values
        elements = [[e.path, e.value, e.timestamp, e.expires_at, e.deleted] for e in value.elements]
        return {_TAG: "collection", "v": [value.kind, value.deleted_at, elements]}
    raise TypeError(f"no DLQ encoding for {type(value).__name__}")


def decode_value(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    kind, raw = value[_TAG], value["v"]
    if kind == "decimal":
        return Decimal(raw)
    if kind == "datetime":
        return dt.datetime.fromisoformat(raw)
    if kind == "date":
        return dt.date.fromisoformat(raw)
    if kind == "timedelta":
        days, seconds, micros = raw
        return dt.timedelta(days=days, seconds=seconds, microseconds=micros)
    if kind == "bytes":
        return bytes.fromhex(raw)
    if kind == "set":
        return frozenset(decode_value(member) for member in raw)
    if kind == "text_with_nul":
        return "\x00".join(raw)
    if kind == "float":
        return float(raw)
    if kind == "collection":
        collection_kind, deleted_at, elements = raw
        return CollectionWrite(collection_kind, deleted_at, tuple(ElementWrite(*e) for e in elements))
    raise ValueError(f"unknown DLQ value tag {kind!r}")


def encode_row(values: dict[str, Any]) -> dict[str, Any]:
    return {name: encode_value(value) for name, value in values.items()}


def decode_row(payload: dict[str, Any]) -> dict[str, Any]:
    return {name: decode_value(value) for name, value in payload.items()}
