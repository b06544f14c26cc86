"""Every kind of sink the pipeline writes, by the `kind` its config names: one line per kind.

A kind is its config model (config/sinks.py), the Dagster resource built from that config (in the
kind's folder), its column-type mapping and the optional fast paths it offers. Everything that
depends on a sink's kind asks here; a kind missing from the registry fails loudly, naming the known
ones. Adding a sink: a folder `sinks/<kind>/`, its config model, and one `register_sink_kind` line below
(a plugin or a test may register its own kind the same way).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from cdc_pipeline.config.base import kind_of
from cdc_pipeline.config.models import PipelineConfig
from cdc_pipeline.config.sinks import (
    ClickHouseSinkConfig,
    PostgresSinkConfig,
    SinkConfigBase,
    register_sink_config,
    unregister_sink_config,
)
from cdc_pipeline.mapping.mapper import TypeMapper
from cdc_pipeline.mapping.sink_types import ColumnMapper
from cdc_pipeline.sinks.base import Sink
from cdc_pipeline.sinks.chunk_pull import ChunkPull
from cdc_pipeline.sinks.clickhouse.column_types import clickhouse_column
from cdc_pipeline.sinks.clickhouse.mysql_pull import MySqlChunkPull
from cdc_pipeline.sinks.clickhouse.sink import ClickHouseSink
from cdc_pipeline.sinks.postgres.column_types import postgres_column
from cdc_pipeline.sinks.postgres.sink import PostgresSink


class UnknownSinkKind(ValueError):
    """A sink kind no registry line describes."""


class SinkResource(Protocol):
    """What the ops need of a sink's Dagster resource: the sink, named as in the config."""

    def sink(self, name: str) -> Sink: ...


@dataclass(frozen=True)
class SinkKind:
    kind: str  # the config's `kind`
    config_model: type[SinkConfigBase]
    # Production resource from the kind's config model; secrets read from the environment at run start.
    resource_from_config: Callable[[Any], SinkResource]
    # The class the resource's `sink()` returns: typed here so that mypy checks it against `Sink`
    # (Dagster's resource classes are opaque to mypy).
    sink_class: type[Sink]
    map_column: ColumnMapper
    # The initial load's fast path for this kind, made for one of its sinks; None: rows go through Python.
    chunk_pull: Callable[[Sink], ChunkPull] | None = None


_KINDS: dict[str, SinkKind] = {}
SINK_KINDS: Mapping[str, SinkKind] = _KINDS


def register_sink_kind(kind: SinkKind) -> None:
    """Add a kind: its config model validates `sinks` entries of that kind, and everything that
    depends on a sink's kind finds it here. A kind is registered once."""
    if kind.kind != kind_of(kind.config_model):
        raise ValueError(f"sink kind {kind.kind!r}: its config model answers to {kind_of(kind.config_model)!r}")
    if kind.kind in _KINDS and _KINDS[kind.kind] != kind:
        raise ValueError(f"sink kind {kind.kind!r} is registered already")
    register_sink_config(kind.config_model)
    _KINDS[kind.kind] = kind


def unregister_sink_kind(kind: str) -> None:
    """Remove a kind a plugin or a test registered."""
    _KINDS.pop(kind, None)
    unregister_sink_config(kind)


# The resources are Dagster's: imported when one is built (the code location), not with the registry,
# which the delivery engine, the initial load and the DLQ replay use without Dagster.
def _clickhouse_resource(config: ClickHouseSinkConfig) -> SinkResource:
    from cdc_pipeline.sinks.clickhouse.resource import ClickHouseSinkResource

    return ClickHouseSinkResource.from_config(config)


def _postgres_resource(config: PostgresSinkConfig) -> SinkResource:
    from cdc_pipeline.sinks.postgres.resource import PostgresSinkResource

    return PostgresSinkResource.from_config(config)


register_sink_kind(
    SinkKind(
        "clickhouse",
        ClickHouseSinkConfig,
        _clickhouse_resource,
        ClickHouseSink,
        clickhouse_column,
        chunk_pull=MySqlChunkPull,
    )
)
register_sink_kind(SinkKind("postgres", PostgresSinkConfig, _postgres_resource, PostgresSink, postgres_column))


def sink_kind(kind: str) -> SinkKind:
    try:
        return SINK_KINDS[kind]
    except KeyError:
        raise UnknownSinkKind(
            f"sink kind {kind!r} is not registered (known: {', '.join(sorted(SINK_KINDS))})"
        ) from None


def type_mapper(pipeline: PipelineConfig, sink_name: str) -> TypeMapper:
    """The map step for the configured sink `sink_name`: its kind's types and the config's overrides."""
    return TypeMapper(sink_name, sink_kind(pipeline.sinks[sink_name].kind).map_column, pipeline.type_overrides)
