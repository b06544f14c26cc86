"""Changes that carry cells, not rows: what a Cassandra mutation did, with every write time.

A Cassandra write holds only the cells the statement wrote, each with its own write time; there is
no before image and no after image. Cassandra settles conflicts cell by cell, the newest write time
winning (a deletion wins a tie), so the sinks do the same: they keep, per row, the write time of
every cell and every deletion they have seen, and merge each change into that state
(`sinks/cell_merge/`). Merging is order-independent and idempotent, which is what makes a replayed
batch, or the same mutation read from two replicas, land once in effect.

A `RowChange` of such a table has `cells` set. Its `values` hold the key columns and the columns
the change wrote: a scalar or frozen value (None for a deleted cell), or a `CollectionWrite` for a
non-frozen collection or UDT column, whose elements merge one by one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

CollectionKind = Literal["list", "set", "map", "udt"]


# CellWrite and ElementWrite are built for every cell captured and never changed afterwards; they are
# not frozen because a frozen dataclass's __init__ costs 2.7 times as much (441 ns against 163 ns).
@dataclass(slots=True)
class CellWrite:
    """When a cell (or a row's primary-key liveness) was written, and until when it lives."""

    timestamp: int  # write time, microseconds since the epoch (Cassandra's cell timestamp)
    expires_at: int | None = None  # TTL: seconds since the epoch at which it stops being live


@dataclass(slots=True)
class ElementWrite:
    """One element of a non-frozen collection or UDT.

    `path` identifies the element: a list element's timeuuid (which also orders the list), a set's
    element, a map's key, a UDT's field name. `value` is None for set elements and deleted elements.
    """

    path: Any
    value: Any
    timestamp: int
    expires_at: int | None = None
    deleted: bool = False


@dataclass(frozen=True, slots=True)
class CollectionWrite:
    """What a change did to a non-frozen collection or UDT column.

    A whole-value write (`SET m = {...}`, an INSERT) or a column delete removes every element
    written at or before `deleted_at` (Cassandra writes that tombstone one microsecond before the
    new elements); `m['k'] = v`, `l = l + [x]`, `s = s - {x}` only carry their elements.
    """

    kind: CollectionKind
    deleted_at: int | None
    elements: tuple[ElementWrite, ...] = ()

    def map_elements(self, mask: Callable[[Any], Any]) -> CollectionWrite:
        """The same write with `mask` applied to every element value, and to the paths that are
        user data (set elements, map keys); list paths (timeuuids) and UDT field names are not."""
        masks_path = self.kind in ("set", "map")
        return replace(
            self,
            elements=tuple(
                replace(
                    element,
                    path=mask(element.path) if masks_path else element.path,
                    value=None if element.value is None else mask(element.value),
                )
                for element in self.elements
            ),
        )

    @property
    def latest_timestamp(self) -> int:
        return max([e.timestamp for e in self.elements] + [self.deleted_at or 0])


@dataclass(frozen=True, slots=True)
class ClusteringBound:
    """One end of a range deletion: a prefix of the clustering columns' values, in key order
    (empty: the range is open on that side)."""

    values: tuple[Any, ...]
    inclusive: bool


@dataclass(frozen=True, slots=True)
class RangeDeletion:
    """`DELETE ... WHERE <partition key> AND <clustering range>`: every row of the partition between
    `start` and `end` (in the table's clustering order, which may be descending per column) written
    at or before `timestamp` is gone."""

    start: ClusteringBound
    end: ClusteringBound
    timestamp: int


@dataclass(slots=True)
class CellChange:
    """The cell-level content of a RowChange (see the module docstring).

    A row-level change has every key column in `values`; a partition-level change (partition or
    range deletion) has only the partition key columns there, and no cells.
    """

    # Scalar and frozen columns the change wrote (their values are in RowChange.values).
    cells: dict[str, CellWrite] = field(default_factory=dict)
    # INSERT: the row exists from this write on, even if every other column is null.
    liveness: CellWrite | None = None
    # Row DELETE: every cell of the row written at or before this time is gone.
    row_deletion: int | None = None
    # Partition DELETE: every row of the partition written at or before this time is gone.
    partition_deletion: int | None = None
    range_deletions: tuple[RangeDeletion, ...] = ()

    @property
    def is_partition_level(self) -> bool:
        return self.partition_deletion is not None or bool(self.range_deletions)
