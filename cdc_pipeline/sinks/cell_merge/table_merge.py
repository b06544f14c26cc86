"""A batch of one cell table merged into its stored rows: what both sinks read, merge and write back.

A sink asks `CellTableMerge` what to load (the touched keys, and every row of the partitions a
partition or range deletion touched, plus those partitions' stored deletions), hands the loaded
states back, and gets full rows to write: the visible values, `_version`, `_is_deleted` and the
bookkeeping columns. The sink converts the visible values into its own types.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from cdc_pipeline.core.changes import RowChange
from cdc_pipeline.core.schema import TableSchema
from cdc_pipeline.core.value_codec import encode_value
from cdc_pipeline.mapping.sink_types import (
    ValueNotMappable,
)
from cdc_pipeline.sinks.cell_merge.deletions import PartitionLevelDeletion, deletions_of
from cdc_pipeline.sinks.cell_merge.state import RowState, canonical_text, state_text

# The side table of partition and range deletions: `<sink table><suffix>`.
DELETIONS_SUFFIX = "__deletions"
DELETION_COLUMN = "deletion"
TIMESTAMP_COLUMN = "_timestamp"


def key_text(values: list[Any]) -> str:
    """The key's canonical text (stored: it must never change). Keys of integers and text, the usual
    ones, take orjson, whose text for them is the same and ten times as fast to make."""
    encoded = [encode_value(value) for value in values]
    if all(type(value) is int or type(value) is str for value in encoded):
        try:
            return orjson.dumps(encoded).decode()
        except orjson.JSONEncodeError:
            pass  # an integer beyond 64 bits, text with a lone surrogate: the standard encoder
    return canonical_text(encoded)


@dataclass
class MergedRow:
    key: str
    partition: str
    key_values: list[Any]
    values: dict[str, Any]  # every source column (key columns included): the visible values
    version: int
    is_deleted: bool
    state: str
    expiry: str
    live_until: int | None
    # The row-level changes of the batch merged into this row: the DLQ gets them if the sink refuses it.
    changes: list[RowChange] = field(default_factory=list)


@dataclass
class MergeResult:
    rows: list[MergedRow]
    new_deletions: list[tuple[str, PartitionLevelDeletion]]  # (partition text, deletion)

    def lines(
        self, line: Callable[[MergedRow], list[Any]], refuse: Callable[[MergedRow, str], None]
    ) -> tuple[list[list[Any]], list[MergedRow]]:
        """Each merged row as the sink's `line`, beside the rows they came from; a row whose merged
        values do not fit the sink is refused (its changes go to the DLQ) and left out."""
        lines: list[list[Any]] = []
        kept: list[MergedRow] = []
        for row in self.rows:
            try:
                lines.append(line(row))
            except ValueNotMappable as error:
                refuse(row, str(error))
                continue
            kept.append(row)
        return lines, kept


class CellTableMerge:
    """The batch's changes of one cell table (all of them valid row- or partition-level changes)."""

    def __init__(self, schema: TableSchema, changes: list[RowChange]) -> None:
        self.schema = schema
        self._clustering = [schema.column(name) for name in schema.clustering_columns]
        self._masked_as_null = {column.name for column in schema.columns if column.masked_as_null}
        self._row_changes: dict[str, list[RowChange]] = defaultdict(list)
        self._keys: dict[str, list[Any]] = {}
        self._batch_deletions: dict[str, list[PartitionLevelDeletion]] = defaultdict(list)
        # key text -> partition text, computed once per key
        self._partition_of: dict[str, str] = {}
        for change in changes:
            assert change.cells is not None
            if change.cells.is_partition_level:
                self._batch_deletions[self.partition_text(change.values)].extend(deletions_of(change.cells))
                continue
            key_values = [change.values[k] for k in schema.key_columns]
            key = key_text(key_values)
            if key not in self._keys:
                self._keys[key] = key_values
                self._partition_of[key] = self.partition_text(change.values)
            self._row_changes[key].append(change)
        self._partitions = set(self._partition_of.values())
        self._partitions.update(self._batch_deletions)

    def partition_text(self, values: dict[str, Any]) -> str:
        return key_text([values[k] for k in self.schema.partition_key])

    @property
    def keys(self) -> list[str]:
        """The keys of the rows the batch writes to: their stored states must be loaded (and locked)."""
        return sorted(self._keys)

    @property
    def deleting_partitions(self) -> list[str]:
        """Partitions with a partition or range deletion in the batch: every stored row of them is loaded."""
        return sorted(self._batch_deletions)

    @property
    def partitions(self) -> list[str]:
        """Every partition the batch touches: their stored deletions must be loaded."""
        return sorted(self._partitions)

    def merge(self, stored_states: dict[str, str], stored_deletions: list[tuple[str, str]]) -> MergeResult:
        """`stored_states`: key text -> state JSON (the loaded rows); `stored_deletions`: (partition,
        deletion JSON) of the batch's partitions. Returns the rows whose state changed."""
        # partition -> deletion JSON -> deletion: the canonical text identifies a deletion
        deletions: dict[str, dict[str, PartitionLevelDeletion]] = defaultdict(dict)
        for partition, text in stored_deletions:
            deletions[partition][text] = PartitionLevelDeletion.from_json(text)
        new_deletions = []
        for partition, found in self._batch_deletions.items():
            for deletion in found:
                text = deletion.to_json()
                if text not in deletions[partition]:
                    deletions[partition][text] = deletion
                    new_deletions.append((partition, deletion))

        states = {key: RowState.from_json(text) for key, text in stored_states.items()}
        for key, key_values in self._keys.items():
            states.setdefault(key, RowState.for_key(key_values))
        rows = []
        partition_length = self.schema.partition_key_length or 0
        for key, state in states.items():
            before = stored_states.get(key)
            changes = self._row_changes.get(key, [])
            state.forget_dropped(self.schema.dropped_columns)
            for change in changes:
                state.merge(change, self.schema.key_columns)
            key_values = self._keys.get(key) or state.key_values
            partition = self._partition_of.get(key) or key_text(key_values[:partition_length])
            clustering_key = key_values[partition_length:]
            for deletion in deletions.get(partition, {}).values():
                if deletion.covers(self._clustering, clustering_key):
                    state.apply_deletion(deletion.timestamp)
            text = state.to_json()
            if text == before:
                continue  # nothing new for this row (a replay, or a range that does not cover it)
            rows.append(self._row(key, partition, key_values, state, text, changes))
        return MergeResult(rows, new_deletions)

    def _row(
        self, key: str, partition: str, key_values: list[Any], state: RowState, text: str, changes: list[RowChange]
    ) -> MergedRow:
        values: dict[str, Any] = dict.fromkeys(self.schema.column_names)
        values.update(zip(self.schema.key_columns, key_values, strict=True))
        for name, value in state.visible_values().items():
            if name in values:
                values[name] = None if name in self._masked_as_null else value
        is_live, live_until = state.life()
        return MergedRow(
            key=key,
            partition=partition,
            key_values=key_values,
            values=values,
            version=state.version,
            is_deleted=not is_live,
            state=text,
            expiry=state_text(state.expiry()),
            live_until=live_until,
            changes=changes,
        )
