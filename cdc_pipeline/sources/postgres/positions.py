"""Positions in PostgreSQL's write-ahead log (LSNs) and the `_version` numbers derived from them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering

from cdc_pipeline.core.positions import PositionError, SourcePosition, StoredPosition

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

    @property
    def order(self) -> int:
        return self.value


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


def as_lsn(position: SourcePosition) -> LogSequenceNumber:
    """A PostgreSQL source's checkpoint position, read back from a sink's text if need be."""
    if isinstance(position, LogSequenceNumber):
        return position
    if isinstance(position, StoredPosition):
        return LogSequenceNumber.parse(position.text)
    raise PositionError(f"{position} is not a WAL position (a sink of another source's checkpoints?)")


def lsn_of(position: SourcePosition) -> LogSequenceNumber | None:
    """The LSN a checkpoint points at, or None when it is not a WAL position (a mixed-up sink)."""
    try:
        return as_lsn(position)
    except PositionError:
        return None
