"""Loads one chunk of a table into every sink: read -> mask -> map -> write, slice by slice.

The same steps as streaming, on rows read with SELECT: masking before anything is written,
values a sink refuses to the DLQ, version-guarded writes. Checkpoints are never moved here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from cdc_pipeline.config.models import PipelineConfig
from cdc_pipeline.core.changes import ChangeBatch, Rejection, TableChanges
from cdc_pipeline.core.checkpoint import Checkpoint
from cdc_pipeline.core.key_digest import canonical_key_part
from cdc_pipeline.core.positions import BinlogPosition
from cdc_pipeline.core.schema import TableSchema
from cdc_pipeline.mapping.mapper import TypeMapper
from cdc_pipeline.mapping.sink_types import TypeNotMappable
from cdc_pipeline.masking.masker import Masker
from cdc_pipeline.sinks.base import Sink
from cdc_pipeline.sinks.clickhouse_sink import ClickHouseSink
from cdc_pipeline.snapshot.chunks import Chunk
from cdc_pipeline.snapshot.clickhouse_pull import chunk_fits_clickhouse, pull_chunk, why_not_pullable
from cdc_pipeline.snapshot.reader import read_chunk, read_chunk_keys
from cdc_pipeline.sources.mysql.connection import MySqlConnectionSettings

# Snapshot batches do not come from the log and never move a checkpoint; their bounds are a marker.
_NOT_FROM_THE_LOG = Checkpoint(BinlogPosition("snapshot.000000", 4))


@dataclass
class ChunkLoadResult:
    rows_read: int = 0
    rows_written: Counter[str] = field(default_factory=Counter)  # sink -> rows
    rows_removed: Counter[str] = field(default_factory=Counter)  # sink -> rows found only in the sink
    dead_lettered: int = 0
    # False when masking failed for the table: its keys are unknown, so nothing may be removed.
    keys_complete: bool = True
    pulled_by: list[str] = field(default_factory=list)  # ClickHouse sinks that took the fast path


def load_chunk(
    source_name: str,
    settings: MySqlConnectionSettings,
    schema: TableSchema,
    chunk: Chunk,
    pipeline: PipelineConfig,
    masker: Masker,
    sinks: dict[str, Sink],
    record_rejections: Callable[[list[Rejection]], int],
    slice_rows: int = 10_000,
) -> ChunkLoadResult:
    """`record_rejections` stores dead letters (masked) and returns how many it stored."""
    result = ChunkLoadResult()
    mappers = {name: TypeMapper(name, pipeline.sinks[name].kind, pipeline.type_overrides) for name in sinks}
    present: set[tuple[str, ...]] = set()  # the chunk's keys as the sinks hold them (masked)
    pulled = _pull_where_possible(settings, schema, chunk, pipeline, masker, sinks, mappers)
    result.pulled_by = sorted(pulled)
    python_sinks = {name: sink for name, sink in sinks.items() if name not in pulled}
    if not python_sinks:
        # Nothing is masked when pulling: the source's keys are the sinks' keys.
        for keys in read_chunk_keys(settings, schema, chunk, slice_rows):
            present.update(tuple(canonical_key_part(part) for part in key) for key in keys)
        result.rows_read = len(present)
    for changes in read_chunk(settings, schema, chunk, slice_rows) if python_sinks else ():
        result.rows_read += len(changes)
        batch = ChangeBatch(
            source_name, _NOT_FROM_THE_LOG, _NOT_FROM_THE_LOG, {schema.qualified_name: TableChanges(schema, changes)}
        )
        masked = masker.mask_batch(batch)
        result.dead_lettered += record_rejections(masked.rejections)
        if masked.rejections:
            result.keys_complete = False
        for table in masked.tables.values():
            present.update(
                tuple(canonical_key_part(change.values[k]) for k in schema.key_columns) for change in table.changes
            )
        for name, sink in python_sinks.items():
            mapped = mappers[name].map_batch(masked)

            def record(rejections: list[Rejection], refused_by_map: list[Rejection] = mapped.rejections) -> None:
                result.dead_lettered += record_rejections([*refused_by_map, *rejections])

            written = sink.write(mapped, record, advance_checkpoint=False)
            result.rows_written[name] += sum(sum(counts.values()) for counts in written.rows_by_table.values())
    for name in pulled:
        result.rows_written[name] = len(present)
    if result.keys_complete:
        # A re-sync also removes what exists only in the sink (within this chunk's key range).
        key_range = None if chunk.low is None or chunk.high is None else (chunk.low, chunk.high)
        masked_schema = masker.masked_schema(schema)
        for name, sink in sinks.items():
            try:
                layout = mappers[name].layout(masked_schema)
            except TypeNotMappable:
                continue  # the table cannot exist in this sink: its rows are in the DLQ
            result.rows_removed[name] = sink.tombstone_missing(layout, key_range, present, chunk.version)
    return result


def _pull_where_possible(
    settings: MySqlConnectionSettings,
    schema: TableSchema,
    chunk: Chunk,
    pipeline: PipelineConfig,
    masker: Masker,
    sinks: dict[str, Sink],
    mappers: dict[str, TypeMapper],
) -> set[str]:
    """Load the chunk into the ClickHouse sinks that can pull it from MySQL; return their names."""
    masked = set(masker.plan(schema.qualified_name, schema.column_names))
    candidates = {}
    for name, sink in sinks.items():
        if not isinstance(sink, ClickHouseSink):
            continue
        overridden = {
            o.column for o in pipeline.type_overrides if o.table == schema.qualified_name and o.sink in (None, name)
        }
        if why_not_pullable(schema, masked, overridden) is None:
            candidates[name] = sink
    if not candidates or not chunk_fits_clickhouse(settings, schema, chunk):
        return set()
    for name, sink in candidates.items():
        pull_chunk(sink, mappers[name].layout(schema), settings, schema, chunk)
    return set(candidates)
