"""An optional sink capability: an initial-load chunk loaded straight from its source by the sink's
engine, its rows never passing through Python (ClickHouse's `mysql()` pull). The loader offers each
chunk to the sinks whose kind registers a `chunk_pull`; the others, and any sink that declines or
fails, get the chunk through the Python path."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from cdc_pipeline.core.schema import TableSchema
from cdc_pipeline.mapping.sink_types import SinkTableLayout
from cdc_pipeline.sources.snapshot_source import ChunkBounds, SnapshotSource


class ChunkPullFailed(RuntimeError):
    """The engine could not pull the chunk (it may not reach the server the pipeline reaches, or the
    sink is down); the loader gives the chunk to the Python path instead."""


@dataclass(frozen=True)
class ChunkPullRequest:
    source_name: str
    source: SnapshotSource
    schema: TableSchema
    bounds: ChunkBounds
    version: int  # every row of the chunk carries this `_version`
    index: int  # the chunk's number, for messages
    # Columns that are masked or have a type override for this sink: their values come from Python.
    masked_columns: frozenset[str]
    overridden_columns: frozenset[str]


class ChunkPull(Protocol):
    def pull(self, request: ChunkPullRequest, layout: SinkTableLayout) -> int | None:
        """The rows of the chunk the sink table holds after the pull, or None when this sink cannot
        pull this chunk exactly as the Python path would load it. Raises ChunkPullFailed when a pull
        began and failed."""
        ...
