"""One row of a cell table as Cassandra reconciles it: every cell's write time, merged change by change.

The sinks stored this state as JSON per row (`_cells`) until they learned to merge stamped cells in
their engines (stamped_rows.py); it remains the reference model of the reconciliation (its tests
state Cassandra's rules) and reads the rows of tables of that earlier form when they are converted.

The state keeps, per row, the winning write of every scalar cell and every collection element, the
primary-key liveness and the newest deletion covering the row (row, partition or range deletion:
each removes everything written at or before its time, so only the newest matters). Merging is
commutative and idempotent: any order of the same changes, applied any number of times, gives the
same state, which is what makes replays and replica duplicates harmless.

Reconciliation follows Cassandra's: the newest timestamp wins; on a tie a deletion wins, then an
expiring write over a non-expiring one, then the later expiry, then the greater value (compared on
a canonical text, so the choice does not depend on arrival order).

Whatever a deletion shadows is dropped from the state at once: a later write it would have beaten
is shadowed by the same deletion, so dropping it changes no outcome and keeps states canonical.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

from cdc_pipeline.core.cells import CellWrite, CollectionWrite, ElementWrite
from cdc_pipeline.core.changes import RowChange
from cdc_pipeline.core.value_codec import decode_value, encode_value

# One encoder for every call: json.dumps with options builds a new encoder each time, which was a
# tenth of the write step's time for the many small texts a batch needs.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, check_circular=False)


def canonical_text(value: Any) -> str:
    """A deterministic text for a JSON-compatible value: ties and dictionary keys use it. Row and
    partition keys in the sinks are such texts, so its output never changes between versions."""
    return _CANONICAL.encode(value)


def state_text(value: Any) -> str:
    """The stored text of a row state (or its expiry): deterministic, sorted keys, a third of
    canonical_text's time. Only ever compared with texts this function wrote (an older version's text
    differs at most in form, and the row is then written once more, unchanged). orjson refuses
    integers beyond 64 bits instead of rounding them; a state holds none (Cassandra's varint and
    decimal values are payload-encoded as text)."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


_NOT_KEPT = object()


# Not frozen: one is made per cell merged, and a frozen dataclass's __init__ costs 2.7 times as much.
@dataclass(slots=True)
class Stamp:
    """A write (or tombstone) as the state keeps it. `value` is payload-encoded (exact types)."""

    timestamp: int
    expires_at: int | None
    value: Any = None
    deleted: bool = False
    # The value as the change carried it, when this process merged it: spares decoding `value` again.
    shown: Any = field(default=_NOT_KEPT, compare=False)

    def shown_value(self) -> Any:
        if self.deleted:
            return None
        return decode_value(self.value) if self.shown is _NOT_KEPT else self.shown

    def beats(self, other: Stamp) -> bool:
        """Does this write win against `other` (Cassandra's reconciliation)?"""
        if self.timestamp != other.timestamp:
            return self.timestamp > other.timestamp
        if self.deleted != other.deleted:
            return self.deleted
        if (self.expires_at is None) != (other.expires_at is None):
            return self.expires_at is not None
        if self.expires_at is not None and other.expires_at is not None and self.expires_at != other.expires_at:
            return self.expires_at > other.expires_at
        return canonical_text(self.value) > canonical_text(other.value)

    def to_json(self) -> list[Any]:
        return [self.timestamp, self.expires_at, self.value, self.deleted]

    @classmethod
    def from_json(cls, raw: list[Any]) -> Stamp:
        return cls(raw[0], raw[1], raw[2], raw[3])


def _winner(current: Stamp | None, new: Stamp) -> Stamp:
    return new if current is None or new.beats(current) else current


@dataclass
class CollectionState:
    """A non-frozen collection or UDT: its elements by canonical path, and its newest whole-value tombstone."""

    kind: str
    deleted_at: int | None = None
    # canonical text of the path -> (path, winning write); the path is JSON-compatible
    elements: dict[str, tuple[Any, Stamp]] = field(default_factory=dict)

    def merge(self, write: CollectionWrite) -> None:
        if write.deleted_at is not None:
            self.deleted_at = max(self.deleted_at or write.deleted_at, write.deleted_at)
        for element in write.elements:
            self._merge_element(element)

    def _merge_element(self, element: ElementWrite) -> None:
        key = canonical_text(element.path)
        new = Stamp(element.timestamp, element.expires_at, None if element.deleted else element.value, element.deleted)
        current = self.elements.get(key)
        self.elements[key] = (element.path, _winner(current[1] if current else None, new))

    def prune(self, shadow: int | None) -> None:
        """Drop what `shadow` (the row's deletion) or the collection's own tombstone removed."""
        horizon = max(shadow or 0, self.deleted_at or 0)
        if shadow is not None and self.deleted_at is not None and self.deleted_at <= shadow:
            self.deleted_at = None
        self.elements = {k: v for k, v in self.elements.items() if v[1].timestamp > horizon}

    def live_elements(self) -> list[tuple[Any, Stamp]]:
        return [element for element in self.elements.values() if not element[1].deleted]


def _sort_key(value: Any) -> tuple[int, Any]:
    # Numbers numerically, text by code point, anything else by its canonical text; a fixed rank per
    # kind keeps mixed kinds sortable.
    if isinstance(value, bool):
        return (0, int(value))
    if isinstance(value, (int, float)):
        return (1, value)
    if isinstance(value, str):
        return (2, value)
    return (3, canonical_text(value))


def _list_order(path: Any) -> tuple[int, str]:
    # A list element's path is a timeuuid: the list is in the order of the uuids' times.
    try:
        parsed = uuid.UUID(str(path))
    except ValueError:
        return (0, canonical_text(path))
    return (parsed.time if parsed.version == 1 else 0, str(parsed))


def render_collection(kind: str, elements: list[tuple[Any, Stamp]]) -> str | None:
    """The JSON text a collection shows (None when it holds nothing: an empty collection is null)."""
    if not elements:
        return None
    rendered: Any
    if kind == "list":
        rendered = [stamp.value for _, stamp in sorted(elements, key=lambda e: _list_order(e[0]))]
    elif kind == "set":
        rendered = sorted((path for path, _ in elements), key=_sort_key)
    else:  # map, udt: JSON object keys are text; non-text map keys show as their JSON text
        ordered = sorted(elements, key=lambda e: _sort_key(e[0]))
        rendered = {(path if isinstance(path, str) else canonical_text(path)): stamp.value for path, stamp in ordered}
    return json.dumps(rendered, ensure_ascii=False, separators=(",", ":"))


@dataclass
class RowState:
    """The merged state of one row; JSON-serialisable with `to_json` / `from_json`."""

    key: list[Any]  # payload-encoded key values, in key order
    version: int = 0  # the newest timestamp seen, deletions included
    liveness: Stamp | None = None
    deletion: int | None = None  # the newest row/partition/range deletion covering the row
    cells: dict[str, Stamp] = field(default_factory=dict)
    collections: dict[str, CollectionState] = field(default_factory=dict)

    @classmethod
    def for_key(cls, key_values: list[Any]) -> RowState:
        return cls([encode_value(value) for value in key_values])

    @property
    def key_values(self) -> list[Any]:
        return [decode_value(value) for value in self.key]

    # -- merging ---------------------------------------------------------------------------------

    def merge(self, change: RowChange, key_columns: tuple[str, ...]) -> None:
        """Merge a row-level change. Raises ValueError naming the column for a value without a write time."""
        cells = change.cells
        if cells is None:
            raise ValueError("a cell table's change carries no cells")
        self.version = max(self.version, change.version)
        if cells.liveness is not None:
            self.liveness = _winner(self.liveness, Stamp(cells.liveness.timestamp, cells.liveness.expires_at))
            self.version = max(self.version, cells.liveness.timestamp)
        if cells.row_deletion is not None:
            self.apply_deletion(cells.row_deletion)
        for name, value in change.values.items():
            if name in key_columns:
                continue
            if isinstance(value, CollectionWrite):
                self.collections.setdefault(name, CollectionState(value.kind)).merge(value)
                self.version = max(self.version, value.latest_timestamp)
            elif name in cells.cells:
                self._merge_cell(name, cells.cells[name], value)
            else:
                raise ValueError(f"column {name} has a value but no cell write time")
        self.prune()

    def _merge_cell(self, name: str, write: CellWrite, value: Any) -> None:
        new = Stamp(write.timestamp, write.expires_at, encode_value(value), value is None, value)
        current = self.cells.get(name)
        if current is None or new.beats(current):
            self.cells[name] = new
        if write.timestamp > self.version:
            self.version = write.timestamp

    def apply_deletion(self, timestamp: int) -> None:
        """A row, partition or covering range deletion at `timestamp`."""
        self.deletion = max(self.deletion or timestamp, timestamp)
        self.version = max(self.version, timestamp)
        self.prune()

    def forget_dropped(self, dropped_columns: tuple[tuple[str, int], ...]) -> None:
        """A dropped column's cells written up to its drop are gone for good: Cassandra does not show
        them again when a column of that name is added later."""
        for name, dropped_at in dropped_columns:
            stamp = self.cells.get(name)
            if stamp is not None and stamp.timestamp <= dropped_at:
                del self.cells[name]
            collection = self.collections.get(name)
            if collection is not None:
                collection.prune(dropped_at)
                if not collection.elements and collection.deleted_at is None:
                    del self.collections[name]

    def prune(self) -> None:
        shadow = self.deletion
        if shadow is not None:
            if self.liveness is not None and self.liveness.timestamp <= shadow:
                self.liveness = None
            self.cells = {name: stamp for name, stamp in self.cells.items() if stamp.timestamp > shadow}
        for collection in self.collections.values():
            collection.prune(shadow)
        self.collections = {name: c for name, c in self.collections.items() if c.elements or c.deleted_at is not None}

    # -- what the row shows ----------------------------------------------------------------------

    def visible_values(self) -> dict[str, Any]:
        """Column -> value for every written non-key column (None: deleted, or an empty collection).
        TTLs are not evaluated here: the sinks store them and their views evaluate them when read."""
        values: dict[str, Any] = {name: stamp.shown_value() for name, stamp in self.cells.items()}
        for name, collection in self.collections.items():
            values[name] = render_collection(collection.kind, collection.live_elements())
        return values

    def _live_stamps(self) -> list[Stamp]:
        stamps = [stamp for stamp in self.cells.values() if not stamp.deleted]
        for collection in self.collections.values():
            stamps.extend(stamp for _, stamp in collection.live_elements())
        if self.liveness is not None:
            stamps.append(self.liveness)
        return stamps

    @property
    def is_live(self) -> bool:
        """Live, TTLs aside: primary-key liveness or any live cell or element."""
        return self.life()[0]

    @property
    def live_until(self) -> int | None:
        """When TTLs end the row's life (seconds since the epoch); None: never (or not live at all)."""
        return self.life()[1]

    def life(self) -> tuple[bool, int | None]:
        """(is_live, live_until) in one pass over the row's writes."""
        stamps = self._live_stamps()
        if not stamps:
            return False, None
        ends = [stamp.expires_at for stamp in stamps]
        return True, None if None in ends else max(end for end in ends if end is not None)

    def expiry(self) -> dict[str, int]:
        """Column -> when its shown value expires, for columns whose value has a TTL.

        A collection expires when its last element does: elements with an earlier TTL stay shown
        until the row is merged again (the sinks evaluate expiry per column, not per element)."""
        expiry = {name: s.expires_at for name, s in self.cells.items() if not s.deleted and s.expires_at is not None}
        for name, collection in self.collections.items():
            ends = [stamp.expires_at for _, stamp in collection.live_elements()]
            if ends and all(end is not None for end in ends):
                expiry[name] = max(end for end in ends if end is not None)
        return expiry

    # -- storage ---------------------------------------------------------------------------------

    def to_json(self) -> str:
        return state_text(
            {
                "key": self.key,
                "version": self.version,
                "liveness": self.liveness.to_json() if self.liveness else None,
                "deletion": self.deletion,
                "cells": {name: stamp.to_json() for name, stamp in self.cells.items()},
                "collections": {
                    name: {
                        "kind": c.kind,
                        "deleted_at": c.deleted_at,
                        "elements": [[path, stamp.to_json()] for _, (path, stamp) in sorted(c.elements.items())],
                    }
                    for name, c in self.collections.items()
                },
            }
        )

    @classmethod
    def from_json(cls, text: str) -> RowState:
        raw = orjson.loads(text)
        collections = {}
        for name, c in raw["collections"].items():
            state = CollectionState(c["kind"], c["deleted_at"])
            for path, stamp in c["elements"]:
                state.elements[canonical_text(path)] = (path, Stamp.from_json(stamp))
            collections[name] = state
        return cls(
            key=raw["key"],
            version=raw["version"],
            liveness=Stamp.from_json(raw["liveness"]) if raw["liveness"] else None,
            deletion=raw["deletion"],
            cells={name: Stamp.from_json(stamp) for name, stamp in raw["cells"].items()},
            collections=collections,
        )
