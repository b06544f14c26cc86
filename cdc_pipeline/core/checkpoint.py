"""A sink's checkpoint: where the next batch starts, and which changes the sink already holds."""

from __future__ import annotations

from dataclasses import dataclass

from cdc_pipeline.core.positions import NOT_FROM_THE_LOG, SourcePosition, StoredPosition


@dataclass(frozen=True)
class Checkpoint:
    """The end of the last batch a sink committed: a position of the source's own kind (when the
    source made it) or as the sink stored it (`StoredPosition`); only the source reads its text."""

    position: SourcePosition

    @property
    def version_floor(self) -> int:
        """Changes with a `_version` below this are already in the sink."""
        return self.position.version_floor

    @property
    def order(self) -> int:
        return self.position.order

    @property
    def stored(self) -> StoredPosition:
        """What a sink keeps of it."""
        return StoredPosition.of(self.position)

    def is_after(self, other: Checkpoint) -> bool:
        """Whether this checkpoint is further along the source's history than `other`."""
        return self.position.order > other.position.order

    def __eq__(self, other: object) -> bool:
        # A checkpoint read back from a sink equals the one the source made.
        return isinstance(other, Checkpoint) and self.stored == other.stored

    def __hash__(self) -> int:
        return hash(self.stored)

    def __str__(self) -> str:
        return str(self.position)


NOT_FROM_THE_LOG_CHECKPOINT = Checkpoint(NOT_FROM_THE_LOG)
