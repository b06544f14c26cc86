"""Resources shared by every source and sink (the DLQ, the masking key), and typed access to the
resources the definitions hold.

Each source's and sink's own resource lives in its folder (`sources/<kind>/resource.py`,
`sinks/<kind>/resource.py`) and is chosen by the kind registries. Ops reach resources by key
(`source_<name>`, `sink_<name>`), which Dagster types as Any: the helpers below are the one place
that key lookup happens, and they hand out the sources' and sinks' protocols, so mypy checks every
use against them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg

from cdc_pipeline.config.models import MaskingConfig, PipelineConfig
from cdc_pipeline.defs.resource_keys import DEAD_LETTER_QUEUE, MASKING, sink_key, source_key
from cdc_pipeline.dlq.store import DeadLetterStore
from cdc_pipeline.masking.masker import Masker
from cdc_pipeline.sinks.base import Sink
from cdc_pipeline.sinks.registry import SinkResource
from cdc_pipeline.sources.change_source import ChangeSource
from cdc_pipeline.sources.registry import SourceResource
from cdc_pipeline.sources.snapshot_source import SnapshotSource


class DeadLetterQueueResource(dg.ConfigurableResource):
    """The PostgreSQL schema holding the dead-letter table."""

    dsn: str
    schema_name: str

    def store(self) -> DeadLetterStore:
        return DeadLetterStore(self.dsn, self.schema_name)


class MaskingResource(dg.ConfigurableResource):
    """The HMAC key for hash and token masking, from the environment."""

    hmac_key: str | None = None

    def masker(self, config: MaskingConfig) -> Masker:
        return Masker(config, self.hmac_key)


def open_change_source(resources: Any, source_name: str, pipeline: PipelineConfig) -> ChangeSource:
    """The source behind `source_name`'s resource, as the ChangeSource the ops, sensor and checks use."""
    resource: SourceResource = getattr(resources, source_key(source_name))
    return resource.change_source(source_name, pipeline.sources[source_name])


@contextmanager
def change_source_of(resources: Any, source_name: str, pipeline: PipelineConfig) -> Iterator[ChangeSource]:
    """open_change_source for one use: closed (its kept connections let go) when the block ends."""
    source = open_change_source(resources, source_name, pipeline)
    try:
        yield source
    finally:
        source.close()


def open_snapshot_source(resources: Any, source_name: str, pipeline: PipelineConfig) -> SnapshotSource:
    """The source behind `source_name`'s resource, as the SnapshotSource the initial load uses."""
    resource: SourceResource = getattr(resources, source_key(source_name))
    return resource.snapshot_source(source_name, pipeline.sources[source_name])


def sink_of(resources: Any, sink_name: str) -> Sink:
    """The sink behind `sink_name`'s resource."""
    resource: SinkResource = getattr(resources, sink_key(sink_name))
    return resource.sink(sink_name)


def sinks_of(resources: Any, sink_names: Iterable[str]) -> dict[str, Sink]:
    return {name: sink_of(resources, name) for name in sink_names}


def dead_letter_store_of(resources: Any) -> DeadLetterStore:
    resource: DeadLetterQueueResource = getattr(resources, DEAD_LETTER_QUEUE)
    return resource.store()


def masker_of(resources: Any, pipeline: PipelineConfig) -> Masker:
    resource: MaskingResource = getattr(resources, MASKING)
    return resource.masker(pipeline.masking)
