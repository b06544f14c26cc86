"""The PostgreSQL source: logical decoding (pgoutput) from a replication slot, behind ChangeSource."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from cdc_pipeline.config.sources import PostgresSourceConfig
from cdc_pipeline.core.changes import ChangeBatch
from cdc_pipeline.core.checkpoint import Checkpoint
from cdc_pipeline.core.positions import SourcePosition
from cdc_pipeline.core.retention import RetentionStatus
from cdc_pipeline.core.schema import TableSchema, split_qualified
from cdc_pipeline.sources.change_source import LogPassedCheckpoints
from cdc_pipeline.sources.postgres.catalog import PostgresCatalog
from cdc_pipeline.sources.postgres.connection import PostgresSourceSettings
from cdc_pipeline.sources.postgres.positions import LogSequenceNumber, lsn_of
from cdc_pipeline.sources.postgres.replication_slot import (
    LogicalDecodingError,
    ReplicationSlot,
)
from cdc_pipeline.sources.postgres.retention import lost_range, slot_retention, wal_retention
from cdc_pipeline.sources.postgres.wal_reader import WalBatchReader


class SlotPastCheckpoints(LogicalDecodingError, LogPassedCheckpoints):
    """The slot stands past a sink's checkpoint: released by a concurrent run that read newer
    checkpoints, or by someone else (then the WAL in between is gone)."""


class PostgresChangeSource:
    log_name = "wal"

    def __init__(self, name: str, dsn: str, config: PostgresSourceConfig) -> None:
        self._name = name
        self.settings = PostgresSourceSettings(dsn, name)
        self.catalog = PostgresCatalog(self.settings, config.tables, config.key_columns)
        self.slot = ReplicationSlot(self.settings, config.slot_name(name), config.publication_name(name))

    def check(self) -> None:
        self.slot.check_server()
        missing = self.slot.unpublished(self.catalog.selected_tables())
        if missing and self.slot.confirmed_position() is not None:
            raise LogicalDecodingError(
                f"{self.settings.describe()}: publication {self.slot.publication!r} does not carry the selected"
                f" table(s) {missing}; their changes would never arrive. ALTER PUBLICATION {self.slot.publication}"
                " ADD TABLE them, or exclude them in sources.<name>.tables"
            )

    def ensure_slot(self) -> LogSequenceNumber:
        """The slot's position, creating publication and slot first if they do not exist yet."""
        position = self.slot.confirmed_position()
        return position if position is not None else self.slot.create(self.catalog.selected_tables())

    def high_water_mark(self) -> LogSequenceNumber:
        return self.slot.flush_position()

    def read_batch(
        self,
        checkpoints: Mapping[str, Checkpoint | None],
        stop_at: SourcePosition | None,
        max_rows: int,
        max_bytes: int | None = None,
        max_seconds: float | None = None,
    ) -> ChangeBatch:
        # stop_at (the sensor's high-water mark) is only a hint here: the reader writes its own mark
        # and reads up to it, which covers everything committed before the sensor looked.
        slot_position = self._resume_slot(checkpoints)
        start = Checkpoint(slot_position)
        batch = WalBatchReader(self._name, self.slot, self.catalog).read(start, max_rows, max_bytes, max_seconds)
        return batch

    def _resume_slot(self, checkpoints: Mapping[str, Checkpoint | None]) -> LogSequenceNumber:
        known: dict[str, LogSequenceNumber] = {}
        for sink, checkpoint in checkpoints.items():
            if checkpoint is None:
                continue
            position = lsn_of(checkpoint.position)
            if position is None:
                raise LogicalDecodingError(
                    f"sink '{sink}' holds checkpoint {checkpoint}, not a WAL position, for source '{self._name}',"
                    " which reads PostgreSQL WAL; re-sync that sink or give the source another name"
                )
            known[sink] = position
        slot_position = self.slot.confirmed_position()
        if slot_position is None:
            if known:
                raise LogicalDecodingError(
                    f"{self.settings.describe()}: replication slot {self.slot.name!r} is gone, but sink(s)"
                    f" {sorted(known)} hold checkpoints {sorted(map(str, known.values()))}: the changes since then"
                    " are lost; re-sync the sinks"
                )
            return self.ensure_slot()
        self._refuse_lost_wal(known)
        # Reading starts where the slot stands, never moved here: `checkpoints` holds the sinks that
        # answered, and a sink that is down (not among them) may need WAL older than all of theirs.
        # Only release, which sees every sink's checkpoint, frees WAL; what the slot still holds
        # before a sink's checkpoint is skipped by that sink (its versions are below its checkpoint).
        return slot_position

    def _refuse_lost_wal(self, known: Mapping[str, LogSequenceNumber]) -> None:
        """Never skip ahead silently: a slot invalidated by max_slot_wal_keep_size, or one whose position
        is past a sink's checkpoint (recreated, or advanced by someone else), stops the run."""
        state = slot_retention(self.slot)
        lost = {sink: lost_range(state, position) for sink, position in sorted(known.items())}
        lost_ranges = {sink: lost for sink, lost in lost.items() if lost is not None}
        if not lost_ranges:
            return
        if state.lost:
            why = (
                f"replication slot {self.slot.name!r} was invalidated"
                f" ({state.invalidation_reason or 'wal_status lost'}; max_slot_wal_keep_size"
                f" {state.keep_size_bytes if state.keep_size_bytes is not None else 'unlimited'} bytes)"
            )
        else:
            why = (
                f"replication slot {self.slot.name!r} stands at {state.confirmed_flush_lsn}, past the checkpoint:"
                " the WAL between them was released before every sink read it"
            )
        ranges = "; ".join(f"sink '{sink}' checkpoint {known[sink]}: lost {lost}" for sink, lost in lost_ranges.items())
        error = LogicalDecodingError if state.lost else SlotPastCheckpoints
        raise error(
            f"{self.settings.describe()}: {why}; {ranges}; the changes in between are gone, nothing is skipped"
            " silently: re-sync the sinks (and drop and recreate the slot if it was invalidated)"
        )

    def retention(self, checkpoints: Mapping[str, Checkpoint | None]) -> RetentionStatus:
        return wal_retention(self._name, self.slot, checkpoints)

    def has_unread_changes(self) -> bool | None:
        if self.slot.confirmed_position() is None:
            return None  # a new source: the first run creates the slot; nothing to ask before that
        return self.slot.has_pending_changes()

    def release(self, checkpoints: Mapping[str, Checkpoint | None]) -> None:
        positions = [lsn_of(c.position) for c in checkpoints.values() if c is not None]
        slot_position = self.slot.confirmed_position()
        if len(positions) < len(checkpoints) or slot_position is None:
            return  # a sink without a checkpoint still needs everything the slot keeps
        earliest = min(p for p in positions if p is not None)
        if earliest > slot_position:
            self.slot.advance(earliest)

    def table_schema(self, table: str) -> TableSchema | None:
        schema, name = split_qualified(table)
        return self.catalog.table(schema, name)

    def row_count(self, table: str) -> int:
        schema, name = split_qualified(table)
        return self.catalog.row_count(schema, name)

    def live_keys(self, schema: TableSchema) -> Iterator[tuple[Any, ...]]:
        return self.catalog.live_keys(schema)

    def close(self) -> None:
        self.slot.connection.close()

    def log_usage(self) -> dict[str, int | str]:
        return {}
