"""Key-range chunks of a table for the initial load, and their partition keys.

A partition key carries everything a chunk run needs, so that a plan, once made, cannot drift:
`<snapshot version>~<chunk index>~<low key>~<high key>` (both bounds inclusive).
"""

from __future__ import annotations

from dataclasses import dataclass

from cdc_pipeline.core.schema import TableSchema
from cdc_pipeline.sources.snapshot_source import ChunkBounds, SnapshotSource

_SEPARATOR = "~"
WHOLE_TABLE = "all"


class ChunkKeyError(ValueError):
    """A partition key that is not a snapshot chunk; the message quotes it."""


@dataclass(frozen=True)
class Chunk:
    """Rows whose split integer (the first key column, or the partition key's token: the source
    decides, see KeyRange) lies in [low, high] (None, None: the whole table)."""

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
    """Split the table into chunks of about `chunk_rows` rows by the integer the source splits by.

    The split assumes that integer spreads evenly between low and high (true of auto-increment keys
    and of Murmur3 tokens); a table the source cannot split is loaded as one chunk.
    """
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
                key_range.open_low if index == 0 else chunk_low,
                key_range.open_high if index == count - 1 else chunk_high,
            )
        )
    return chunks
