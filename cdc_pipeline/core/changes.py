"""The change events that flow between the ops, grouped per table for bulk processing."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cdc_pipeline.core.cells import CellChange
from cdc_pipeline.core.checkpoint import Checkpoint
from cdc_pipeline.core.positions import SourcePosition
from cdc_pipeline.core.schema import TableSchema
from cdc_pipeline.core.schema_changes import SchemaChange, ShapeSource


class ChangeOp(StrEnum):
    """What happened to the row at the source; inserts and updates are both upserts in the sinks."""

    INSERT = "insert"
    UPDATE = "update"
    DELETE = "delete"
    # Not a row change: a DDL statement the pipeline could not read, held in the DLQ (stage "ddl")
    # while its table waits for an operator (core/schema_changes.py, UNRECOGNISED).
    DDL = "ddl"


@dataclass(slots=True)
class RowChange:
    """One row's new state: an insert or update carries the after image, a delete the before image.

    Sources whose changes hold only the cells written (Cassandra) set `cells`, and `values` then
    holds only the key and the written columns (core/cells.py); `version` is the newest write time.
    """

    op: ChangeOp
    values: dict[str, Any]
    version: int
    position: str  # where the change sits in the source's log, as the source writes it: for humans and the DLQ
    commit_ts: int  # seconds since the epoch, from the event header
    cells: CellChange | None = None


@dataclass(frozen=True, slots=True)
class Rejection:
    """An event that failed a stage; it goes to the DLQ instead of the sinks."""

    stage: str  # parse | mask | map | write
    table: str
    op: ChangeOp
    error: str
    position: str
    version: int
    payload: dict[str, Any]  # masked values (or column names only when masking itself failed)
    sink: str | None = None  # None: failed before the per-sink stages, so it concerns every sink
    # Cassandra: the change's write times and deletions, kept for an exact replay. Only set after
    # masking (map, write): a range deletion's bounds are key values.
    cells: CellChange | None = None
    # Why a DLQ replay cannot redo this event (its letter holds too little to replay), shown in the
    # DLQ asset; None: replayable once its cause is fixed.
    not_replayable: str | None = None

    @classmethod
    def of_change(cls, stage: str, table: str, change: RowChange, error: str, sink: str | None = None) -> Rejection:
        cells = change.cells if stage in ("map", "write") else None
        return cls(stage, table, change.op, error, change.position, change.version, change.values, sink, cells)


@dataclass
class TableChanges:
    schema: TableSchema  # the shape of these rows (core/schema_changes.py)
    changes: list[RowChange] = field(default_factory=list)
    shape_source: ShapeSource = ShapeSource.ROWS


@dataclass
class ChangeBatch:
    """Everything one run moves: changes per table between two transaction boundaries."""

    source: str
    start: Checkpoint
    end: Checkpoint  # after the last transaction read: the sinks' next checkpoint
    tables: dict[str, TableChanges] = field(default_factory=dict)
    rejections: list[Rejection] = field(default_factory=list)
    # Changes to the tables' shapes, in log order; each comes before the rows of its table in
    # `tables` (a batch never holds one table's rows in two shapes).
    schema_changes: list[SchemaChange] = field(default_factory=list)
    last_commit_ts: int | None = None
    masked: bool = False
    # A hint for the sensor: the log was read through here, which may lie past `end` when the tail
    # holds nothing to replicate (PostgreSQL: the reader's own progress mark). Never a checkpoint.
    log_read_to: SourcePosition | None = None
    # Who holds the batch's tables in the sinks, when not the source itself: the sources of one
    # Cassandra cluster's nodes all write the cluster's tables (config: table_owner).
    table_owner: str | None = None

    @property
    def owner(self) -> str:
        """The name the batch's tables are claimed under in the sinks."""
        return self.table_owner or self.source

    @property
    def row_count(self) -> int:
        return sum(len(t.changes) for t in self.tables.values())
