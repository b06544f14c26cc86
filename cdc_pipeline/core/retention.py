"""How close each sink's checkpoint is to what the source will purge from its change log.

The source's change log is the pipeline's write-ahead log: a sink that lags keeps needing the log
from its checkpoint on, but the source purges by its own rules (MySQL: binlog expiry; PostgreSQL:
max_slot_wal_keep_size; Cassandra: nothing is purged, but a full cdc_raw makes the node refuse
writes). Each source reports the numbers in its own terms; the asset check and the parse step's
metadata show them, and the check compares them with the configured thresholds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MetadataValue = int | float | str


@dataclass(frozen=True)
class SinkRetention:
    """One sink's checkpoint against the source's retention. Fields a source cannot tell stay None."""

    sink: str
    checkpoint: str | None  # None: the sink has none yet and needs everything the source keeps
    # The purged range ("<checkpoint> up to <oldest kept>") when the log after the checkpoint is gone.
    lost: str | None = None
    # MySQL: seconds until the server may purge the binlog the checkpoint is in.
    seconds_left: int | None = None
    # PostgreSQL: bytes of WAL the server may still write before it invalidates the slot.
    bytes_left: int | None = None
    # Share of the source's log budget in use (PostgreSQL: max_slot_wal_keep_size; Cassandra: cdc_total_space).
    percent_used: float | None = None
    # PostgreSQL: the checkpoint's lag behind the WAL flush position; Cassandra: the bytes of the
    # segments kept in cdc_raw for this sink.
    bytes_behind: int | None = None
    # A risk no threshold expresses (PostgreSQL: wal_status 'unreserved'): always a warning.
    at_risk: str | None = None

    def as_metadata(self) -> dict[str, MetadataValue]:
        values: dict[str, MetadataValue | None] = {
            "sink_checkpoint": self.checkpoint or "none",
            "lost_range": self.lost,
            "seconds_left": self.seconds_left,
            "hours_left": round(self.seconds_left / 3600, 2) if self.seconds_left is not None else None,
            "bytes_left": self.bytes_left,
            "percent_used": self.percent_used,
            "bytes_behind": self.bytes_behind,
            "at_risk": self.at_risk,
        }
        return {key: value for key, value in values.items() if value is not None}


@dataclass(frozen=True)
class RetentionStatus:
    """The source's retention now, and where every sink's checkpoint stands against it."""

    source: str
    oldest_kept: str  # the oldest position the source still keeps ("none": it keeps nothing)
    log: dict[str, MetadataValue] = field(default_factory=dict)  # source-wide numbers, in the source's terms
    sinks: dict[str, SinkRetention] = field(default_factory=dict)

    def as_metadata(self) -> dict[str, MetadataValue]:
        """Flat numbers for a step's output metadata: the source's, then `<sink>_<number>` per sink."""
        flat: dict[str, MetadataValue] = {"oldest_kept": self.oldest_kept, **self.log}
        for name, sink in self.sinks.items():
            flat.update({f"{name}_{key}": value for key, value in sink.as_metadata().items()})
        return flat
