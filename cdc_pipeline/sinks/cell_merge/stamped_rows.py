"""A cell table's change as one row of stamped cells, for a sink engine that merges rows with max().

Each write becomes a stamp `(timestamp, is_tombstone, expires_at)` whose tuple order is Cassandra's
precedence (`Stamp.beats` in state.py): the newer write; on a tie a tombstone; then an expiring
write over a non-expiring one (`NO_TIME`, the smallest Int64, stands for "never expires"); then the
later expiry. A scalar column holds `(*stamp, value)`: the greatest tuple is the cell Cassandra
shows. Equal stamps with different values (two writers in one microsecond) fall to the engine's
order of the values; any fixed order is commutative, which is all replicas and replays need.

A non-frozen collection or UDT holds a map: element order key -> `(*stamp, element)`, merged key
by key with the greater tuple. The key sorts the elements as Cassandra shows them (a list by its
timeuuids' times, a set or map by its type's order), so the sink renders a collection from its
live elements in key order: ClickHouse joins JSON text fragments, PostgreSQL aggregates JSON values
(`ElementForm`). The collection's own tombstone (a whole-value write or a column delete) is the
element with the empty key.

Nothing here looks at what the sink holds: shadowing is left to the reader. A row's `_deleted_at`
(row, partition or covering range deletion, merged with max) hides every write at or before it; a
collection's tombstone hides its older elements. That is what lets a batch be written without
reading the stored rows first, and a replayed or duplicated change land once in effect.
"""

from __future__ import annotations

import json
import struct
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from cdc_pipeline.core.cells import CollectionWrite
from cdc_pipeline.core.changes import RowChange
from cdc_pipeline.core.schema import TableSchema
from cdc_pipeline.core.value_codec import encode_value
from cdc_pipeline.sinks.cell_merge.state import CollectionState, RowState, canonical_text

NO_TIME = -(2**63)  # no write, no expiry, no deletion: below every Cassandra timestamp
TOMBSTONE_KEY = ""  # a collection's whole-value tombstone, among its elements (sorts first)
UNWRITTEN = (NO_TIME, 0, NO_TIME, None)  # a scalar column the change did not write
_NO_ELEMENTS: tuple[list[str], list[Any]] = ([], [])  # a collection it did not write (never mutated)
_NO_LIVENESS = (NO_TIME, NO_TIME)

# The text a collection shows is JSON, as the state merge renders it (state.render_collection).
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False)


def key_text(values: list[Any]) -> str:
    """A key's canonical text, as `_key` and `_partition` store it (rows are found by it: it must
    never change). Keys of integers and text, the usual ones, take orjson, whose text for them is
    the same and ten times as fast to make."""
    encoded = [encode_value(value) for value in values]
    if all(type(value) is int or type(value) is str for value in encoded):
        try:
            return orjson.dumps(encoded).decode()
        except orjson.JSONEncodeError:
            pass  # an integer beyond 64 bits, text with a lone surrogate: the standard encoder
    return canonical_text(encoded)


def _int_order(number: int) -> str:
    """Hex text that sorts like the integers, any size: sign, digit count, digits (negatives inverted)."""
    digits = format(abs(number), "x")
    if number >= 0:
        return "1" + format(len(digits), "04x") + digits
    inverted = digits.translate(_INVERT_HEX)
    return "0" + format(0xFFFF - len(digits), "04x") + inverted


_INVERT_HEX = str.maketrans("0123456789abcdef", "fedcba9876543210")


def _float_order(number: float) -> str:
    """Hex text that sorts like the floats (IEEE 754 bits, negatives inverted)."""
    (bits,) = struct.unpack(">Q", struct.pack(">d", number))
    bits = bits ^ 0xFFFF_FFFF_FFFF_FFFF if bits >> 63 else bits | (1 << 63)
    return format(bits, "016x")


def element_order_key(kind: str, path: Any) -> str:
    """A text whose byte order is the order Cassandra shows the collection's elements in: a list's
    by its timeuuid paths' times, anything else by value (numbers numerically, text by code point).
    It is also the element's identity: distinct paths never share a key."""
    if kind == "list":
        try:
            parsed = uuid.UUID(str(path))
        except ValueError:
            return format(0, "015x") + canonical_text(path)
        return format(parsed.time if parsed.version == 1 else 0, "015x") + str(parsed)
    if isinstance(path, bool):
        return "0" + ("1" if path else "0")
    if isinstance(path, int):
        return "1" + _int_order(path)
    if isinstance(path, float):
        return "2" + _float_order(path)
    if isinstance(path, str) and "\x00" not in path:  # (a NUL has no place in a PostgreSQL jsonb key)
        return "3" + path
    return "4" + canonical_text(path)


def _json(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()  # a tenth of the standard encoder's time
    except orjson.JSONEncodeError:
        return _JSON.encode(value)  # integers beyond 64 bits, lone surrogates, non-text keys


def element_fragment(kind: str, path: Any, value: Any) -> str:
    """The element's part of the collection's JSON text (ClickHouse joins the live fragments)."""
    if kind == "list":
        return _json(value)
    if kind == "set":
        return _json(path)
    name = path if isinstance(path, str) else canonical_text(path)
    return _json(name) + ":" + _json(value)


def element_json(kind: str, path: Any, value: Any) -> Any:
    """The element as a JSON value (PostgreSQL aggregates the live ones into jsonb): a list's value,
    a set's element, a map's or UDT's `[name, value]`."""
    if kind == "list":
        return value
    if kind == "set":
        return path
    return [path if isinstance(path, str) else canonical_text(path), value]


@dataclass(frozen=True)
class ElementForm:
    """How a sink's collection elements show: `shown(kind, path, value)`, and what a tombstone holds."""

    shown: Callable[[str, Any, Any], Any]
    tombstone: Any


FRAGMENTS = ElementForm(element_fragment, "")
JSON_VALUES = ElementForm(element_json, None)


def collection_cell(
    kind: str, write: CollectionWrite | None, dropped_at: int | None, form: ElementForm = FRAGMENTS
) -> tuple[list[str], list[tuple[int, int, int, Any]]]:
    """(order keys, stamped elements) of a collection write; elements a column drop removed are left out."""
    keys: list[str] = []
    stamped: list[tuple[int, int, int, Any]] = []
    if write is None:
        return keys, stamped
    if write.deleted_at is not None and (dropped_at is None or write.deleted_at > dropped_at):
        keys.append(TOMBSTONE_KEY)
        stamped.append((write.deleted_at, 1, NO_TIME, form.tombstone))
    for e in write.elements:
        if dropped_at is not None and e.timestamp <= dropped_at:
            continue
        keys.append(element_order_key(kind, e.path))
        stamped.append(_element_stamp(kind, form, e.path, e.value, e.timestamp, e.expires_at, e.deleted))
    return keys, stamped


def _element_stamp(
    kind: str, form: ElementForm, path: Any, value: Any, timestamp: int, expires_at: int | None, deleted: bool
) -> tuple[int, int, int, Any]:
    expires = NO_TIME if expires_at is None else expires_at
    if deleted:
        return (timestamp, 1, expires, form.tombstone)
    return (timestamp, 0, expires, form.shown(kind, path, value))


# -- the earlier form's row states (sinks/cell_merge/state.py), read when its tables are converted --


def stamps_of_state(state: RowState) -> tuple[dict[str, tuple[int, int, int]], tuple[int, int], int]:
    """(each kept scalar cell's stamp, the liveness stamp, `_deleted_at`) of a row state."""
    cells = {
        name: (stamp.timestamp, 1 if stamp.deleted else 0, NO_TIME if stamp.expires_at is None else stamp.expires_at)
        for name, stamp in state.cells.items()
    }
    liveness = _NO_LIVENESS
    if state.liveness is not None:
        expires = NO_TIME if state.liveness.expires_at is None else state.liveness.expires_at
        liveness = (state.liveness.timestamp, expires)
    return cells, liveness, NO_TIME if state.deletion is None else state.deletion


def collection_of_state(
    kind: str, collection: CollectionState | None, form: ElementForm = FRAGMENTS
) -> tuple[list[str], list[tuple[int, int, int, Any]]]:
    """(order keys, stamped elements) of a collection as a row state kept it."""
    keys: list[str] = []
    stamped: list[tuple[int, int, int, Any]] = []
    if collection is None:
        return keys, stamped
    if collection.deleted_at is not None:
        keys.append(TOMBSTONE_KEY)
        stamped.append((collection.deleted_at, 1, NO_TIME, form.tombstone))
    for path, stamp in collection.elements.values():
        keys.append(element_order_key(kind, path))
        stamped.append(_element_stamp(kind, form, path, stamp.value, stamp.timestamp, stamp.expires_at, stamp.deleted))
    return keys, stamped


class StampedRowBuilder:
    """Builds the stamped rows of one cell table's changes, columns in this order:

    the key columns (converted), each non-key column (a scalar's `(*stamp, value)` or a collection's
    `(order keys, stamped elements)`), then `_deleted_at`, `_liveness` `(timestamp, expires_at)`,
    `_version`, `_key` and `_partition` (the canonical texts rows are found by).
    """

    def __init__(self, schema: TableSchema, mapped_columns: Sequence[str], form: ElementForm = FRAGMENTS) -> None:
        self.schema = schema
        self._form = form
        self.key_columns = schema.key_columns
        self.value_columns = tuple(name for name in schema.column_names if name not in schema.key_columns)
        self._collections: dict[str, str] = {c.name: c.collection for c in schema.columns if c.collection is not None}
        dropped = dict(schema.dropped_columns)
        # Where the mapper's converted row holds each column (None: a masked-as-null column's
        # placeholder, never shown), looked up once for every row.
        index = {name: position for position, name in enumerate(mapped_columns)}
        self._key_index = [index[name] for name in self.key_columns]
        self._scalars = [
            (name, None if schema.column(name).masked_as_null else index[name], dropped.get(name))
            for name in self.value_columns
            if name not in self._collections
        ]
        self._collection_columns = [(name, kind, dropped.get(name)) for name, kind in self._collections.items()]
        # The scalars' and collections' places in a row, after the key columns.
        order = {name: place for place, name in enumerate(self.value_columns, start=len(self.key_columns))}
        # (column, place in a row, collection kind or None) of every non-key column.
        self.value_places = [(name, order[name], self._collections.get(name)) for name in self.value_columns]
        self._scalar_places = [order[name] for name, _, _ in self._scalars]
        self._collection_places = [order[name] for name, _, _ in self._collection_columns]
        self._width = len(self.key_columns) + len(self.value_columns)
        self._partition_length = schema.partition_key_length or 0

    @property
    def bookkeeping_place(self) -> int:
        """Where `_deleted_at` is in a row; `_liveness`, `_version`, `_key`, `_partition` follow."""
        return self._width

    @property
    def key_place(self) -> int:
        return self._width + 3

    def merged(self, first: list[Any], second: list[Any]) -> list[Any]:
        """Two rows of one key as one, merged as the engine merges them (the greater of each)."""
        row = list(first)
        for place in self._scalar_places:
            row[place] = _greater_cell(first[place], second[place])
        for place in self._collection_places:
            row[place] = _merged_elements(first[place], second[place])
        at = self._width
        for place in (at, at + 1, at + 2):  # _deleted_at, _liveness, _version
            row[place] = max(first[place], second[place])
        return row

    def partition_text(self, values: dict[str, Any]) -> str:
        """`_partition` of a partition-level change (its values hold the partition key)."""
        return key_text([values[name] for name in self.key_columns[: self._partition_length]])

    def key_texts(self, change: RowChange) -> tuple[str, str]:
        """(`_key`, `_partition`) of a row-level change."""
        key_values = [change.values[name] for name in self.key_columns]
        return key_text(key_values), key_text(key_values[: self._partition_length])

    def row(self, change: RowChange, converted: list[Any], deleted_at: int, key: str, partition: str) -> list[Any]:
        """The change's stamped row; `deleted_at`: the newest deletion covering it (NO_TIME: none)."""
        cells = change.cells
        assert cells is not None
        values = change.values
        version = change.version
        row: list[Any] = [None] * self._width
        for place, key_position in enumerate(self._key_index):
            row[place] = converted[key_position]
        written = cells.cells
        for place, (name, position, dropped_at) in zip(self._scalar_places, self._scalars, strict=True):
            cell = written.get(name)
            if cell is None or (dropped_at is not None and cell.timestamp <= dropped_at):
                row[place] = UNWRITTEN
                continue
            timestamp = cell.timestamp
            expires = NO_TIME if cell.expires_at is None else cell.expires_at
            shown = None if position is None else converted[position]
            row[place] = (timestamp, 1 if values.get(name) is None else 0, expires, shown)
            if timestamp > version:
                version = timestamp
        for place, (name, kind, dropped_at) in zip(self._collection_places, self._collection_columns, strict=True):
            write = values.get(name)
            if isinstance(write, CollectionWrite):
                row[place] = collection_cell(kind, write, dropped_at, self._form)
                version = max(version, write.latest_timestamp)
            else:
                row[place] = _NO_ELEMENTS
        if cells.row_deletion is not None and cells.row_deletion > deleted_at:
            deleted_at = cells.row_deletion
        liveness = cells.liveness
        if liveness is None:
            stamped_liveness = _NO_LIVENESS
        else:
            stamped_liveness = (liveness.timestamp, NO_TIME if liveness.expires_at is None else liveness.expires_at)
            if liveness.timestamp > version:
                version = liveness.timestamp
        row.extend((deleted_at, stamped_liveness, max(version, deleted_at, 0), key, partition))
        return row

    def deletion_row(self, key_values: list[Any], key: str, partition: str, deleted_at: int) -> list[Any]:
        """A stored row's shadowing by a partition or range deletion: its key, the deletion, nothing else."""
        row: list[Any] = list(key_values)
        for name in self.value_columns:
            row.append(_NO_ELEMENTS if name in self._collections else UNWRITTEN)
        row.extend((deleted_at, _NO_LIVENESS, max(deleted_at, 0), key, partition))
        return row


def _greater_cell(first: tuple[Any, ...], second: tuple[Any, ...]) -> tuple[Any, ...]:
    if first[:3] != second[:3]:
        return first if first[:3] > second[:3] else second
    # One stamp, two values (two writers in one microsecond): the greater value, as the engines pick.
    if first[3] is None or second[3] is None:
        return second if first[3] is None else first
    try:
        return second if second[3] > first[3] else first
    except TypeError:
        return first


def _merged_elements(
    first: tuple[list[str], list[tuple[int, int, int, Any]]], second: tuple[list[str], list[tuple[int, int, int, Any]]]
) -> tuple[list[str], list[tuple[int, int, int, Any]]]:
    elements = dict(zip(first[0], first[1], strict=True))
    for key, stamped in zip(second[0], second[1], strict=True):
        current = elements.get(key)
        if current is None or _greater_cell(current, stamped) is stamped:
            elements[key] = stamped
    return list(elements), list(elements.values())
