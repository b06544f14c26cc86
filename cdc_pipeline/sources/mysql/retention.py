"""How long the server keeps the binlogs the sinks' checkpoints are in.

MySQL and MariaDB purge a binlog once it is older than `binlog_expire_logs_seconds` (or
`expire_logs_days`; 0 in both: never), the age counting from the file's last write, which is when
the server rotated to the next file. So the time left for a checkpoint is the next file's start plus
the expiry, minus now; a checkpoint in the file being written has at least the whole expiry left.
The server also purges on `PURGE BINARY LOGS`; a checkpoint in a file that is gone is reported lost.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import FormatDescriptionEvent

from cdc_pipeline.core.checkpoint import Checkpoint
from cdc_pipeline.core.retention import RetentionStatus, SinkRetention
from cdc_pipeline.sources.mysql.connection import MySqlConnectionSettings
from cdc_pipeline.sources.mysql.positions import BinlogPosition, as_binlog_position, server_of


def expiry_seconds(settings: MySqlConnectionSettings) -> int | None:
    """How old a binlog may get before the server purges it (None: it never does by age)."""
    with settings.connect() as connection, connection.cursor() as cursor:
        cursor.execute(
            "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('binlog_expire_logs_seconds', 'expire_logs_days')"
        )
        variables = {str(name): float(value) for name, value in cursor.fetchall()}
    # MySQL 8 and MariaDB 10.6+ keep both in step; older servers only know expire_logs_days.
    seconds = variables.get("binlog_expire_logs_seconds", 0) or variables.get("expire_logs_days", 0) * 86400
    return int(seconds) if seconds > 0 else None


def binlog_started_at(settings: MySqlConnectionSettings, probe_server_id: int, file: str) -> int | None:
    """When the server began writing `file`: its format description event's timestamp.

    SHOW BINLOG EVENTS shows no times, so the file's header is read over the replication protocol
    (a non-blocking dump that stops after the first event). None: the server no longer has the file.
    """
    stream = BinLogStreamReader(
        connection_settings=settings.as_pymysql_kwargs(),
        server_id=probe_server_id,
        resume_stream=True,
        log_file=file,
        log_pos=4,
        blocking=False,
        only_events=[FormatDescriptionEvent],
    )
    try:
        for event in stream:
            # The dump starts with the file's own header; a fake one (timestamp 0) carries no time.
            if event.timestamp:
                return int(event.timestamp)
        return None
    finally:
        stream.close()


def probe_server_id(server_id: int) -> int:
    """The replica id the header probe announces: never the reader's own, since a server ends the
    older of two replica connections with one id (that would be the running batch)."""
    return (server_id + 2**31) % 2**32 or 1


def binlog_retention(
    source_name: str,
    settings: MySqlConnectionSettings,
    server_id: int,
    checkpoints: Mapping[str, Checkpoint | None],
) -> RetentionStatus:
    with settings.connect() as connection, connection.cursor() as cursor:
        cursor.execute("SHOW BINARY LOGS")
        files = [str(row[0]) for row in cursor.fetchall()]
        cursor.execute("SELECT @@server_id")
        this_server = int(cursor.fetchone()[0])
    expiry = expiry_seconds(settings)
    oldest = BinlogPosition(files[0], 4) if files else None
    log: dict[str, int | float | str] = {"binlog_files": len(files), "binlog_expire_logs_seconds": expiry or 0}
    started: dict[str, int | None] = {}
    now = int(time.time())

    def closed_at(index: int) -> int | None:
        following = files[index + 1]
        if following not in started:
            started[following] = binlog_started_at(settings, probe_server_id(server_id), following)
        return started[following]

    sinks: dict[str, SinkRetention] = {}
    for sink, checkpoint in checkpoints.items():
        if checkpoint is not None and server_of(checkpoint.position) not in (None, this_server):
            # Written on another server (before a failover): its file names are not this server's,
            # and the GTID lookup at resume decides whether the range is still here.
            sinks[sink] = SinkRetention(sink, str(checkpoint))
            continue
        position = as_binlog_position(checkpoint.position) if checkpoint is not None else oldest
        if position is None:
            sinks[sink] = SinkRetention(sink, None)
            continue
        if position.file not in files:
            until = f"{oldest}" if oldest is not None else "the next binlog"
            sinks[sink] = SinkRetention(sink, str(checkpoint), lost=f"{position} up to {until}")
            continue
        index = files.index(position.file)
        seconds_left = None
        if expiry is not None:
            # The file being written cannot expire before it is closed: the whole expiry is a lower bound.
            if index + 1 == len(files):
                seconds_left = expiry
            else:
                closed = closed_at(index)
                # No header for the next file: it was purged meanwhile, so this one is due too.
                seconds_left = max(0, closed + expiry - now) if closed is not None else 0
        sinks[sink] = SinkRetention(
            sink, str(checkpoint) if checkpoint is not None else None, seconds_left=seconds_left
        )
    return RetentionStatus(source_name, str(oldest) if oldest else "none", log, sinks)
