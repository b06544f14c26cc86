"""Positions in a Cassandra node's CDC commit log (segment id and offset)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering

from cdc_pipeline.core.positions import PositionError, SourcePosition, StoredPosition

_COMMIT_LOG_TEXT = re.compile(r"^cdc:(\d+):(\d+)$")


@total_ordering
@dataclass(frozen=True)
class CommitLogPosition:
    """A point in a Cassandra node's CDC commit log: the segment id and the byte offset in it where
    the next mutation starts. Printed `cdc:<segment id>:<offset>`."""

    segment_id: int
    offset: int

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, CommitLogPosition):
            return NotImplemented
        return (self.segment_id, self.offset) < (other.segment_id, other.offset)

    def __str__(self) -> str:
        return f"cdc:{self.segment_id}:{self.offset}"

    @classmethod
    def parse(cls, text: str) -> CommitLogPosition:
        match = _COMMIT_LOG_TEXT.match(text)
        if match is None:
            raise PositionError(f"commit-log position {text!r} is not of the form 'cdc:<segment id>:<offset>'")
        return cls(int(match.group(1)), int(match.group(2)))

    @property
    def version_floor(self) -> int:
        """Always 0: a Cassandra change's `_version` is its cells' write time, chosen by the client
        and unrelated to where the change sits in the log. Sinks merge such changes cell by cell,
        newest write time winning, so writing a change twice changes nothing: nothing is skipped."""
        return 0

    @property
    def order(self) -> int:
        return self.segment_id << 32 | self.offset


def as_commit_log_position(position: SourcePosition) -> CommitLogPosition:
    """A Cassandra source's checkpoint position, read back from a sink's text if need be."""
    if isinstance(position, CommitLogPosition):
        return position
    if isinstance(position, StoredPosition):
        return CommitLogPosition.parse(position.text)
    raise PositionError(f"{position} is not a Cassandra commit-log position (a sink of another source's checkpoints?)")
