"""The segment reader's server: one JVM per node and schema file, kept up between runs.

Dagster launches a process per run. A reader JVM per run would pay the JVM start, Cassandra's
initialisation and a cold JIT, about two seconds, on every micro-batch, and read at half speed while
it warms up. So the first run that needs a reader starts `CdcSegmentReader --listen` as a process of
its own (a new session: it outlives the run), listening on a Unix domain socket; later runs, in
whatever process, connect to it. It exits after `CDC_CASSANDRA_READER_IDLE_SECONDS` (default 300)
without a connection, or when its socket file is removed (`stop_reader_servers`).

A server is named by what it decodes with: the node's cassandra.yaml, the schema file (its path and
its modification time: a schema file written again gets a new server) and the reader's build. The
sockets, the servers' logs and a lock that lets one process at a time start a server live in a
directory only this user may enter.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

IDLE_SECONDS_VARIABLE = "CDC_CASSANDRA_READER_IDLE_SECONDS"
_DEFAULT_IDLE_SECONDS = 300
_MAIN_CLASS = "cdc.pipeline.CdcSegmentReader"
# The argfile's C1-only setting suits one short read; a server gains from C2 once warm (measured:
# 69,000 mutations in 0.7-1.0 s warm against 1.8-2.0 s with C1 only).
_SERVER_JVM_OPTIONS = ("-XX:TieredStopAtLevel=4",)
# Starting takes 1-2 s here; a loaded machine (a test suite starting Cassandra nodes) is slower.
_START_TIMEOUT_SECONDS = 120.0


class ReaderServerError(RuntimeError):
    """A reader server could not be started or reached; the message names the server's log."""


def idle_seconds() -> int:
    given = os.environ.get(IDLE_SECONDS_VARIABLE)
    if given is None or given == "":
        return _DEFAULT_IDLE_SECONDS
    if not given.isdigit() or int(given) <= 0:
        raise ReaderServerError(f"{IDLE_SECONDS_VARIABLE} must be a positive whole number of seconds, got {given!r}")
    return int(given)


def servers_directory() -> Path:
    """Where the sockets live: short enough for a socket path (108 bytes), private to this user."""
    directory = Path(tempfile.gettempdir()) / f"cdc-cassandra-readers-{os.getuid()}"
    directory.mkdir(mode=0o700, exist_ok=True)
    if directory.stat().st_uid != os.getuid():
        raise ReaderServerError(f"{directory} belongs to another user: remove it, or set TMPDIR elsewhere")
    return directory


@dataclass(frozen=True)
class ReaderServer:
    """The server for one node's cassandra.yaml and one schema file."""

    cassandra_yaml: Path
    schema_file: Path
    argfile: Path

    @property
    def name(self) -> str:
        identity = "\0".join(
            [
                str(self.cassandra_yaml.resolve()),
                str(self.schema_file.resolve()),
                str(self.schema_file.stat().st_mtime_ns),
                str(self.argfile.stat().st_mtime_ns),
            ]
        )
        return hashlib.sha256(identity.encode()).hexdigest()[:24]

    def connect(self) -> socket.socket:
        """A connection to the server, started first if none is listening."""
        name = self.name
        directory = servers_directory()
        socket_path = directory / f"{name}.sock"
        connection = _try_connect(socket_path)
        if connection is not None:
            return connection
        with _locked(directory / f"{name}.lock"):
            connection = _try_connect(socket_path)  # another process may have started it meanwhile
            if connection is not None:
                return connection
            return self._start(directory, name, socket_path)

    def _start(self, directory: Path, name: str, socket_path: Path) -> socket.socket:
        log_path = directory / f"{name}.log"
        command = [
            "java", f"@{self.argfile}", *_SERVER_JVM_OPTIONS, _MAIN_CLASS, "--listen", str(socket_path),
            str(idle_seconds()), str(self.cassandra_yaml), str(self.schema_file),
        ]  # fmt: skip
        with log_path.open("ab") as log:
            try:
                process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                    start_new_session=True,  # it serves later runs: it must outlive this one
                )
            except FileNotFoundError:
                raise ReaderServerError(
                    "java is not on this machine's PATH: the Cassandra segment reader needs a JDK 17"
                    " (Debian package openjdk-17-jre-headless)"
                ) from None
        info = {"pid": process.pid, "cassandra_yaml": str(self.cassandra_yaml), "schema_file": str(self.schema_file)}
        scratch = directory / f"{name}.json.{os.getpid()}.tmp"
        scratch.write_text(json.dumps(info))
        scratch.replace(directory / f"{name}.json")  # whole or not at all for a process listing them
        deadline = time.monotonic() + _START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            connection = _try_connect(socket_path)
            if connection is not None:
                return connection
            code = process.poll()
            if code is not None:
                raise ReaderServerError(
                    f"the segment reader server for {self.cassandra_yaml} exited with {code} at start:"
                    f" {_tail(log_path)} (log: {log_path})"
                )
            time.sleep(0.05)
        process.kill()
        raise ReaderServerError(
            f"the segment reader server for {self.cassandra_yaml} did not listen within {_START_TIMEOUT_SECONDS:.0f} s"
            f" (log: {log_path})"
        )

    def log_tail(self) -> str:
        return _tail(servers_directory() / f"{self.name}.log")


def _try_connect(path: Path) -> socket.socket | None:
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(str(path))
    except (FileNotFoundError, ConnectionRefusedError):
        connection.close()
        return None
    return connection


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _tail(log_path: Path, characters: int = 2000) -> str:
    try:
        return log_path.read_text(errors="replace")[-characters:]
    except FileNotFoundError:
        return "(no log)"


def stop_reader_servers(under: Path | None = None) -> list[int]:
    """Stops this user's reader servers, or those for a cassandra.yaml under the directory `under` (a
    node's, or a test session's); returns the pids asked to stop.

    Removing a server's socket file is its stop signal (it checks every second); a server that does
    not notice (stuck) is sent SIGTERM, but only if that pid still runs the reader for this socket."""
    directory = servers_directory()
    stopped: list[int] = []
    for info_path, info in _server_infos(directory):
        if under is not None and not Path(info["cassandra_yaml"]).resolve().is_relative_to(under.resolve()):
            continue
        socket_path = info_path.with_suffix(".sock")
        socket_path.unlink(missing_ok=True)
        info_path.unlink(missing_ok=True)
        pid = int(info["pid"])
        if _wait_for_exit(pid, socket_path, timeout=5.0):
            stopped.append(pid)
            continue
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        stopped.append(pid)
    return stopped


def _server_infos(directory: Path) -> list[tuple[Path, dict[str, Any]]]:
    """The servers' info files and what they say; one removed meanwhile (a stop) is left out."""
    infos = []
    for info_path in sorted(directory.glob("*.json")):
        try:
            infos.append((info_path, json.loads(info_path.read_text())))
        except FileNotFoundError:
            continue
    return infos


def _runs_server(pid: int, socket_path: Path) -> bool:
    """Does `pid` still run the reader server of `socket_path` (not a zombie, not a reused pid)?"""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = status.rsplit(")", 1)[1].split()[0]
    return state != "Z" and str(socket_path).encode() in command


def _wait_for_exit(pid: int, socket_path: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _runs_server(pid, socket_path):
            return True
        time.sleep(0.05)
    return not _runs_server(pid, socket_path)


def running_servers() -> list[dict[str, str | int]]:
    """This user's reader servers that are up: pid, node yaml, schema file, socket."""
    found: list[dict[str, str | int]] = []
    for info_path, info in _server_infos(servers_directory()):
        socket_path = info_path.with_suffix(".sock")
        if _runs_server(int(info["pid"]), socket_path):
            found.append({**info, "socket": str(socket_path)})
    return found


def main(arguments: list[str] | None = None) -> int:
    """`python -m cdc_pipeline.sources.cassandra.reader_server list|stop [DIRECTORY]`."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m cdc_pipeline.sources.cassandra.reader_server",
        description="The Cassandra segment reader servers of this user: list them, or stop them.",
    )
    parser.add_argument("command", choices=("list", "stop"))
    parser.add_argument(
        "directory", nargs="?", type=Path, help="stop only the servers of nodes whose cassandra.yaml is under it"
    )
    parsed = parser.parse_args(arguments)
    if parsed.command == "list":
        for server in running_servers():
            print(f"pid {server['pid']}  node {server['cassandra_yaml']}  schema {server['schema_file']}")
        return 0
    stopped = stop_reader_servers(under=parsed.directory)
    print(f"stopped {len(stopped)} reader server(s)" + (f": pids {', '.join(map(str, stopped))}" if stopped else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
