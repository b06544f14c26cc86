"""The handoff from an initial load to streaming: the log position recorded before any chunk is read.

Sinks without a checkpoint adopt it, so streaming replays every change from there; snapshot rows
carry a `_version` just below it, so each streamed change (higher) wins over the snapshot's copy of
a row and the overlap converges. Each source finds its position (SnapshotSource.handoff_checkpoint).
"""

from __future__ import annotations

from cdc_pipeline.core.checkpoint import Checkpoint


def snapshot_version(handoff: Checkpoint) -> int:
    """Below every change streamed after the handoff, above every change before it."""
    return handoff.version_floor - 1
