"""A sink's checkpoint: where the next batch starts, and which changes the sink already holds."""

from __future__ import annotations

from dataclasses import dataclass

from cdc_pipeline.core.gtid import Gtid
from cdc_pipeline.core.positions import SourcePosition, parse_position


@dataclass(frozen=True)
class Checkpoint:
    """The end of the last batch a sink committed.

    `position` is a binlog `file:offset` (MySQL/MariaDB), a WAL LSN (PostgreSQL) or a commit-log
    `cdc:segment:offset` (Cassandra). For MySQL it
    belongs to the server `server_id` (binlog names and offsets differ between servers); `gtid` is the
    last committed transaction's GTID, kept when the source resumes by GTID, and then also the basis
    of `_version`.
    """

    position: SourcePosition
    gtid: Gtid | None = None
    server_id: int | None = None

    @property
    def version_floor(self) -> int:
        """Changes with a `_version` below this are already in the sink."""
        return self.gtid.version_floor if self.gtid is not None else self.position.version_floor

    def columns(self) -> tuple[str, str | None, int | None]:
        """(position, gtid, server_id) as the sinks store them."""
        return str(self.position), (str(self.gtid) if self.gtid else None), self.server_id

    @classmethod
    def from_columns(cls, position: str, gtid: str | None, server_id: int | None) -> Checkpoint:
        return cls(parse_position(position), Gtid.parse(gtid) if gtid else None, server_id)

    def is_after(self, other: Checkpoint) -> bool:
        """Whether this checkpoint is further along the source's history than `other`."""
        if self.gtid is not None and other.gtid is not None:
            # Offsets of different servers do not compare; GTID sequences do.
            return self.gtid.sequence > other.gtid.sequence
        return self.position > other.position

    def __str__(self) -> str:
        return f"{self.position}" + (f" (GTID {self.gtid}, server {self.server_id})" if self.gtid else "")
