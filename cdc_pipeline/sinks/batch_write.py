"""The one write algorithm every sink runs for a batch; each sink provides only its primitives.

    stored checkpoint -> floor -> schema sync -> each table: ensure it, write the rows at or above
    the floor (row tables: bulk inserts, bisected down to the refused rows; cell tables: merged per
    cell) -> record the rejections -> advance the checkpoint

The order is the exactly-once protocol (DESIGN.md): rejections are stored before the checkpoint
moves, so a crash between them replays the batch and loses nothing; rows below the floor are already
in the sink and are skipped, and every write is version-guarded, so a replay changes nothing twice.
Where the sink has transactions (PostgreSQL) all of it is one transaction, opened by the sink around
this call; where it has none (ClickHouse), the versions make each step safe to repeat.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

from cdc_pipeline.core.changes import Rejection, RowChange
from cdc_pipeline.core.checkpoint import Checkpoint
from cdc_pipeline.core.fault_injection import crash_point
from cdc_pipeline.mapping.mapper import MappedBatch, MappedTable
from cdc_pipeline.mapping.sink_types import SinkTableLayout
from cdc_pipeline.sinks.base import SinkNameTaken, WriteResult, bisect_failures
from cdc_pipeline.sinks.schema_sync.sync import SchemaSyncResult

RejectChange = Callable[[RowChange, str], None]


class BatchWriteSteps(Protocol):
    """One sink's primitives for one batch's write."""

    # Names the crash point after a table's rows are written: `<crash_prefix>_mid_write`.
    crash_prefix: str
    # Rows per bulk insert of a row table (None: all of the table's rows at once).
    insert_chunk_rows: int | None

    def stored_checkpoint(self, batch: MappedBatch) -> Checkpoint | None:
        """The sink's checkpoint for the batch's source, held until the write ends where the sink
        can lock it (two writers of one source then wait for each other)."""
        ...

    def sync_schema(self, batch: MappedBatch, floor: int) -> SchemaSyncResult:
        """Bring the sink tables to the batch's shapes; changes below `floor` are already applied."""
        ...

    def ensure_table(self, layout: SinkTableLayout, source: str) -> None:
        """Create or update the table; raises SinkNameTaken when another relation holds its name."""
        ...

    def row_inserter(self, layout: SinkTableLayout, rows: list[list[Any]]) -> Callable[[list[list[Any]]], None]:
        """What bulk-inserts rows of `layout` (all-or-nothing per call); it may complete `rows` first."""
        ...

    def is_data_error(self, error: Exception) -> bool:
        """The sink refused the rows themselves (not a sink that is down, not a bug)."""
        ...

    def write_cells(
        self, layout: SinkTableLayout, rows: list[list[Any]], changes: list[RowChange], reject: RejectChange
    ) -> None:
        """Merge a cell table's changes (sinks/cell_merge/) into its rows, rejecting what it refuses;
        `rows` are the mapper's converted values of each change."""
        ...

    def advance_checkpoint(self, batch: MappedBatch, stored: Checkpoint | None) -> None:
        """Record `batch.end` as the source's checkpoint in this sink."""
        ...


def write_batch(
    sink_name: str,
    steps: BatchWriteSteps,
    batch: MappedBatch,
    record_rejections: Callable[[list[Rejection]], None],
    advance_checkpoint: bool,
) -> WriteResult:
    """Write `batch` with `steps`; `advance_checkpoint=False` (initial loads, DLQ replays) neither
    reads nor moves the checkpoint, and writes every row."""
    result = WriteResult(sink_name)
    stored = steps.stored_checkpoint(batch) if advance_checkpoint else None
    floor = stored.version_floor if stored is not None else 0
    schema = steps.sync_schema(batch, floor)
    result.schema_applied, result.schema_held = schema.applied, schema.refused
    result.rejections.extend(schema.rejections)

    def write_table(table: MappedTable, rows: list[list[Any]], changes: list[RowChange]) -> list[RowChange]:
        written = _TableWrite(sink_name, steps, table.layout, result).run(batch.owner, rows, changes)
        crash_point(f"{steps.crash_prefix}_mid_write")
        return written

    write_rows_after_checkpoint(batch, floor, result, write_table)
    # Stored before the checkpoint moves: a crash in between replays the batch, and none is lost.
    record_rejections(result.rejections)
    if advance_checkpoint and (stored is None or batch.end.is_after(stored)):
        steps.advance_checkpoint(batch, stored)
        result.checkpoint = batch.end
    else:
        result.checkpoint = stored
    return result


class _TableWrite:
    """One table's rows into one sink: a row table or a cell table, chosen once by its layout."""

    def __init__(self, sink_name: str, steps: BatchWriteSteps, layout: SinkTableLayout, result: WriteResult) -> None:
        self.sink_name, self.steps, self.layout, self.result = sink_name, steps, layout, result
        self.rejected: set[int] = set()

    def run(self, source: str, rows: list[list[Any]], changes: list[RowChange]) -> list[RowChange]:
        """The changes written; the refused ones are the result's rejections."""
        try:
            self.steps.ensure_table(self.layout, source)
        except SinkNameTaken as taken:
            # This table alone waits in the DLQ; the batch's other tables are written.
            for change in changes:
                self.reject(change, str(taken))
            return []
        if self.layout.cell_schema is not None:
            self.steps.write_cells(self.layout, rows, changes, self.reject)
        else:
            self._write_rows(rows, changes)
        return [change for change in changes if id(change) not in self.rejected]

    def _write_rows(self, rows: list[list[Any]], changes: list[RowChange]) -> None:
        insert = self.steps.row_inserter(self.layout, rows)
        step = self.steps.insert_chunk_rows or max(len(rows), 1)
        for start in range(0, len(rows), step):
            end = start + step
            bisect_failures(rows[start:end], changes[start:end], insert, self.reject, self.steps.is_data_error)

    def reject(self, change: RowChange, error: str) -> None:
        # A cell table's change may be refused with each merged row it touches: recorded once.
        if id(change) in self.rejected:
            return
        self.rejected.add(id(change))
        self.result.rejections.append(
            Rejection.of_change("write", self.layout.source_table, change, f"{self.sink_name}: {error}", self.sink_name)
        )


def write_rows_after_checkpoint(
    batch: MappedBatch,
    floor: int,
    result: WriteResult,
    write_table: Callable[[MappedTable, list[list[Any]], list[RowChange]], list[RowChange]],
) -> None:
    """Write each table's rows at or above `floor` with `write_table` (which returns the changes it
    wrote), counting the delivered source changes per table into `result`. Tables the schema sync
    held (`result.schema_held`) are left out: their rows went to the DLQ."""
    for qualified, table in batch.tables.items():
        if qualified in result.schema_held:
            continue
        rows, changes = rows_after_checkpoint(table, floor)
        result.skipped_already_applied += len(table.rows) - len(rows)
        if not rows:
            continue
        written = write_table(table, rows, changes)
        counts = result.rows_by_table.setdefault(qualified, Counter())
        for change in written:
            counts.update(table.delivered_ops(change))


def rows_after_checkpoint(table: MappedTable, floor: int) -> tuple[list[list[Any]], list[RowChange]]:
    """Drop the rows this sink already holds: their versions are below its checkpoint."""
    if not table.changes or table.changes[0].version >= floor:
        return table.rows, table.changes
    kept = [(row, change) for row, change in zip(table.rows, table.changes, strict=False) if change.version >= floor]
    return [row for row, _ in kept], [change for _, change in kept]
