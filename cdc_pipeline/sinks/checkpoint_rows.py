"""A checkpoint as a sink keeps it in its checkpoint table, in the current form and the one before.

Current form: the source's own text (`position`), its order along the source's history
(`position_order`) and its version floor; the sink reads none of them, and the source turns the text
back into its own position type. The form before it kept `position`, `gtid` and `server_id`, whose
position text told its kind by its shape; such a row (a pipeline that ran before checkpoints became
opaque) is read into the current form here, so the pipeline resumes where it was, and the sink
writes the current form at its next checkpoint. This module is the only place that still knows
the old shapes.
"""

from __future__ import annotations

from cdc_pipeline.core.checkpoint import Checkpoint
from cdc_pipeline.core.positions import PositionError, SourcePosition, StoredPosition
from cdc_pipeline.sources.cassandra.positions import CommitLogPosition
from cdc_pipeline.sources.mysql.gtid import Gtid
from cdc_pipeline.sources.mysql.positions import BinlogPosition, GtidPosition
from cdc_pipeline.sources.postgres.positions import LogSequenceNumber


def checkpoint_row(checkpoint: Checkpoint) -> tuple[str, int, int]:
    """(position, position_order, version_floor) as the sinks write them."""
    stored = checkpoint.stored
    return stored.text, stored.order, stored.version_floor


def checkpoint_from_row(
    position: str, order: int | None, version_floor: int | None, gtid: str | None, server_id: int | None
) -> Checkpoint:
    """The checkpoint a row holds, in either form (`order` and `version_floor` None: the form before)."""
    if order is not None and version_floor is not None:
        return Checkpoint(StoredPosition(position, int(order), int(version_floor)))
    return Checkpoint(StoredPosition.of(_position_before_opaque_checkpoints(position, gtid, server_id)))


def _position_before_opaque_checkpoints(position: str, gtid: str | None, server_id: int | None) -> SourcePosition:
    if gtid:
        return GtidPosition(BinlogPosition.parse(position), Gtid.parse(gtid), int(server_id or 0))
    if position.startswith("cdc:"):
        return CommitLogPosition.parse(position)
    try:
        return LogSequenceNumber.parse(position)
    except PositionError:
        return BinlogPosition.parse(position)  # raises, naming the text, if it is not one either
