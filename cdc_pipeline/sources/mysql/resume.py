"""Where the next batch starts: the earliest sink checkpoint, found on the server now serving.

By position (the default) a checkpoint's `file:offset` is used as it is. By GTID (MariaDB), a
checkpoint written on the same server is used by position too (the fast path); after a failover
the checkpoint's GTID is looked up in the new server's binlogs, whose names and offsets differ.
"""

from __future__ import annotations

import re
from typing import Literal

from pymysql.cursors import Cursor

from cdc_pipeline.core.checkpoint import Checkpoint
from cdc_pipeline.sources.mysql.connection import ControlConnection, MySqlConnectionSettings
from cdc_pipeline.sources.mysql.gtid import Gtid
from cdc_pipeline.sources.mysql.positions import (
    BinlogPosition,
    GtidPosition,
    as_binlog_position,
    binlog_checkpoint,
    gtid_of,
)
from cdc_pipeline.sources.mysql.preflight import oldest_binlog_position, read_server_id

ResumeBy = Literal["position", "gtid"]
_GTID_IN_INFO = re.compile(r"GTID (\d+-\d+-\d+)")
_EVENTS_PER_PAGE = 5000


class ResumeError(RuntimeError):
    """The batch cannot start safely; the message names the sinks, checkpoints or GTIDs at fault."""


def resume_point(
    checkpoints: dict[str, Checkpoint | None], control: ControlConnection, resume_by: ResumeBy
) -> Checkpoint:
    """The checkpoint to read from, given each sink's (None: the sink has none yet)."""
    settings = control.settings
    known = {name: checkpoint for name, checkpoint in checkpoints.items() if checkpoint is not None}
    if len(known) < len(checkpoints):
        # A sink without a checkpoint starts from the oldest binlog the server still has.
        return Checkpoint(oldest_binlog_position(settings))
    by_scheme = {name: ("gtid" if gtid_of(checkpoint.position) else "position") for name, checkpoint in known.items()}
    switched = sorted(name for name, scheme in by_scheme.items() if scheme != resume_by)
    if switched:
        # _version is numbered differently in the two schemes: mixing them could order an old
        # change after a new one. Changing the scheme is a re-sync.
        raise ResumeError(
            f"sink(s) {switched} hold checkpoints written with resume_by: {by_scheme[switched[0]]}, but the source"
            f" is configured with resume_by: {resume_by}; re-sync those sinks to change how the source resumes"
        )
    if resume_by == "position":
        name, earliest = min(known.items(), key=lambda item: as_binlog_position(item[1].position))
        position = as_binlog_position(earliest.position)
        _ensure_still_kept(control, name, position)
        return Checkpoint(position)
    positions = [binlog_checkpoint(checkpoint.position) for checkpoint in known.values()]
    earliest_gtid = min((p for p in positions if isinstance(p, GtidPosition)), key=lambda p: p.gtid.sequence)
    server_id = control.read(read_server_id)
    if earliest_gtid.server_id == server_id:
        return Checkpoint(earliest_gtid)
    gtid = earliest_gtid.gtid
    return Checkpoint(GtidPosition(position_after_gtid(settings, gtid), gtid, server_id))


def _ensure_still_kept(control: ControlConnection, sink: str, position: BinlogPosition) -> None:
    """Never skip ahead silently: a checkpoint in a purged binlog means changes were lost."""
    files = control.read(_binlog_files)
    settings = control.settings
    if position.file not in files:
        raise ResumeError(
            f"sink '{sink}' checkpoint {position} is in a binlog that {settings.describe()} no longer keeps"
            f" (oldest kept: {files[0] if files else 'none'}): the changes from {position} up to the start of"
            f" {files[0] if files else 'the binlog'} were purged before every sink read them; re-sync the sinks"
        )


def _binlog_files(cursor: Cursor) -> list[str]:
    cursor.execute("SHOW BINARY LOGS")
    return [str(row[0]) for row in cursor.fetchall()]


def position_after_gtid(settings: MySqlConnectionSettings, gtid: Gtid) -> BinlogPosition:
    """Where the transaction after `gtid` starts in this server's binlogs."""
    with settings.connect() as connection, connection.cursor() as cursor:
        cursor.execute("SHOW BINARY LOGS")
        files = [str(row[0]) for row in cursor.fetchall()]
        # The GTID state at the start of each file: the last transaction before it, per domain.
        starts = []
        for file in files:
            cursor.execute("SELECT BINLOG_GTID_POS(%s, 4)", (file,))
            state = cursor.fetchone()[0] or ""
            starts.append(_sequence_in(state, gtid.domain))
        if not files or starts[0] > gtid.sequence:
            raise ResumeError(
                f"GTID {gtid} is older than the oldest binlog kept by {settings.describe()}"
                f" ({files[0] if files else 'none'} starts after sequence {starts[0] if starts else '?'}):"
                f" the changes after it are lost; re-sync the sinks"
            )
        index = max(i for i, start in enumerate(starts) if start <= gtid.sequence)
        file = files[index]
        position = 4
        while True:
            cursor.execute(f"SHOW BINLOG EVENTS IN %s FROM {position} LIMIT {_EVENTS_PER_PAGE}", (file,))
            events = cursor.fetchall()
            for _, pos, event_type, _, end_pos, info in events:
                found = _GTID_IN_INFO.search(str(info)) if str(event_type) == "Gtid" else None
                if found is not None:
                    later = Gtid.parse(found.group(1))
                    if later.domain == gtid.domain and later.sequence > gtid.sequence:
                        return BinlogPosition(file, int(pos))
                position = int(end_pos)
            if len(events) < _EVENTS_PER_PAGE:
                break
    # No later transaction in that file: the next one starts the next file, or is yet to be written.
    if index + 1 < len(files):
        return BinlogPosition(files[index + 1], 4)
    return BinlogPosition(file, position)


def _sequence_in(state: str, domain: int) -> int:
    for part in filter(None, (p.strip() for p in state.split(","))):
        gtid = Gtid.parse(part)
        if gtid.domain == domain:
            return gtid.sequence
    return 0
