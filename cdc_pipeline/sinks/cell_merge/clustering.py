"""Whether a range deletion covers a row: clustering keys compared in the table's clustering order.

Cassandra orders clustering values by their type's comparator (numbers numerically, text by code
point, timeuuids by their embedded time), each column reversed when it is declared DESC; a range's
bounds are prefixes of the clustering key, compared on their own length only.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from cdc_pipeline.core.cells import ClusteringBound, RangeDeletion
from cdc_pipeline.core.schema import ColumnSchema


class UncomparableClustering(ValueError):
    """A clustering value that cannot be ordered against a range bound (masked, or of another type)."""


def _timeuuid_order(value: Any) -> tuple[int, str]:
    parsed = uuid.UUID(str(value))
    # Cassandra orders timeuuids by time first; the text breaks ties deterministically.
    return (parsed.time if parsed.version == 1 else 0, str(parsed))


def _order_key(column: ColumnSchema, value: Any) -> Any:
    if column.masked_as_text:
        raise UncomparableClustering(f"column {column.name} is masked: its ranges cannot be evaluated")
    if column.data_type == "uuid" and column.column_type.lower().startswith("timeuuid"):
        return _timeuuid_order(value)
    return value


def compare_values(column: ColumnSchema, left: Any, right: Any) -> int:
    """-1, 0 or 1: `left` against `right` in the column's clustering order (DESC reverses it)."""
    a, b = _order_key(column, left), _order_key(column, right)
    try:
        result = (a > b) - (a < b)
    except TypeError as error:
        raise UncomparableClustering(
            f"column {column.name}: cannot order {type(left).__name__} against {type(right).__name__}"
        ) from error
    return -result if column.descending else result


def compare_prefix(columns: Sequence[ColumnSchema], key: Sequence[Any], bound: Sequence[Any]) -> int:
    """`key` against a bound prefix, on the bound's length (equal: the key starts with the prefix)."""
    for column, mine, theirs in zip(columns, key, bound, strict=False):
        result = compare_values(column, mine, theirs)
        if result:
            return result
    return 0


def _after_start(columns: Sequence[ColumnSchema], key: Sequence[Any], start: ClusteringBound) -> bool:
    if not start.values:
        return True
    result = compare_prefix(columns, key, start.values)
    return result > 0 or (result == 0 and start.inclusive)


def _before_end(columns: Sequence[ColumnSchema], key: Sequence[Any], end: ClusteringBound) -> bool:
    if not end.values:
        return True
    result = compare_prefix(columns, key, end.values)
    return result < 0 or (result == 0 and end.inclusive)


def range_covers(columns: Sequence[ColumnSchema], deletion: RangeDeletion, clustering_key: Sequence[Any]) -> bool:
    """Does `deletion` (bounds in clustering order) include the row with `clustering_key`?"""
    return _after_start(columns, clustering_key, deletion.start) and _before_end(columns, clustering_key, deletion.end)
