"""One batch of one cell table as stamped rows (stamped_rows.py): what a sink that merges in its engine writes.

The sink asks `StampedBatch` which partitions' stored deletions to load, hands them back and
stores the batch's new ones (`deletions`), then gets the rows to write (`lines`): a stamped row per
row-level change, with the newest partition or range deletion covering it in `_deleted_at`. The
stored rows a deletion of the batch covers come from `covered` (the sink lists the stored keys of
the deleting partitions and records the deletion in each). Rows of one key are folded into one
(`fold`) for a sink whose upsert cannot touch a row twice in one statement.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from cdc_pipeline.core.changes import RowChange
from cdc_pipeline.core.schema import TableSchema
from cdc_pipeline.core.value_codec import decode_value
from cdc_pipeline.sinks.cell_merge.deletions import PartitionLevelDeletion, deletions_of
from cdc_pipeline.sinks.cell_merge.stamped_rows import FRAGMENTS, NO_TIME, ElementForm, StampedRowBuilder

# (key text, partition text, the key columns' values as the sink returns them)
StoredKey = tuple[str, str, list[Any]]


class StampedBatch:
    def __init__(
        self,
        schema: TableSchema,
        mapped_columns: list[str],
        rows: list[list[Any]],
        changes: list[RowChange],
        form: ElementForm = FRAGMENTS,
    ) -> None:
        """`rows`: the mapper's converted rows, beside their `changes`; `form`: how elements show."""
        self.schema = schema
        self.builder = StampedRowBuilder(schema, mapped_columns, form)
        self._clustering = [schema.column(name) for name in schema.clustering_columns]
        self._batch_deletions: dict[str, list[tuple[PartitionLevelDeletion, RowChange]]] = defaultdict(list)
        self._row_changes: list[tuple[RowChange, list[Any], str, str]] = []
        for change, converted in zip(changes, rows, strict=True):
            assert change.cells is not None
            if change.cells.is_partition_level:
                partition = self.builder.partition_text(change.values)
                self._batch_deletions[partition].extend((d, change) for d in deletions_of(change.cells))
            else:
                key, partition = self.builder.key_texts(change)
                self._row_changes.append((change, converted, key, partition))
        self._deletions: dict[str, list[PartitionLevelDeletion]] = {}

    @property
    def partitions(self) -> list[str]:
        """Every partition the batch touches: their stored deletions must be loaded."""
        return sorted({partition for _, _, _, partition in self._row_changes} | set(self._batch_deletions))

    @property
    def deleting_partitions(self) -> list[str]:
        """Partitions with a partition or range deletion in the batch: their stored keys must be listed."""
        return sorted(self._batch_deletions)

    def deletions(self, stored: Iterable[tuple[str, str]]) -> list[tuple[str, str, int]]:
        """Takes the stored (partition, deletion text) of `partitions`; returns the batch's new
        deletions as (partition, deletion text, timestamp), for the sink to store."""
        found: dict[str, dict[str, PartitionLevelDeletion]] = defaultdict(dict)
        for partition, text in stored:
            found[partition][text] = PartitionLevelDeletion.from_json(text)
        new: list[tuple[str, str, int]] = []
        for partition, deletions in self._batch_deletions.items():
            for deletion, _ in deletions:
                text = deletion.to_json()
                if text not in found[partition]:
                    found[partition][text] = deletion
                    new.append((partition, text, deletion.timestamp))
        self._deletions = {partition: list(by_text.values()) for partition, by_text in found.items()}
        return new

    def lines(self) -> tuple[list[list[Any]], list[list[RowChange]]]:
        """A stamped row per row-level change, each beside the changes it comes from (call
        `deletions` first: a row in a deleted range carries the deletion)."""
        lines: list[list[Any]] = []
        owners: list[list[RowChange]] = []
        clustering_columns = self.schema.clustering_columns
        for change, converted, key, partition in self._row_changes:
            covering = self._deletions.get(partition)
            deleted_at = NO_TIME
            if covering:
                clustering_key = [change.values[name] for name in clustering_columns]
                deleted_at = self._newest_covering(covering, clustering_key)
            lines.append(self.builder.row(change, converted, deleted_at, key, partition))
            owners.append([change])
        return lines, owners

    def covered(self, stored_keys: Iterable[StoredKey]) -> list[tuple[StoredKey, int, RowChange]]:
        """The stored rows (of `deleting_partitions`) a deletion of the batch covers: each with the
        newest such deletion's time and the change that carried it."""
        covered: list[tuple[StoredKey, int, RowChange]] = []
        partition_length = self.schema.partition_key_length or 0
        for stored in stored_keys:
            key, partition, _ = stored
            clustering_key = [decode_value(v) for v in json.loads(key)][partition_length:]
            newest, owner = NO_TIME, None
            for deletion, change in self._batch_deletions.get(partition, ()):
                if deletion.timestamp > newest and deletion.covers(self._clustering, clustering_key):
                    newest, owner = deletion.timestamp, change
            if owner is not None:
                covered.append((stored, newest, owner))
        return covered

    def _newest_covering(self, deletions: Iterable[PartitionLevelDeletion], clustering_key: list[Any]) -> int:
        newest = NO_TIME
        for deletion in deletions:
            if deletion.timestamp > newest and deletion.covers(self._clustering, clustering_key):
                newest = deletion.timestamp
        return newest

    def fold(
        self, lines: list[list[Any]], owners: list[list[RowChange]]
    ) -> tuple[list[list[Any]], list[list[RowChange]]]:
        """One row per key: rows of the same key merged as the engine would merge them."""
        key_place = self.builder.key_place
        by_key: dict[str, int] = {}
        folded: list[list[Any]] = []
        folded_owners: list[list[RowChange]] = []
        for line, changes in zip(lines, owners, strict=True):
            place = by_key.get(line[key_place])
            if place is None:
                by_key[line[key_place]] = len(folded)
                folded.append(line)
                folded_owners.append(list(changes))
                continue
            folded[place] = self.builder.merged(folded[place], line)
            folded_owners[place].extend(changes)
        return folded, folded_owners
