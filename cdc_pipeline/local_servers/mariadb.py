"""A throwaway MariaDB server with the binlog settings the pipeline needs (tests, benchmark, demo)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pymysql

from cdc_pipeline.sources.mysql.connection import MySqlConnectionSettings

BINLOG_FLAGS = (
    "--log-bin=binlog",
    "--binlog-format=ROW",
    "--binlog-row-image=FULL",
    "--binlog-row-metadata=FULL",
    "--character-set-server=utf8mb4",
    "--collation-server=utf8mb4_unicode_ci",
    "--default-time-zone=+00:00",
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class LocalMariaDb:
    def __init__(self, base_dir: Path, server_id: int = 1, extra_flags: tuple[str, ...] = ()) -> None:
        self.base_dir = base_dir
        self.port = free_port()
        self._server_id = server_id
        self._extra_flags = extra_flags
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def settings(self) -> MySqlConnectionSettings:
        return MySqlConnectionSettings("127.0.0.1", self.port, "root", "")

    @staticmethod
    def _install_system_tables(install: str, data: Path) -> None:
        """mariadb-install-db, tried a second time on a fresh directory: on a loaded machine its
        bootstrap now and then fails half-way ("Installation of system tables failed") and succeeds
        when run again. Both failures are reported if the second try fails too."""
        failures: list[str] = []
        for _ in range(2):
            shutil.rmtree(data, ignore_errors=True)
            installed = subprocess.run(
                # --force and --skip-name-resolve: no host name look-up, which can fail on a closed network.
                [
                    install,
                    "--no-defaults",
                    f"--datadir={data}",
                    "--user=root",
                    "--auth-root-authentication-method=normal",
                    "--skip-name-resolve",
                    "--force",
                    "--skip-test-db",
                ],
                capture_output=True,
                text=True,
            )
            if installed.returncode == 0:
                return
            failure = f"exit {installed.returncode}:\n{installed.stdout[-2000:]}\n{installed.stderr[-2000:]}"
            print(f"mariadb-install-db failed for {data} ({failure})", file=sys.stderr)
            failures.append(failure)
        raise RuntimeError(f"mariadb-install-db failed twice for {data}:\n" + "\n---\n".join(failures))

    def start(self, timeout_seconds: float = 60.0) -> LocalMariaDb:
        server = shutil.which("mariadbd") or shutil.which("mariadbd", path="/usr/sbin")
        install = shutil.which("mariadb-install-db")
        if server is None or install is None:
            raise RuntimeError("mariadbd is not installed: install the Debian package mariadb-server")
        data = self.base_dir / "data"
        self.base_dir.mkdir(parents=True, exist_ok=True)
        log = self.base_dir / "mariadbd.log"
        self._install_system_tables(install, data)
        with log.open("ab") as log_file:
            self._process = subprocess.Popen(
                [
                    server,
                    "--no-defaults",
                    f"--datadir={data}",
                    "--user=root",
                    f"--port={self.port}",
                    "--bind-address=127.0.0.1",
                    f"--socket={self.base_dir / 'mariadbd.sock'}",
                    f"--pid-file={self.base_dir / 'mariadbd.pid'}",
                    f"--server-id={self._server_id}",
                    "--skip-name-resolve",
                    "--innodb-buffer-pool-size=128M",
                    *BINLOG_FLAGS,
                    *self._extra_flags,
                ],
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout_seconds
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"mariadbd exited with {self._process.returncode}; see {log}")
            try:
                pymysql.connect(**self.settings.as_pymysql_kwargs()).close()
                return self
            except pymysql.err.OperationalError as error:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"mariadbd did not accept connections within {timeout_seconds}s; see {log}"
                    ) from error
                time.sleep(0.1)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None
