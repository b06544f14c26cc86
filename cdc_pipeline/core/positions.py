"""Positions in a source's change log, as everything outside the source sees them.

Each source kind has its own position type (sources/<kind>/positions.py: a binlog file:offset, a WAL
LSN, a commit-log segment:offset); the rest of the pipeline knows only what `SourcePosition` says:
its text, an order along the source's history, and the smallest `_version` a change at or after it
can carry. A sink keeps a checkpoint as those three (`StoredPosition`) without knowing its kind, and
the source reads the text back into its own type.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import total_ordering
from typing import Any, Protocol


class PositionError(ValueError):
    """A position that cannot be parsed, compared or turned into a version; the message quotes it."""


class SourcePosition(Protocol):
    @property
    def order(self) -> int:
        """Grows along one source's history; positions of different sources never compare."""
        ...

    @property
    def version_floor(self) -> int:
        """The smallest `_version` a change at or after this position can carry (0: versions do not
        follow the log, as with Cassandra's write times)."""
        ...

    def __str__(self) -> str: ...

    # Positions of one kind compare along the log (a kind refuses another's with NotImplemented).
    def __lt__(self, other: Any) -> bool: ...

    def __le__(self, other: Any) -> bool: ...

    def __gt__(self, other: Any) -> bool: ...

    def __ge__(self, other: Any) -> bool: ...


@total_ordering
@dataclass(frozen=True)
class StoredPosition:
    """A position as a sink keeps and returns it: the source's own text with its order and version
    floor. Only the source that wrote it reads the text (e.g. sources/mysql/positions.py)."""

    text: str
    order: int
    version_floor: int

    @classmethod
    def of(cls, position: SourcePosition) -> StoredPosition:
        return cls(str(position), position.order, position.version_floor)

    def __str__(self) -> str:
        return self.text

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, StoredPosition):
            return NotImplemented
        return self.order < other.order


# Snapshot and replay batches do not come from the log and never move a checkpoint; their bounds
# are this marker, whatever the source.
NOT_FROM_THE_LOG = StoredPosition("(not from the log)", 0, 0)
