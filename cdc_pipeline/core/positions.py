"""Positions in a source's change log (binlog file:offset, PostgreSQL WAL LSN, Cassandra commit-log
segment:offset) and the `_version` numbers derived from them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering

_FILE_SEQUENCE = re.compile(r"\.(\d+)$")
# _version = file sequence in the high bits, byte offset of the row inside that file in the low 32.
# An event's rows all sit inside the event's bytes, so `event start + row index` stays below the
# next event's start: versions are unique and strictly increasing along the log.
_POSITION_BITS = 32
_MAX_FILE_SEQUENCE = 2**31 - 1  # keeps _version inside a signed 64-bit PostgreSQL bigint


class PositionError(ValueError):
    """A binlog position that cannot be parsed or turned into a version."""


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


def row_version(file_sequence: int, event_start: int, row_index: int) -> int:
    offset = event_start + row_index
    if offset >= 2**_POSITION_BITS:
        raise PositionError(f"binlog offset {offset} does not fit in {_POSITION_BITS} bits")
    return (file_sequence << _POSITION_BITS) | offset


# PostgreSQL: _version = the transaction's commit LSN in the high bits, the row's index inside the
# transaction in the low 16. The next transaction's commit record starts at or after this one's end,
# so a transaction owns (end LSN - commit LSN) << 16 versions: versions stay unique and follow commit
# order as long as the row index stays below that room (checked, see wal_row_version).
_WAL_ROW_BITS = 16
_MAX_WAL_LSN = 2 ** (63 - _WAL_ROW_BITS) - 1  # 128 TiB of WAL; keeps _version inside a signed bigint
_LSN_TEXT = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")


@total_ordering
@dataclass(frozen=True)
class LogSequenceNumber:
    """A point in PostgreSQL's write-ahead log, printed the way PostgreSQL prints it (`16/B374D848`)."""

    value: int

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, LogSequenceNumber):
            return NotImplemented
        return self.value < other.value

    def __str__(self) -> str:
        return f"{self.value >> 32:X}/{self.value & 0xFFFFFFFF:X}"

    @classmethod
    def parse(cls, text: str) -> LogSequenceNumber:
        match = _LSN_TEXT.match(text)
        if match is None:
            raise PositionError(f"WAL position {text!r} is not of the form 'XXXXXXXX/XXXXXXXX' (hex)")
        return cls(int(match.group(1), 16) << 32 | int(match.group(2), 16))

    @property
    def version_floor(self) -> int:
        """The smallest `_version` of a transaction that commits at or after this LSN."""
        return _wal_version_base(self.value)


def _wal_version_base(lsn: int) -> int:
    if lsn > _MAX_WAL_LSN:
        raise PositionError(
            f"WAL position {LogSequenceNumber(lsn)} is past {LogSequenceNumber(_MAX_WAL_LSN)}, the last _version holds"
        )
    return lsn << _WAL_ROW_BITS


def wal_row_version(commit_lsn: int, row_index: int) -> int:
    """The `_version` of the row_index-th row change of the transaction committed at commit_lsn."""
    return _wal_version_base(commit_lsn) + row_index


def check_wal_version_room(commit_lsn: int, end_lsn: int, rows: int) -> None:
    """Refuse a transaction whose rows would number into the next transaction's versions."""
    room = (end_lsn - commit_lsn) << _WAL_ROW_BITS
    if rows > room:
        raise PositionError(
            f"transaction committed at {LogSequenceNumber(commit_lsn)} changes {rows} rows, more than the {room}"
            " versions its WAL range holds; split such transactions at the source"
        )


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


# A sink's checkpoint holds one of these; which one follows from the source's kind.
SourcePosition = BinlogPosition | LogSequenceNumber | CommitLogPosition


def parse_position(text: str) -> SourcePosition:
    """A position as sinks store it: `file:offset` (binlog), `hi/lo` (WAL LSN) or `cdc:segment:offset`."""
    if _LSN_TEXT.match(text):
        return LogSequenceNumber.parse(text)
    if text.startswith("cdc:"):
        return CommitLogPosition.parse(text)
    return BinlogPosition.parse(text)


def _kind(position: SourcePosition) -> str:
    if isinstance(position, LogSequenceNumber):
        return "a PostgreSQL WAL position"
    if isinstance(position, CommitLogPosition):
        return "a Cassandra commit-log position"
    return "a binlog position"


def as_binlog_position(position: SourcePosition) -> BinlogPosition:
    """The position of a MySQL source's checkpoint (anything else there means a mixed-up sink)."""
    if not isinstance(position, BinlogPosition):
        raise PositionError(f"{position} is {_kind(position)} where a binlog position was expected")
    return position


def as_commit_log_position(position: SourcePosition) -> CommitLogPosition:
    """The position of a Cassandra source's checkpoint (anything else there means a mixed-up sink)."""
    if not isinstance(position, CommitLogPosition):
        raise PositionError(f"{position} is {_kind(position)} where a Cassandra commit-log position was expected")
    return position
