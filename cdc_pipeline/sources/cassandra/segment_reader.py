"""Runs the Java CDC segment reader (`cassandra_cdc_reader/`) over a range of one commit-log segment.

The Python side owns the offsets: it finds CDC segments and their durable offsets in `cdc_raw`,
hands the reader a schema file (CQL and table ids from the live node) and a byte range, and gets
one JSON line per partition update back, ending with an `end` line that says where to resume. The
reader is a server kept up between runs (reader_server.py); a source keeps a connection to it
(SegmentReaderConnection) and asks for one range after another.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, cast

import orjson
from cassandra.cluster import Session

from cdc_pipeline.sources.cassandra.cql_types import timestamp_micros
from cdc_pipeline.sources.cassandra.reader_server import ReaderServer, ReaderServerError

# The repository's reader, next to the package in a checkout; an installed package (the Docker
# image) names its built copy in $CDC_CASSANDRA_READER_DIR.
READER_DIR = Path(
    os.environ.get("CDC_CASSANDRA_READER_DIR") or Path(__file__).resolve().parents[3] / "cassandra_cdc_reader"
)
_ARGFILE = READER_DIR / "target" / "reader.argfile"


def reader_is_built() -> bool:
    return _ARGFILE.exists()


class SegmentReadError(RuntimeError):
    """The reader failed or said nothing about where it stopped; the message names the segment and range."""


@dataclass(frozen=True)
class CdcSegment:
    """A commit-log segment hard-linked into cdc_raw, and how far it is durable."""

    path: Path
    segment_id: int
    durable_offset: int
    complete: bool


@dataclass
class SegmentRead:
    changes: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    end: dict[str, Any] = field(default_factory=dict)


# The node rewrites a segment's index in place (truncate, then write a line or two): a read in between
# finds it empty. It is read again this many times, a millisecond apart, before giving up on it.
_INDEX_READ_ATTEMPTS = 50


def cdc_segments(cdc_raw: Path) -> list[CdcSegment]:
    """The segments with an index file, oldest first.

    A segment is never left out because its index was caught mid-rewrite: a listing without it would
    make a checkpoint in it look deleted (a false "changes lost") and the newest position move back.
    An index still empty after re-reads is listed as nothing durable yet (offset 0, not complete):
    nothing is read from it or released this time, and the next listing sees its offset."""
    found = []
    for index in cdc_raw.glob("*_cdc.idx"):
        lines = _index_lines(index)
        if lines is None:
            continue  # deleted meanwhile (a release), with its segment
        segment = index.with_name(index.name.removesuffix("_cdc.idx") + ".log")
        segment_id = int(segment.stem.rsplit("-", 1)[1])
        durable = int(lines[0]) if lines else 0
        found.append(CdcSegment(segment, segment_id, durable, len(lines) > 1 and lines[1] == "COMPLETED"))
    return sorted(found, key=lambda s: s.segment_id)


def _index_lines(index: Path) -> list[str] | None:
    """The index's lines ([] while it stays empty); None when it is gone."""
    for attempt in range(_INDEX_READ_ATTEMPTS):
        try:
            lines = index.read_text().split()
        except FileNotFoundError:
            return None
        if lines:
            return lines
        if attempt + 1 < _INDEX_READ_ATTEMPTS:
            time.sleep(0.001)
    return []


def write_schema_file(session: Session, keyspaces: Iterable[str], path: Path) -> Path:
    """Every table and type of the keyspaces (a mutation may span a keyspace's tables), with their ids
    and dropped columns, as the reader needs them to deserialize mutations."""
    metadata = session.cluster.metadata
    tables: list[dict[str, Any]] = []
    types: list[dict[str, str]] = []
    for keyspace in keyspaces:
        described = metadata.keyspaces[keyspace]
        types += [{"keyspace": keyspace, "cql": t.as_cql_query()} for t in described.user_types.values()]
        ids = session.execute("SELECT table_name, id FROM system_schema.tables WHERE keyspace_name = %s", [keyspace])
        for row in ids:
            dropped = session.execute(
                "SELECT column_name, type, kind, dropped_time FROM system_schema.dropped_columns"
                " WHERE keyspace_name = %s AND table_name = %s",
                [keyspace, row.table_name],
            )
            tables.append(
                {
                    "keyspace": keyspace,
                    "table": row.table_name,
                    "id": str(row.id),
                    "cql": described.tables[row.table_name].as_cql_query(),
                    # dropped_time is a CQL timestamp (ms); Cassandra compares it in microseconds.
                    "dropped_columns": [
                        {
                            "name": d.column_name,
                            "type": d.type,
                            "kind": d.kind,
                            "dropped_time": timestamp_micros(d.dropped_time),
                        }
                        for d in dropped
                    ],
                }
            )
    path.write_text(json.dumps({"types": types, "tables": tables}))
    return path


# A fresh connection is tried this many times when a server drops it before answering.
_CONNECT_ATTEMPTS = 3


class SegmentReaderConnection:
    """A connection to the reader server (`reader_server.py`) for one node and one schema file, kept
    for many reads.

    Connecting starts in a thread at once: if no server is up, its JVM initialises while the run
    reads the sinks' checkpoints. A read's lines are handed over as they arrive, so Python decodes
    them while Java is still reading (the two use both cores).
    """

    def __init__(self, cassandra_yaml: Path, schema_file: Path) -> None:
        self.schema_file = schema_file
        self._server = ReaderServer(cassandra_yaml, schema_file, _ARGFILE)
        self._socket: socket.socket | None = None
        self._stream: BinaryIO | None = None
        self._connect_error: BaseException | None = None
        self._connecting = threading.Thread(target=self._connect, name="cdc-reader-connect", daemon=True)
        self._connecting.start()
        # A read whose lines were not all taken leaves them in the connection: it cannot serve again.
        self._mid_read = False
        self._closed = False

    def _connect(self) -> None:
        try:
            self._socket = self._server.connect()
            self._stream = cast(BinaryIO, self._socket.makefile("rb", buffering=1 << 16))
        except BaseException as error:  # handed to the thread that reads (lines())
            self._connect_error = error

    def _connected(self, where: str) -> tuple[socket.socket, BinaryIO]:
        self._connecting.join()
        if self._connect_error is not None:
            if isinstance(self._connect_error, ReaderServerError):
                raise SegmentReadError(f"{where}: {self._connect_error}") from None
            raise self._connect_error
        assert self._socket is not None and self._stream is not None
        return self._socket, self._stream

    @property
    def usable(self) -> bool:
        return not self._mid_read and not self._closed and self._connect_error is None

    def lines(self, segment: CdcSegment, start: int, max_mutations: int) -> Iterator[dict[str, Any]]:
        """The read's lines, parsed, as the reader writes them; the last one is its `end` line.

        Raises SegmentReadError when the read fails or the server ends without an end line."""
        where = f"segment {segment.path.name} ({start}, {segment.durable_offset}]"
        if not self.usable:
            raise SegmentReadError(f"{where}: the reader connection is not usable any more; open a new one")
        request = f"{segment.path}\t{start}\t{segment.durable_offset}\t{max_mutations}\n".encode()
        self._mid_read = True
        first, stream = self._first_line(request, where)
        raw = first
        while raw:
            line: dict[str, Any] = orjson.loads(raw)
            kind = line.get("kind")
            if kind == "failed":
                raise self._failure(where, f"the read failed: {line.get('error')}")
            yield line
            if kind == "end":
                self._mid_read = False
                return
            try:
                raw = stream.readline()
            except OSError as error:
                raise self._failure(where, f"the connection failed mid-read ({error})") from None
        raise self._failure(where, "the server closed the connection before the end line")

    def _first_line(self, request: bytes, where: str) -> tuple[bytes, BinaryIO]:
        """Sends the request and waits for the answer's first line. A server that dies, or idles out,
        just as a client connects can accept the connection and then drop it (its socket accepts until
        its last thread is gone): when nothing at all came back, the request is sent again over a new
        connection, which starts a new server if need be. Nothing was handed out yet, so nothing is
        read twice."""
        for attempt in range(_CONNECT_ATTEMPTS):
            connection, stream = self._connected(where)
            try:
                connection.sendall(request)
                first = stream.readline()
            except OSError as error:
                problem = f"the connection failed ({error})"
            else:
                if first:
                    return first, stream
                problem = "the server closed the connection without an answer"
            if attempt + 1 == _CONNECT_ATTEMPTS:
                raise self._failure(where, problem)
            self._reconnect()
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _reconnect(self) -> None:
        if self._stream is not None:
            self._stream.close()
        if self._socket is not None:
            self._socket.close()
        self._socket = self._stream = None
        self._connect()

    def _failure(self, where: str, what: str) -> SegmentReadError:
        self.close()
        return SegmentReadError(f"{where}: {what}; the reader server's log ends: {self._server.log_tail()}")

    def close(self) -> None:
        """Ends the connection; the server stays up for the next run (until it idles out)."""
        self._closed = True
        self._connecting.join()
        if self._stream is not None:
            self._stream.close()
        if self._socket is not None:
            self._socket.close()

    def __enter__(self) -> SegmentReaderConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_segment(
    cassandra_yaml: Path, schema_file: Path, segment: CdcSegment, start: int, max_mutations: int
) -> SegmentRead:
    """The CDC table changes in (start, durable offset] of `segment`, at most `max_mutations` entries,
    over a connection of its own (tests and tools; the source keeps one connection)."""
    where = f"segment {segment.path.name} ({start}, {segment.durable_offset}]"
    if not _ARGFILE.exists():
        raise SegmentReadError(f"{where}: the reader is not built; run {READER_DIR / 'build.sh'}")
    result = SegmentRead()
    with SegmentReaderConnection(cassandra_yaml, schema_file) as reader:
        for entry in reader.lines(segment, start, max_mutations):
            kind = entry.get("kind")
            if kind == "change":
                result.changes.append(entry)
            elif kind == "error":
                result.errors.append(entry)
            elif kind == "end":
                result.end = entry
    return result
