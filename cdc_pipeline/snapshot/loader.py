"""Loads one chunk of a table into every sink: read -> mask -> map -> write, slice by slice.

The same delivery as replication (delivery/fan_out.py), on rows read with SELECT: masking before
anything is written, values a sink refuses to the DLQ, version-guarded writes, the sinks in
parallel. Checkpoints are never moved here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from cdc_pipeline.config.models import PipelineConfig
from cdc_pipeline.core.changes import ChangeBatch, Rejection, TableChanges
from cdc_pipeline.core.checkpoint import NOT_FROM_THE_LOG_CHECKPOINT
from cdc_pipeline.core.key_digest import canonical_key_part
from cdc_pipeline.core.schema import TableSchema
from cdc_pipeline.core.schema_changes import ShapeSource
from cdc_pipeline.delivery.fan_out import SinkFanOut
from cdc_pipeline.mapping.sink_types import TypeNotMappable
from cdc_pipeline.masking.masker import Masker
from cdc_pipeline.sinks.availability import SinkUnavailable
from cdc_pipeline.sinks.base import Sink
from cdc_pipeline.sinks.chunk_pull import ChunkPullFailed, ChunkPullRequest
from cdc_pipeline.sinks.registry import sink_kind, type_mapper
from cdc_pipeline.snapshot.chunks import Chunk
from cdc_pipeline.sources.snapshot_source import SnapshotSource

# Snapshot batches do not come from the log and never move a checkpoint; their bounds are a marker.
_NOT_FROM_THE_LOG = NOT_FROM_THE_LOG_CHECKPOINT


@dataclass
class ChunkLoadResult:
    rows_read: int = 0
    rows_written: Counter[str] = field(default_factory=Counter)  # sink -> rows
    rows_removed: Counter[str] = field(default_factory=Counter)  # sink -> rows found only in the sink
    dead_lettered: int = 0
    # False when masking failed for the table: its keys are unknown, so nothing may be removed.
    keys_complete: bool = True
    pulled_by: list[str] = field(default_factory=list)  # ClickHouse sinks that took the fast path
    # ClickHouse sinks whose pull failed (why), loaded through the Python path instead.
    pull_failures: dict[str, str] = field(default_factory=dict)


def load_chunk(
    source_name: str,
    source: SnapshotSource,
    schema: TableSchema,
    chunk: Chunk,
    pipeline: PipelineConfig,
    masker: Masker,
    sinks: dict[str, Sink],
    record_rejections: Callable[[list[Rejection]], int],
    warn: Callable[[str], None],
    slice_rows: int = 10_000,
) -> ChunkLoadResult:
    """`record_rejections` stores dead letters (masked) and returns how many it stored; `warn` hears
    of a sink that is down while its write is retried."""
    load = _ChunkLoad(source_name, source, schema, chunk, pipeline, masker, sinks, warn)
    return load.run(record_rejections, slice_rows)


@dataclass
class _ChunkLoad:
    """One chunk into every sink: the pull where possible, the Python path for the others, then the
    removal of rows found only in a sink."""

    source_name: str
    source: SnapshotSource
    schema: TableSchema
    chunk: Chunk
    pipeline: PipelineConfig
    masker: Masker
    sinks: dict[str, Sink]
    warn: Callable[[str], None]
    result: ChunkLoadResult = field(default_factory=ChunkLoadResult)
    # The chunk's keys as the sinks hold them (masked, canonical).
    present: set[tuple[str, ...]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.mappers = {name: type_mapper(self.pipeline, name) for name in self.sinks}

    def run(self, record_rejections: Callable[[list[Rejection]], int], slice_rows: int) -> ChunkLoadResult:
        result = self.result
        pulled = self._pull_where_possible()
        result.pulled_by = sorted(pulled)
        python_sinks = {name: sink for name, sink in self.sinks.items() if name not in pulled}
        if python_sinks:
            self._load_in_python(python_sinks, record_rejections, slice_rows)
        for name, rows in pulled.items():
            result.rows_written[name] = rows
            result.rows_read = max(result.rows_read, rows)
        # Cell tables (Cassandra) are not re-synced by removal yet: their sinks refuse to list or
        # tombstone rows by key range (the chunk's bounds are tokens there, not key values). A first
        # load needs no removal; a re-sync leaves rows that exist only in a sink in place.
        if result.keys_complete and not self.schema.merges_cells:
            self._remove_rows_only_in_the_sinks(present_is_known=bool(python_sinks))
        return result

    def _load_in_python(
        self, sinks: dict[str, Sink], record_rejections: Callable[[list[Rejection]], int], slice_rows: int
    ) -> None:
        result, schema = self.result, self.schema

        def record(rejections: list[Rejection]) -> None:
            result.dead_lettered += record_rejections(rejections)

        fan_out = SinkFanOut(self.pipeline, sinks, self.masker, record, self.warn)
        try:
            for chunk_slice in self.source.read_chunk(schema, self.chunk.bounds, self.chunk.version, slice_rows):
                result.rows_read += len(chunk_slice.changes) + len(chunk_slice.rejections)
                # The snapshot's shape: the sinks may take a change that rounds stored values, which this
                # load replaces (a re-sync is how an operator releases a table held for such a change).
                tables = {schema.qualified_name: TableChanges(schema, chunk_slice.changes, ShapeSource.SNAPSHOT)}
                tables.update({companion.schema.qualified_name: companion for companion in chunk_slice.companions})
                batch = ChangeBatch(
                    self.source_name,
                    _NOT_FROM_THE_LOG,
                    _NOT_FROM_THE_LOG,
                    tables,
                    chunk_slice.rejections,
                    table_owner=self.pipeline.sources[self.source_name].table_owner(self.source_name),
                )
                fanned = fan_out.deliver(batch, sinks, advance_checkpoint=False)
                self._note_present_keys(fanned.masked)
                for name, delivery in fanned.deliveries.items():
                    if delivery.unavailable is not None:
                        # The chunk fails and is retried as a whole (its writes are idempotent).
                        raise SinkUnavailable(name, delivery.unavailable)
                    assert delivery.result is not None
                    written = delivery.result.rows_by_table.values()
                    result.rows_written[name] += sum(sum(counts.values()) for counts in written)
        finally:
            fan_out.close()

    def _note_present_keys(self, masked: ChangeBatch) -> None:
        """The chunk's keys as the sinks hold them; unknown for good once masking refused a row."""
        if masked.rejections:
            self.result.keys_complete = False
        schema = self.schema
        for table in masked.tables.values():
            if table.schema.qualified_name != schema.qualified_name:
                continue  # a companion table (Cassandra's static columns), keyed otherwise
            self.present.update(
                tuple(canonical_key_part(change.values[k]) for k in schema.key_columns) for change in table.changes
            )

    def _pull_where_possible(self) -> dict[str, int]:
        """Offer the chunk to the sinks that can pull it straight from the source: their names -> rows."""
        schema, chunk = self.schema, self.chunk
        masked = frozenset(self.masker.plan(schema.qualified_name, schema.column_names))
        pulled = {}
        for name, sink in self.sinks.items():
            make_pull = sink_kind(self.pipeline.sinks[name].kind).chunk_pull
            if make_pull is None:
                continue
            overridden = frozenset(
                o.column
                for o in self.pipeline.type_overrides
                if o.table == schema.qualified_name and o.sink in (None, name)
            )
            request = ChunkPullRequest(
                self.source_name, self.source, schema, chunk.bounds, chunk.version, chunk.index, masked, overridden
            )
            try:
                layout = self.mappers[name].layout(schema)
                rows = make_pull(sink).pull(request, layout)
            except TypeNotMappable:
                continue  # the Python path sends the chunk's rows to the DLQ with the reason
            except ChunkPullFailed as failed:
                # The Python path loads it (rows the pull wrote carry the same version: no harm).
                self.result.pull_failures[name] = str(failed)
                continue
            if rows is not None:
                pulled[name] = rows
        return pulled

    def _remove_rows_only_in_the_sinks(self, present_is_known: bool) -> None:
        """A re-sync also removes what exists only in a sink, within the chunk's key range. A sink
        with no live row older than the snapshot (a first load) needs nothing: the source's keys are
        read only when some sink has such rows."""
        chunk = self.chunk
        key_range = None if chunk.low is None or chunk.high is None else (chunk.low, chunk.high)
        masked_schema = self.masker.masked_schema(self.schema)
        layouts = {}
        for name in self.sinks:
            try:
                layouts[name] = self.mappers[name].layout(masked_schema)
            except TypeNotMappable:
                continue  # the table cannot exist in this sink: its rows are in the DLQ
        suspects = {
            name: self.sinks[name].older_live_keys(layout, key_range, chunk.version) for name, layout in layouts.items()
        }
        if not any(suspects.values()):
            return
        if not present_is_known:
            # Only pulled sinks, which hold nothing masked: the source's keys are theirs.
            for source_keys in self.source.read_chunk_keys(self.schema, chunk.bounds, 10_000):
                self.present.update(tuple(canonical_key_part(part) for part in key) for key in source_keys)
        for name, suspect_keys in suspects.items():
            if suspect_keys - self.present:
                self.result.rows_removed[name] = self.sinks[name].tombstone_missing(
                    layouts[name], key_range, self.present, chunk.version
                )
