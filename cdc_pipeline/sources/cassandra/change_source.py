"""The Cassandra source: CDC commit-log segments in the node's cdc_raw, decoded by the Java segment
reader, behind ChangeSource.

Positions are `cdc:<segment id>:<offset>`. A batch reads segment by segment from the earliest sink
checkpoint; it moves to the next segment only when the current one is COMPLETED and read to its end,
and then ends at `cdc:<next segment>:0`. Segments every checkpoint has passed are deleted by release():
the node refuses writes to CDC tables once cdc_raw holds cdc_total_space.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from cdc_pipeline.config.sources import CassandraSourceConfig
from cdc_pipeline.core.changes import ChangeBatch, Rejection, RowChange, TableChanges
from cdc_pipeline.core.checkpoint import Checkpoint
from cdc_pipeline.core.positions import SourcePosition
from cdc_pipeline.core.retention import RetentionStatus
from cdc_pipeline.core.schema import TableSchema, qualify, split_qualified
from cdc_pipeline.sources.cassandra.catalog import CassandraCatalog, quote
from cdc_pipeline.sources.cassandra.cdc_raw import CdcRaw
from cdc_pipeline.sources.cassandra.changes import ChangeDecoder, error_line_rejection
from cdc_pipeline.sources.cassandra.connection import CassandraSourceSettings
from cdc_pipeline.sources.cassandra.node_config import NodeConfigError, read_node_config
from cdc_pipeline.sources.cassandra.positions import CommitLogPosition, as_commit_log_position
from cdc_pipeline.sources.cassandra.segment_reader import (
    READER_DIR,
    CdcSegment,
    SegmentReaderConnection,
    SegmentReadError,
    reader_is_built,
    write_schema_file,
)

_FATAL_READ_ERRORS = ("segment_read", "missing_entries")
# The reader refuses a schema file without tables, but a node whose user tables were all dropped may
# still hold their mutations in cdc_raw: those must become unknown_table rejections, not go unread.
# So such a file gets this table (cdc = false, a fixed id no node assigns: it matches no mutation).
_PLACEHOLDER_TABLE = {
    "keyspace": "cdc_pipeline_placeholder",
    "table": "no_user_tables",
    "id": "00000000-0000-1000-8000-000000000000",
    "cql": "CREATE TABLE cdc_pipeline_placeholder.no_user_tables (id int PRIMARY KEY) WITH cdc = false",
    "dropped_columns": [],
}


def _add_placeholder_if_empty(schema_file: Path) -> None:
    described = json.loads(schema_file.read_text())
    if not described["tables"]:
        described["tables"] = [_PLACEHOLDER_TABLE]
        schema_file.write_text(json.dumps(described))


class CassandraSourceError(RuntimeError):
    """The node or the pipeline's view of it is not usable for change capture; the message says why."""


class CassandraChangeSource:
    log_name = "commitlog"

    def __init__(
        self,
        name: str,
        settings: CassandraSourceSettings,
        config: CassandraSourceConfig,
        state_dir: Path | None = None,
    ) -> None:
        self._name = name
        self._config = config
        self.settings = settings
        self.catalog = CassandraCatalog(settings, config.tables)
        self.node = read_node_config(Path(config.cassandra_yaml), f"sources.{name}.cassandra_yaml")
        self.cdc_raw = CdcRaw(self.node.cdc_raw_dir, self.node.cdc_total_space)
        # The schema files the reader decodes with, one per node schema version.
        self._state_dir = state_dir or Path(tempfile.gettempdir()) / "cdc_pipeline_cassandra" / name
        self._segment_reader: SegmentReaderConnection | None = None

    # -- checks ---------------------------------------------------------------------------------

    def check(self) -> None:
        where = self.settings.describe()
        self.settings.session().execute("SELECT release_version FROM system.local")
        if not self.node.cdc_enabled:
            raise NodeConfigError(
                f"{where}: cdc_enabled is not true in {self.node.yaml_path}; set it and restart the node"
            )
        directory = self.node.cdc_raw_dir
        if not directory.is_dir() or not os.access(directory, os.R_OK | os.W_OK | os.X_OK):
            raise NodeConfigError(
                f"{where}: cdc_raw_directory {directory} (from {self.node.yaml_path}) is not a directory this"
                " process can read and delete segments in"
            )
        if not reader_is_built():
            raise CassandraSourceError(f"{where}: the segment reader is not built; run {READER_DIR / 'build.sh'}")
        self.catalog.refresh()
        for pattern in self._config.tables.include:
            if any(ch in pattern for ch in "*?["):
                continue  # globs select the matching tables with cdc = true, whichever exist
            keyspace, _, table = pattern.partition(".")
            if not self.catalog.exists(keyspace, table):
                raise CassandraSourceError(
                    f"{where}: sources.{self._name}.tables.include names {pattern}, which does not exist"
                )
            if not self.catalog.has_cdc(keyspace, table):
                raise CassandraSourceError(
                    f"{where}: table {pattern} (sources.{self._name}.tables.include) has cdc = false, so its changes"
                    f" never reach cdc_raw; enable it with ALTER TABLE {quote(keyspace)}.{quote(table)} WITH cdc = true"
                )
        # The connection to the reader server is made now: when no server is up yet, its JVM
        # initialises (about a second) while the run reads the sinks' checkpoints, not after them.
        self._reader(fresh_schema=False)

    # -- positions ------------------------------------------------------------------------------

    def high_water_mark(self) -> CommitLogPosition:
        return self.cdc_raw.high_water_mark()

    def has_unread_changes(self) -> bool | None:
        # The sinks' checkpoints live in the sinks, not at the node: nothing cheap to compare with.
        return None

    def _positions(self, checkpoints: Mapping[str, Checkpoint | None]) -> dict[str, CommitLogPosition | None]:
        positions: dict[str, CommitLogPosition | None] = {}
        for sink, checkpoint in checkpoints.items():
            try:
                positions[sink] = as_commit_log_position(checkpoint.position) if checkpoint is not None else None
            except ValueError as error:
                raise CassandraSourceError(
                    f"sink '{sink}' holds checkpoint {checkpoint} for source '{self._name}': {error};"
                    " re-sync that sink or give the source another name"
                ) from None
        return positions

    def _earliest(self, checkpoints: Mapping[str, Checkpoint | None]) -> tuple[str, CommitLogPosition] | None:
        """The sink with the earliest checkpoint; None when some sink has none (it needs everything
        cdc_raw holds) or there are no sinks."""
        positions = self._positions(checkpoints)
        known = {sink: position for sink, position in positions.items() if position is not None}
        if not known or len(known) < len(positions):
            return None
        return min(known.items(), key=lambda item: item[1])

    def _resume(self, checkpoints: Mapping[str, Checkpoint | None]) -> CommitLogPosition | None:
        earliest = self._earliest(checkpoints)
        return earliest[1] if earliest is not None else None

    # -- reading --------------------------------------------------------------------------------

    def read_batch(
        self,
        checkpoints: Mapping[str, Checkpoint | None],
        stop_at: SourcePosition | None,
        max_rows: int,
        max_bytes: int | None = None,
        max_seconds: float | None = None,
    ) -> ChangeBatch:
        # The cyclic GC is paused around the whole batch by its caller (ReplicationSession), not here.
        earliest = self._earliest(checkpoints)
        resume = earliest[1] if earliest is not None else None
        segments = self.cdc_raw.segments()
        start = self.cdc_raw.start_of(segments, resume, earliest[0] if earliest is not None else None)
        limit = as_commit_log_position(stop_at) if stop_at is not None else None
        batch_start = start or resume or CommitLogPosition(0, 0)
        batch = ChangeBatch(
            self._name,
            Checkpoint(batch_start),
            Checkpoint(batch_start),
            table_owner=self._config.table_owner(self._name),
        )
        position = start
        rows = 0
        # Commit-log bytes read: whole segments' spans, so a batch stops at the segment that crosses it.
        read_bytes = 0
        deadline = time.monotonic() + max_seconds if max_seconds is not None else None
        by_id = {segment.segment_id: segment for segment in segments}
        while position is not None and rows < max_rows:
            if (max_bytes is not None and read_bytes >= max_bytes) or (
                deadline is not None and time.monotonic() >= deadline
            ):
                break
            segment = by_id.get(position.segment_id)
            if segment is None:
                break  # cdc:<next>:0 of a segment that holds no CDC data yet
            end = segment.durable_offset
            if limit is not None:
                if segment.segment_id > limit.segment_id:
                    break
                if segment.segment_id == limit.segment_id:
                    end = min(end, max(limit.offset, position.offset))
            if position.offset < end:
                before = batch.row_count + len(batch.rejections)
                read_end = self._read(replace(segment, durable_offset=end), position.offset, max_rows - rows, batch)
                rows += batch.row_count + len(batch.rejections) - before
                read_bytes += int(read_end["position"]) - position.offset
                position = CommitLogPosition(segment.segment_id, int(read_end["position"]))
                if read_end.get("limit_reached"):
                    break
            if segment.complete and position.offset >= segment.durable_offset:
                later = [s.segment_id for s in segments if s.segment_id > segment.segment_id]
                position = CommitLogPosition(later[0] if later else segment.segment_id + 1, 0)
                continue
            break
        batch.end = Checkpoint(position or batch_start)
        commit_times = [c.commit_ts for t in batch.tables.values() for c in t.changes]
        batch.last_commit_ts = max(commit_times) if commit_times else None
        return batch

    def _schema_path(self, force: bool) -> Path:
        """The schema file for the node's current schema version, written when it changed (or forced)."""
        session = self.settings.session()
        row = session.execute("SELECT schema_version FROM system.local").one()
        path = self._state_dir / f"schema-{row.schema_version}.json"
        if force or not path.exists():
            self.catalog.refresh()
            self._state_dir.mkdir(parents=True, exist_ok=True)
            scratch = path.with_suffix(f".{os.getpid()}.tmp")
            # Every user keyspace, not only the selected tables' ones: the reader cannot even skip a
            # mutation of a table it does not know (it becomes an unknown_table error with raw bytes).
            write_schema_file(session, self.catalog.user_keyspaces(), scratch)
            _add_placeholder_if_empty(scratch)
            scratch.replace(path)
        return path

    def _reader(self, fresh_schema: bool) -> SegmentReaderConnection:
        """The reader connection for the node's current schema (a new one when the schema changed, or
        when the schema file is written again because the last read met a table it did not know)."""
        schema_file = self._schema_path(force=fresh_schema)
        reader = self._segment_reader
        if reader is not None and (fresh_schema or reader.schema_file != schema_file or not reader.usable):
            reader.close()
            reader = None
        if reader is None:
            reader = self._segment_reader = SegmentReaderConnection(self.node.yaml_path, schema_file)
        return reader

    def _read(self, segment: CdcSegment, start: int, max_mutations: int, batch: ChangeBatch) -> dict[str, Any]:
        """Decodes the changes in (start, durable offset] of `segment` into `batch` as the reader writes
        them; returns the reader's end line."""
        for fresh_schema in (False, True):
            read = _DecodedRead(self.catalog)
            end: dict[str, Any] | None = None
            for line in self._reader(fresh_schema).lines(segment, start, max_mutations):
                kind = line.get("kind")
                if kind == "change":
                    read.decode(line)
                elif kind == "error":
                    if line.get("reason") == "unknown_table" and not fresh_schema:
                        # A table created (or a keyspace added) since the schema file was written: the
                        # range once more, with a fresh file (this read's lines are dropped).
                        break
                    self._refuse_fatal(line, segment, start)
                    read.reject(line)
                elif kind == "end":
                    end = line
            if end is not None:
                read.add_to(batch)
                return end
        raise AssertionError("unreachable: the read with a fresh schema file never breaks off")

    def _refuse_fatal(self, error: dict[str, Any], segment: CdcSegment, start: int) -> None:
        if error.get("reason") in _FATAL_READ_ERRORS:
            raise SegmentReadError(
                f"{self.settings.describe()}: {error.get('reason')} in segment {segment.path.name} at offset"
                f" {error.get('position')} (read from {start} to {segment.durable_offset}): {error.get('error')};"
                " nothing after it is skipped: the run fails until the segment is readable"
            )

    # -- freeing cdc_raw ------------------------------------------------------------------------

    def release(self, checkpoints: Mapping[str, Checkpoint | None]) -> None:
        earliest = self._resume(checkpoints)
        if earliest is None:
            return  # a sink without a checkpoint still needs every segment
        for segment in self.cdc_raw.releasable(earliest):
            self.cdc_raw.delete(segment)

    def close(self) -> None:
        """Ends the reader connection kept between batches (the server stays up for the next run)."""
        if self._segment_reader is not None:
            self._segment_reader.close()
            self._segment_reader = None

    def log_usage(self) -> dict[str, int | str]:
        return self.cdc_raw.usage().as_metadata()

    def retention(self, checkpoints: Mapping[str, Checkpoint | None]) -> RetentionStatus:
        return self.cdc_raw.retention(self._name, self._positions(checkpoints), self.node.cdc_total_space_bytes)

    # -- catalog --------------------------------------------------------------------------------

    def table_schema(self, table: str) -> TableSchema | None:
        keyspace, name = split_qualified(table)
        return self.catalog.table(keyspace, name)

    def row_count(self, table: str) -> int:
        keyspace, name = split_qualified(table)
        return self.catalog.row_count(keyspace, name)

    def live_keys(self, schema: TableSchema) -> Iterator[tuple[Any, ...]]:
        return self.catalog.live_keys(schema)


class _DecodedRead:
    """One read's changes and rejections, added to the batch only once the read is whole (a read
    that meets a table the schema file lacks is dropped and made again)."""

    def __init__(self, catalog: CassandraCatalog) -> None:
        self._catalog = catalog
        self._tables: dict[str, TableChanges] = {}
        self._rejections: list[Rejection] = []
        # (keyspace, table) -> its decoder; None: not selected, or gone from the node
        self._decoders: dict[tuple[str, str], ChangeDecoder | None] = {}
        # id of a schema the decoders return -> its changes in _tables (the decoders keep the schemas)
        self._changes_of: dict[int, list[RowChange]] = {}

    def reject(self, error: dict[str, Any]) -> None:
        table_id = error.get("table_id")
        self._rejections.append(error_line_rejection(error, f"table id {table_id}" if table_id else "(unknown)"))

    def decode(self, line: dict[str, Any]) -> None:
        key = (line["keyspace"], line["table"])
        try:
            decoder = self._decoders[key]
        except KeyError:
            decoder = self._decoders[key] = self._decoder(*key)
        if decoder is None:
            if self._catalog.selects(*key):  # selected, but the node no longer has it
                gone = {**line, "reason": "unknown_table", "error": f"{qualify(*key)} no longer exists"}
                self._rejections.append(error_line_rejection(gone, qualify(*key)))
            return
        decoded = decoder.decode(line)
        for schema, change in decoded.changes:
            # By the schema object's identity: its qualified name is formatted anew on each call.
            changes = self._changes_of.get(id(schema))
            if changes is None:
                table = self._tables.setdefault(schema.qualified_name, TableChanges(schema))
                changes = self._changes_of[id(schema)] = table.changes
            changes.append(change)
        if decoded.rejections:
            self._rejections += decoded.rejections

    def _decoder(self, keyspace: str, table: str) -> ChangeDecoder | None:
        if not self._catalog.selects(keyspace, table):
            return None
        layout = self._catalog.layout(keyspace, table)
        if layout is None:  # the driver's schema view may lag a table created a moment ago
            self._catalog.refresh()
            layout = self._catalog.layout(keyspace, table)
        return ChangeDecoder(layout) if layout is not None else None

    def add_to(self, batch: ChangeBatch) -> None:
        for name, found in self._tables.items():
            table = batch.tables.get(name)
            if table is None:
                batch.tables[name] = found
            else:
                table.changes += found.changes
        batch.rejections += self._rejections
