"""Every kind of source the pipeline reads, by the `kind` its config names: one line per kind.

A kind is its config model (config/sources.py), the Dagster resource built from that config (in the
kind's folder) and what the UI calls its change log. Everything that depends on a source's kind
asks here; a kind missing from the registry fails loudly, naming the known ones.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel

from cdc_pipeline.config.sources import CassandraSourceConfig, MySqlSourceConfig, PostgresSourceConfig, SourceConfig
from cdc_pipeline.core.checkpoint import Checkpoint
from cdc_pipeline.core.positions import SourcePosition
from cdc_pipeline.sources.cassandra.change_source import CassandraChangeSource
from cdc_pipeline.sources.cassandra.positions import CommitLogPosition, as_commit_log_position
from cdc_pipeline.sources.cassandra.resource import CassandraSourceResource
from cdc_pipeline.sources.cassandra.snapshot_reader import CassandraSnapshotReader
from cdc_pipeline.sources.change_source import ChangeSource
from cdc_pipeline.sources.mysql.change_source import MySqlChangeSource
from cdc_pipeline.sources.mysql.positions import BinlogPosition, as_binlog_position
from cdc_pipeline.sources.mysql.resource import MySqlSourceResource
from cdc_pipeline.sources.mysql.snapshot_reader import MySqlSnapshotReader
from cdc_pipeline.sources.postgres.change_source import PostgresChangeSource
from cdc_pipeline.sources.postgres.positions import LogSequenceNumber, as_lsn
from cdc_pipeline.sources.postgres.resource import PostgresSourceResource
from cdc_pipeline.sources.postgres.snapshot_reader import PostgresSnapshotReader
from cdc_pipeline.sources.snapshot_source import SnapshotSource


class UnknownSourceKind(ValueError):
    """A source kind no registry line describes."""


class SourceResource(Protocol):
    """What the ops need of a source's Dagster resource: the source, for its config, read two ways."""

    def change_source(self, name: str, config: SourceConfig) -> ChangeSource: ...

    def snapshot_source(self, name: str, config: SourceConfig) -> SnapshotSource: ...


@dataclass(frozen=True)
class SourceKind:
    kind: str  # the config's `kind`
    config_model: type[BaseModel]
    # Production resource from the kind's config model; secrets read from the environment at run start.
    resource_from_config: Callable[[Any], SourceResource]
    # The classes the resource's `change_source()` and `snapshot_source()` return: typed here so that
    # mypy checks them against the protocols (Dagster's resource classes are opaque to mypy).
    change_source_class: type[ChangeSource]
    snapshot_source_class: type[SnapshotSource]
    # A position of this kind's log from its text (a run's `stop_at`, a run tag); refuses another kind's.
    parse_position: Callable[[str], SourcePosition]
    # Where in the log a checkpoint points, in the kind's own position type (a sink returns its text).
    log_position: Callable[[SourcePosition], SourcePosition]

    def caught_up(self, checkpoint: Checkpoint | None, high_water: SourcePosition) -> bool:
        """Whether a sink at `checkpoint` holds everything up to `high_water`."""
        if checkpoint is None:
            return False
        position = self.log_position(checkpoint.position)
        # Offsets of another server (before a failover) do not compare: such a sink counts as behind.
        return type(position) is type(high_water) and position >= high_water

    @property
    def log_name(self) -> str:
        """What people call the change log ("binlog"): sensor names and messages, before any source opens."""
        return self.change_source_class.log_name


def _by_kind(*kinds: SourceKind) -> Mapping[str, SourceKind]:
    return {kind.kind: kind for kind in kinds}


SOURCE_KINDS: Mapping[str, SourceKind] = _by_kind(
    SourceKind(
        "mysql",
        MySqlSourceConfig,
        MySqlSourceResource.from_config,
        MySqlChangeSource,
        MySqlSnapshotReader,
        BinlogPosition.parse,
        as_binlog_position,
    ),
    SourceKind(
        "postgres",
        PostgresSourceConfig,
        PostgresSourceResource.from_config,
        PostgresChangeSource,
        PostgresSnapshotReader,
        LogSequenceNumber.parse,
        as_lsn,
    ),
    SourceKind(
        "cassandra",
        CassandraSourceConfig,
        CassandraSourceResource.from_config,
        CassandraChangeSource,
        CassandraSnapshotReader,
        CommitLogPosition.parse,
        as_commit_log_position,
    ),
)


def source_kind(kind: str) -> SourceKind:
    try:
        return SOURCE_KINDS[kind]
    except KeyError:
        known = ", ".join(sorted(SOURCE_KINDS))
        raise UnknownSourceKind(f"source kind {kind!r} is not registered (known: {known})") from None
