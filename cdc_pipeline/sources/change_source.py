"""What the pipeline needs from a source, whatever its change log (MySQL binlog, PostgreSQL WAL,
Cassandra CDC commit log).

The replication ops, the sensor and the asset checks only talk to this protocol; each source kind
implements it in its own package (`sources/mysql`, `sources/postgres`, `sources/cassandra`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from cdc_pipeline.core.changes import ChangeBatch
from cdc_pipeline.core.checkpoint import Checkpoint
from cdc_pipeline.core.positions import SourcePosition
from cdc_pipeline.core.retention import RetentionStatus
from cdc_pipeline.core.schema import TableSchema


class LogPassedCheckpoints(RuntimeError):
    """The source's log now starts past a checkpoint this batch was read for. Either another run of
    the source moved it after reading newer checkpoints (nothing lost: read the checkpoints again),
    or the changes in between are gone; the message says which sink lost which range."""


class ChangeSource(Protocol):
    # How people call this source's change log, e.g. "binlog" or "wal"; part of sensor names.
    log_name: str

    def check(self) -> None:
        """Raise with the setting's name when the server is not set up for change capture."""

    def high_water_mark(self) -> SourcePosition:
        """Where the change log ends now (cheap: sensors call it on every tick)."""

    def read_batch(
        self,
        checkpoints: Mapping[str, Checkpoint | None],
        stop_at: SourcePosition | None,
        max_rows: int,
        max_bytes: int | None = None,
        max_seconds: float | None = None,
    ) -> ChangeBatch:
        """Committed changes from the earliest sink checkpoint (None: that sink has none yet) up to
        `stop_at`, about `max_rows` rows, about `max_bytes` of change-log data or `max_seconds` of
        reading, whichever comes first; cut only at transaction ends."""

    def has_unread_changes(self) -> bool | None:
        """Whether changes the sinks lack are waiting, if the source can tell cheaply (None: it cannot)."""

    def release(self, checkpoints: Mapping[str, Checkpoint | None]) -> None:
        """Every sink has committed up to `checkpoints`: the source may free the log before the earliest."""

    def table_schema(self, table: str) -> TableSchema | None:
        """The live schema of 'database.table' (PostgreSQL: 'schema.table'), None if it does not exist."""

    def row_count(self, table: str) -> int: ...

    def live_keys(self, schema: TableSchema) -> Iterator[tuple[Any, ...]]:
        """Every key of the table, streamed (for the key digest check)."""

    def log_usage(self) -> dict[str, int | str]:
        """What the change log occupies at the source, for run metadata ({}: the source does not say)."""

    def close(self) -> None:
        """Let go of what the source keeps between batches (connections, a log stream)."""

    def retention(self, checkpoints: Mapping[str, Checkpoint | None]) -> RetentionStatus:
        """How close each sink's checkpoint is to what the source will purge, in the source's own
        terms, and whether the log after it is already gone (cheap enough for every batch)."""
