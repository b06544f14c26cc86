"""What every sink offers the pipeline: its own checkpoint, and an idempotent bulk write."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from cdc_pipeline.core.changes import ChangeOp, Rejection
from cdc_pipeline.core.checkpoint import Checkpoint
from cdc_pipeline.mapping.mapper import MappedBatch
from cdc_pipeline.mapping.sink_types import SinkTableLayout


@dataclass
class WriteResult:
    sink: str
    # table -> {"insert": n, "update": n, "delete": n}
    rows_by_table: dict[str, Counter[str]] = field(default_factory=dict)
    skipped_already_applied: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    checkpoint: Checkpoint | None = None
    # Schema changes the sink applied (source table -> what it did), and the tables it holds
    # because it cannot take their new shape (source table -> why; their rows are in `rejections`).
    schema_applied: dict[str, list[str]] = field(default_factory=dict)
    schema_held: dict[str, str] = field(default_factory=dict)

    def count(self, op: ChangeOp) -> int:
        return sum(counts[op.value] for counts in self.rows_by_table.values())


@dataclass(frozen=True)
class TableStats:
    live_rows: int
    # Sum of the live rows' _version: each change has its own version, so two sinks holding the
    # same (key, version) pairs give the same sum, whatever order they store them in.
    version_sum: int


class Sink(Protocol):
    name: str

    def checkpoint(self, source: str) -> Checkpoint | None: ...

    def adopt_checkpoint(self, source: str, checkpoint: Checkpoint) -> Checkpoint:
        """Set the checkpoint if the sink has none (an initial load's handoff); return the one in force."""
        ...

    def write(
        self,
        batch: MappedBatch,
        record_rejections: Callable[[list[Rejection]], None],
        advance_checkpoint: bool = True,
    ) -> WriteResult: ...

    def table_stats(self, source_table: str) -> TableStats | None: ...

    def table_note(self, source_table: str) -> str | None:
        """Something about how the sink stores the table that its asset should show (e.g. TimescaleDB)."""
        ...

    def older_live_keys(
        self, layout: SinkTableLayout, key_range: tuple[int, int] | None, version: int
    ) -> set[tuple[str, ...]]:
        """Canonical keys of the live rows older than `version` whose first key column lies in
        `key_range`: the rows a re-sync might have to remove (none after a first load)."""
        ...

    def tombstone_missing(
        self, layout: SinkTableLayout, key_range: tuple[int, int] | None, present: set[tuple[str, ...]], version: int
    ) -> int:
        """Mark deleted, at `version`, the live rows older than it whose first key column lies in
        `key_range` (None: anywhere) and whose canonical key is not in `present`: rows a re-sync
        found only in the sink. Returns how many."""
        ...

    def release_schema_hold(self, source: str, source_table: str) -> bool:
        """Release a table held by a DDL statement the operator marked safe; True if it was held."""
        ...

    def live_keys(self, source_table: str, key_columns: tuple[str, ...]) -> Iterator[tuple[Any, ...]]:
        """The keys of the live (not deleted) rows, streamed."""
        ...


class SinkNameTaken(Exception):
    """A sink table whose name, or its view's, another sink relation holds."""


_Origin = TypeVar("_Origin")


def bisect_failures(
    rows: list[list[Any]],
    changes: list[_Origin],
    attempt: Callable[[list[list[Any]]], None],
    reject: Callable[[_Origin, str], None],
    is_data_error: Callable[[Exception], bool],
) -> int:
    """Write `rows` with `attempt`; when the sink refuses the data, split until the bad rows are isolated.

    `changes` holds what each row came from (a change, or a merged row of a cell table), handed to
    `reject` for a refused row. Returns the number of rows written. `attempt` must leave the sink
    unchanged when it raises.
    Errors that are not about the data (connection refused, disk full) propagate: the run fails and
    is retried from the checkpoint, and no row is sent to the DLQ for the sink's own trouble.
    """
    try:
        attempt(rows)
        return len(rows)
    except Exception as error:
        if not is_data_error(error):
            raise
        if len(rows) == 1:
            reject(changes[0], f"{type(error).__name__}: {str(error).strip()}")
            return 0
    middle = len(rows) // 2
    return bisect_failures(rows[:middle], changes[:middle], attempt, reject, is_data_error) + bisect_failures(
        rows[middle:], changes[middle:], attempt, reject, is_data_error
    )


def refuse_cell_table_resync(layout: SinkTableLayout) -> None:
    """A re-sync compares row versions and tombstones rows; a cell table's rows are merged states
    (sinks/cell_merge/), which that would bypass."""
    if layout.cell_schema is not None:
        raise NotImplementedError(
            f"table {layout.source_table}: re-syncing a cell table (Cassandra) by key ranges is not supported"
        )
