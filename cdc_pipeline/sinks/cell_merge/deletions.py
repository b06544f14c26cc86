"""Partition and range deletions as the sinks store them, beside the rows they shadow.

They are kept, not only applied to the rows present when they arrive: a write older than the
deletion that arrives later (log order is not timestamp order) must stay shadowed, and so must a
row first written later with an older timestamp.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cdc_pipeline.core.cells import CellChange, ClusteringBound, RangeDeletion
from cdc_pipeline.core.schema import ColumnSchema
from cdc_pipeline.core.value_codec import decode_value, encode_value
from cdc_pipeline.sinks.cell_merge.clustering import range_covers

# The side table of partition and range deletions: `<sink table><suffix>`.
DELETIONS_SUFFIX = "__deletions"
DELETION_COLUMN = "deletion"
TIMESTAMP_COLUMN = "_timestamp"


@dataclass(frozen=True)
class PartitionLevelDeletion:
    """A partition deletion (`range` None) or a range deletion within one partition."""

    timestamp: int
    range: RangeDeletion | None = None

    def covers(self, columns: Sequence[ColumnSchema], clustering_key: Sequence[Any]) -> bool:
        return self.range is None or range_covers(columns, self.range, clustering_key)

    def to_json(self) -> str:
        """A canonical text: the same deletion always stores as the same text (replays collapse)."""
        raw: dict[str, Any] = {"t": self.timestamp}
        if self.range is not None:
            raw["start"] = [[encode_value(v) for v in self.range.start.values], self.range.start.inclusive]
            raw["end"] = [[encode_value(v) for v in self.range.end.values], self.range.end.inclusive]
        return json.dumps(raw, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> PartitionLevelDeletion:
        raw = json.loads(text)
        if "start" not in raw:
            return cls(raw["t"])

        def bound(part: list[Any]) -> ClusteringBound:
            return ClusteringBound(tuple(decode_value(v) for v in part[0]), part[1])

        return cls(raw["t"], RangeDeletion(bound(raw["start"]), bound(raw["end"]), raw["t"]))


def deletions_of(cells: CellChange) -> list[PartitionLevelDeletion]:
    found = [PartitionLevelDeletion(cells.partition_deletion)] if cells.partition_deletion is not None else []
    found.extend(PartitionLevelDeletion(r.timestamp, r) for r in cells.range_deletions)
    return found
