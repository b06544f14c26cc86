"""What the initial load needs from a source: a handoff position, key statistics and chunk reads.

Each source kind implements it next to its change log reader (`sources/<kind>/snapshot_reader.py`);
the plan job and the snapshot asset only talk to this protocol.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from cdc_pipeline.core.changes import Rejection, RowChange, TableChanges
from cdc_pipeline.core.checkpoint import Checkpoint
from cdc_pipeline.core.schema import TableSchema

_INTEGER_TYPES = frozenset({"tinyint", "smallint", "mediumint", "int", "integer", "bigint"})


def splits_by_first_key(schema: TableSchema) -> bool:
    """Whether a row-image source (MySQL, PostgreSQL) can split the table by its first key column:
    only an integer one, whose values spread between MIN and MAX (true of auto-increment keys)."""
    return schema.column(schema.key_columns[0]).data_type in _INTEGER_TYPES


@dataclass(frozen=True)
class KeyRange:
    """The span of the integer the source splits a table by, and about how many rows it holds.

    MySQL and PostgreSQL: MIN and MAX of the first (integer) key column and the exact row count.
    Cassandra: the whole Murmur3 token ring of the partition key and an estimate. The first and
    last chunk reach out to `open_low` / `open_high`, so rows written beyond `low` / `high` after
    the plan are read too.
    """

    low: int
    high: int
    rows: int
    open_low: int = -(2**63)
    open_high: int = 2**64 - 1  # MySQL's BIGINT UNSIGNED max


@dataclass(frozen=True)
class ChunkSlice:
    """Some rows of a chunk as inserts, and the rows that cannot be read (for the DLQ, unmasked)."""

    changes: list[RowChange]
    rejections: list[Rejection] = field(default_factory=list)
    # Changes of companion tables the same read yields (Cassandra: `<table>_static`, the static columns).
    companions: list[TableChanges] = field(default_factory=list)


@dataclass(frozen=True)
class ChunkBounds:
    """Rows whose split integer (see KeyRange) lies in [low, high]; None, None: the whole table."""

    low: int | None
    high: int | None


class SnapshotSource(Protocol):
    def table_schema(self, table: str) -> TableSchema | None: ...

    def handoff_checkpoint(self) -> Checkpoint:
        """The log position from which streaming replays; every change committed before it is
        visible to the chunk reads that follow."""

    def key_range(self, schema: TableSchema) -> KeyRange | None:
        """None when the table is empty or cannot be split (it is then loaded as one chunk)."""

    def read_chunk(
        self, schema: TableSchema, bounds: ChunkBounds, version: int, slice_rows: int
    ) -> Iterator[ChunkSlice]:
        """The rows as inserts at `version`, `slice_rows` at a time, in the value forms streaming gives."""

    def read_chunk_keys(
        self, schema: TableSchema, bounds: ChunkBounds, slice_rows: int
    ) -> Iterator[list[tuple[Any, ...]]]:
        """Only the keys, in the same forms."""
