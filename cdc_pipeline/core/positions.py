"""Binlog positions and the `_version` numbers derived from them."""

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
