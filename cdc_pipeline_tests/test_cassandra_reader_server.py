"""The segment reader's server, kept up between runs, against a real Cassandra 5 node: a second process
reads through the same server and gets the same lines; a server that idles out, is killed or is
stopped is replaced by the next read; a failed read names its segment and leaves the server serving.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cdc_pipeline.local_servers.cassandra import LocalCassandra
from cdc_pipeline.sources.cassandra.reader_server import (
    IDLE_SECONDS_VARIABLE,
    ReaderServer,
    servers_directory,
)
from cdc_pipeline.sources.cassandra.segment_reader import (
    CdcSegment,
    SegmentRead,
    SegmentReadError,
    cdc_segments,
    read_segment,
    write_schema_file,
)

_ARGFILE = Path(__file__).resolve().parents[1] / "cassandra_cdc_reader" / "target" / "reader.argfile"
_READ_IN_A_PROCESS = """
import json, sys
from pathlib import Path
from cdc_pipeline.sources.cassandra.segment_reader import CdcSegment, read_segment
yaml, schema, path, segment_id, end = sys.argv[1:]
segment = CdcSegment(Path(path), int(segment_id), int(end), False)
read = read_segment(Path(yaml), Path(schema), segment, 0, 10**9)
print(json.dumps({"changes": read.changes, "end": read.end}))
"""


def _written_segment(
    cassandra: LocalCassandra, keyspace: str, tmp_path: Path, rows: int = 20
) -> tuple[Path, CdcSegment]:
    session = cassandra.session()
    session.execute(f"CREATE TABLE {keyspace}.items (id int PRIMARY KEY, name text) WITH cdc = true")
    for i in range(rows):
        session.execute(f"INSERT INTO {keyspace}.items (id, name) VALUES ({i}, 'item {i}')")
    schema = write_schema_file(session, [keyspace], tmp_path / "schema.json")
    return schema, _newest_segment(cassandra)


def _newest_segment(cassandra: LocalCassandra) -> CdcSegment:
    # The node rewrites a segment's index in place: a listing made meanwhile leaves that segment out.
    found: list[CdcSegment] = []

    def listed() -> bool:
        found[:] = [s for s in cdc_segments(cassandra.cdc_raw_dir) if s.durable_offset > 0]
        return bool(found)

    _wait_until(listed, "a CDC segment with data is listed")
    return found[-1]


def _ours(changes: list[dict[str, Any]], keyspace: str) -> list[dict[str, Any]]:
    return [change for change in changes if change["keyspace"] == keyspace]


def _server_pid(server: ReaderServer) -> int:
    return int(json.loads((servers_directory() / f"{server.name}.json").read_text())["pid"])


def _is_running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@dataclass
class _Served:
    """A segment read once through its node's server: what the tests then do things to."""

    yaml: Path
    schema: Path
    segment: CdcSegment
    first: SegmentRead
    server: ReaderServer

    @property
    def pid(self) -> int:
        return _server_pid(self.server)

    def read(self) -> SegmentRead:
        return read_segment(self.yaml, self.schema, self.segment, 0, 10**9)


def _served(cassandra: LocalCassandra, keyspace: str, tmp_path: Path) -> _Served:
    yaml = cassandra.base_dir / "cassandra.yaml"
    schema, segment = _written_segment(cassandra, keyspace, tmp_path)
    first = read_segment(yaml, schema, segment, 0, 10**9)
    return _Served(yaml, schema, segment, first, ReaderServer(yaml, schema, _ARGFILE))


def _reader_server_command(*arguments: str) -> str:
    command = [sys.executable, "-m", "cdc_pipeline.sources.cassandra.reader_server", *arguments]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


def _wait_until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.1)


def test_a_second_process_reads_through_the_same_server(
    cassandra: LocalCassandra, cassandra_keyspace: str, tmp_path: Path
) -> None:
    served = _served(cassandra, cassandra_keyspace, tmp_path)
    here, pid, segment = served.first, served.pid, served.segment

    # A user's second command, or the daemon's next run: a process of its own.
    output = subprocess.run(
        [sys.executable, "-c", _READ_IN_A_PROCESS, str(served.yaml), str(served.schema), str(segment.path),
         str(segment.segment_id), str(segment.durable_offset)],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    there = json.loads(output)

    assert sorted(c["partition_key"]["id"] for c in _ours(here.changes, cassandra_keyspace)) == list(range(20))
    assert there["changes"] == here.changes and there["end"] == here.end
    assert served.pid == pid and _is_running(pid), "the second process started a server of its own"


def test_a_schema_file_written_again_gets_a_server_of_its_own(
    cassandra: LocalCassandra, cassandra_keyspace: str, tmp_path: Path
) -> None:
    yaml = cassandra.base_dir / "cassandra.yaml"
    schema, segment = _written_segment(cassandra, cassandra_keyspace, tmp_path)
    read_segment(yaml, schema, segment, 0, 10**9)
    first = ReaderServer(yaml, schema, _ARGFILE).name

    cassandra.session().execute(f"ALTER TABLE {cassandra_keyspace}.items ADD price int")
    cassandra.session().execute(f"INSERT INTO {cassandra_keyspace}.items (id, price) VALUES (100, 7)")
    write_schema_file(cassandra.session(), [cassandra_keyspace], schema)
    segment = _newest_segment(cassandra)
    changes = _ours(read_segment(yaml, schema, segment, 0, 10**9).changes, cassandra_keyspace)

    assert ReaderServer(yaml, schema, _ARGFILE).name != first
    priced = [change for change in changes if change["partition_key"] == {"id": 100}]
    assert priced, "the new column's write was not decoded"
    assert {cell["column"]: cell.get("value") for cell in priced[-1]["rows"][0]["cells"]} == {"price": 7}


def test_an_idle_server_exits_and_the_next_read_starts_one(
    cassandra: LocalCassandra, cassandra_keyspace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(IDLE_SECONDS_VARIABLE, "1")
    served = _served(cassandra, cassandra_keyspace, tmp_path)
    pid = served.pid
    socket_path = servers_directory() / f"{served.server.name}.sock"

    _wait_until(lambda: not _is_running(pid) and not socket_path.exists(), "the idle server exits")

    assert served.read().changes == served.first.changes
    assert served.pid != pid


def test_a_killed_server_is_replaced_by_the_next_read(
    cassandra: LocalCassandra, cassandra_keyspace: str, tmp_path: Path
) -> None:
    served = _served(cassandra, cassandra_keyspace, tmp_path)
    pid = served.pid

    os.kill(pid, signal.SIGKILL)  # it leaves its socket file behind
    _wait_until(lambda: not _is_running(pid), "the server dies")
    assert (servers_directory() / f"{served.server.name}.sock").exists()

    assert served.read().changes == served.first.changes
    assert served.pid != pid

    # As an operator would: list them, stop none of another directory, then this node's.
    replacement = served.pid
    assert f"pid {replacement}  node {served.yaml}" in _reader_server_command("list")
    assert _reader_server_command("stop", str(cassandra.base_dir / "no such directory")).startswith("stopped 0")
    assert _is_running(replacement)
    assert str(replacement) in _reader_server_command("stop", str(cassandra.base_dir))
    _wait_until(lambda: not _is_running(replacement), "the stopped server exits")
    assert f"pid {replacement}" not in _reader_server_command("list")


def test_a_connection_dropped_unanswered_is_made_again_to_a_new_server(
    cassandra: LocalCassandra, cassandra_keyspace: str, tmp_path: Path
) -> None:
    # A server dying (or idling out) as a client connects can accept the connection and drop it: its
    # socket accepts until the process's last thread is gone. Seen once in CI after a SIGKILL.
    served = _served(cassandra, cassandra_keyspace, tmp_path)
    pid = served.pid
    _reader_server_command("stop", str(cassandra.base_dir))
    _wait_until(lambda: not _is_running(pid), "the stopped server exits")
    socket_path = servers_directory() / f"{served.server.name}.sock"
    dying = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dying.bind(str(socket_path))
    dying.listen()

    def accept_one_and_go() -> None:
        connection, _ = dying.accept()
        dying.close()
        socket_path.unlink()
        connection.close()  # the request goes unanswered

    server_side = threading.Thread(target=accept_one_and_go)
    server_side.start()
    try:
        assert served.read().changes == served.first.changes
    finally:
        server_side.join(timeout=60)
    assert _is_running(served.pid), "the read was not served by a new server"


def test_a_failed_read_names_the_segment_and_the_server_goes_on(
    cassandra: LocalCassandra, cassandra_keyspace: str, tmp_path: Path
) -> None:
    served = _served(cassandra, cassandra_keyspace, tmp_path)
    pid = served.pid
    missing = CdcSegment(tmp_path / "CommitLog-7-999999.log", 999999, 4096, True)

    with pytest.raises(
        SegmentReadError, match=r"segment CommitLog-7-999999\.log \(0, 4096\]: the read failed: .*999999"
    ):
        read_segment(served.yaml, served.schema, missing, 0, 10**9)

    assert served.read().changes == served.first.changes
    assert served.pid == pid
