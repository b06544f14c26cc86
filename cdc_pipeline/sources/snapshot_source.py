"""What the initial load needs from a source: a handoff position, key statistics and chunk reads.

Each source kind implements it next to its change log reader (`sources/<kind>/snapshot_reader.py`);
the plan job and the snapshot asset only talk to this protocol.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from cdc_pipeline.core.changes import Rejection, RowChange
from cdc_pipeline.core.checkpoint import Checkpoint
from cdc_pipeline.core.schema import TableSchema


@dataclass(frozen=True)
class KeyRange:
    """MIN and MAX of a table's first (integer) key column, and its row count."""

    low: int
    high: int
    rows: int


@dataclass(frozen=True)
class ChunkSlice:
    """Some rows of a chunk as inserts, and the rows that cannot be read (for the DLQ, unmasked)."""

    changes: list[RowChange]
    rejections: list[Rejection] = field(default_factory=list)


@dataclass(frozen=True)
class ChunkBounds:
    """Rows whose first key column lies in [low, high]; None, None: the whole table."""

    low: int | None
    high: int | None


class SnapshotSource(Protocol):
    def table_schema(self, table: str) -> TableSchema | None: ...

    def handoff_checkpoint(self) -> Checkpoint:
        """The log position from which streaming replays; every change committed before it is
        visible to the chunk reads that follow."""

    def key_range(self, schema: TableSchema) -> KeyRange | None:
        """None when the table is empty."""

    def read_chunk(
        self, schema: TableSchema, bounds: ChunkBounds, version: int, slice_rows: int
    ) -> Iterator[ChunkSlice]:
        """The rows as inserts at `version`, `slice_rows` at a time, in the value forms streaming gives."""

    def read_chunk_keys(
        self, schema: TableSchema, bounds: ChunkBounds, slice_rows: int
    ) -> Iterator[list[tuple[Any, ...]]]:
        """Only the keys, in the same forms."""
