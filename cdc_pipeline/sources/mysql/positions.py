"""Positions in a MySQL/MariaDB binlog and the `_version` numbers derived from them.

A checkpoint of a MySQL source is a `BinlogPosition` (resume_by: position) or a `GtidPosition`
(resume_by: gtid: the binlog position on the server that wrote it, the last transaction's GTID and
that server's id). Sinks keep either as opaque text (core/positions.py: StoredPosition);
`binlog_checkpoint` reads it back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering

from cdc_pipeline.core.positions import PositionError, SourcePosition, StoredPosition
from cdc_pipeline.sources.mysql.gtid import Gtid

_FILE_SEQUENCE = re.compile(r"\.(\d+)$")
# _version = file sequence in the high bits, byte offset of the row inside that file in the low 32.
# An event's rows all sit inside the event's bytes, so `event start + row index` stays below the
# next event's start: versions are unique and strictly increasing along the log.
_POSITION_BITS = 32
_MAX_FILE_SEQUENCE = 2**31 - 1  # keeps _version inside a signed 64-bit PostgreSQL bigint


@total_ordering
@dataclass(frozen=True)
class BinlogPosition:
    """A point in the binlog: the file and the byte offset where the next event starts."""

    file: str
    pos: int

    @property
    def file_sequence(self) -> int:
        match = _FILE_SEQUENCE.search(self.file)
        if match is None:
            raise PositionError(f"binlog file name {self.file!r} has no numeric sequence suffix")
        sequence = int(match.group(1))
        if sequence > _MAX_FILE_SEQUENCE:
            raise PositionError(f"binlog file {self.file!r}: sequence {sequence} exceeds {_MAX_FILE_SEQUENCE}")
        return sequence

    def _key(self) -> tuple[int, int]:
        return (self.file_sequence, self.pos)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, BinlogPosition):
            return NotImplemented
        return self._key() < other._key()

    def __str__(self) -> str:
        return f"{self.file}:{self.pos}"

    @classmethod
    def parse(cls, text: str) -> BinlogPosition:
        file, sep, pos = text.rpartition(":")
        if not sep or not file or not pos.isdigit():
            raise PositionError(f"binlog position {text!r} is not of the form 'file:offset'")
        return cls(file, int(pos))

    @property
    def version_floor(self) -> int:
        """The smallest `_version` an event at or after this position can carry."""
        return row_version(self.file_sequence, self.pos, 0)

    @property
    def order(self) -> int:
        return self.version_floor


def row_version(file_sequence: int, event_start: int, row_index: int) -> int:
    offset = event_start + row_index
    if offset >= 2**_POSITION_BITS:
        raise PositionError(f"binlog offset {offset} does not fit in {_POSITION_BITS} bits")
    return (file_sequence << _POSITION_BITS) | offset


_GTID_TEXT = re.compile(r"^(?P<position>\S+) gtid=(?P<gtid>\S+) server=(?P<server>\d+)$")


@total_ordering
@dataclass(frozen=True)
class GtidPosition:
    """A checkpoint of a source that resumes by GTID: where the next event starts on the server
    `server_id`, and the GTID of the last transaction before it. GTID sequences keep growing across
    a failover, binlog offsets do not: the GTID orders these and numbers the versions."""

    binlog: BinlogPosition
    gtid: Gtid
    server_id: int

    def __str__(self) -> str:
        return f"{self.binlog} gtid={self.gtid} server={self.server_id}"

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, GtidPosition):
            return NotImplemented
        return self.order < other.order

    @classmethod
    def parse(cls, text: str) -> GtidPosition:
        match = _GTID_TEXT.match(text)
        if match is None:
            raise PositionError(f"GTID checkpoint {text!r} is not of the form 'file:offset gtid=D-S-N server=ID'")
        return cls(BinlogPosition.parse(match["position"]), Gtid.parse(match["gtid"]), int(match["server"]))

    @property
    def version_floor(self) -> int:
        return self.gtid.version_floor

    @property
    def order(self) -> int:
        return self.gtid.version_floor


MySqlPosition = BinlogPosition | GtidPosition


def binlog_checkpoint(position: SourcePosition) -> MySqlPosition:
    """A MySQL source's checkpoint position, read back from a sink's text if need be."""
    if isinstance(position, (BinlogPosition, GtidPosition)):
        return position
    if isinstance(position, StoredPosition):
        text = position.text
        return GtidPosition.parse(text) if " gtid=" in text else BinlogPosition.parse(text)
    raise PositionError(f"{position} is not a binlog position (a sink of another source's checkpoints?)")


def as_binlog_position(position: SourcePosition) -> BinlogPosition:
    """Where in the binlog a checkpoint (of either form) points."""
    checkpoint = binlog_checkpoint(position)
    return checkpoint.binlog if isinstance(checkpoint, GtidPosition) else checkpoint


def gtid_of(position: SourcePosition) -> Gtid | None:
    """The GTID a checkpoint was written with (resume_by: gtid), else None."""
    checkpoint = binlog_checkpoint(position)
    return checkpoint.gtid if isinstance(checkpoint, GtidPosition) else None


def server_of(position: SourcePosition) -> int | None:
    """The id of the server whose binlog a GTID checkpoint's position is in, else None."""
    checkpoint = binlog_checkpoint(position)
    return checkpoint.server_id if isinstance(checkpoint, GtidPosition) else None
