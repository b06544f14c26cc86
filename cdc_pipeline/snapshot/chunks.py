"""Key-range chunks of a table for the initial load, and their partition keys.

A partition key carries everything a chunk run needs, so that a plan, once made, cannot drift:
`<snapshot version>~<chunk index>~<low key>~<high key>` (both bounds inclusive).
"""

from __future__ import annotations

from dataclasses import dataclass

from cdc_pipeline.core.schema import TableSchema
from cdc_pipeline.sources.snapshot_source import ChunkBounds, SnapshotSource

_INTEGER_TYPES = frozenset({"tinyint", "smallint", "mediumint", "int", "integer", "bigint"})
_SEPARATOR = "~"
WHOLE_TABLE = "all"


class ChunkKeyError(ValueError):
    """A partition key that is not a snapshot chunk; the message quotes it."""


@dataclass(frozen=True)
class Chunk:
    """Rows whose first key column lies in [low, high] (None, None: the whole table)."""

    version: int  # every row of the snapshot carries this `_version`
    index: int
    low: int | None
    high: int | None

    @property
    def bounds(self) -> ChunkBounds:
        return ChunkBounds(self.low, self.high)

    @property
    def partition_key(self) -> str:
        bounds = (WHOLE_TABLE, WHOLE_TABLE) if self.low is None else (str(self.low), str(self.high))
        return _SEPARATOR.join((str(self.version), f"{self.index:05d}", *bounds))

    @classmethod
    def parse(cls, key: str) -> Chunk:
        parts = key.split(_SEPARATOR)
        try:
            version, index, low, high = parts
            if low == WHOLE_TABLE:
                return cls(int(version), int(index), None, None)
            return cls(int(version), int(index), int(low), int(high))
        except ValueError:
            raise ChunkKeyError(f"partition key {key!r} is not '<version>~<index>~<low>~<high>'") from None


def plan_chunks(source: SnapshotSource, schema: TableSchema, chunk_rows: int, version: int) -> list[Chunk]:
    """Split the table into chunks of about `chunk_rows` rows by its first key column.

    The split assumes keys spread evenly between MIN and MAX (true of auto-increment keys); a
    table whose first key column is not an integer is loaded as one chunk.
    """
    first_key = schema.column(schema.key_columns[0])
    if first_key.data_type not in _INTEGER_TYPES:
        return [Chunk(version, 0, None, None)]
    key_range = source.key_range(schema)
    if key_range is None:
        return [Chunk(version, 0, None, None)]
    low, high = key_range.low, key_range.high
    count = max(1, -(-key_range.rows // chunk_rows))  # ceiling division
    width = -(-(high - low + 1) // count)
    chunks = []
    for index in range(count):
        chunk_low = low + index * width
        chunk_high = min(high, chunk_low + width - 1)
        # The first and last chunk are open-ended: rows inserted beyond MIN/MAX after the plan are
        # read too (the stream would bring them anyway; versions make the overlap converge).
        chunks.append(
            Chunk(
                version,
                index,
                -(2**63) if index == 0 else chunk_low,
                2**64 - 1 if index == count - 1 else chunk_high,  # MySQL's BIGINT UNSIGNED max
            )
        )
    return chunks
