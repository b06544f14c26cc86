"""In-memory fakes of a source and a sink, for fast tests of decisions that do not depend on a
database: the sensor's (skip, back off, continue, retry), and the delivery's outage path.

They sit beside the real-server tests, never instead of them. The source is a list of committed
transactions with binlog-shaped positions; the sink runs the pipeline's own write algorithm
(`sinks/batch_write.py`) on dictionaries, and can be switched "down" so that every call raises the
same `SinkUnavailable` a stopped server gives. `test_connector_registry.py` checks both against the
protocols, like the real kinds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from cdc_pipeline.config.sources import SourceConfig
from cdc_pipeline.core.changes import ChangeBatch, ChangeOp, Rejection, RowChange, TableChanges
from cdc_pipeline.core.checkpoint import Checkpoint
from cdc_pipeline.core.key_digest import canonical_key_part
from cdc_pipeline.core.positions import SourcePosition
from cdc_pipeline.core.retention import RetentionStatus, SinkRetention
from cdc_pipeline.core.schema import TableSchema
from cdc_pipeline.mapping.mapper import MappedBatch
from cdc_pipeline.mapping.sink_types import SinkTableLayout
from cdc_pipeline.sinks.availability import translates_outages, unavailable_as
from cdc_pipeline.sinks.base import TableStats, WriteResult
from cdc_pipeline.sinks.batch_write import RejectChange, write_batch
from cdc_pipeline.sinks.schema_sync.sync import SchemaSyncResult
from cdc_pipeline.sources.mysql.positions import BinlogPosition, as_binlog_position, row_version

LOG_FILE = "memlog.000001"
_START = 4  # where a binlog's first event starts, as in MySQL


@dataclass
class InMemoryLog:
    """A source's committed transactions: each ends at position LOG_FILE:<its end offset>."""

    schemas: dict[str, TableSchema] = field(default_factory=dict)
    # (end offset, commit time, [(table, op, values)]) in commit order.
    transactions: list[tuple[int, int, list[tuple[str, ChangeOp, dict[str, Any]]]]] = field(default_factory=list)
    reads: int = 0  # batches read, to tell whether a decision asked the source for changes

    def commit(self, commit_ts: int, *changes: tuple[str, ChangeOp, dict[str, Any]]) -> BinlogPosition:
        """Append one transaction; returns the log's new end."""
        start = self.transactions[-1][0] if self.transactions else _START
        self.transactions.append((start + 100, commit_ts, list(changes)))
        return self.end

    @property
    def end(self) -> BinlogPosition:
        return BinlogPosition(LOG_FILE, self.transactions[-1][0] if self.transactions else _START)

    def rows(self, table: str) -> dict[tuple[Any, ...], dict[str, Any]]:
        """The table as the source holds it now: key -> values."""
        schema = self.schemas[table]
        rows: dict[tuple[Any, ...], dict[str, Any]] = {}
        for _, _, changes in self.transactions:
            for name, op, values in changes:
                if name == table:
                    key = tuple(values[k] for k in schema.key_columns)
                    if op is ChangeOp.DELETE:
                        rows.pop(key, None)
                    else:
                        rows[key] = values
        return rows


# Dagster resources hold configuration only: the logs and sinks they stand for live here, by id.
LOGS: dict[str, InMemoryLog] = {}
SINKS: dict[str, InMemorySink] = {}


class InMemoryChangeSource:
    log_name = "binlog"

    def __init__(self, name: str, log: InMemoryLog) -> None:
        self.name, self.log = name, log

    def check(self) -> None:
        return None

    def high_water_mark(self) -> SourcePosition:
        return self.log.end

    def read_batch(
        self,
        checkpoints: Mapping[str, Checkpoint | None],
        stop_at: SourcePosition | None,
        max_rows: int,
        max_bytes: int | None = None,
        max_seconds: float | None = None,
    ) -> ChangeBatch:
        self.log.reads += 1
        known = [as_binlog_position(c.position).pos for c in checkpoints.values() if c is not None]
        start = min(known) if len(known) == len(checkpoints) and known else _START
        limit = as_binlog_position(stop_at).pos if stop_at is not None else self.log.end.pos
        batch = ChangeBatch(self.name, _checkpoint(start), _checkpoint(start))
        for end, commit_ts, changes in self.log.transactions:
            if end <= start or end > limit or (batch.row_count >= max_rows):
                continue
            for index, (table, op, values) in enumerate(changes):
                version = row_version(1, end - 100, index)
                change = RowChange(op, values, version, f"{LOG_FILE}:{end - 100}", commit_ts)
                batch.tables.setdefault(table, TableChanges(self.log.schemas[table])).changes.append(change)
            batch.end, batch.last_commit_ts = _checkpoint(end), commit_ts
        return batch

    def has_unread_changes(self) -> bool | None:
        return None

    def release(self, checkpoints: Mapping[str, Checkpoint | None]) -> None:
        return None

    def table_schema(self, table: str) -> TableSchema | None:
        return self.log.schemas.get(table)

    def row_count(self, table: str) -> int:
        return len(self.log.rows(table))

    def live_keys(self, schema: TableSchema) -> Iterator[tuple[Any, ...]]:
        yield from self.log.rows(schema.qualified_name)

    def log_usage(self) -> dict[str, int | str]:
        return {}

    def close(self) -> None:
        return None

    def retention(self, checkpoints: Mapping[str, Checkpoint | None]) -> RetentionStatus:
        sinks = {name: SinkRetention(name, str(c.position) if c else None) for name, c in checkpoints.items()}
        return RetentionStatus(self.name, f"{LOG_FILE}:{_START}", sinks=sinks)


def _checkpoint(offset: int) -> Checkpoint:
    return Checkpoint(BinlogPosition(LOG_FILE, offset))


class InMemorySourceResource(dg.ConfigurableResource):
    log_id: str

    def change_source(self, name: str, config: SourceConfig) -> InMemoryChangeSource:
        return InMemoryChangeSource(name, LOGS[self.log_id])

    def snapshot_source(self, name: str, config: SourceConfig) -> Any:
        raise NotImplementedError("initial loads read a real source")


class SinkIsDown(ConnectionError):
    """What the in-memory sink raises while it is switched down."""


@dataclass
class _StoredRow:
    values: list[Any]
    version: int
    deleted: bool


class InMemorySink:
    """A sink on dictionaries, written by the pipeline's write algorithm; `down` makes every call fail
    as a stopped server would."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.down = False
        self.checkpoints: dict[str, Checkpoint] = {}
        self.tables: dict[str, dict[tuple[str, ...], _StoredRow]] = {}
        self.layouts: dict[str, SinkTableLayout] = {}

    def unavailable_as_sink_error(self) -> AbstractContextManager[None]:
        return unavailable_as(self.name, "", lambda error: isinstance(error, SinkIsDown))

    def reachable(self) -> None:
        if self.down:
            raise SinkIsDown(f"in-memory sink {self.name} is down")

    @translates_outages
    def checkpoint(self, source: str) -> Checkpoint | None:
        self.reachable()
        return self.checkpoints.get(source)

    @translates_outages
    def adopt_checkpoint(self, source: str, checkpoint: Checkpoint) -> Checkpoint:
        self.reachable()
        return self.checkpoints.setdefault(source, checkpoint)

    @translates_outages
    def write(
        self,
        batch: MappedBatch,
        record_rejections: Callable[[list[Rejection]], None],
        advance_checkpoint: bool = True,
    ) -> WriteResult:
        return write_batch(self.name, _InMemoryBatchSteps(self), batch, record_rejections, advance_checkpoint)

    @translates_outages
    def table_stats(self, source_table: str) -> TableStats | None:
        self.reachable()
        rows = self.tables.get(source_table)
        if rows is None:
            return None
        live = [row for row in rows.values() if not row.deleted]
        return TableStats(len(live), sum(row.version for row in live))

    def table_note(self, source_table: str) -> str | None:
        return None

    @translates_outages
    def older_live_keys(
        self, layout: SinkTableLayout, key_range: tuple[int, int] | None, version: int
    ) -> set[tuple[str, ...]]:
        self.reachable()
        rows = self.tables.get(layout.source_table, {})
        return {key for key, row in rows.items() if not row.deleted and row.version < version}

    @translates_outages
    def tombstone_missing(
        self, layout: SinkTableLayout, key_range: tuple[int, int] | None, present: set[tuple[str, ...]], version: int
    ) -> int:
        gone = self.older_live_keys(layout, key_range, version) - present
        for key in gone:
            self.tables[layout.source_table][key] = _StoredRow(
                self.tables[layout.source_table][key].values, version, True
            )
        return len(gone)

    @translates_outages
    def release_schema_hold(self, source: str, source_table: str) -> bool:
        self.reachable()
        return False

    @translates_outages
    def live_keys(self, source_table: str, key_columns: tuple[str, ...]) -> Iterator[tuple[Any, ...]]:
        self.reachable()
        layout = self.layouts[source_table]
        indexes = [layout.column_names.index(k) for k in key_columns]
        for row in list(self.tables.get(source_table, {}).values()):
            if not row.deleted:
                yield tuple(row.values[i] for i in indexes)

    def live_rows(self, source_table: str) -> dict[tuple[str, ...], list[Any]]:
        """For assertions: canonical key -> the live row's column values."""
        return {key: row.values for key, row in self.tables.get(source_table, {}).items() if not row.deleted}


class _InMemoryBatchSteps:
    crash_prefix = "in_memory"
    insert_chunk_rows: int | None = None

    def __init__(self, sink: InMemorySink) -> None:
        self.sink = sink

    def stored_checkpoint(self, batch: MappedBatch) -> Checkpoint | None:
        self.sink.reachable()
        return self.sink.checkpoints.get(batch.source)

    def sync_schema(self, batch: MappedBatch, floor: int) -> SchemaSyncResult:
        self.sink.reachable()
        return SchemaSyncResult()

    def ensure_table(self, layout: SinkTableLayout, source: str) -> None:
        self.sink.reachable()
        self.sink.tables.setdefault(layout.source_table, {})
        self.sink.layouts[layout.source_table] = layout

    def row_inserter(self, layout: SinkTableLayout, rows: list[list[Any]]) -> Callable[[list[list[Any]]], None]:
        table = self.sink.tables[layout.source_table]
        indexes = [layout.column_names.index(k) for k in layout.key_columns]
        width = len(layout.column_names)

        def insert(chunk: list[list[Any]]) -> None:
            self.sink.reachable()
            for row in chunk:
                key = tuple(canonical_key_part(row[i]) for i in indexes)
                version, deleted = row[width], bool(row[width + 1])
                stored = table.get(key)
                if stored is None or stored.version < version:  # version-guarded, as the real sinks
                    table[key] = _StoredRow(row[:width], version, deleted)

        return insert

    def is_data_error(self, error: Exception) -> bool:
        return False

    def write_cells(
        self, layout: SinkTableLayout, rows: list[list[Any]], changes: list[RowChange], reject: RejectChange
    ) -> None:
        raise NotImplementedError("the in-memory sink holds row tables only")

    def advance_checkpoint(self, batch: MappedBatch, stored: Checkpoint | None) -> None:
        self.sink.reachable()
        self.sink.checkpoints[batch.source] = batch.end


class InMemorySinkResource(dg.ConfigurableResource):
    sink_id: str

    def sink(self, name: str) -> InMemorySink:
        return SINKS[self.sink_id]
