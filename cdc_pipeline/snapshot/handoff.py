"""The handoff from an initial load to streaming: the log position recorded before any chunk is read.

Sinks without a checkpoint adopt it, so streaming replays every change from there; snapshot rows
carry a `_version` just below it, so each streamed change (higher) wins over the snapshot's copy of
a row and the overlap converges.
"""

from __future__ import annotations

from cdc_pipeline.core.checkpoint import Checkpoint
from cdc_pipeline.core.gtid import Gtid
from cdc_pipeline.sources.mysql.connection import MySqlConnectionSettings
from cdc_pipeline.sources.mysql.preflight import current_binlog_position
from cdc_pipeline.sources.mysql.resume import ResumeBy


def handoff_checkpoint(settings: MySqlConnectionSettings, resume_by: ResumeBy) -> Checkpoint:
    with settings.connect() as connection, connection.cursor() as cursor:
        cursor.execute("SELECT @@server_id")
        server_id = int(cursor.fetchone()[0])
        gtid = None
        if resume_by == "gtid":
            # Read before the position: a transaction committed in between is then streamed too.
            cursor.execute("SELECT @@gtid_binlog_pos")
            state = str(cursor.fetchone()[0] or "")
            gtid = Gtid.parse(state) if state else Gtid(0, server_id, 0)
    return Checkpoint(current_binlog_position(settings), gtid, server_id)


def snapshot_version(handoff: Checkpoint) -> int:
    """Below every change streamed after the handoff, above every change before it."""
    return handoff.version_floor - 1
