"""Loads one chunk of a table into every sink: read -> mask -> map -> write, slice by slice.

The same steps as streaming, on rows read with SELECT: masking before anything is written,
values a sink refuses to the DLQ, version-guarded writes. Checkpoints are never moved here.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from cdc_pipeline.config.models import PipelineConfig
from cdc_pipeline.core.changes import ChangeBatch, Rejection, TableChanges
from cdc_pipeline.core.checkpoint import Checkpoint
from cdc_pipeline.core.positions import BinlogPosition
from cdc_pipeline.core.schema import TableSchema
from cdc_pipeline.dlq.store import DeadLetterStore
from cdc_pipeline.mapping.mapper import TypeMapper
from cdc_pipeline.masking.masker import Masker
from cdc_pipeline.sinks.base import Sink
from cdc_pipeline.snapshot.chunks import Chunk
from cdc_pipeline.snapshot.reader import read_chunk
from cdc_pipeline.sources.mysql.connection import MySqlConnectionSettings

# Snapshot batches do not come from the log and never move a checkpoint; their bounds are a marker.
_NOT_FROM_THE_LOG = Checkpoint(BinlogPosition("snapshot.000000", 4))


@dataclass
class ChunkLoadResult:
    rows_read: int = 0
    rows_written: Counter[str] = field(default_factory=Counter)  # sink -> rows
    dead_lettered: int = 0


def load_chunk(
    source_name: str,
    settings: MySqlConnectionSettings,
    schema: TableSchema,
    chunk: Chunk,
    pipeline: PipelineConfig,
    masker: Masker,
    sinks: dict[str, Sink],
    dead_letters: DeadLetterStore,
    slice_rows: int = 10_000,
) -> ChunkLoadResult:
    result = ChunkLoadResult()
    mappers = {name: TypeMapper(name, pipeline.sinks[name].kind, pipeline.type_overrides) for name in sinks}
    for changes in read_chunk(settings, schema, chunk, slice_rows):
        result.rows_read += len(changes)
        batch = ChangeBatch(
            source_name, _NOT_FROM_THE_LOG, _NOT_FROM_THE_LOG, {schema.qualified_name: TableChanges(schema, changes)}
        )
        masked = masker.mask_batch(batch)
        result.dead_lettered += dead_letters.record(source_name, masked.rejections)
        for name, sink in sinks.items():
            mapped = mappers[name].map_batch(masked)

            def record(rejections: list[Rejection], refused_by_map: list[Rejection] = mapped.rejections) -> None:
                result.dead_lettered += dead_letters.record(source_name, [*refused_by_map, *rejections])

            written = sink.write(mapped, record, advance_checkpoint=False)
            result.rows_written[name] += sum(sum(counts.values()) for counts in written.rows_by_table.values())
    return result
