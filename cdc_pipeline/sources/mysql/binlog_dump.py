"""The binlog dump a MySQL source reads its batches from: the replication protocol's stream, the
events it asks the server for, and how a reader notices that the dump's link dropped and was re-dialled.

Kept apart from the batch reader (binlog_reader.py), which decides where a batch ends on this stream.
"""

from __future__ import annotations

from typing import Any

from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import (
    HeartbeatLogEvent,
    MariadbGtidEvent,
    NotImplementedEvent,
    QueryEvent,
    RotateEvent,
    XidEvent,
)
from pymysqlreplication.row_event import DeleteRowsEvent, TableMapEvent, UpdateRowsEvent, WriteRowsEvent

from cdc_pipeline.sources.mysql.connection import Connection, MySqlConnectionSettings
from cdc_pipeline.sources.mysql.positions import BinlogPosition

_ROW_EVENTS = (WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent)
# The server sends a heartbeat when it has had nothing to send for this long: how a read learns it
# has reached the log's end when no commit sits exactly at the end it was asked to read to.
_HEARTBEAT_SECONDS = 0.5
# A dump that hears nothing (not even heartbeats) for this long is a dead link.
_DUMP_READ_TIMEOUT_SECONDS = 30


class BinlogDump:
    """A binlog dump (the replication protocol's stream) and where its next event continues the log.

    mysql-replication re-dials a dump whose link dropped and goes on where it left off, on whatever
    server now answers at that address (after a failover, another server's binlog with other
    offsets). The reader counts the dump's connections to notice, ends its batch at the last whole
    transaction, and starts the next batch on a new dump from the checkpoint, through the checks a
    batch starts with.
    """

    def __init__(self, source_server_id: int) -> None:
        self.source_server_id = source_server_id
        self.continues_at: BinlogPosition | None = None
        self._stream_connections = 0
        self.stream: BinLogStreamReader

    @property
    def interrupted(self) -> bool:
        return self._stream_connections > 1

    @classmethod
    def open(
        cls, settings: MySqlConnectionSettings, server_id: int, start: BinlogPosition, source_server_id: int
    ) -> BinlogDump:
        dump = cls(source_server_id)
        # is_mariadb stays False: with it, mysql-replication ignores log_file/log_pos unless GTIDs are
        # used and replays from the first binlog. The MySQL protocol path resumes by file+pos on MariaDB too.
        dump.stream = BinLogStreamReader(
            connection_settings={**settings.as_pymysql_kwargs(), "read_timeout": _DUMP_READ_TIMEOUT_SECONDS},
            pymysql_wrapper=dump._connect,
            server_id=server_id,
            resume_stream=True,
            log_file=start.file,
            log_pos=start.pos,
            blocking=True,
            slave_heartbeat=_HEARTBEAT_SECONDS,
            only_events=[
                *_ROW_EVENTS,
                TableMapEvent,
                MariadbGtidEvent,
                XidEvent,
                QueryEvent,
                RotateEvent,
                HeartbeatLogEvent,
                NotImplementedEvent,
            ],
            filter_non_implemented_events=False,
        )
        return dump

    def _connect(self, **kwargs: Any) -> Connection:
        if kwargs.get("db") is None:  # the library's control connection names a database; the dump's does not
            self._stream_connections += 1
        return Connection(**kwargs)

    def close(self) -> None:
        self.stream.close()
